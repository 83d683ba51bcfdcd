"""FSM snapshot benchmark: how long a snapshot blocks the thread that applies commands.

    python -m benchmarks.fsm_bench [--dir DIR] [--rows N] [--kv-keys K] [--keep]

SQLite: builds a database of ``--rows`` (default 1,000,000) rows of about 100 bytes, applied as
commands of 1000-row INSERT scripts (about 100 MB), then reports

- begin_snapshot: its time on the calling thread (the reactor thread in the node);
- the writer, run in a worker thread: its time and MB/s, while the main thread keeps applying
  a one-row INSERT command in a loop. The longest gap between two consecutive applies (and
  the 99th percentile) shows whether the GIL, a lock or an I/O stall holds up the applying
  thread; the same loop without a snapshot running is measured first as the baseline;
- the WAL's size at its largest and right after, and the longest gap in the applies that
  follow the writer (when the grown WAL is checkpointed);
- restore: the time to restore the snapshot into a fresh FSM.

kv: the same for a map of ``--kv-keys`` (default 1,000,000) keys: begin_snapshot (copy on
write) and the writer's time with the gaps between puts meanwhile and after.

A measurement, not a test: figures depend on the machine and on its other load.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from graft.fsm.kv import KeyValueStateMachine
from graft.fsm.sqlite import SQLiteStateMachine

ROWS_PER_COMMAND = 1000
ROW_TEXT = 100
BASELINE_SECONDS = 2.0
AFTER_SECONDS = 2.0


def insert_script(first: int, count: int) -> bytes:
    """One command: an INSERT of ``count`` rows of ~100 bytes, as literal SQL values."""
    values = ",".join(f"({i},'{i:0{ROW_TEXT}d}')" for i in range(first, first + count))
    return f"INSERT INTO t (id, v) VALUES {values};".encode()


def build(fsm: SQLiteStateMachine, rows: int) -> tuple[int, float]:
    started = time.perf_counter()
    fsm.apply(b"CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL);", 1)
    index = 1
    for first in range(0, rows, ROWS_PER_COMMAND):
        index += 1
        fsm.apply(insert_script(first, min(ROWS_PER_COMMAND, rows - first)), index)
    return index, time.perf_counter() - started


class ApplyLoop:
    """Applies small commands on the calling thread and records the gaps between them."""

    def __init__(self, apply: Callable[[int], object], index: int) -> None:
        self._apply = apply
        self.index = index

    def run(self, until: Callable[[], bool]) -> list[float]:
        gaps: list[float] = []
        last = time.perf_counter()
        while True:
            done = until()
            self.index += 1
            self._apply(self.index)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now
            if done:
                return gaps


def for_seconds(seconds: float) -> Callable[[], bool]:
    deadline = time.perf_counter() + seconds
    return lambda: time.perf_counter() >= deadline


def in_thread(
    write: Callable[[BinaryIO], None], sink: BinaryIO
) -> tuple[threading.Thread, list[float]]:
    """Start ``write(sink)`` in a thread; the list gets the writer's elapsed seconds."""
    elapsed: list[float] = []

    def run() -> None:
        started = time.perf_counter()
        write(sink)
        elapsed.append(time.perf_counter() - started)

    thread = threading.Thread(target=run, name="snapshot-writer")
    thread.start()
    return thread, elapsed


def gap_summary(gaps: list[float]) -> str:
    ordered = sorted(gaps)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    over_5 = sum(gap > 0.005 for gap in gaps)
    over_20 = sum(gap > 0.020 for gap in gaps)
    return (
        f"{len(gaps)} applies, median gap {statistics.median(gaps) * 1e3:.2f} ms, "
        f"p99 {p99 * 1e3:.2f} ms, max {max(gaps) * 1e3:.1f} ms, "
        f"{over_5} gaps > 5 ms, {over_20} > 20 ms"
    )


def sqlite_bench(directory: Path, rows: int) -> dict[str, Any]:
    fsm = SQLiteStateMachine(data_dir=directory / "source")
    wal = directory / "source" / "fsm.sqlite3-wal"
    index, build_seconds = build(fsm, rows)
    size = (directory / "source" / "fsm.sqlite3").stat().st_size
    print(f"sqlite: built {rows:,} rows in {build_seconds:.1f} s, database {size / 1e6:.1f} MB")

    def one_row(i: int) -> None:
        fsm.apply(f"INSERT INTO t (v) VALUES ('late {i}');".encode(), i)

    loop = ApplyLoop(one_row, index)
    baseline = loop.run(for_seconds(BASELINE_SECONDS))
    print(f"  baseline, no snapshot: {gap_summary(baseline)}")

    started = time.perf_counter()
    write = fsm.begin_snapshot()
    begin_ms = (time.perf_counter() - started) * 1e3
    print(f"  begin_snapshot on the calling thread: {begin_ms:.2f} ms")

    image = directory / "snapshot.sqlite3"
    wal_peak = 0
    with image.open("wb") as sink:
        thread, elapsed = in_thread(write, sink)

        def writer_done() -> bool:
            nonlocal wal_peak
            if wal.exists():
                wal_peak = max(wal_peak, wal.stat().st_size)
            return not thread.is_alive()

        during = loop.run(writer_done)
        thread.join()
    image_size = image.stat().st_size
    worker = elapsed[0]
    print(
        f"  writer in a worker thread: {worker:.2f} s, {image_size / 1e6:.1f} MB, "
        f"{image_size / 1e6 / worker:.0f} MB/s"
    )
    print(f"  applies meanwhile on the main thread: {gap_summary(during)}")
    wal_after_writer = wal.stat().st_size
    after = loop.run(for_seconds(AFTER_SECONDS))
    print(
        f"  WAL: {wal_peak / 1e6:.1f} MB at most during the copy, "
        f"{wal_after_writer / 1e6:.1f} MB when the writer ended, "
        f"{wal.stat().st_size / 1e6:.1f} MB {AFTER_SECONDS:.0f} s later"
    )
    print(f"  applies after the writer: {gap_summary(after)}")

    blocking_started = time.perf_counter()
    fsm.snapshot(io.BytesIO())
    blocking = time.perf_counter() - blocking_started
    print(f"  for comparison, snapshot() run on the calling thread blocks it {blocking:.2f} s")
    fsm.close()

    target = SQLiteStateMachine(data_dir=directory / "target")
    started = time.perf_counter()
    with image.open("rb") as source:
        target.restore(source)
    restore_seconds = time.perf_counter() - started
    count = json.loads(target.query(b"SELECT count(*) FROM t;"))["rows"][0][0]
    target.close()
    print(f"  restore into a fresh FSM: {restore_seconds:.2f} s ({count:,} rows restored)")
    return {
        "rows": rows,
        "database_mb": size / 1e6,
        "begin_ms": begin_ms,
        "writer_s": worker,
        "writer_mb_per_s": image_size / 1e6 / worker,
        "max_gap_baseline_ms": max(baseline) * 1e3,
        "max_gap_during_ms": max(during) * 1e3,
        "max_gap_after_ms": max(after) * 1e3,
        "wal_peak_mb": wal_peak / 1e6,
        "blocking_snapshot_s": blocking,
        "restore_s": restore_seconds,
    }


def kv_bench(directory: Path, keys: int) -> dict[str, Any]:
    fsm = KeyValueStateMachine()
    for i in range(keys):
        fsm.apply(json.dumps({"op": "put", "key": f"key{i:08d}", "value": "v" * 80}).encode(), i)
    loop = ApplyLoop(
        lambda i: fsm.apply(b'{"op": "put", "key": "hot", "value": "%d"}' % i, i), keys
    )
    baseline = loop.run(for_seconds(BASELINE_SECONDS))
    started = time.perf_counter()
    write = fsm.begin_snapshot()
    begin_ms = (time.perf_counter() - started) * 1e3
    image = directory / "snapshot.kv"
    with image.open("wb") as sink:
        thread, elapsed = in_thread(write, sink)
        during = loop.run(lambda: not thread.is_alive())
        thread.join()
    print(f"kv: {keys:,} keys, snapshot {image.stat().st_size / 1e6:.1f} MB")
    print(f"  baseline, no snapshot: {gap_summary(baseline)}")
    after = loop.run(for_seconds(AFTER_SECONDS))
    print(f"  begin_snapshot (copy on write) on the calling thread: {begin_ms:.2f} ms")
    print(f"  writer in a worker thread: {elapsed[0]:.2f} s")
    print(f"  applies meanwhile on the main thread: {gap_summary(during)}")
    print(f"  applies after the writer (overlay merged back): {gap_summary(after)}")
    return {
        "keys": keys,
        "begin_ms": begin_ms,
        "writer_s": elapsed[0],
        "max_gap_baseline_ms": max(baseline) * 1e3,
        "max_gap_during_ms": max(during) * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="where to put the databases")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--kv-keys", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="graft-fsm-bench-", dir=args.dir))
    print(
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, in {directory}"
    )
    try:
        sqlite_bench(directory, args.rows)
        if args.kv_keys:
            kv_bench(directory, args.kv_keys)
    finally:
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
