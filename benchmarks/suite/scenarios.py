"""The scenarios of issue 8, run against one system at a time; every figure is kept per run."""

from __future__ import annotations

import shlex
import statistics
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.suite.failover import run_trial
from benchmarks.suite.http import call
from benchmarks.suite.loadgen import LoadResult, Target, run_load, spread, write_bodies, wrk_command
from benchmarks.suite.system import BATCH, ReplicatedSystem, RequestShape

WRITE_CONCURRENCY = (1, 16, 64)
READ_CONCURRENCY = 16
BATCH_CONCURRENCY = 16


@dataclass(slots=True, kw_only=True)
class Recorder:
    """Collects runs as {system: {scenario: [summary, ...]}} and the exact commands used."""

    seconds: float
    repetitions: int
    workdir: Path
    runs: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    commands: dict[str, list[str]] = field(default_factory=dict)
    progress: Callable[[str], None] = print
    # The Klein endpoint's URL while it runs: a load with `paired=True` is followed, rep by rep,
    # by the same load against it, so each ratio to the ceiling compares like with like.
    ceiling_url: str | None = None

    def load(
        self,
        system: str,
        scenario: str,
        targets: list[Target],
        shape: RequestShape,
        *,
        per_request: int = 1,
        repetitions: int | None = None,
        paired: bool = False,
    ) -> None:
        bodies = write_bodies(shape.bodies, self.workdir)
        pair = None
        if paired and self.ceiling_url is not None:
            pair = [Target(url=self.ceiling_url, connections=t.connections) for t in targets]
        self.commands[f"{system}/{scenario}"] = [
            shlex.join(
                wrk_command(
                    t,
                    seconds=self.seconds,
                    method=shape.method,
                    bodies_file=bodies,
                    key_prefix="<a prefix of its own per wrk process>",
                )
            )
            for t in targets
        ]
        try:
            for rep in range(repetitions or self.repetitions):
                result = run_load(
                    targets, seconds=self.seconds, method=shape.method, bodies_file=bodies
                )
                summary = _summary(result, per_request)
                self.runs.setdefault(system, {}).setdefault(scenario, []).append(summary)
                self.progress(
                    f"  {system:10} {scenario:22} run {rep + 1}: "
                    f"{summary['ok_per_s']:>9.1f} req/s  p50 {summary['p50_ms']:7.2f} ms  "
                    f"p99 {summary['p99_ms']:7.2f} ms  failures {summary['failures']}"
                )
                if pair is not None:
                    ceiling = _summary(
                        run_load(pair, seconds=self.seconds, method="POST", bodies_file=bodies), 1
                    )
                    self.record("klein", f"paired_{system}_{scenario}", ceiling)
                    self.progress(
                        f"  {'klein':10} {'paired with ' + scenario:22} run {rep + 1}: "
                        f"{ceiling['ok_per_s']:>9.1f} req/s"
                    )
        finally:
            bodies.unlink(missing_ok=True)

    def record(self, system: str, scenario: str, summary: dict[str, Any]) -> None:
        self.runs.setdefault(system, {}).setdefault(scenario, []).append(summary)


def _summary(result: LoadResult, per_request: int) -> dict[str, Any]:
    summary: dict[str, Any] = dict(result.summary())
    if per_request != 1:
        summary["entries_per_s"] = round(result.ok_per_second * per_request, 1)
    return summary


def warm_up(system: ReplicatedSystem, workdir: Path, seconds: float = 2) -> None:
    """Write every key the reads read and let caches, JITs and connections settle; not
    recorded."""
    shape = system.put_shape(unique=False)
    bodies = write_bodies(shape.bodies, workdir)
    try:
        url = system.base_url(system.leader()) + shape.path
        run_load(
            [Target(url=url, connections=16)],
            seconds=seconds,
            method=shape.method,
            bodies_file=bodies,
        )
    finally:
        bodies.unlink(missing_ok=True)


def seed_reads(system: ReplicatedSystem, threads: int = 16) -> int:
    """Write each key the reads read once more, one request per key (16 at a time), so that
    every read finds its key however little of it the timed warm-up reached on a busy
    machine; the number of writes that failed."""
    shape = system.put_shape(unique=False)
    url = system.base_url(system.leader()) + shape.path

    def put(body: str) -> bool:
        status, _ = call(url, body.encode(), method=shape.method, timeout=30)
        return 200 <= status < 300

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return sum(not ok for ok in pool.map(put, shape.bodies))


def run_system(system: ReplicatedSystem, recorder: Recorder, scenarios: set[str]) -> None:
    name = system.name
    warm_up(system, recorder.workdir)
    leader = system.leader()
    put = system.put_shape()
    if "writes" in scenarios:
        for c in WRITE_CONCURRENCY:
            target = Target(url=system.base_url(leader) + put.path, connections=c)
            recorder.load(name, f"write_c{c}", [target], put, paired=name == "graft" and c > 1)
    if "reads" in scenarios:
        failed = seed_reads(system)
        if failed:
            recorder.progress(f"  {name:10} {failed} of the read keys could not be written")
        strong = system.read_shape(strong=True)
        if strong is not None:
            urls = [system.base_url(n) + strong.path for n in system.node_ids()]
            recorder.load(
                name, f"read_strong_c{READ_CONCURRENCY}", spread(urls, READ_CONCURRENCY), strong
            )
        default = system.read_shape(strong=False)
        if default is not None:
            target = Target(
                url=system.base_url(leader) + default.path, connections=READ_CONCURRENCY
            )
            recorder.load(
                name,
                f"read_default_c{READ_CONCURRENCY}",
                [target],
                default,
                paired=name == "graft",
            )
    if "batch" in scenarios:
        batch = system.batch_shape()
        if batch is not None:
            target = Target(url=system.base_url(leader) + batch.path, connections=BATCH_CONCURRENCY)
            recorder.load(
                name, f"batch{BATCH}_c{BATCH_CONCURRENCY}", [target], batch, per_request=BATCH
            )
    if "failover" in scenarios:
        for rep in range(recorder.repetitions):
            trial = run_trial(system, recorder.workdir)
            recorder.record(
                name,
                "failover",
                {
                    "unavailable_ms": trial.unavailable_ms,
                    "killed": trial.killed,
                    "new_leader": trial.new_leader,
                    "load_ok_per_s": trial.load_ok_per_s,
                    "settled": trial.settled,
                },
            )
            recorder.progress(
                f"  {name:10} failover               run {rep + 1}: killed {trial.killed}, "
                f"first write after {trial.unavailable_ms} ms, new leader {trial.new_leader}"
            )
            if not trial.settled:
                recorder.progress(
                    f"  {name:10} failover: no leader agreed by every node within 30 s of "
                    f"restarting {trial.killed}; no more failover trials for {name} (its logs "
                    "are in the work dir with --keep)"
                )
                break


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return round(statistics.median(values), 3) if values else None
