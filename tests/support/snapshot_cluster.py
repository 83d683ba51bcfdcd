"""SnapshotCluster: three driver nodes on real DurableLogs (temp dirs, writes on the test's
Clock), for tests of snapshots end to end: taking, compacting, sending, installing and
restoring. Subclasses choose the FSM, the snapshot settings, each node's worker thread and
stop_process; KvSnapshotCluster is the kv FSM under the snapshot ratio rule."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock

from graft.driver.node import GraftNode
from graft.fsm import digest
from graft.fsm.kv import KeyValueStateMachine
from graft.metrics import NodeMetrics
from graft.raft.types import Membership
from graft.service import restore_fsm_from_snapshot
from graft.storage import DurableLog
from graft.testing.kv import put
from tests.support.driver import NODES, DriverCluster, MemoryDurable, Network

MEMBERS = Membership(voters=frozenset(NODES))
VALUE = "v" * 100

RunInThread = Callable[..., "Deferred[Any]"]


def run_now(f: Callable[..., Any], *args: Any) -> Deferred[Any]:
    """The worker thread, on the test's thread: a snapshot is written (or restored) at once."""
    return maybeDeferred(f, *args)


class SnapshotCluster(DriverCluster):
    """Call ``start_cluster()`` from setUp; ``self.leader_id`` then leads."""

    fsm_name = "kv"  # what restore_fsm_from_snapshot and the driver call the FSM

    def start_cluster(self) -> None:
        self.base = Path(self.mktemp())
        self.clock = Clock()
        self.network = Network(self.clock)
        self.storages = {}
        self.logs: dict[str, DurableLog] = {}
        self.fsms: dict[str, Any] = {}
        self.metrics: dict[str, NodeMetrics] = {}
        self.addCleanup(self._stop)
        for seed, node_id in enumerate(NODES):
            self.start(node_id, seed)
        self.leader_id = self.leader()
        self.written = 0

    # What a subclass may choose per node.

    def make_fsm(self, node_id: str) -> Any:
        raise NotImplementedError

    def snapshot_settings(self) -> dict[str, Any]:
        return {}

    def worker(self, node_id: str) -> RunInThread:
        return run_now

    def stop_process(self, node_id: str) -> Callable[[], None] | None:
        return None

    def start(self, node_id: str, seed: int) -> GraftNode:
        """Open the node's log, restore its FSM from its snapshot (as graft.service does) and
        start it."""
        log = DurableLog.open(
            self.base / node_id,
            node_id=node_id,
            cluster="test",
            segment_bytes=4096,
            reactor=self.clock,
            threaded=False,
        )
        fsm = self.make_fsm(node_id)
        restore_fsm_from_snapshot(log, fsm, self.fsm_name)
        self.logs[node_id], self.fsms[node_id] = log, fsm
        self.metrics[node_id] = NodeMetrics()
        incoming = self.base / f"{node_id}-incoming"
        incoming.mkdir(parents=True, exist_ok=True)
        extra: dict[str, Any] = {}
        stop_process = self.stop_process(node_id)
        if stop_process is not None:
            extra["stop_process"] = stop_process
        return self.add_node(
            node_id,
            MEMBERS,
            seed=seed,
            fsm=lambda: fsm,
            storage=cast(Callable[[], MemoryDurable], lambda: log),
            run_in_thread=self.worker(node_id),
            incoming_dir=incoming,
            metrics=self.metrics[node_id],
            fsm_name=self.fsm_name,
            **self.snapshot_settings(),
            **extra,
        )

    def agree(self, node_id: str) -> None:
        """``node_id`` applied what the leader did and holds the same state (digest)."""
        leader = self.network.nodes[self.leader_id]
        self.wait_applied(node_id, leader.status().applied, seconds=10)
        self.assertEqual(digest(self.fsms[node_id]), digest(self.fsms[self.leader_id]))


class KvSnapshotCluster(SnapshotCluster):
    """The kv FSM (its forked writer at any size) under the snapshot ratio rule."""

    def make_fsm(self, node_id: str) -> KeyValueStateMachine:
        return KeyValueStateMachine(fork_min_keys=0)

    def snapshot_settings(self) -> dict[str, Any]:
        return {"snapshot_entries": 50, "snapshot_log_ratio": 4.0, "snapshot_trailing": 0}

    def write(self, count: int) -> None:
        """``count`` puts of new keys through the leader, in batches, each applied."""
        node = self.network.nodes[self.leader_id]
        for start in range(self.written, self.written + count, 50):
            batch = [put(f"key{i:06d}", VALUE) for i in range(start, start + 50)]
            results = self.result(node.submit(batch))
            self.assertIsInstance(results, list, str(results))
        self.written += count

    def cut_off_then_snapshot(self, node_id: str, count: int = 1000) -> int:
        """Isolate ``node_id`` while the leader writes ``count`` keys and compacts past it,
        then heal; returns the leader's snapshot index."""
        behind = self.logs[node_id].last_index()
        self.network.isolate(node_id)
        self.write(count)
        leader_log = self.logs[self.leader_id]
        self.wait_until(lambda: leader_log.first_index() > behind + 1, "the leader compacts")
        self.network.heal()
        return leader_log.snapshot_meta().index
