"""Storage benchmark: group commit against a raw write+fsync loop, and reopen time.

    python -m benchmarks.storage_bench [--dir DIR] [--batches N] [--rounds R] [--records M]

For 100-byte entries it reports records per second, in the same run and on the same disk:

- raw: ``os.write`` of ``batch`` pre-encoded records (same size as the log's) + ``os.fsync``;
- group commit, sequential: one ``persist(hard_state, batch entries)`` per reactor turn on the
  real reactor, the next one issued when the previous fired (exactly ``batch`` records per
  fsync, directly comparable to raw);
- group commit, pipelined: four such persists in flight, as a loaded leader keeps proposing
  while the disk syncs; the writer thread coalesces them (records/fsync is reported);
- one fsync per record: ``append_sync`` of one entry at a time;

then the time to reopen (replay) a log of ``--records`` (default 1,000,000) records.
Each figure is the median of ``--rounds`` rounds. Temp files are removed at the end.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import defer, task
from twisted.internet.task import Clock

from graft.raft.types import Entry, HardState
from graft.storage import DurableLog
from graft.storage.records import encode_record

RECORD_DATA = 100
BATCH_SIZES = (1, 16, 64, 256)


def make_entries(first: int, count: int, term: int = 1) -> list[Entry]:
    payload = os.urandom(RECORD_DATA)
    return [Entry(index=i, term=term, data=payload) for i in range(first, first + count)]


def raw_rate(path: Path, batch: int, batches: int) -> float:
    chunk = b"".join(encode_record(e) for e in make_entries(1, batch))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        started = time.perf_counter()
        for _ in range(batches):
            os.write(fd, chunk)
            os.fsync(fd)
        elapsed = time.perf_counter() - started
    finally:
        os.close(fd)
        path.unlink()
    return batch * batches / elapsed


def open_log(
    path: Path, reactor: Any, on_fsync: Callable[[float], None] | None = None
) -> DurableLog:
    return DurableLog.open(
        path, node_id="bench", cluster="bench", reactor=reactor, on_fsync=on_fsync
    )


@defer.inlineCallbacks
def group_commit_rate(reactor: Any, path: Path, batch: int, batches: int, inflight: int) -> Any:
    """Records/s and records per fsync for persists of ``batch`` entries, ``inflight`` at once."""
    fsyncs: list[float] = []
    log = open_log(path, reactor, fsyncs.append)
    chunks = [make_entries(1 + k * batch, batch) for k in range(batches)]
    finished: defer.Deferred[None] = defer.Deferred()
    state = {"issued": 0, "fired": 0}

    def issue() -> None:
        k = state["issued"]
        state["issued"] += 1
        hard_state = HardState(term=1, vote="bench", commit=k * batch)
        log.persist(hard_state, chunks[k]).addCallback(fired)

    def fired(_: None) -> None:
        state["fired"] += 1
        if state["issued"] < batches:
            issue()
        elif state["fired"] == batches:
            finished.callback(None)

    started = time.perf_counter()
    for _ in range(min(inflight, batches)):
        issue()
    yield finished
    elapsed = time.perf_counter() - started
    yield log.close()
    shutil.rmtree(path)
    return batch * batches / elapsed, batch * batches / max(len(fsyncs), 1)


def sync_per_record_rate(reactor: Any, path: Path, count: int) -> float:
    log = DurableLog.open(path, node_id="bench", cluster="bench", reactor=Clock(), threaded=False)
    entries = make_entries(1, count)
    started = time.perf_counter()
    for entry in entries:
        log.append_sync([entry])
    elapsed = time.perf_counter() - started
    log.close()
    shutil.rmtree(path)
    return count / elapsed


def reopen_time(path: Path, records: int) -> tuple[float, float, int]:
    """Seconds to write, seconds to reopen, segments."""
    log = DurableLog.open(path, node_id="bench", cluster="bench", reactor=Clock(), threaded=False)
    started = time.perf_counter()
    chunk = 50_000
    for first in range(1, records + 1, chunk):
        log.append_sync(make_entries(first, min(chunk, records - first + 1)))
    log.set_hard_state_sync(HardState(term=1, vote="bench", commit=records))
    log.close()
    write_seconds = time.perf_counter() - started
    del log
    started = time.perf_counter()
    again = DurableLog.open(path, node_id="bench", cluster="bench", reactor=Clock(), threaded=False)
    open_seconds = time.perf_counter() - started
    assert again.last_index() == records, again.last_index()
    segments = len([n for n in os.listdir(path) if n.endswith(".seg")])
    again.close()
    return write_seconds, open_seconds, segments


@defer.inlineCallbacks
def main(reactor: Any, args: argparse.Namespace) -> Any:
    base = Path(tempfile.mkdtemp(prefix="graft-storage-bench-", dir=args.dir))
    try:
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"{platform.python_implementation()} {platform.python_version()}, "
            f"dir {base} ({_fs_type(base)})"
        )
        print(
            f"records of {RECORD_DATA} data bytes ({len(encode_record(make_entries(1, 1)[0]))}"
            f" on disk); median of {args.rounds} rounds of {args.batches} batches\n"
        )
        rows = []
        for batch in BATCH_SIZES:
            raw, seq, pipe, per_fsync = [], [], [], []
            for round_ in range(args.rounds):
                raw.append(raw_rate(base / f"raw-{batch}-{round_}", batch, args.batches))
                rate, _ = yield group_commit_rate(
                    reactor, base / f"seq-{batch}-{round_}", batch, args.batches, 1
                )
                seq.append(rate)
                rate, records_per_fsync = yield group_commit_rate(
                    reactor, base / f"pipe-{batch}-{round_}", batch, args.batches, 4
                )
                pipe.append(rate)
                per_fsync.append(records_per_fsync)
            rows.append(
                (
                    batch,
                    statistics.median(raw),
                    statistics.median(seq),
                    statistics.median(pipe),
                    statistics.median(per_fsync),
                )
            )
        print(
            "| batch | raw write+fsync rec/s | group commit rec/s | % of raw "
            "| pipelined (4 in flight) rec/s | % of raw | rec/fsync pipelined |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for batch, raw_r, seq_r, pipe_r, rpf in rows:
            print(
                f"| {batch} | {raw_r:,.0f} | {seq_r:,.0f} | {100 * seq_r / raw_r:.0f}% "
                f"| {pipe_r:,.0f} | {100 * pipe_r / raw_r:.0f}% | {rpf:.1f} |"
            )
        per_record = statistics.median(
            sync_per_record_rate(reactor, base / f"sync-{r}", min(args.batches, 2000))
            for r in range(args.rounds)
        )
        print(
            f"\none fsync per record (append_sync loop): {per_record:,.0f} rec/s "
            f"(raw at batch 1: {rows[0][1]:,.0f})"
        )
        if args.records:
            write_s, open_s, segments = reopen_time(base / "reopen", args.records)
            print(
                f"\nreopen of a {args.records:,}-record log ({segments} segments of 64 MiB): "
                f"{open_s:.2f} s (written in {write_s:.1f} s; page cache warm)"
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _fs_type(path: Path) -> str:
    best = ("?", "")
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                device, mount, fs_type = line.split()[:3]
                if str(path.resolve()).startswith(mount) and len(mount) >= len(best[1]):
                    best = (f"{fs_type} on {device}", mount)
    except OSError:
        pass
    return best[0]


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", default=None, help="where to put temp files (default: /tmp)")
    parser.add_argument("--batches", type=int, default=1000, help="batches per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--records", type=int, default=1_000_000, help="0 skips the reopen test")
    args = parser.parse_args()
    task.react(main, [args])


if __name__ == "__main__":
    run()
