"""The space quota (graft.space): the alarm's logic, the monitor's scans, and the driver
refusing writes with 507 no_space while reads and administration go on."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial import unittest

from graft.config import ConfigError, load_config
from graft.driver.node import GraftNode
from graft.driver.outcomes import remote_failure
from graft.driver.port import Consistency
from graft.errors import NoLeader, NoSpace
from graft.metrics import NodeMetrics
from graft.space import (
    CLEAR_FRACTION,
    PEER_REPORT_SECONDS,
    SpaceMonitor,
    SpaceQuota,
    data_dir_bytes,
)
from graft.testing.kv import get, put
from graft.transport import RemoteError
from tests.support.driver import DriverCluster

MIB = 1 << 20
NODES = ("a", "b", "c")


class SpaceQuotaTests(unittest.SynchronousTestCase):
    def test_off_when_zero(self) -> None:
        quota = SpaceQuota(0)
        self.assertIsNone(quota.observe(10**15))
        self.assertIsNone(quota.note_proposed(10**15))
        self.assertFalse(quota.alarm)
        self.assertIsNone(quota.refusal(0.0, leader=True))

    def test_raised_at_the_quota_and_cleared_below_the_margin(self) -> None:
        """The alarm goes on at the quota, stays on just below it (no flapping), and clears
        below CLEAR_FRACTION of it."""
        quota = SpaceQuota(10 * MIB, node_id="n1", data_dir="/data/n1")
        self.assertIsNone(quota.observe(10 * MIB - 1))
        self.assertIsNone(quota.refusal(0.0, leader=True))
        self.assertEqual(quota.observe(10 * MIB), "raised")
        self.assertIsNone(quota.observe(int(10 * MIB * CLEAR_FRACTION)))
        self.assertTrue(quota.alarm)
        self.assertEqual(quota.observe(int(10 * MIB * CLEAR_FRACTION) - 1), "cleared")
        self.assertFalse(quota.alarm)

    def test_refusal_names_quota_usage_and_what_to_do(self) -> None:
        quota = SpaceQuota(10 * MIB, node_id="n1", data_dir="/data/n1")
        quota.observe(11 * MIB)
        error = quota.refusal(0.0, leader=False)
        assert error is not None
        self.assertIsInstance(error, NoSpace)
        self.assertEqual((error.code, error.status), ("no_space", 507))
        for fragment in (
            "n1",
            "/data/n1",
            "11.0 MiB",
            "10.0 MiB",
            "storage.quota_bytes",
            "snapshot",
            "reads go on",
            "delete data",
        ):
            self.assertIn(fragment, error.message)

    def test_proposed_bytes_count_until_the_next_scan(self) -> None:
        """Commands proposed since the last scan count at once, so a fast writer is stopped
        before the next scan; a scan that began after them replaces the estimate."""
        quota = SpaceQuota(10 * MIB)
        quota.observe(9 * MIB)
        self.assertIsNone(quota.note_proposed(MIB // 2))
        self.assertEqual(quota.note_proposed(MIB // 2), "raised")
        self.assertEqual(quota.usage, 10 * MIB)
        # A scan that started after both proposals saw them on disk (here: deleted by then).
        self.assertEqual(quota.observe(5 * MIB, proposed_during_scan=MIB), "cleared")
        self.assertEqual(quota.usage, 5 * MIB)

    def test_leader_refuses_while_a_follower_reports_its_alarm(self) -> None:
        """A follower's report makes the leader refuse (not a follower), until it reports the
        end of its alarm or its report is older than PEER_REPORT_SECONDS."""
        quota = SpaceQuota(10 * MIB, node_id="a")
        quota.peer_report("b", 12 * MIB, 10 * MIB, True, now=100.0)
        error = quota.refusal(100.0, leader=True)
        assert error is not None
        self.assertIn("node b", error.message)
        self.assertIn("12.0 MiB", error.message)
        self.assertIsNone(quota.refusal(100.0, leader=False))
        self.assertEqual(quota.status(100.0)["peers_over_quota"], ["b"])
        quota.peer_report("b", 8 * MIB, 10 * MIB, False, now=101.0)
        self.assertIsNone(quota.refusal(101.0, leader=True))
        quota.peer_report("b", 12 * MIB, 10 * MIB, True, now=102.0)
        self.assertIsNotNone(quota.refusal(102.0 + PEER_REPORT_SECONDS - 0.1, leader=True))
        self.assertIsNone(quota.refusal(102.0 + PEER_REPORT_SECONDS, leader=True))


class DataDirBytesTests(unittest.SynchronousTestCase):
    def test_sums_files_below_the_dir_without_following_links(self) -> None:
        root = Path(self.mktemp())
        (root / "sub").mkdir(parents=True)
        (root / "a").write_bytes(b"x" * 1000)
        (root / "sub" / "b").write_bytes(b"y" * 24)
        outside = Path(self.mktemp())
        outside.write_bytes(b"z" * 5000)
        os.symlink(outside.resolve(), root / "link")
        self.assertEqual(data_dir_bytes(root), 1024)

    def test_missing_dir_is_empty(self) -> None:
        self.assertEqual(data_dir_bytes(Path(self.mktemp())), 0)


class FakeDisk:
    """A data dir whose size the test sets; ``hold`` keeps the next scan running."""

    def __init__(self) -> None:
        self.size = 0
        self.scans = 0
        self.held: list[Deferred[Any]] = []
        self.hold = False

    def measure(self, _: Path) -> int:
        self.scans += 1
        return self.size

    def run_in_thread(self, f: Any, *args: Any) -> Deferred[Any]:
        if self.hold:
            d: Deferred[Any] = Deferred()
            self.held.append(d)
            return d.addCallback(lambda _: f(*args))
        return succeed(f(*args))


class SpaceMonitorTests(unittest.SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.disk = FakeDisk()
        self.metrics = NodeMetrics()
        self.monitor = SpaceMonitor(
            SpaceQuota(10 * MIB, node_id="a", data_dir="/d"),
            Path("/d"),
            clock=self.clock,
            registry=self.metrics.registry,
            measure=self.disk.measure,
            run_in_thread=self.disk.run_in_thread,
        )
        self.monitor.startService()
        self.addCleanup(self.monitor.stopService)

    def gauge(self, name: str) -> float | None:
        return self.metrics.registry.get_sample_value(name)

    def test_scans_each_interval_and_logs_the_alarm(self) -> None:
        """Every second a scan updates the gauges; raising and clearing are logged once."""
        self.assertEqual(self.gauge("graft_data_dir_quota_bytes"), 10 * MIB)
        self.disk.size = 11 * MIB
        with capturedLogs() as events:
            self.clock.advance(1.0)
            self.clock.advance(1.0)
            self.disk.size = MIB
            self.clock.advance(1.0)
        self.assertEqual(self.disk.scans, 3)
        text = [formatEvent(e) for e in events]
        self.assertEqual(len(text), 2, text)
        self.assertIn("space alarm: the data dir /d holds 11534336 bytes", text[0])
        self.assertIn("space alarm cleared", text[1])
        self.assertEqual(self.gauge("graft_data_dir_bytes"), MIB)
        self.assertEqual(self.gauge("graft_space_alarm"), 0)

    def test_gauges_follow_the_alarm(self) -> None:
        self.disk.size = 10 * MIB
        self.clock.advance(1.0)
        self.assertEqual(self.gauge("graft_space_alarm"), 1)
        self.assertEqual(self.gauge("graft_data_dir_bytes"), 10 * MIB)

    def test_one_scan_at_a_time(self) -> None:
        """A scan still running on a slow disk is not doubled by the next tick."""
        self.disk.hold = True
        self.clock.advance(1.0)
        self.clock.advance(1.0)
        self.assertEqual(len(self.disk.held), 1)
        self.disk.held.pop().callback(None)
        self.clock.advance(1.0)
        self.assertEqual(len(self.disk.held), 1)

    def test_off_never_scans(self) -> None:
        disk = FakeDisk()
        monitor = SpaceMonitor(
            SpaceQuota(0),
            Path("/d"),
            clock=self.clock,
            measure=disk.measure,
            run_in_thread=disk.run_in_thread,
        )
        monitor.startService()
        self.clock.advance(10.0)
        monitor.stopService()
        self.assertEqual(disk.scans, 0)


class DriverSpaceTests(DriverCluster):
    """Three in-memory nodes (as tests.test_node), each with its own fake data dir size."""

    def setUp(self) -> None:
        self.disks: dict[str, FakeDisk] = {}
        self.monitors: dict[str, SpaceMonitor] = {}
        self.start_nodes()
        for node_id, node in self.network.nodes.items():
            disk = self.disks[node_id] = FakeDisk()
            monitor = self.monitors[node_id] = SpaceMonitor(
                SpaceQuota(10 * MIB, node_id=node_id, data_dir=f"/data/{node_id}"),
                Path(f"/data/{node_id}"),
                clock=self.clock,
                measure=disk.measure,
                run_in_thread=disk.run_in_thread,
            )
            node.watch_space(monitor)
            monitor.startService()

    def _stop(self) -> None:
        for monitor in self.monitors.values():
            monitor.stopService()
        super()._stop()

    def assertNoSpace(self, outcome: Any, fragment: str) -> None:
        self.assertIsInstance(outcome, Failure, outcome)
        self.assertIsInstance(outcome.value, NoSpace)
        self.assertIn(fragment, outcome.value.message)

    def test_leader_over_quota_refuses_writes_reads_and_admin_go_on(self) -> None:
        """Over its quota the leader refuses commands, its own and those a follower forwards,
        with no_space; reads and a leadership transfer still work; once its data dir shrinks
        below the margin, writes are accepted again."""
        leader_id = self.leader()
        leader = self.network.nodes[leader_id]
        follower_id = next(n for n in NODES if n != leader_id)
        follower = self.network.nodes[follower_id]
        self.assertIsInstance(self.result(leader.submit([put("k", "1")])), list)
        self.disks[leader_id].size = 10 * MIB
        self.advance(1.0)
        self.assertNoSpace(self.result(leader.submit([put("k", "2")])), f"node {leader_id}")
        self.assertNoSpace(self.result(follower.submit([put("k", "2")])), f"node {leader_id}")
        read = self.result(leader.query(get("k"), Consistency.STRONG))
        self.assertEqual(json.loads(read.output), {"value": "1"})
        self.assertTrue(_space(leader)["alarm"])
        metric = leader.metrics.get_sample_value(
            "graft_proposals_failed_total", {"reason": "no_space"}
        )
        self.assertEqual(metric, 2)

        self.disks[leader_id].size = MIB
        self.advance(1.0)
        answer = self.result(follower.submit([put("k", "3")]))
        self.assertIsInstance(answer, list)
        self.assertFalse(_space(leader)["alarm"])

    def test_follower_over_quota_stops_the_clusters_writes_until_it_clears(self) -> None:
        """A follower over its quota refuses to forward, and reports its alarm to the leader,
        which refuses writes too (its replica would fill next); when the follower is below
        again it says so and writes go on."""
        leader_id = self.leader()
        leader = self.network.nodes[leader_id]
        follower_id = next(n for n in NODES if n != leader_id)
        follower = self.network.nodes[follower_id]
        self.disks[follower_id].size = 11 * MIB
        self.advance(1.0)
        self.assertNoSpace(self.result(follower.submit([put("k", "1")])), f"node {follower_id}")
        self.assertNoSpace(self.result(leader.submit([put("k", "1")])), f"node {follower_id}")
        self.assertEqual(_space(leader)["peers_over_quota"], [follower_id])
        self.disks[follower_id].size = MIB
        self.advance(1.0)
        self.assertIsInstance(self.result(leader.submit([put("k", "1")])), list)

    def test_reports_count_from_members_only(self) -> None:
        """A report from a node that is not a member (removed, still connected for a while)
        does not hold up the cluster's writes."""
        leader_id = self.leader()
        leader = self.network.nodes[leader_id]
        report = {"usage": 20 * MIB, "quota": 10 * MIB, "over": True}
        self.result(leader.handle_request("gone", "space_report", report))
        self.assertEqual(_space(leader)["peers_over_quota"], [])
        self.assertIsInstance(self.result(leader.submit([put("k", "1")])), list)
        member = next(n for n in NODES if n != leader_id)
        self.result(leader.handle_request(member, "space_report", report))
        self.assertEqual(_space(leader)["peers_over_quota"], [member])

    def test_leadership_transfer_works_over_quota(self) -> None:
        """Administration is not a write the quota refuses."""
        leader_id = self.leader()
        for disk in self.disks.values():
            disk.size = 20 * MIB
        self.advance(1.0)
        moved = self.result(self.network.nodes[leader_id].transfer_leadership(None))
        self.assertIsInstance(moved, dict, moved)
        self.assertNotEqual(moved["leader"], leader_id)


class ForwardedErrorTests(unittest.SynchronousTestCase):
    def test_no_space_from_the_leader_reaches_the_client_as_no_space(self) -> None:
        """A follower relays the leader's no_space as NoSpace (507), not as internal (500)."""
        failure = remote_failure(
            Failure(RemoteError("no_space", "over quota")), "a", lost=lambda: NoLeader("lost")
        )
        error = failure.value
        assert isinstance(error, NoSpace)
        self.assertEqual(error.message, "over quota")


class StorageConfigTests(unittest.SynchronousTestCase):
    PEERS = "peers: {a: {host: 127.0.0.1, ports: {p2p: 9001, api: 9002}}}\n"

    def load(self, text: str) -> Any:
        directory = Path(self.mktemp())
        directory.mkdir()
        path = directory / "cluster.yaml"
        path.write_text(self.PEERS + text)
        return load_config(path)

    def test_default_is_8_gib(self) -> None:
        self.assertEqual(self.load("").storage.quota_bytes, 8 << 30)

    def test_zero_turns_it_off_and_a_size_is_taken(self) -> None:
        self.assertEqual(self.load("storage: {quota_bytes: 0}").storage.quota_bytes, 0)
        self.assertEqual(self.load("storage: {quota_bytes: 2097152}").storage.quota_bytes, MIB * 2)

    def test_bad_values_are_one_line(self) -> None:
        for text, fragment in (
            ("storage: {quota_bytes: -1}", "storage.quota_bytes: -1 is out of range"),
            ("storage: {quota_bytes: 1GB}", 'storage.quota_bytes: "1GB" is a string'),
            ("storage: {quota: 1}", "storage.quota: unknown key; did you mean"),
            ("storage: 5", "storage: 5 is an integer; expected a mapping {quota_bytes, "),
        ):
            with self.assertRaises(ConfigError) as caught:
                self.load(text)
            self.assertIn(fragment, str(caught.exception))


def _space(node: GraftNode) -> Mapping[str, Any]:
    """The quota's part of the node's status."""
    space = node.status().space
    assert space is not None
    return space
