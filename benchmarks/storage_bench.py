"""Storage benchmark: group commit against a raw write+fsync loop, and reopen time.

    python -m benchmarks.storage_bench [--dir DIR] [--batches N] [--rounds R] [--records M]
                                       [--cpu C]

For 100-byte entries it reports records per second, in the same run and on the same disk:

- raw: a plain loop of ``os.write`` of ``batch`` pre-encoded records + ``os.fsync``: the same
  number of records, of the same on-disk size (129 bytes), per fsync as the log writes;
- group commit, sequential: one ``persist(hard_state, batch entries)`` at a time on the real
  reactor, the next one issued when the previous fired: exactly ``batch`` records per fsync,
  and every cost of the log (encoding, thread hand-offs, Deferreds) is on the critical path.
  Raw and sequential alternate in blocks of ``--batches / 10`` batches within a round (the
  log stays open), so that both see the same disk: its fsync latency drifts by tens of
  percent within seconds on a shared virtual disk;
- group commit under load, two ways: *stream*, one persist of ``batch`` entries per reactor
  turn while fewer than 8 are outstanding (a leader turning proposals into Readys while the
  disk syncs; ``persist`` encodes on the reactor, overlapping the writer's fsync), and *4 in
  flight*, a closed loop where each completion issues the next. The writer merges whatever
  queued up, so records per fsync grow beyond ``batch``: each is compared with a raw loop at
  the records per fsync it reached (rounded), measured in the same round, not with raw at
  ``batch``;
- one fsync per record: ``append_sync`` of one entry at a time;

then a per-batch breakdown of the sequential case in microseconds (raw write and fsync, the
log's fsync, encoding a batch, and the rest: hand-offs between threads, the write call,
Deferreds), and the time to reopen (replay) a log of ``--records`` (default 1,000,000)
records. Each figure is the median of ``--rounds`` rounds. Temp files are removed at the end.

``--cpu C`` runs everything on CPU ``C`` (raw loop, reactor and writer thread alike): the two
thread hand-offs of each batch then cost a context switch instead of waking an idle CPU, which
on this virtual machine takes about 20 us each way.

The target (issue #3): group commit at >= 60% of raw at the same batch size.
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
from graft.storage.records import encode_record, encode_records

RECORD_DATA = 100
BATCH_SIZES = (1, 16, 64, 256)


def make_entries(first: int, count: int, term: int = 1) -> list[Entry]:
    payload = os.urandom(RECORD_DATA)
    return [Entry(index=i, term=term, data=payload) for i in range(first, first + count)]


def raw_rate(path: Path, batch: int, batches: int) -> tuple[float, float, float]:
    """Records/s, mean write seconds, mean fsync seconds."""
    chunk = b"".join(encode_record(e) for e in make_entries(1, batch))
    writes, fsyncs = [], []
    clock = time.perf_counter
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        started = clock()
        for _ in range(batches):
            before = clock()
            os.write(fd, chunk)
            written = clock()
            os.fsync(fd)
            writes.append(written - before)
            fsyncs.append(clock() - written)
        elapsed = clock() - started
    finally:
        os.close(fd)
        path.unlink()
    return batch * batches / elapsed, statistics.mean(writes), statistics.mean(fsyncs)


def encode_seconds(batch: int) -> float:
    """Best time to encode one batch (what ``persist`` does on the reactor)."""
    entries = make_entries(1, batch)
    best = float("inf")
    for _ in range(200):
        started = time.perf_counter()
        encode_records(entries)
        best = min(best, time.perf_counter() - started)
    return best


def open_log(
    path: Path, reactor: Any, on_fsync: Callable[[float], None] | None = None
) -> DurableLog:
    return DurableLog.open(
        path, node_id="bench", cluster="bench", reactor=reactor, on_fsync=on_fsync
    )


@defer.inlineCallbacks
def group_commit_rate(
    reactor: Any,
    path: Path,
    batch: int,
    batches: int,
    inflight: int,
    *,
    stream: bool = False,
) -> Any:
    """Records/s, records per fsync and the mean log fsync seconds for persists of
    ``batch`` entries, at most ``inflight`` not yet durable.

    Closed loop (default): ``inflight`` persists at once, and each completion issues the next.
    ``stream``: one persist per reactor turn while fewer than ``inflight`` are outstanding,
    like a leader turning proposals into Readys turn after turn while the disk syncs.
    """
    fsyncs: list[float] = []
    log = open_log(path, reactor, fsyncs.append)
    chunks = [make_entries(1 + k * batch, batch) for k in range(batches)]
    finished: defer.Deferred[None] = defer.Deferred()
    state = {"issued": 0, "fired": 0, "pumping": 0}

    def issue() -> None:
        k = state["issued"]
        state["issued"] += 1
        hard_state = HardState(term=1, vote="bench", commit=k * batch)
        log.persist(hard_state, chunks[k]).addCallback(fired)

    def pump() -> None:
        state["pumping"] = 0
        if state["issued"] < batches and state["issued"] - state["fired"] < inflight:
            issue()
            state["pumping"] = 1
            reactor.callLater(0, pump)

    def fired(_: None) -> None:
        state["fired"] += 1
        if state["fired"] == batches:
            finished.callback(None)
        elif stream:
            if not state["pumping"]:
                pump()
        elif state["issued"] < batches:
            issue()

    started = time.perf_counter()
    if stream:
        pump()
    else:
        for _ in range(min(inflight, batches)):
            issue()
    yield finished
    elapsed = time.perf_counter() - started
    yield log.close()
    shutil.rmtree(path)
    return (
        batch * batches / elapsed,
        batch * batches / max(len(fsyncs), 1),
        statistics.mean(fsyncs) if fsyncs else 0.0,
    )


@defer.inlineCallbacks
def sequential_pair(reactor: Any, path: Path, batch: int, batches: int, blocks: int = 10) -> Any:
    """Raw loop and sequential group commit, alternating in ``blocks`` blocks: raw rec/s, raw
    mean write and fsync seconds, group commit rec/s and its mean fsync seconds."""
    fsyncs: list[float] = []
    log = open_log(path / "log", reactor, fsyncs.append)
    chunks = [make_entries(1 + k * batch, batch) for k in range(batches)]
    per_block = max(batches // blocks, 1)
    raw_seconds = log_seconds = 0.0
    raw_records = log_records = 0
    writes: list[float] = []
    raw_fsyncs: list[float] = []
    clock = time.perf_counter
    k = 0
    while k < batches:
        count = min(per_block, batches - k)
        rate, write_s, fsync_s = raw_rate(path / "raw", batch, count)
        raw_seconds += batch * count / rate
        raw_records += batch * count
        writes.append(write_s)
        raw_fsyncs.append(fsync_s)
        started = clock()
        yield _one_at_a_time(log, chunks, batch, k, k + count)
        log_seconds += clock() - started
        log_records += batch * count
        k += count
    yield log.close()
    shutil.rmtree(path)
    return (
        raw_records / raw_seconds,
        statistics.mean(writes),
        statistics.mean(raw_fsyncs),
        log_records / log_seconds,
        statistics.mean(fsyncs) if fsyncs else 0.0,
    )


def _one_at_a_time(
    log: DurableLog, chunks: list[list[Entry]], batch: int, start: int, stop: int
) -> defer.Deferred[None]:
    """Persist chunks[start:stop], each issued from the callback of the previous one."""
    finished: defer.Deferred[None] = defer.Deferred()

    def issue(_: object, j: int) -> None:
        if j == stop:
            finished.callback(None)
            return
        hard_state = HardState(term=1, vote="bench", commit=j * batch)
        log.persist(hard_state, chunks[j]).addCallback(issue, j + 1)

    issue(None, start)
    return finished


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
        if args.cpu is not None:
            os.sched_setaffinity(0, {args.cpu})  # this thread; the log's writer inherits it
        pinned = f", all on CPU {args.cpu}" if args.cpu is not None else ""
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"{platform.python_implementation()} {platform.python_version()}, "
            f"dir {base} ({_fs_type(base)}){pinned}; load average {_load()}"
        )
        print(
            f"records of {RECORD_DATA} data bytes ({len(encode_record(make_entries(1, 1)[0]))}"
            f" on disk); median of {args.rounds} rounds of {args.batches} batches\n"
        )
        rows: list[list[float]] = []
        raw_at: dict[int, float] = {}  # raw rec/s by records per fsync
        breakdown = []
        for batch in BATCH_SIZES:
            raw: list[float] = []
            raw_write: list[float] = []
            raw_fsync: list[float] = []
            seq: list[float] = []
            seq_fsync: list[float] = []
            loaded: list[float] = []
            loaded_rpf: list[float] = []
            coalesced: list[float] = []
            coalesced_rpf: list[float] = []
            for round_ in range(args.rounds):
                pair_dir = base / f"seq-{batch}-{round_}"
                pair_dir.mkdir()
                rate, write_s, fsync_s, seq_rate, seq_fsync_s = yield sequential_pair(
                    reactor, pair_dir, batch, args.batches
                )
                raw.append(rate)
                raw_write.append(write_s)
                raw_fsync.append(fsync_s)
                seq.append(seq_rate)
                seq_fsync.append(seq_fsync_s)
                for inflight, stream, rates, rpfs in (
                    (8, True, loaded, loaded_rpf),
                    (4, False, coalesced, coalesced_rpf),
                ):
                    rate, records_per_fsync, _ = yield group_commit_rate(
                        reactor,
                        base / f"pipe{inflight}-{batch}-{round_}",
                        batch,
                        args.batches,
                        inflight,
                        stream=stream,
                    )
                    rates.append(rate)
                    rpfs.append(records_per_fsync)
            med = statistics.median
            raw_at[batch] = med(raw)
            row = [batch, med(raw), med(seq)]
            for rates, rpfs in ((loaded, loaded_rpf), (coalesced, coalesced_rpf)):
                size = round(med(rpfs))
                if size not in raw_at:
                    raw_at[size] = med(
                        raw_rate(base / f"raw-{size}-{r}", size, args.batches)[0]
                        for r in range(args.rounds)
                    )
                row += [med(rpfs), med(rates), raw_at[size]]
            rows.append(row)
            seq_batch = batch / med(seq)
            encode = encode_seconds(batch)
            breakdown.append(
                (
                    batch,
                    batch / med(raw),
                    med(raw_write),
                    med(raw_fsync),
                    seq_batch,
                    med(seq_fsync),
                    encode,
                    seq_batch - med(seq_fsync) - encode,
                )
            )
        print(
            "| batch | raw rec/s | sequential rec/s | % of raw "
            "| stream: rec/fsync | rec/s | raw at that rec/fsync | % of raw "
            "| 4 in flight: rec/fsync | rec/s | raw at that rec/fsync | % of raw |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for size_f, raw_r, seq_r, *pipelined in rows:
            cells = [
                f"{size_f:.0f}",
                f"{raw_r:,.0f}",
                f"{seq_r:,.0f}",
                f"{100 * seq_r / raw_r:.0f}%",
            ]
            for rpf, rate, raw_same in (pipelined[:3], pipelined[3:]):
                cells += [
                    f"{rpf:.1f}",
                    f"{rate:,.0f}",
                    f"{raw_same:,.0f}",
                    f"{100 * rate / raw_same:.0f}%",
                ]
            print("| " + " | ".join(cells) + " |")
        print(
            "\nper batch, sequential (us): raw = write + fsync (+ loop); "
            "log = its fsync + encoding + the rest\n"
        )
        print("| batch | raw | raw write | raw fsync | log | log fsync | encode | rest |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for batch, *seconds in breakdown:
            print(f"| {batch} | " + " | ".join(f"{1e6 * x:.0f}" for x in seconds) + " |")
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
        print(f"\nload average at the end: {_load()}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


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
    parser.add_argument("--cpu", type=int, default=None, help="run everything on this CPU")
    args = parser.parse_args()
    task.react(main, [args])


if __name__ == "__main__":
    run()
