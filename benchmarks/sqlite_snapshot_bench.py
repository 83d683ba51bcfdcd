"""What an SQLite snapshot costs on a large database: on the reactor, in total, at a follower's
install and at a restart.

In one process, with the real SQLite FSM and the real snapshot store (graft.storage: CRC,
fsync, rename), no network. Steps:

1. ``restore``: the FSM restores a prepared database (``--db``, e.g. 1 GB) as a follower's
   install does, after the store copied the received file in (``install``).
2. ``snapshot``: 10,000 commands (unique keys, 100-byte values) are applied, then a snapshot
   is taken the way the driver takes one: ``begin_snapshot`` on the calling thread (the
   reactor's part), the writer in a worker thread through ``SnapshotStore.save``, while the
   calling thread goes on applying commands; the latency of those applies is reported (a
   stall on the reactor shows there), and the CPU time of the snapshot's thread. The FSM's
   writer alone into a null sink is timed too (wall and CPU): the rest of a snapshot is the
   store's copy, CRC and fsync.
3. ``delta``: the same snapshot as a delta, as the driver takes it now
   (``begin_incremental_snapshot``, ``SnapshotStore.save_delta``): a whole snapshot first
   (the chain's start), then 10,000 changed rows (``--change insert``: new unique keys, as
   above; ``--change update``: existing rows picked at random across the whole table, the
   worst case for a delta), then the delta snapshot while commands go on. Reported: the
   reactor's part, the delta's bytes (what the store writes and fsyncs, plus the pages it
   folds), the thread's CPU and wall time, with the same apply latencies. The reactor's part
   is the capture's begin and its finish (``delta_reactor_ms``, both); its copy
   (``prepare``) runs in a worker thread while commands go on, as the driver runs it.
4. ``restart``: the store opens its snapshot (CRC) and the FSM restores it, then replays the
   10,000 commands after it, as a restarting node does (from the folded snapshot of 3).

Build a database first (about 20 s for 1 GB; unique keys, 100-byte values, an index)::

    python -m benchmarks.sqlite_snapshot_bench --build /tmp/big.sqlite3 --rows 6500000
    python -m benchmarks.sqlite_snapshot_bench --db /tmp/big.sqlite3 --dir /tmp/scratch
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from graft.fsm.sqlite import SQLiteStateMachine
from graft.raft.types import SnapshotMeta
from graft.storage.files import OSFileSystem
from graft.storage.snapshots import SnapshotStore

COMMANDS = 10_000
VALUE = "ab" * 50  # 100 bytes


def build(path: Path, rows: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("CREATE TABLE kv(id INTEGER PRIMARY KEY, k TEXT NOT NULL, v BLOB NOT NULL)")
    conn.execute(
        "INSERT INTO kv(k, v) WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s "
        f"WHERE i < {rows}) SELECT printf('k%015d', (i * 7919) % 10000019), randomblob(100) "
        "FROM s"
    )
    conn.execute("CREATE UNIQUE INDEX kv_k ON kv(k)")
    conn.close()


def command(i: int) -> bytes:
    return f"INSERT INTO kv(k, v) VALUES ('u{i:015d}', '{VALUE}')".encode()


def update(i: int, rows: int) -> bytes:
    # A row anywhere in the table (a multiplicative hash of i): each touches its own page.
    row = (i * 2654435761) % rows + 1
    return f"UPDATE kv SET v = '{VALUE}' WHERE id = {row}".encode()


class CountingSink:
    """Counts what a writer hands the store, passing it on."""

    def __init__(self, sink: BinaryIO) -> None:
        self.sink = sink
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        return self.sink.write(data)


class NullSink:
    def write(self, data: bytes) -> int:
        return len(data)


def fsm_rows(fsm: SQLiteStateMachine) -> int:
    answer = fsm.query(b"SELECT max(id) FROM kv")
    return int(answer.split(b"[[")[1].split(b"]]")[0])


def while_applying(
    fsm: SQLiteStateMachine, save: Callable[[], object], index: int, after: int = 2000
) -> tuple[float, list[float], int]:
    """Run ``save`` in a thread while this thread applies commands (then ``after`` more):
    its wall time, the applies' latencies, the last index."""
    done = threading.Event()
    result: list[object] = []

    def run() -> None:
        try:
            result.append(save())
        except BaseException as e:  # reported below
            result.append(e)
        done.set()

    started = time.perf_counter()
    threading.Thread(target=run).start()
    latencies: list[float] = []
    while not done.is_set():
        index += 1
        s = time.perf_counter()
        fsm.apply(command(index), index)
        latencies.append(time.perf_counter() - s)
    total = time.perf_counter() - started
    if isinstance(result[0], BaseException):
        raise result[0]
    for _ in range(after):
        index += 1
        s = time.perf_counter()
        fsm.apply(command(index), index)
        latencies.append(time.perf_counter() - s)
    return total, latencies, index


def run(db: Path, scratch: Path, change: str = "insert") -> dict[str, float]:
    out: dict[str, float] = {}
    files = OSFileSystem()
    node = scratch / "node"
    node.mkdir()
    store = SnapshotStore(files, node)
    fsm = SQLiteStateMachine(data_dir=node)
    index = 1

    # 1. a follower's install: the store copies the received file in, the FSM restores it.
    t = time.perf_counter()
    info = store.install(SnapshotMeta(index=index, term=1), "sqlite", db)
    out["install_store_s"] = time.perf_counter() - t
    with store.open(info) as source:  # the store's CRC check, not the FSM's
        t, cpu = time.perf_counter(), time.thread_time()
        fsm.restore(source)
    out["install_fsm_restore_s"] = time.perf_counter() - t
    out["install_fsm_restore_cpu_s"] = time.thread_time() - cpu
    out["install_total_s"] = out["install_store_s"] + out["install_fsm_restore_s"]

    # 2. a snapshot after 10,000 commands, while commands go on.
    for _ in range(COMMANDS):
        index += 1
        fsm.apply(command(index), index)
    latencies: list[float] = []
    t = time.perf_counter()
    for _ in range(2000):
        index += 1
        s = time.perf_counter()
        fsm.apply(command(index), index)
        latencies.append(time.perf_counter() - s)
    out["apply_idle_p50_ms"] = statistics.median(latencies) * 1000
    out["apply_idle_max_ms"] = max(latencies) * 1000

    t = time.perf_counter()
    write = fsm.begin_snapshot()
    out["snapshot_reactor_ms"] = (time.perf_counter() - t) * 1000
    done = threading.Event()
    result: list[object] = []

    def save() -> None:
        cpu = time.thread_time()
        try:
            result.append(store.save(SnapshotMeta(index=index, term=1), "sqlite", write))
        except BaseException as e:  # reported below
            result.append(e)
        out["snapshot_thread_cpu_s"] = time.thread_time() - cpu
        done.set()

    started = time.perf_counter()
    threading.Thread(target=save).start()
    latencies = []
    applied = 0
    while not done.is_set():
        index += 1
        s = time.perf_counter()
        fsm.apply(command(index), index)
        latencies.append(time.perf_counter() - s)
        applied += 1
    out["snapshot_total_s"] = time.perf_counter() - started
    if isinstance(result[0], BaseException):
        raise result[0]
    # The first applies after the writer ends (a checkpoint of what piled up shows here).
    for _ in range(2000):
        index += 1
        s = time.perf_counter()
        fsm.apply(command(index), index)
        latencies.append(time.perf_counter() - s)
    out["apply_during_p50_ms"] = statistics.median(latencies) * 1000
    out["apply_during_p99_ms"] = statistics.quantiles(latencies, n=100)[98] * 1000
    out["apply_during_max_ms"] = max(latencies) * 1000
    out["applied_during"] = applied
    out["fsm_bytes_after"] = fsm.size_bytes()

    t, cpu = time.perf_counter(), time.thread_time()
    fsm.begin_snapshot()(NullSink())  # type: ignore[arg-type]
    out["snapshot_writer_null_sink_s"] = time.perf_counter() - t
    out["snapshot_writer_null_sink_cpu_s"] = time.thread_time() - cpu

    # 3. the same snapshot as a delta: a whole one starts the chain, then 10,000 changed rows.
    index += 1
    first = fsm.begin_incremental_snapshot(None)
    t = time.perf_counter()
    store.save(SnapshotMeta(index=index, term=1), "sqlite", first.write, chain=first.token)
    out["delta_chain_start_whole_s"] = time.perf_counter() - t
    rows = fsm_rows(fsm)
    for i in range(COMMANDS):
        index += 1
        fsm.apply(update(i, rows) if change == "update" else command(index), index)
    t = time.perf_counter()
    plan = fsm.begin_incremental_snapshot(first.token)
    out["delta_begin_reactor_ms"] = (time.perf_counter() - t) * 1000
    assert plan.delta
    prepare_wall = 0.0
    prepare_latencies: list[float] = []
    if plan.prepare is not None and plan.finish is not None:
        # As the driver runs it: the capture's copy in a worker thread while commands go
        # on, then its finish on the commands' thread.
        prepare = plan.prepare

        def timed_prepare() -> None:
            cpu = time.thread_time()
            prepare()
            out["delta_prepare_cpu_s"] = time.thread_time() - cpu

        prepare_wall, prepare_latencies, index = while_applying(fsm, timed_prepare, index, after=0)
        t = time.perf_counter()
        plan.finish()
        out["delta_finish_reactor_ms"] = (time.perf_counter() - t) * 1000
    out["delta_reactor_ms"] = out["delta_begin_reactor_ms"] + out.get("delta_finish_reactor_ms", 0)
    counted: list[CountingSink] = []

    def write_delta(sink: BinaryIO) -> None:
        counted.append(CountingSink(sink))
        plan.write(counted[0])  # type: ignore[arg-type]

    delta_meta = SnapshotMeta(index=index, term=1)
    cpu_box: list[float] = []

    def save_delta() -> object:
        cpu = time.thread_time()
        try:
            return store.save_delta(
                delta_meta, "sqlite", write_delta, base_chain=first.token, chain=plan.token
            )
        finally:
            cpu_box.append(time.thread_time() - cpu)

    total, latencies, index = while_applying(fsm, save_delta, index)
    latencies += prepare_latencies
    out["delta_prepare_s"] = prepare_wall
    out["delta_total_s"] = total + prepare_wall
    out["delta_thread_cpu_s"] = cpu_box[0] + out.get("delta_prepare_cpu_s", 0.0)
    out["delta_bytes"] = counted[0].size
    out["delta_apply_during_p50_ms"] = statistics.median(latencies) * 1000
    out["delta_apply_during_p99_ms"] = statistics.quantiles(latencies, n=100)[98] * 1000
    out["delta_apply_during_max_ms"] = max(latencies) * 1000
    fsm.close()

    # 4. a restart: open the snapshot (CRC), restore, replay 10,000 commands.
    loaded = store.load()
    assert loaded is not None
    t = time.perf_counter()
    fsm = SQLiteStateMachine(data_dir=node)
    stored: BinaryIO = store.open(loaded)
    with stored:
        fsm.restore(stored)
    out["restart_restore_s"] = time.perf_counter() - t
    for _ in range(COMMANDS):
        index += 1
        fsm.apply(command(index), index)
    out["restart_total_s"] = time.perf_counter() - t
    fsm.close()
    out["db_mb"] = db.stat().st_size / 1e6
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", type=Path, help="build a database at this path and exit")
    parser.add_argument("--rows", type=int, default=6_500_000)
    parser.add_argument("--db", type=Path, help="the database to snapshot")
    parser.add_argument("--dir", type=Path, help="scratch dir (default: a temp dir)")
    parser.add_argument(
        "--change",
        choices=("insert", "update"),
        default="insert",
        help="the 10,000 changes before the delta: new rows, or rows spread over the table",
    )
    args = parser.parse_args()
    if args.build:
        build(args.build, args.rows)
        return
    if args.db is None:
        parser.error("--db or --build is required")
    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        print(f"load average {os.getloadavg()}, {os.cpu_count()} cores")
        for key, value in run(args.db, Path(scratch), args.change).items():
            print(f"{key:32} {value:10.3f}")
        print(f"load average {os.getloadavg()} at the end")
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
