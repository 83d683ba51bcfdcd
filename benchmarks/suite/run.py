"""`python -m benchmarks` (what `make bench` runs): every system, every scenario, one report.

Order: the machine (with an fsync probe), the Klein ceiling, the load generator's own ceiling
against etcd's trivial /version handler, then the systems one after another (each alone on the
machine while it is measured; the growth scenario, when asked for, on a fresh cluster of each
after its short scenarios), then the report.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from benchmarks.suite import report
from benchmarks.suite.errors import BenchmarkError
from benchmarks.suite.etcd_system import EtcdSystem, etcd_binary
from benchmarks.suite.graft_system import GraftSystem
from benchmarks.suite.growth import run_growth
from benchmarks.suite.klein_ceiling import KleinCeiling
from benchmarks.suite.loadgen import Target, wrk_binary
from benchmarks.suite.machine import describe
from benchmarks.suite.pysyncobj_system import PySyncObjSystem, ensure_pysyncobj
from benchmarks.suite.scenarios import WRITE_CONCURRENCY, Recorder, run_system, warm_up
from benchmarks.suite.system import ReplicatedSystem, RequestShape

SYSTEMS = ("graft", "graft-sqlite", "etcd", "pysyncobj")
SCENARIOS = ("writes", "reads", "batch", "failover", "growth")
# What runs without --scenarios / --systems: the short scenarios (~13 min) on these systems;
# growth (10 min per system) only when asked for, on GROWTH_SYSTEMS.
DEFAULT_SCENARIOS = ("writes", "reads", "batch", "failover")
SHORT_SYSTEMS = ("graft", "etcd", "pysyncobj")
GROWTH_SYSTEMS = ("graft", "graft-sqlite", "etcd")
RESULTS = Path(__file__).resolve().parent.parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Graft beside etcd and PySyncObj under one load generator (wrk).",
    )
    parser.add_argument("--seconds", type=float, default=10, help="length of each load (10)")
    parser.add_argument("--repetitions", type=int, default=3, help="runs per figure (3)")
    parser.add_argument(
        "--systems",
        default=None,
        help=f"comma-separated subset of {','.join(SYSTEMS)} (default: "
        f"{','.join(SHORT_SYSTEMS)} for the short scenarios, {','.join(GROWTH_SYSTEMS)} "
        "for growth)",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(DEFAULT_SCENARIOS),
        help=f"comma-separated subset of {','.join(SCENARIOS)} (default: all but growth)",
    )
    parser.add_argument(
        "--growth-seconds",
        type=int,
        default=600,
        help="how long the growth scenario writes, per system (600)",
    )
    parser.add_argument(
        "--growth-interval",
        type=int,
        default=60,
        help="seconds per reported interval of the growth scenario (60: per minute)",
    )
    parser.add_argument(
        "--no-ceiling", action="store_true", help="skip the Klein and load-generator ceilings"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    parser.add_argument(
        "--install-peers",
        action="store_true",
        help="pip install PySyncObj into this environment if it is missing",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (data, logs)")
    return parser.parse_args(argv)


def _versions(systems: list[ReplicatedSystem]) -> dict[str, str]:
    wrk = subprocess.run([wrk_binary(), "-v"], capture_output=True, text=True)
    out = {
        "python": sys.version.split()[0],
        "twisted": version("twisted"),
        "klein": version("klein"),
        "wrk": (wrk.stdout + wrk.stderr).splitlines()[0].strip(),
    }
    git = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent,
    )
    if git.returncode == 0:
        out["graft_commit"] = git.stdout.strip()
    # The last few commits with their parents: a run from a scratch branch with other
    # branches merged in shows what was merged.
    history = subprocess.run(
        ["git", "log", "--first-parent", "-n", "3", "--format=%h (parents %p) %s"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent,
    )
    if history.returncode == 0:
        out["graft_history"] = " | ".join(history.stdout.strip().splitlines())
    for system in systems:
        out[system.name] = system.version()
    return out


def _load_average() -> list[float]:
    """1- and 5-minute load averages: how much else was running on the cores."""
    load1, load5, _ = os.getloadavg()
    return [round(load1, 2), round(load5, 2)]


def _ceilings(recorder: Recorder, klein: KleinCeiling, workdir: Path, with_etcd: bool) -> None:
    # bodies the size of Graft's kv puts (the Klein endpoint reads and ignores them)
    shape = GraftSystem(workdir / "unused").put_shape()
    recorder.load("klein", "warm-up", [Target(url=klein.url, connections=16)], shape, repetitions=1)
    recorder.runs["klein"].pop("warm-up")
    for c in WRITE_CONCURRENCY:
        recorder.load("klein", f"ceiling_c{c}", [Target(url=klein.url, connections=c)], shape)
    if with_etcd:
        # The load generator's own ceiling: wrk against a trivial handler in Go (etcd's
        # /version), which answers faster than any Python server here.
        etcd = EtcdSystem(workdir / "etcd-ceiling")
        try:
            etcd.start()
            get = RequestShape(method="GET", path="/version", bodies=("",))
            for c in (16, 64):
                url = etcd.base_url(etcd.leader()) + "/version"
                recorder.load(
                    "wrk", f"ceiling_c{c}", [Target(url=url, connections=c)], get, repetitions=1
                )
        finally:
            etcd.close()


def plan(systems: str | None, scenarios: set[str]) -> dict[str, set[str]]:
    """{system: its scenarios}, in SYSTEMS order. Given systems run every given scenario;
    otherwise the short scenarios run on SHORT_SYSTEMS and growth on GROWTH_SYSTEMS."""
    short = scenarios - {"growth"}
    out: dict[str, set[str]] = {}
    given = None if systems is None else [s for s in systems.split(",") if s]
    for name in SYSTEMS:
        if given is not None:
            if name in given:
                out[name] = set(scenarios)
            continue
        mine = (short if name in SHORT_SYSTEMS else set()) | (
            scenarios & {"growth"} if name in GROWTH_SYSTEMS else set()
        )
        if mine:
            out[name] = mine
    return out


def _make(name: str, base: Path) -> ReplicatedSystem:
    if name == "graft-sqlite":
        return GraftSystem(base, fsm="sqlite")
    makers: dict[str, type[GraftSystem | EtcdSystem | PySyncObjSystem]] = {
        "graft": GraftSystem,
        "etcd": EtcdSystem,
        "pysyncobj": PySyncObjSystem,
    }
    return makers[name](base)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scenarios = {s for s in args.scenarios.split(",") if s}
    given = set() if args.systems is None else {s for s in args.systems.split(",") if s}
    unknown = (given - set(SYSTEMS)) | (scenarios - set(SCENARIOS))
    if unknown:
        print(f"unknown system or scenario {sorted(unknown)}; see --help", file=sys.stderr)
        return 2
    planned = plan(args.systems, scenarios)
    wanted = list(planned)
    # The ceilings are the references of the short scenarios' targets; growth has none.
    ceilings = not args.no_ceiling and bool(scenarios - {"growth"})
    try:
        wrk_binary()
        if "etcd" in wanted or ceilings:
            etcd_binary()
        if "pysyncobj" in wanted:
            ensure_pysyncobj(args.install_peers)
    except BenchmarkError as error:
        print(error, file=sys.stderr)
        return 2
    started = datetime.datetime.now(datetime.UTC)
    workdir = Path(tempfile.mkdtemp(prefix="graft-bench-"))
    print(f"work dir {workdir}")
    recorder = Recorder(seconds=args.seconds, repetitions=args.repetitions, workdir=workdir)
    machine = describe(workdir)
    print(f"machine: {machine['cores']} cores, fsync p50 {machine['fsync']['p50_ms']} ms")
    used: list[ReplicatedSystem] = []
    settings: dict[str, Any] = {}
    phase_load: dict[str, dict[str, list[float]]] = {}
    errors: dict[str, str] = {}
    growth: dict[str, Any] = {}
    clock = time.monotonic()
    klein_log = open(workdir / "klein.log", "ab")  # noqa: SIM115 (closed below)
    klein = KleinCeiling(klein_log)
    try:
        if ceilings:
            print("ceilings")
            klein.start()  # and it stays up: Graft's loads are paired with it rep by rep
            recorder.ceiling_url = klein.url
            _ceilings(recorder, klein, workdir, with_etcd=True)
        for name, mine in planned.items():
            short = mine - {"growth"}
            if short:
                system = _make(name, workdir / name)
                print(f"{name}: starting")
                used.append(system)
                phase_load[name] = {"start": _load_average()}
                try:
                    system.start()
                    settings[name] = system.settings()
                    run_system(system, recorder, short)
                except (BenchmarkError, TimeoutError) as error:
                    # One system failing (a peer that never settles) must not cost the figures
                    # already measured: the run is recorded with what it has and the error.
                    errors[name] = str(error)
                    print(f"{name}: stopped early: {error}")
                finally:
                    system.close()
                    phase_load[name]["end"] = _load_average()
            if "growth" in mine:
                _growth_phase(name, workdir, args, used, settings, growth, errors)
    finally:
        klein.close()
        klein_log.close()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    machine["load_average_at_end"] = _load_average()
    machine["load_average_by_phase"] = phase_load
    med = report.medians(recorder.runs)
    short_run = bool(scenarios - {"growth"})
    result: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "wall_seconds": round(time.monotonic() - clock, 1),
        "command": shlex.join([sys.executable, "-m", "benchmarks", *(argv or sys.argv[1:])]),
        "settings": {
            "seconds": args.seconds,
            "repetitions": args.repetitions,
            "systems": wanted,
            "scenarios": sorted(scenarios),
            "plan": {name: sorted(mine) for name, mine in planned.items()},
            "growth_seconds": args.growth_seconds if "growth" in scenarios else None,
            "growth_interval": args.growth_interval if "growth" in scenarios else None,
            "workload": "writes put keys never written before (24 bytes) with 100-byte values; "
            "reads read 1000 keys the warm-up wrote with 100-byte values",
            "per_system": settings,
            "notes": [
                "wrk -t1 (one load-generator thread); latency is per request, wrk's own clock",
                "strong reads spread the connections over all three nodes (6/5/5)",
                "Graft's write (c=16, 64) and default-read loads are each followed by the same "
                "load on the Klein endpoint (klein/paired_graft_*); the targets use those pairs",
                "default/serializable reads and writes go to the leader",
                "PySyncObj's journal is never fsynced: its writes are not durable",
                "etcd members talk plain HTTP to each other; Graft peers use mutual TLS",
            ],
        },
        "machine": machine,
        "versions": _versions(used),
        "commands": recorder.commands,
        "runs": recorder.runs,
        "medians": med,
        "targets": report.as_dicts(report.targets(med)) if short_run else [],
        "errors": errors,
    }
    if growth:
        result["growth"] = growth
        result["growth_targets"] = report.as_dicts(report.growth_targets(growth))
    stem = started.strftime("%Y-%m-%d") + ("" if short_run else "-growth")
    for path in report.write_files(result, args.out, stem):
        print(f"wrote {path}")
    print(report.markdown(result))
    return 0


def _growth_phase(
    name: str,
    workdir: Path,
    args: argparse.Namespace,
    used: list[ReplicatedSystem],
    settings: dict[str, Any],
    growth: dict[str, Any],
    errors: dict[str, str],
) -> None:
    """The growth scenario on a fresh cluster of ``name``; its data is deleted afterwards (a
    10-minute run leaves gigabytes)."""
    base = workdir / f"{name}-growth"
    system = _make(name, base)
    print(f"{name}: starting for growth ({args.growth_seconds} s)")
    if not any(s.name == name for s in used):
        used.append(system)
    try:
        system.start()
        settings.setdefault(name, system.settings())
        growth[name] = run_growth(
            system, workdir, seconds=args.growth_seconds, interval=args.growth_interval
        )
        if "error" in growth[name]:
            errors[f"{name}/growth"] = growth[name]["error"]
    except (BenchmarkError, TimeoutError) as error:
        errors[f"{name}/growth"] = str(error)
        print(f"{name}: growth stopped early: {error}")
    finally:
        system.close()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


__all__ = ["main", "plan", "warm_up"]
