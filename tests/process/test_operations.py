"""Cluster operations on real processes: membership changes, leadership transfer, rolling
restarts and snapshots, each under a steady write load that must lose nothing."""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from twisted.trial import unittest

from graft.testing.cluster import LocalCluster


def put(key: str, value: str) -> bytes:
    return json.dumps({"op": "put", "key": key, "value": value}).encode()


def get(key: str) -> bytes:
    return json.dumps({"op": "get", "key": key}).encode()


class WriteLoad:
    """Threads writing unique keys through any live node. A put of a unique key to its own
    value is idempotent, so 503, 504 and dropped connections are retried until a deadline;
    a write that never succeeds within it counts as failed."""

    def __init__(self, cluster: LocalCluster, workers: int = 3, deadline: float = 15.0) -> None:
        self.cluster = cluster
        self.deadline = deadline
        self.acked: list[str] = []
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(w,), daemon=True) for w in range(workers)
        ]

    def __enter__(self) -> WriteLoad:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(self.deadline + 10)

    def _run(self, worker: int) -> None:
        i = 0
        while not self._stop.is_set():
            key = f"w{worker}-{i}"
            i += 1
            if self._write(key, i):
                self.acked.append(key)
            else:
                self.failed.append(key)

    def _write(self, key: str, attempt: int) -> bool:
        give_up = time.monotonic() + self.deadline
        while time.monotonic() < give_up:
            alive = self.cluster.alive()
            if not alive:
                time.sleep(0.05)
                continue
            node = alive[attempt % len(alive)]
            attempt += 1
            try:
                resp = self.cluster.request(node, "POST", "/command", put(key, key), timeout=5)
            except OSError:
                time.sleep(0.02)
                continue
            if resp.status == 200:
                return True
            if resp.status not in (503, 504):
                return False
            time.sleep(0.02)
        return False


def metric(cluster: LocalCluster, node: str, name: str) -> float:
    text = cluster.request(node, "GET", "/metrics").body.decode()
    match = re.search(rf"^{name}(?:_total)? ([0-9.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


class OperationsTestCase(unittest.TestCase):
    def make_cluster(self, **kwargs: Any) -> LocalCluster:
        cluster = LocalCluster(Path(self.mktemp()), **kwargs)
        self.addCleanup(cluster.close)
        cluster.start()
        return cluster

    def wait_caught_up(self, cluster: LocalCluster, node: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader, _ = cluster.wait_for_leader(timeout=timeout)
            lead = cluster.status(leader)
            mine = cluster.status(node)
            if lead and mine and mine["applied"] >= lead["commit"] - 50:
                return
            time.sleep(0.05)
        self.fail(f"{node} did not catch up")

    def assert_all_present(self, cluster: LocalCluster, keys: list[str]) -> None:
        leader, _ = cluster.wait_for_leader(timeout=10)
        missing = []
        for key in keys:
            resp = cluster.request(leader, "POST", "/query?consistency=strong", get(key))
            if resp.status != 200 or resp.json() != {"value": key}:
                missing.append(key)
        self.assertEqual(missing, [], f"{len(missing)} acknowledged writes are missing")


class MembershipTests(OperationsTestCase):
    def test_grow_to_five_and_shrink_back_under_load(self) -> None:
        """A 3-node cluster under write load grows to 5 (learners that catch up, then voters)
        and shrinks back to 3, removing the leader itself (it hands over first), without a
        failed command or a lost write."""
        cluster = self.make_cluster()
        leader, _ = cluster.wait_for_leader(timeout=15)
        with WriteLoad(cluster) as load:
            for new in ("n4", "n5"):
                body = cluster.add_node(new)
                cluster.start(new)
                # As the docs say: start the node, then add it (the leader reports a new member
                # it cannot reach as member_unreachable, and a loaded machine starts slowly).
                cluster.wait_until_serving(new, timeout=60)
                follower = next(
                    n
                    for n in cluster.alive()
                    if (cluster.status(n) or {}).get("role") == "follower"
                )
                resp = cluster.request(
                    follower, "POST", "/cluster/members", json.dumps(body).encode(), timeout=60
                )
                self.assertEqual(resp.status, 200, resp.body)
                self.assertIn(new, resp.json()["voters"])
            leader, _ = cluster.wait_for_leader(timeout=10)
            members = cluster.request(leader, "GET", "/cluster/members").json()
            self.assertEqual(sorted(members["voters"]), ["n1", "n2", "n3", "n4", "n5"])
            self.wait_caught_up(cluster, "n5")

            for node in dict.fromkeys(("n4", leader)):
                via = next(n for n in cluster.alive() if n != node)
                resp = cluster.request(via, "DELETE", f"/cluster/members/{node}", timeout=30)
                self.assertEqual(resp.status, 200, resp.body)
                self.assertNotIn(node, resp.json()["voters"])
                cluster.stop(node)
            time.sleep(0.5)
        self.assertEqual(load.failed, [])
        self.assertGreater(len(load.acked), 20)
        leader, _ = cluster.wait_for_leader(timeout=10)
        members = cluster.request(leader, "GET", "/cluster/members").json()
        self.assertEqual(len(members["voters"]), 3, members)
        self.assert_all_present(cluster, load.acked)


class TransferAndRestartTests(OperationsTestCase):
    def test_transfer_then_rolling_restart_without_election_timeouts(self) -> None:
        """POST /cluster/leader moves leadership; then every node is restarted in turn with
        SIGTERM under write load: a stopping leader hands over first, so no command fails and
        no node's election timer fires (graft_election_timeouts stays 0)."""
        cluster = self.make_cluster()
        leader, _ = cluster.wait_for_leader(timeout=15)
        resp = cluster.request(leader, "POST", "/cluster/leader", b"{}", timeout=10)
        self.assertEqual(resp.status, 200, resp.body)
        moved = resp.json()["leader"]
        self.assertNotEqual(moved, leader)
        self.assertEqual(cluster.wait_for_leader(timeout=5)[0], moved)

        # Each process counts from its own start; the initial election counts before we begin.
        baseline = {n: metric(cluster, n, "graft_election_timeouts") for n in cluster.node_ids}
        fired: list[tuple[str, float]] = []
        with WriteLoad(cluster) as load:
            time.sleep(0.5)
            for node in list(cluster.node_ids):
                fired.append(
                    (node, metric(cluster, node, "graft_election_timeouts") - baseline[node])
                )
                # twist re-raises the signal it stopped on, so a clean SIGTERM stop is -15.
                self.assertIn(cluster.stop(node), (0, -15), cluster.logs(node)[-2000:])
                self.assertIn("Main loop terminated", cluster.logs(node))
                cluster.start(node)
                baseline[node] = 0.0
                self.wait_caught_up(cluster, node)
            time.sleep(0.5)
        for node in cluster.node_ids:
            fired.append((node, metric(cluster, node, "graft_election_timeouts") - baseline[node]))
        self.assertEqual(load.failed, [])
        self.assertGreater(len(load.acked), 20)
        self.assertEqual(sum(n for _, n in fired), 0, f"election timers fired: {fired}")
        self.assert_all_present(cluster, load.acked)


class SnapshotTests(OperationsTestCase):
    def test_snapshots_bound_the_log_and_restart_uses_them(self) -> None:
        """With a snapshot every 200 entries, a node's log is compacted as writes go on, a
        snapshot can be taken on demand and downloaded, and a node restarted after that
        rebuilds its state from the snapshot plus the log after it."""
        cluster = self.make_cluster(extra={"snapshot": {"entries": 200, "trailing": 50}})
        leader, _ = cluster.wait_for_leader(timeout=15)
        batch = json.dumps([put(f"k{i}", str(i)).decode() for i in range(100)]).encode()
        for _ in range(12):
            resp = cluster.request(leader, "POST", "/commands", batch, timeout=20)
            self.assertEqual(resp.status, 200, resp.body)
        # Snapshots are written off the reactor while writes go on: the last one may still be
        # under way when the last batch is answered.
        deadline = time.monotonic() + 20
        status = cluster.status(leader)
        while (status is None or status["snapshot"]["index"] < 1000) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.05)
            status = cluster.status(leader)
        assert status is not None
        self.assertGreaterEqual(status["snapshot"]["index"], 1000, "no snapshot within 20 s")
        taken = cluster.request(leader, "POST", "/cluster/snapshot", timeout=20)
        self.assertEqual(taken.status, 200, taken.body)
        download = cluster.request(leader, "GET", "/cluster/snapshot", timeout=20)
        self.assertEqual(download.status, 200, download.body[:200])
        self.assertEqual(int(download.headers["Graft-Snapshot-Index"]), taken.json()["index"])
        self.assertTrue(download.body)

        follower = next(n for n in cluster.node_ids if n != leader)
        self.assertIn(cluster.stop(follower), (0, -15))
        cluster.start(follower)
        self.wait_caught_up(cluster, follower)
        commit = status["commit"]
        read = cluster.request(
            follower, "POST", f"/query?consistency=weak&min_index={commit}", get("k99")
        )
        self.assertEqual(read.status, 200, read.body)
        self.assertEqual(read.json(), {"value": "99"})
        self.assertIn("restoring the FSM from the snapshot", cluster.logs(follower))

    def test_wiped_node_rejoins_through_a_snapshot(self) -> None:
        """A follower whose data dir is wiped comes back empty after the leader compacted its
        log: the leader streams it the snapshot, it installs it, and it then serves the data
        and follows new writes."""
        cluster = self.make_cluster(
            extra={"snapshot": {"entries": 200, "trailing": 50, "segment_bytes": 16384}}
        )
        leader, _ = cluster.wait_for_leader(timeout=15)
        batch = json.dumps([put(f"k{i}", str(i)).decode() for i in range(100)]).encode()
        for _ in range(6):
            resp = cluster.request(leader, "POST", "/commands", batch, timeout=20)
            self.assertEqual(resp.status, 200, resp.body)
        follower = next(n for n in cluster.node_ids if n != leader)
        cluster.stop(follower)
        shutil.rmtree(cluster.data_dir(follower))
        for _ in range(6):
            resp = cluster.request(leader, "POST", "/commands", batch, timeout=20)
            self.assertEqual(resp.status, 200, resp.body)
        lead = cluster.status(leader)
        assert lead is not None
        self.assertGreater(lead["first_index"], 1, "the leader's log was not compacted")
        cluster.start(follower)
        cluster.wait_until_serving(follower)
        last = cluster.request(leader, "POST", "/command", put("after", "wipe"))
        self.assertEqual(last.status, 200, last.body)
        index = last.headers["Graft-Index"]
        read = cluster.request(
            follower, "POST", f"/query?consistency=weak&min_index={index}", get("after"), timeout=30
        )
        self.assertEqual(read.status, 200, read.body)
        self.assertEqual(read.json(), {"value": "wipe"})
        old = cluster.request(follower, "POST", "/query?consistency=weak", get("k42"))
        self.assertEqual(old.json(), {"value": "42"})
        self.assertIn("installed snapshot", cluster.logs(follower))
