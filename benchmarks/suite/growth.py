"""Growth: sustained writes of new keys for minutes on a fresh cluster, reported per minute.

One wrk load per interval (default 60 s) back to back, at c=16 on the leader, each writing
keys never written before with VALUE_BYTES values, so the state grows all the time as it does
for users who insert records. Each interval's load gives that minute's throughput and exact
p50/p99 (its own latency histogram). Meanwhile a sampler thread reads every node's RSS
(/proc/<pid>/status VmRSS) and the size its data takes on disk (allocated blocks, as `du`)
every few seconds, and once more as each interval ends; samples are bucketed into the
interval they fell in (`bucket`), and a minute reports the last sample (the state at the end
of the minute) and the largest RSS seen in it (snapshots make short peaks).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.suite.errors import BenchmarkError
from benchmarks.suite.loadgen import Target, run_load, write_bodies
from benchmarks.suite.scenarios import warm_up
from benchmarks.suite.system import ReplicatedSystem

GROWTH_CONCURRENCY = 16
MB = 1_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    """One reading of every node: RSS (None when the process is gone) and bytes on disk."""

    at: float  # time.monotonic()
    rss: dict[str, int | None]
    disk: dict[str, int]


@dataclass(frozen=True, slots=True)
class Window:
    """When one interval's load ran (time.monotonic())."""

    start: float
    end: float


def rss_bytes(pid: int) -> int | None:
    """The resident set size of process ``pid`` in bytes; None when there is no such process
    (or it is a zombie, which has no VmRSS line)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024  # the kernel writes kB
    return None


def disk_bytes(path: Path) -> int:
    """Bytes allocated on disk for ``path`` (a file, or a directory and all below it), as
    `du` counts them; files that vanish while it walks (compaction) are skipped."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return 0
    if not path.is_dir():
        return info.st_blocks * 512
    total = info.st_blocks * 512
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return total
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                total += disk_bytes(Path(entry.path))
            else:
                total += entry.stat(follow_symlinks=False).st_blocks * 512
        except FileNotFoundError:
            continue
    return total


def probe(system: ReplicatedSystem, nodes: Sequence[str]) -> Sample:
    rss: dict[str, int | None] = {}
    for node in nodes:
        try:
            rss[node] = rss_bytes(system.pid(node))
        except KeyError:  # never started
            rss[node] = None
    disk = {node: disk_bytes(system.data_path(node)) for node in nodes}
    return Sample(at=time.monotonic(), rss=rss, disk=disk)


class Sampler:
    """Calls ``take`` every ``every`` seconds on a thread of its own (and at once on start),
    and whenever ``sample_now`` is called; keeps every sample."""

    def __init__(self, take: Callable[[], Sample], every: float) -> None:
        self._take = take
        self._every = every
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="growth-sampler", daemon=True)
        self.samples: list[Sample] = []

    def start(self) -> None:
        self.sample_now()
        self._thread.start()

    def sample_now(self) -> None:
        sample = self._take()
        with self._lock:
            self.samples.append(sample)

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self.sample_now()

    def stop(self) -> list[Sample]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self._every + 30)
        with self._lock:
            return sorted(self.samples, key=lambda s: s.at)


def bucket(samples: Sequence[Sample], windows: Sequence[Window]) -> list[list[Sample]]:
    """The samples of each window: a sample belongs to the last window that started at or
    before it, so one taken in the short gap after a load (the end-of-minute reading) counts
    for the minute that just ended. Samples before the first window belong to none."""
    out: list[list[Sample]] = [[] for _ in windows]
    for sample in sorted(samples, key=lambda s: s.at):
        index = None
        for i, window in enumerate(windows):
            if window.start <= sample.at:
                index = i
            else:
                break
        if index is not None:
            out[index].append(sample)
    return out


def _mb(value: int | None) -> float | None:
    return None if value is None else round(value / MB, 1)


def _by_node_mb(values: dict[str, int | None]) -> dict[str, float | None]:
    return {node: _mb(v) for node, v in values.items()}


def minute_row(
    minute: int, load: dict[str, Any], samples: Sequence[Sample], leader: str | None = None
) -> dict[str, Any]:
    """One minute of the report: the load's figures, and RSS and disk at the end of the minute
    (its last sample) with the largest RSS of each node seen in it."""
    row: dict[str, Any] = {"minute": minute, "leader": leader}
    for key in ("ok_per_s", "p50_ms", "p99_ms", "requests", "failures", "seconds"):
        row[key] = load.get(key)
    if not samples:
        row.update(rss_mb=None, rss_max_mb=None, data_mb=None, data_total_mb=None)
        return row
    last = samples[-1]
    peaks: dict[str, int | None] = {}
    for node in last.rss:
        seen = [s.rss.get(node) for s in samples if s.rss.get(node) is not None]
        peaks[node] = max(v for v in seen if v is not None) if seen else None
    row["rss_mb"] = _by_node_mb(last.rss)
    row["rss_max_mb"] = _by_node_mb(peaks)
    row["data_mb"] = _by_node_mb(dict(last.disk))
    row["data_total_mb"] = _mb(sum(last.disk.values()))
    return row


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """First and last minute side by side (the last may be a short interval; still counted)."""
    measured = [r for r in rows if r.get("ok_per_s") is not None]
    if not measured:
        return {}
    first, last = measured[0], measured[-1]
    ratio = round(last["ok_per_s"] / first["ok_per_s"], 3) if first["ok_per_s"] else None
    peak_rss = [v for r in measured for v in (r.get("rss_max_mb") or {}).values() if v is not None]
    return {
        "minutes": len(measured),
        "first_ok_per_s": first["ok_per_s"],
        "last_ok_per_s": last["ok_per_s"],
        "last_over_first": ratio,
        "first_p99_ms": first["p99_ms"],
        "last_p99_ms": last["p99_ms"],
        "max_p99_ms": max(r["p99_ms"] for r in measured),
        "writes": sum(r["requests"] - r["failures"] for r in measured),
        "failures": sum(r["failures"] for r in measured),
        "final_data_total_mb": last.get("data_total_mb"),
        "peak_rss_mb": max(peak_rss) if peak_rss else None,
    }


def _load_average() -> list[float]:
    load1, load5, _ = os.getloadavg()
    return [round(load1, 2), round(load5, 2)]


def run_growth(
    system: ReplicatedSystem,
    workdir: Path,
    *,
    seconds: int,
    interval: int = 60,
    sample_every: float = 5.0,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Write new keys for ``seconds`` in ``interval``-second loads on a started system; the
    per-minute report. A load that fails (no leader, wrk cannot connect) ends the run and is
    recorded under ``error``, with the minutes measured before it."""
    if seconds < 1 or interval < 1:
        raise ValueError("growth needs at least one second and intervals of a second or more")
    name = system.name
    warm_up(system, workdir)
    nodes = system.node_ids()
    shape = system.put_shape()
    bodies = write_bodies(shape.bodies, workdir)
    sampler = Sampler(lambda: probe(system, nodes), every=sample_every)
    result: dict[str, Any] = {
        "seconds": seconds,
        "interval_s": interval,
        "concurrency": GROWTH_CONCURRENCY,
        "sample_every_s": sample_every,
        "load_average_start": _load_average(),
    }
    windows: list[Window] = []
    loads: list[dict[str, Any]] = []
    leaders: list[str] = []
    sampler.start()
    began = time.monotonic()
    try:
        remaining = seconds
        while remaining > 0:
            length = min(interval, remaining)
            try:
                leader = system.leader()
                target = Target(url=system.base_url(leader) + shape.path, connections=16)
                start = time.monotonic()
                load = run_load([target], seconds=length, method=shape.method, bodies_file=bodies)
            except (BenchmarkError, TimeoutError) as error:
                result["error"] = f"minute {len(loads) + 1}: {error}"
                progress(f"  {name:12} growth stopped: {error}")
                break
            windows.append(Window(start, time.monotonic()))
            sampler.sample_now()
            summary = dict(load.summary())
            loads.append(summary)
            leaders.append(leader)
            last = sampler.samples[-1]
            progress(
                f"  {name:12} growth minute {len(loads):>3}: {summary['ok_per_s']:>8.1f} req/s  "
                f"p50 {summary['p50_ms']:7.2f} ms  p99 {summary['p99_ms']:7.2f} ms  "
                f"failures {summary['failures']}  RSS MB "
                f"{'/'.join(str(_mb(v)) for v in last.rss.values())}  data MB "
                f"{_mb(sum(last.disk.values()))}"
            )
            remaining -= length
    finally:
        samples = sampler.stop()
        bodies.unlink(missing_ok=True)
    buckets = bucket(samples, windows)
    rows = [minute_row(i + 1, loads[i], buckets[i], leaders[i]) for i in range(len(windows))]
    baseline = [s for s in samples if not windows or s.at < windows[0].start]
    result["load_average_end"] = _load_average()
    result["baseline"] = minute_row(0, {}, baseline[-1:]) if baseline else None
    result["minutes"] = rows
    result["summary"] = summarise(rows)
    result["samples"] = [
        {
            "t": round(s.at - began, 2),
            "rss_mb": _by_node_mb(s.rss),
            "data_mb": _by_node_mb(dict(s.disk)),
        }
        for s in samples
    ]
    return result
