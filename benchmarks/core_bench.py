"""Throughput of the Raft core alone: entries committed per second in an in-memory 3-node
cluster, proposals in batches of 100 entries of 100 bytes, no I/O and no checks.

    python -m benchmarks.core_bench [--entries N] [--batch B] [--size S] [--profile]

Each round proposes one batch on the leader and runs the cluster until it is quiet, the way a
driver would: persist each Ready into MemoryStorage, deliver its messages, advance.
"""

from __future__ import annotations

import argparse
import time
from collections import deque
from random import Random

from graft.raft.config import RaftConfig
from graft.raft.memory import MemoryStorage
from graft.raft.messages import Message, TimeoutNow
from graft.raft.node import RaftNode
from graft.raft.ready import Role
from graft.raft.types import Membership


class Bench:
    def __init__(self, ids: list[str]) -> None:
        membership = Membership(voters=frozenset(ids))
        self.storages = {nid: MemoryStorage() for nid in ids}
        self.nodes = {
            nid: RaftNode(RaftConfig(id=nid, bootstrap=membership), self.storages[nid], Random(k))
            for k, nid in enumerate(ids)
        }
        self.queue: deque[Message] = deque()
        self.applied = 0

    def drive(self, nid: str) -> None:
        node = self.nodes[nid]
        storage = self.storages[nid]
        while node.has_ready():
            ready = node.ready()
            if ready.hard_state is not None:
                storage.set_hard_state(ready.hard_state)
            if ready.entries:
                storage.append(ready.entries)
            self.queue.extend(ready.messages)
            if nid == "n1":
                self.applied += len(ready.committed_entries)
            node.advance(ready)

    def run_until_quiet(self) -> None:
        for nid in self.nodes:
            self.drive(nid)
        queue = self.queue
        while queue:
            msg = queue.popleft()
            self.nodes[msg.to].step(msg)
            self.drive(msg.to)


def run(entries: int, batch: int, size: int) -> float:
    bench = Bench(["n1", "n2", "n3"])
    leader = bench.nodes["n1"]
    leader.step(TimeoutNow(term=0, sender="n1", to="n1"))
    bench.run_until_quiet()
    assert leader.role is Role.LEADER
    payload = b"x" * size
    datas = [payload] * batch
    start_commit = leader.log.committed
    started = time.perf_counter()
    for _ in range(entries // batch):
        leader.propose_batch(datas)
        bench.run_until_quiet()
    elapsed = time.perf_counter() - started
    committed = leader.log.committed - start_commit
    assert committed == (entries // batch) * batch, committed
    for node in bench.nodes.values():
        assert node.log.committed == leader.log.committed
    return committed / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.core_bench")
    parser.add_argument("--entries", type=int, default=300_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    if args.profile:
        import cProfile
        import pstats

        with cProfile.Profile() as prof:
            run(args.entries, args.batch, args.size)
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)
        return
    rate = run(args.entries, args.batch, args.size)
    print(
        f"core_bench: {rate:,.0f} entries/s committed "
        f"(3 nodes, in memory, batches of {args.batch} x {args.size} bytes)"
    )


if __name__ == "__main__":
    main()
