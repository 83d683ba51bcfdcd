"""Snapshots end to end in the driver: nodes on real DurableLogs (temp dirs, writes on the
Clock) with the kv FSM's forked writer and the ratio rule. A follower cut off while the leader
compacts its log catches up by the leader's snapshot; a node restarted after snapshotting
rebuilds its state from its own snapshot and the log after it."""

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


def run_now(f: Callable[..., Any], *args: Any) -> Deferred[Any]:
    """The worker thread, on the test's thread: the snapshot is written at once."""
    return maybeDeferred(f, *args)


class SnapshotCatchUpTests(DriverCluster):
    def setUp(self) -> None:
        self.base = Path(self.mktemp())
        self.clock = Clock()
        self.network = Network(self.clock)
        self.storages = {}
        self.logs: dict[str, DurableLog] = {}
        self.fsms: dict[str, KeyValueStateMachine] = {}
        self.metrics: dict[str, NodeMetrics] = {}
        self.addCleanup(self._stop)
        for seed, node_id in enumerate(NODES):
            self.start(node_id, seed)
        self.leader_id = self.leader()
        self.written = 0

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
        fsm = KeyValueStateMachine(fork_min_keys=0)  # the forked writer, whatever the size
        restore_fsm_from_snapshot(log, fsm, "kv")
        self.logs[node_id], self.fsms[node_id] = log, fsm
        self.metrics[node_id] = NodeMetrics()
        incoming = self.base / f"{node_id}-incoming"
        incoming.mkdir(parents=True, exist_ok=True)
        return self.add_node(
            node_id,
            MEMBERS,
            seed=seed,
            fsm=lambda: fsm,
            storage=cast(Callable[[], MemoryDurable], lambda: log),
            run_in_thread=run_now,
            incoming_dir=incoming,
            metrics=self.metrics[node_id],
            snapshot_entries=50,
            snapshot_log_ratio=4.0,
            snapshot_trailing=0,
            fsm_name="kv",
        )

    def write(self, count: int) -> None:
        """``count`` puts of new keys through the leader, in batches, each applied."""
        node = self.network.nodes[self.leader_id]
        for start in range(self.written, self.written + count, 50):
            batch = [put(f"key{i:06d}", VALUE) for i in range(start, start + 50)]
            results = self.result(node.submit(batch))
            self.assertIsInstance(results, list, results)
        self.written += count

    def agree(self, node_id: str) -> None:
        """``node_id`` applied what the leader did and holds the same state (digest)."""
        leader = self.network.nodes[self.leader_id]
        self.wait_applied(node_id, leader.status().applied, seconds=10)
        self.assertEqual(digest(self.fsms[node_id]), digest(self.fsms[self.leader_id]))

    def test_lagging_follower_catches_up_by_snapshot(self) -> None:
        """A follower cut off while the leader snapshots and compacts past it gets the
        leader's snapshot (the forked writer's file), installs it and ends with the leader's
        state; the snapshot metrics describe the rule's inputs."""
        lagging = next(n for n in NODES if n != self.leader_id)
        self.network.isolate(lagging)
        behind = self.logs[lagging].last_index()
        self.write(1000)
        leader_log = self.logs[self.leader_id]
        self.wait_until(
            lambda: leader_log.first_index() > behind + 1, "the leader compacts past it"
        )
        taken = leader_log.snapshot_meta().index
        self.assertGreater(taken, behind)
        metrics = self.metrics[self.leader_id]
        info = leader_log.snapshot_info()
        assert info is not None
        self.assertEqual(metrics.snapshot_last_bytes._value.get(), info.size)
        self.assertEqual(metrics.snapshot_threshold_bytes._value.get(), 4.0 * info.size)
        self.assertLess(
            metrics.snapshot_log_bytes._value.get(), metrics.snapshot_threshold_bytes._value.get()
        )
        # The state grows with every put, so snapshots space out: far fewer than the 20 of a
        # snapshot every 50 entries, but more than the first one.
        self.assertTrue(2 <= metrics.snapshots_taken._value.get() <= 6)
        self.network.heal()
        self.agree(lagging)
        self.assertGreaterEqual(self.logs[lagging].snapshot_meta().index, taken)
        self.assertEqual(self.metrics[lagging].snapshots_installed._value.get(), 1)
        # The rule counts from the installed snapshot: the few hundred entries after it are far
        # from 4 times its size, so the follower does not snapshot again at once.
        self.assertEqual(self.metrics[lagging].snapshots_taken._value.get(), 0)
        installed = self.logs[lagging].snapshot_info()
        assert installed is not None
        self.assertEqual(self.metrics[lagging].snapshot_last_bytes._value.get(), installed.size)

    def test_restarted_node_restores_its_snapshot(self) -> None:
        """A follower that took its own snapshot is stopped and started again: it restores
        the snapshot, replays the log after it and holds the leader's state, also for
        writes made while it was down."""
        node_id = next(n for n in NODES if n != self.leader_id)
        self.write(1000)
        log = self.logs[node_id]
        self.wait_until(lambda: log.snapshot_meta().index > 0, f"{node_id} snapshots")
        self.agree(node_id)
        node = self.network.nodes.pop(node_id)
        stopped: list[object] = []
        node.stopService().addBoth(stopped.append)
        self.wait_until(lambda: stopped, f"{node_id} stops")
        self.write(200)
        self.start(node_id, seed=7)
        # Its log starts after its snapshot: the state can only come from the snapshot.
        self.assertGreater(self.logs[node_id].first_index(), 1)
        restored = self.fsms[node_id]
        # Before any entry is applied, the FSM holds the snapshot's state: its first keys.
        self.assertEqual(
            restored.query(b'{"op":"get","key":"key000000"}'), f'{{"value":"{VALUE}"}}'.encode()
        )
        self.agree(node_id)
        self.assertEqual(
            restored.query(b'{"op":"get","key":"key001100"}'), f'{{"value":"{VALUE}"}}'.encode()
        )
