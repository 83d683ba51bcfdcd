"""Snapshots end to end in the driver: nodes on real DurableLogs (temp dirs, writes on the
Clock) with the kv FSM's forked writer and the ratio rule. A follower cut off while the leader
compacts its log catches up by the leader's snapshot; a node restarted after snapshotting
rebuilds its state from its own snapshot and the log after it."""

from __future__ import annotations

from tests.support.driver import NODES
from tests.support.snapshot_cluster import VALUE, KvSnapshotCluster


class SnapshotCatchUpTests(KvSnapshotCluster):
    def setUp(self) -> None:
        self.start_cluster()

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
