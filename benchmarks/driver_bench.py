"""Entries per second replicated by the real node runtime, without HTTP (issue 4's figure).

    python -m benchmarks.driver_bench [--seconds 10] [--batch 1000] [--inflight 4] [--profile F]

A 3-node cluster on 127.0.0.1 with storage (fsync on) and mutual TLS on. Two followers are
``twist graft`` processes; the leader is built in this process by the same composition root
(``graft.service.make_service``), so proposals go straight into its driver
(``GraftNode.submit``) with no HTTP, JSON batch parsing or client in the way. Each proposal is
a batch of ``--batch`` 100-byte kv puts; ``--inflight`` batches are kept outstanding.
``--fsm counting`` swaps the kv FSM for one that only counts, to show what Raft, storage and
transport cost without the FSM. An entry
counts once the leader has answered it: committed (durable on a majority, the leader's own
fsync included) and applied to the leader's FSM. ``--profile F`` writes a cProfile of the
leader's process for the measured window.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, cast

from twisted.internet import defer, task

from graft.config import load_config
from graft.driver.node import GraftNode
from graft.service import GraftService, make_service
from graft.testing.cluster import LocalCluster

LEADER = "n1"
FOLLOWERS = ("n2", "n3")
ENTRY_BYTES = 100
FSMS = {
    "kv": "graft.fsm.kv:KeyValueStateMachine",
    "counting": "benchmarks.counting_fsm:CountingStateMachine",
}


def _commands(batch: int, round_: int) -> list[bytes]:
    """``batch`` kv puts of exactly ENTRY_BYTES bytes each, distinct keys per round."""
    empty = len(json.dumps({"op": "put", "key": "k000000-000000", "value": ""}))
    value = "v" * (ENTRY_BYTES - empty)
    return [
        json.dumps({"op": "put", "key": f"k{round_:06d}-{i:06d}", "value": value}).encode()
        for i in range(batch)
    ]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _wait_leader(reactor: Any, node: GraftNode, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        leader = node.leader_id()
        if leader == LEADER:
            return
        if leader is not None:
            try:
                await node.transfer_leadership(LEADER)
            except Exception as e:  # retried until the deadline
                print(f"transfer to {LEADER} not done yet: {e}")
        if time.monotonic() > deadline:
            raise SystemExit(f"{LEADER} did not become leader within {timeout} s")
        await task.deferLater(reactor, 0.1, lambda: None)


async def _measure(
    reactor: Any,
    node: GraftNode,
    followers: list[int],
    *,
    seconds: float,
    batch: int,
    inflight: int,
    profile: str | None,
) -> dict[str, float]:
    batches = [_commands(batch, r) for r in range(8)]
    issued = [0]
    counting = [False]
    committed = [0]
    failed = [0]
    latencies: list[float] = []
    stopping = [False]
    outstanding = [0]
    drained: defer.Deferred[None] = defer.Deferred()

    def issue() -> None:
        commands = batches[issued[0] % len(batches)]
        issued[0] += 1
        outstanding[0] += 1
        started = time.perf_counter()
        d = node.submit(commands)

        def done(results: list[Any]) -> None:
            if counting[0]:
                committed[0] += sum(1 for r in results if r.error is None)
                latencies.append(time.perf_counter() - started)

        def error(f: Any) -> None:
            failed[0] += 1
            print(f"batch failed: {f.getErrorMessage()}")

        def next_(_: object) -> None:
            outstanding[0] -= 1
            if not stopping[0]:
                issue()
            elif outstanding[0] == 0 and not drained.called:
                drained.callback(None)

        d.addCallbacks(done, error)
        d.addBoth(next_)

    for _ in range(inflight):
        issue()
    await task.deferLater(reactor, 2.0, lambda: None)  # warm up
    profiler = cProfile.Profile() if profile else None
    counting[0] = True
    if profiler is not None:
        profiler.enable()
    cpu0 = time.process_time()
    followers0 = [_cpu_seconds(pid) for pid in followers]
    started = time.perf_counter()
    await task.deferLater(reactor, seconds, lambda: None)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    follower_cpu = [_cpu_seconds(pid) - c for pid, c in zip(followers, followers0, strict=True)]
    counting[0] = False
    if profiler is not None and profile:
        profiler.disable()
        profiler.dump_stats(profile)
    stopping[0] = True
    await drained
    return {
        "entries_per_s": committed[0] / elapsed,
        "failed": failed[0],
        "p50_ms": 1000 * statistics.median(latencies) if latencies else float("nan"),
        "leader_cpu": cpu / elapsed,
        "follower_cpu": max(follower_cpu) / elapsed,
    }


async def _main(reactor: Any, args: argparse.Namespace, cluster: LocalCluster) -> None:
    cfg = load_config(cluster.config_path)
    service = cast(GraftService, make_service(cfg, LEADER, reactor=reactor))
    service.startService()
    try:
        await _wait_leader(reactor, service.node, timeout=30)
        print(
            f"leader {LEADER} in this process; followers {', '.join(FOLLOWERS)} as twist graft; "
            f"{ENTRY_BYTES}-byte kv puts, {args.fsm} FSM, batches of {args.batch}, "
            f"{args.inflight} in flight, "
            f"{args.seconds:g} s per round; fsync and mutual TLS on"
        )
        rows = []
        for round_ in range(args.rounds):
            result = await _measure(
                reactor,
                service.node,
                [cluster.processes[f].pid for f in FOLLOWERS],
                seconds=args.seconds,
                batch=args.batch,
                inflight=args.inflight,
                profile=args.profile if round_ == 0 else None,
            )
            rows.append(result)
            print(
                f"round {round_ + 1}: {result['entries_per_s']:,.0f} entries/s, "
                f"batch p50 {result['p50_ms']:.1f} ms, "
                f"CPU leader {100 * result['leader_cpu']:.0f}% "
                f"follower {100 * result['follower_cpu']:.0f}%, "
                f"{result['failed']:.0f} failed batches; load {os.getloadavg()[0]:.1f}"
            )
        rates = [r["entries_per_s"] for r in rows]
        print(
            f"median of {len(rows)}: {statistics.median(rates):,.0f} entries/s committed and "
            f"applied (target 50,000); {os.cpu_count()} cores"
        )
    finally:
        await service.stopService()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--inflight", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", default=None, help="write the leader's cProfile here")
    parser.add_argument(
        "--fsm",
        choices=sorted(FSMS),
        default="kv",
        help="kv: the key-value FSM applies every put; counting: an FSM that only counts, "
        "for Raft + storage + transport alone",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="graft-driver-bench-") as tmp:
        cluster = LocalCluster(Path(tmp), (LEADER, *FOLLOWERS), fsm=FSMS[args.fsm])
        try:
            cluster.start(*FOLLOWERS)
            # The leader's relative paths (data_dir, certs) resolve against the config file.
            task.react(lambda reactor: defer.Deferred.fromCoroutine(_main(reactor, args, cluster)))
        finally:
            cluster.close()


if __name__ == "__main__":
    main()
