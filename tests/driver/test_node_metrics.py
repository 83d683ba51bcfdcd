"""The operator's metrics of a real GraftNode (issue #22): each exists in /metrics and moves
with what it measures. The in-memory cluster for the replication metrics, one node on a real
DurableLog for the snapshot and log-size metrics."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial import unittest

from graft.api import make_api_resource
from graft.driver.node import GraftNode
from graft.driver.observe import FSM_SIZE_TTL
from graft.driver.settings import DriverSettings
from graft.driver.wiring import build_node
from graft.fsm.kv import KeyValueStateMachine
from graft.raft.config import RaftConfig
from graft.raft.messages import InstallSnapshot
from graft.raft.node import RaftNode
from graft.raft.types import Membership, SnapshotMeta
from graft.storage import DurableLog
from graft.testing.kv import put
from tests.api.fakes import Settings
from tests.support.driver import NODES, TICK, DriverCluster, run_until

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(body: bytes) -> Samples:
    """Every sample of a /metrics answer, by (name, sorted labels)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def scrape(node: GraftNode) -> Samples:
    from prometheus_client import generate_latest

    return parse(generate_latest(node.metrics))


class ReplicationMetricsTests(DriverCluster):
    """Three nodes, a leader, one command applied everywhere (as tests.driver.test_node_api)."""

    def setUp(self) -> None:
        self.start_nodes()
        self.leader_id = self.leader()
        self.result(self.network.nodes[self.leader_id].submit([put("k", "1")]))
        self.wait_until(
            lambda: all(n.is_ready() for n in self.network.nodes.values()), "all nodes ready"
        )

    def metrics(self, node_id: str) -> Samples:
        """GET /metrics from the node's API, in memory."""
        stub: Any = StubTreq(
            make_api_resource(self.network.nodes[node_id], Settings(), reactor=self.clock)
        )
        box: list[Any] = []
        stub.get("http://127.0.0.1:8080/metrics").addBoth(box.append)
        stub.flush()
        self.assertEqual(box[0].code, 200)
        body: list[bytes] = []
        stub.content(box[0]).addCallback(body.append)
        stub.flush()
        return parse(body[0])

    def test_leader_and_followers(self) -> None:
        """graft_has_leader is 1 on every member; the leader's per-follower match index equals
        the follower's log, its lag is 0, and grows when a follower's disk is held."""
        leader = self.network.nodes[self.leader_id]
        followers = [n for n in NODES if n != self.leader_id]
        for node_id in NODES:
            self.assertEqual(self.metrics(node_id)[("graft_has_leader", ())], 1)
        self.assertGreaterEqual(self.metrics(self.leader_id)[("graft_leader_changes_total", ())], 1)
        last = leader.status().last_index
        samples = self.metrics(self.leader_id)
        for peer in followers:
            self.assertEqual(samples[("graft_follower_match_index", (("peer", peer),))], last)
            self.assertEqual(samples[("graft_follower_lag_entries", (("peer", peer),))], 0)
        self.assertNotIn(("graft_follower_match_index", (("peer", self.leader_id),)), samples)
        held = followers[0]
        self.storages[held].hold = True
        self.result(leader.submit([put("k", "2")]))
        samples = self.metrics(self.leader_id)
        self.assertGreater(samples[("graft_follower_lag_entries", (("peer", held),))], 0)
        self.storages[held].hold = False
        self.storages[held].release()
        # A follower exports no follower gauges.
        follower_samples = self.metrics(followers[1])
        self.assertFalse([k for k in follower_samples if k[0] == "graft_follower_lag_entries"])

    def test_round_trip_apply_sizes_and_pending(self) -> None:
        """Heartbeat round trips are timed per peer; every applied batch is timed; the log and
        FSM sizes grow with a command; a command waiting for its disk write is pending."""
        leader = self.network.nodes[self.leader_id]
        self.advance(5 * TICK)  # a few heartbeat rounds
        before = self.metrics(self.leader_id)
        for peer in (n for n in NODES if n != self.leader_id):
            self.assertGreater(
                before[("graft_peer_round_trip_seconds_count", (("peer", peer),))], 0
            )
        self.assertGreater(before[("graft_apply_duration_seconds_count", ())], 0)
        self.result(leader.submit([put("key", "x" * 1000)]))
        self.advance(FSM_SIZE_TTL)  # the FSM's size is measured at most once per FSM_SIZE_TTL
        after = self.metrics(self.leader_id)
        self.assertGreater(
            after[("graft_apply_duration_seconds_count", ())],
            before[("graft_apply_duration_seconds_count", ())],
        )
        self.assertGreaterEqual(
            after[("graft_log_bytes", ())] - before[("graft_log_bytes", ())], 1000
        )
        self.assertGreaterEqual(
            after[("graft_fsm_bytes", ())] - before[("graft_fsm_bytes", ())], 1000
        )
        self.assertEqual(after[("graft_proposals_pending", ())], 0)
        self.storages[self.leader_id].hold = True
        leader.submit([put("k", "3")]).addErrback(lambda _: None)
        self.assertEqual(self.metrics(self.leader_id)[("graft_proposals_pending", ())], 1)
        self.storages[self.leader_id].hold = False
        self.storages[self.leader_id].release()

    def test_standard_collectors(self) -> None:
        """The process_* and python_* series of every Prometheus exporter are there."""
        names = {name for name, _ in self.metrics(self.leader_id)}
        self.assertIn("python_info", names)
        self.assertIn("python_gc_objects_collected_total", names)
        self.assertIn("process_cpu_seconds_total", names)
        self.assertIn("process_resident_memory_bytes", names)


MEMBERS = Membership(voters=frozenset({"a"}))


class SnapshotMetricsTests(unittest.TestCase):
    """One node on a real DurableLog (temp dir, writes on the test's thread)."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.dir = Path(self.mktemp())
        self.dir.mkdir()
        self.storage = DurableLog.open(
            self.dir / "a", node_id="a", cluster="test", reactor=self.clock, threaded=False
        )
        raft = RaftNode(RaftConfig(id="a", bootstrap=MEMBERS), self.storage, random.Random(0))
        self.node = build_node(
            raft=raft,
            storage=self.storage,
            fsm=KeyValueStateMachine(),
            clock=self.clock,
            run_in_thread=self.run_now,
            incoming_dir=self.dir / "a",
            settings=DriverSettings(
                tick_seconds=TICK,
                command_timeout=2.0,
                query_timeout=2.0,
                api_urls={"a": "http://127.0.0.1:18999"},
                fsm_name="kv",
            ),
        )
        self.node.startService()
        self.addCleanup(self.stop)
        run_until(self.clock, self.node.is_leader, "a leads")
        done: list[object] = []
        self.node.submit([put("k", str(i)) for i in range(5)]).addBoth(done.append)
        run_until(self.clock, lambda: done, "the commands applied", seconds=20 * TICK)

    def stop(self) -> None:
        self.node.stopService()
        self.storage.write_pending()

    def run_now(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        d: Deferred[Any] = maybeDeferred(f, *args)
        self.storage.write_pending()
        return d

    def test_log_bytes_is_the_segment_files(self) -> None:
        """graft_log_bytes is the size of the log's segment files on disk."""
        self.storage.write_pending()
        on_disk = sum(p.stat().st_size for p in (self.dir / "a").glob("*.seg*"))
        self.assertGreater(on_disk, 0)
        self.assertEqual(scrape(self.node)[("graft_log_bytes", ())], on_disk)
        self.assertEqual(self.node.status().log_bytes, on_disk)

    def test_snapshot_taken_installed_and_sent(self) -> None:
        """Each snapshot taken, installed and sent (here: failed, no peer) is counted and
        timed."""
        taken: list[Any] = []
        self.node.take_snapshot().addBoth(taken.append)
        self.storage.write_pending()
        run_until(self.clock, lambda: taken, "the snapshot taken")
        self.assertNotIsInstance(taken[0], Failure)
        samples = scrape(self.node)
        self.assertEqual(samples[("graft_snapshots_taken_total", ())], 1)
        self.assertEqual(samples[("graft_snapshot_take_duration_seconds_count", ())], 1)

        applied = self.node._parts.applied.applied
        meta = SnapshotMeta(index=applied + 40, term=self.node._raft.term, membership=MEMBERS)
        path = self.dir / "received.snap"
        with path.open("wb") as sink:
            KeyValueStateMachine().begin_snapshot()(sink)
        installed: list[Any] = []
        self.node._parts.snapshots.install(meta, path).addBoth(installed.append)
        self.storage.write_pending()
        run_until(self.clock, lambda: installed, "the snapshot installed")
        self.assertNotIsInstance(installed[0], Failure)
        samples = scrape(self.node)
        self.assertEqual(samples[("graft_snapshots_installed_total", ())], 1)
        self.assertEqual(samples[("graft_snapshot_install_duration_seconds_count", ())], 1)

        message = InstallSnapshot(
            term=self.node._raft.term, sender="a", to="b", snapshot=self.storage.snapshot_meta()
        )
        self.node._parts.snapshots.send(message)
        run_until(
            self.clock,
            lambda: scrape(self.node).get(("graft_snapshots_sent_total", (("result", "failed"),))),
            "the failed transfer counted",
        )
        self.assertEqual(scrape(self.node)[("graft_snapshot_send_duration_seconds_count", ())], 1)

    def test_a_snapshot_that_fails_at_once_does_not_stop_later_ones(self) -> None:
        """A save that fails before any thread runs it (here: at once) leaves no snapshot
        marked as under way: the next one is taken."""
        save = self.storage.save_snapshot

        def refuse(*args: Any) -> Any:
            self.storage.save_snapshot = save  # type: ignore[method-assign]
            raise OSError("disk full")

        self.storage.save_snapshot = refuse  # type: ignore[method-assign,assignment]
        first: list[Any] = []
        self.node.take_snapshot().addBoth(first.append)
        self.assertIsInstance(first[0], Failure)
        first[0].trap(OSError)
        second: list[Any] = []
        self.node.take_snapshot().addBoth(second.append)
        self.storage.write_pending()
        self.assertEqual(second, [{"index": 6, "term": 1}])
