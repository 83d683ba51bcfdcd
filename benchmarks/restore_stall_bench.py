"""How long a follower's reactor stalls while its FSM restores a received snapshot: on the
reactor thread (how Graft restored before graft.driver.restores) against in a worker thread
(how it restores now).

In one process, on the real Twisted reactor, no network: the kv FSM is filled with ``--keys``
unique keys (100-byte values) and its snapshot written once (format graft.kv/2). Each round
restores that file into an FSM that already holds the state (as a follower behind does, so
the old map is released inside the restore), in three modes, interleaved so that changes in
the machine's load hit all three:

- ``reactor``: called from the reactor, as the driver did;
- ``thread``: through deferToThread, as the driver's run_in_thread does now;
- ``idle``: nothing for a second: the gaps the loaded machine causes by itself.

Meanwhile a probe (a LoopingCall every 5 ms, standing for the heartbeats, /status and /metrics
the reactor serves) records the gaps between its calls. Reported per mode: the longest gap
(the longest stall), the gaps over 50 ms, the probe's turns and the restore's duration. With
``--db`` (a SQLite database, see benchmarks.sqlite_snapshot_bench --build) the SQLite FSM's
restore is measured the same way.

    python -m benchmarks.restore_stall_bench [--keys 500000] [--rounds 3] [--db PATH]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import ensureDeferred, inlineCallbacks
from twisted.internet.task import LoopingCall, deferLater
from twisted.internet.threads import deferToThread

from graft.fsm.kv import KeyValueStateMachine

reactor: Any = _reactor
PROBE_SECONDS = 0.005
SLOW_GAP = 0.05
VALUE = "v" * 100
MODES = ("reactor", "thread", "idle")


class StallProbe:
    """A LoopingCall every PROBE_SECONDS: the gaps between its calls."""

    def __init__(self) -> None:
        self.gaps: list[float] = []
        self._last = 0.0
        self._loop = LoopingCall(self._tick)

    def _tick(self) -> None:
        now = time.perf_counter()
        self.gaps.append(now - self._last)
        self._last = now

    def start(self) -> None:
        self._last = time.perf_counter()
        self._loop.start(PROBE_SECONDS, now=False)

    def stop(self) -> None:
        self._loop.stop()
        self._tick()  # the gap up to now counts too


def fill_kv(keys: int, path: Path) -> None:
    fsm = KeyValueStateMachine(fork_min_keys=keys + 1)  # the thread writer: no fork here
    batch = 10_000
    for start in range(0, keys, batch):
        for i in range(start, min(keys, start + batch)):
            fsm.apply(b'{"op":"put","key":"key-%012d","value":"%s"}' % (i, VALUE.encode()), i + 1)
    writer = fsm.begin_snapshot()
    with path.open("wb") as sink:
        writer(sink)


def kv_restore(path: Path) -> Callable[[], object]:
    """Restores into one FSM that already holds the state (a follower behind holds one): the
    old map is released inside the restore, as on a real follower."""
    fsm = KeyValueStateMachine()
    with path.open("rb") as source:
        fsm.restore(source)

    def restore() -> object:
        with path.open("rb") as source:
            fsm.restore(source)
        return None

    return restore


def sqlite_restore(db: Path, scratch: Path) -> Callable[[], object]:
    from graft.fsm.sqlite import SQLiteStateMachine

    rounds = iter(range(1_000_000))

    def restore() -> object:
        node = scratch / f"sqlite-{next(rounds)}"
        node.mkdir()
        fsm = SQLiteStateMachine(data_dir=node)
        with db.open("rb") as source:
            fsm.restore(source)
        fsm.close()
        shutil.rmtree(node)
        return None

    return restore


@inlineCallbacks
def one_round(mode: str, restore: Callable[[], object]) -> Any:
    probe = StallProbe()
    probe.start()
    yield deferLater(reactor, 0.1, lambda: None)  # the probe settles
    started = time.perf_counter()
    if mode == "reactor":
        yield deferLater(reactor, 0, restore)
    elif mode == "thread":
        yield deferToThread(restore)
    else:  # idle: the probe alone, for the machine's own scheduling gaps
        yield deferLater(reactor, 1.0, lambda: None)
    took = time.perf_counter() - started
    yield deferLater(reactor, 0.05, lambda: None)
    probe.stop()
    return {
        "mode": mode,
        "restore_s": took,
        "max_gap_ms": max(probe.gaps) * 1e3,
        "slow_gaps": sum(1 for g in probe.gaps if g > SLOW_GAP),
        "turns": len(probe.gaps),
    }


def report(name: str, results: list[dict[str, Any]]) -> None:
    for mode in MODES:
        rows = [r for r in results if r["mode"] == mode]
        gaps = [r["max_gap_ms"] for r in rows]
        print(
            f"{name:7} {mode:8} longest stall {statistics.median(gaps):7.1f} ms median "
            f"({', '.join(f'{g:.0f}' for g in gaps)}); gaps > {SLOW_GAP * 1e3:.0f} ms "
            f"{statistics.median(r['slow_gaps'] for r in rows):.0f}; probe turns "
            f"{statistics.median(r['turns'] for r in rows):.0f}; restore "
            f"{statistics.median(r['restore_s'] for r in rows):.2f} s"
        )


async def main(args: argparse.Namespace) -> None:
    print(
        f"cores {os.cpu_count()}, loadavg {os.getloadavg()}, "
        f"switchinterval {sys.getswitchinterval() * 1e3:.0f} ms"
    )
    with tempfile.TemporaryDirectory(prefix="graft-restore-stall-") as tmp:
        scratch = Path(tmp)
        restores: list[tuple[str, Callable[[], object]]] = []
        if args.keys:
            snap = scratch / "kv.snap"
            t0 = time.perf_counter()
            fill_kv(args.keys, snap)
            print(
                f"kv: {args.keys} keys, snapshot {snap.stat().st_size / 2**20:.0f} MiB "
                f"(built in {time.perf_counter() - t0:.0f} s)"
            )
            restores.append(("kv", kv_restore(snap)))
        if args.db:
            print(f"sqlite: {args.db.stat().st_size / 2**20:.0f} MiB database")
            restores.append(("sqlite", sqlite_restore(args.db, scratch)))
        for name, restore in restores:
            results = []
            for _ in range(args.rounds):  # interleaved, so load changes hit both modes
                for mode in MODES:
                    results.append(await one_round(mode, restore))
            report(name, results)
    print(f"loadavg after {os.getloadavg()}")


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, default=500_000, help="kv keys (0: no kv run)")
    parser.add_argument("--db", type=Path, help="a SQLite database to restore as well")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    failures: list[Any] = []

    def done(result: object) -> None:
        if result is not None and hasattr(result, "printTraceback"):
            failures.append(result)
            result.printTraceback()
        reactor.stop()

    reactor.callWhenRunning(lambda: ensureDeferred(main(args)).addBoth(done))
    reactor.run()
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    run()
