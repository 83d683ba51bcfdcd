"""Real `twist graft` processes on 127.0.0.1: elections, failover, forwarding, reads, durability.

These are the slowest tests in the suite (each starts a cluster), so each test checks a whole
story rather than one assertion.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

from twisted.trial import unittest

from graft.testing.cluster import LocalCluster

REPO = Path(__file__).resolve().parents[2]


def put(key: str, value: str) -> bytes:
    return json.dumps({"op": "put", "key": key, "value": value}).encode()


def get(key: str) -> bytes:
    return json.dumps({"op": "get", "key": key}).encode()


class ClusterTestCase(unittest.TestCase):
    fsm = "graft.fsm.kv:KeyValueStateMachine"

    def make_cluster(self, nodes: tuple[str, ...] = ("n1", "n2", "n3")) -> LocalCluster:
        cluster = LocalCluster(Path(self.mktemp()), nodes, fsm=self.fsm)
        self.addCleanup(cluster.close)
        self.addCleanup(self._dump_logs_on_failure, cluster)
        cluster.start()
        return cluster

    def _dump_logs_on_failure(self, cluster: LocalCluster) -> None:
        # trial has no "on failure" hook; keep logs in the temp dir and name it for the reader.
        self._cluster_dir = cluster.base


class ElectionTests(ClusterTestCase):
    def test_leader_failover_and_rejoin(self) -> None:
        """Three nodes elect exactly one leader; after SIGKILL of the leader the other two elect
        a new one within 2 s (seed timeouts); the killed node restarts from its data dir and
        rejoins as a follower without disturbing the new leader (pre-vote)."""
        cluster = self.make_cluster()
        leader, term = cluster.wait_for_leader(timeout=15)
        resp = cluster.request(leader, "POST", "/command", put("k", "v1"))
        self.assertEqual(resp.status, 200, resp.body)

        cluster.kill(leader)
        started = time.monotonic()
        survivors = [n for n in cluster.node_ids if n != leader]
        new_leader, new_term = cluster.wait_for_leader(timeout=5, among=survivors)
        elapsed = time.monotonic() - started
        self.assertLess(elapsed, 2.0, f"failover took {elapsed:.2f}s")
        self.assertGreater(new_term, term)

        cluster.start(leader)
        deadline = time.monotonic() + 10
        rejoined = None
        while time.monotonic() < deadline:
            rejoined = cluster.status(leader)
            if rejoined and rejoined["leader"] == new_leader and rejoined["applied"] >= 2:
                break
            time.sleep(0.05)
        self.assertIsNotNone(rejoined)
        assert rejoined is not None
        self.assertEqual(rejoined["role"], "follower")
        self.assertEqual(rejoined["leader"], new_leader)
        # Give a disruptive rejoin time to happen, then check it did not.
        time.sleep(1.0)
        still, still_term = cluster.wait_for_leader(timeout=5)
        self.assertEqual((still, still_term), (new_leader, new_term))
        read = cluster.request(leader, "POST", "/query?consistency=strong", get("k"))
        self.assertEqual(read.status, 200, read.body)
        self.assertEqual(read.json(), {"value": "v1"})


class ClientPathTests(ClusterTestCase):
    def test_forwarding_redirect_and_reads(self) -> None:
        """A follower forwards commands; ?redirect=true answers 307 to the leader; strong reads
        on a follower see a write the leader just acknowledged; min_index gives read-your-writes
        on a follower even at weak consistency."""
        cluster = self.make_cluster()
        leader, _ = cluster.wait_for_leader(timeout=15)
        follower = next(n for n in cluster.node_ids if n != leader)

        forwarded = cluster.request(follower, "POST", "/command", put("a", "1"))
        self.assertEqual(forwarded.status, 200, forwarded.body)
        self.assertEqual(forwarded.json(), {"prev": None})
        self.assertEqual(forwarded.headers.get("Graft-Leader"), leader)

        redirect = cluster.request(follower, "POST", "/command?redirect=true", put("a", "2"))
        self.assertEqual(redirect.status, 307, redirect.body)
        self.assertTrue(redirect.headers["Location"].startswith(cluster.api_url(leader)))

        for i in range(20):
            ack = cluster.request(leader, "POST", "/command", put("s", str(i)))
            self.assertEqual(ack.status, 200, ack.body)
            read = cluster.request(follower, "POST", "/query?consistency=strong", get("s"))
            self.assertEqual(read.status, 200, read.body)
            self.assertEqual(read.json(), {"value": str(i)}, f"stale strong read at {i}")

        ack = cluster.request(leader, "POST", "/command", put("ryw", "x"))
        index = int(ack.headers["Graft-Index"])
        other = [n for n in cluster.node_ids if n != leader][-1]
        read = cluster.request(
            other, "POST", f"/query?consistency=weak&min_index={index}", get("ryw")
        )
        self.assertEqual(read.status, 200, read.body)
        self.assertEqual(read.json(), {"value": "x"})

        default = cluster.request(follower, "POST", "/query", get("ryw"))
        self.assertEqual(default.status, 200, default.body)
        self.assertEqual(default.json(), {"value": "x"})

    def test_isolated_follower_weak_answers_strong_fails(self) -> None:
        """A follower cut off from the rest (the others paused with SIGSTOP) still answers weak
        reads from its own state, while strong reads fail with 503 or 504 instead of being
        served stale."""
        cluster = self.make_cluster()
        leader, _ = cluster.wait_for_leader(timeout=15)
        ack = cluster.request(leader, "POST", "/command", put("p", "before"))
        self.assertEqual(ack.status, 200, ack.body)
        index = int(ack.headers["Graft-Index"])
        follower = next(n for n in cluster.node_ids if n != leader)
        # Make sure the follower has the write before it is cut off.
        caught_up = cluster.request(
            follower, "POST", f"/query?consistency=weak&min_index={index}", get("p")
        )
        self.assertEqual(caught_up.status, 200, caught_up.body)
        others = [n for n in cluster.node_ids if n != follower]
        for node in others:
            cluster.signal(node, signal.SIGSTOP)
        try:
            weak = cluster.request(follower, "POST", "/query?consistency=weak", get("p"))
            self.assertEqual(weak.status, 200, weak.body)
            self.assertEqual(weak.json(), {"value": "before"})
            strong = cluster.request(
                follower, "POST", "/query?consistency=strong", get("p"), timeout=20
            )
            self.assertIn(strong.status, (503, 504), strong.body)
            self.assertIn(strong.json()["error"]["code"], ("no_leader", "timeout"))
        finally:
            for node in others:
                cluster.signal(node, signal.SIGCONT)


class DurabilityTests(ClusterTestCase):
    def test_acknowledged_writes_survive_leader_kill(self) -> None:
        """Under a steady write load, SIGKILL the leader: every write acknowledged with 200 is
        present after the new leader takes over, and no write that failed with a 4xx is."""
        cluster = self.make_cluster()
        leader, _ = cluster.wait_for_leader(timeout=15)
        acked: dict[str, str] = {}
        rejected: set[str] = set()
        stop = threading.Event()
        errors: list[str] = []

        def writer(worker: int) -> None:
            i = 0
            while not stop.is_set():
                key = f"w{worker}-{i}"
                i += 1
                node = cluster.node_ids[i % len(cluster.node_ids)]
                try:
                    resp = cluster.request(node, "POST", "/command", put(key, key), timeout=5)
                except OSError:
                    continue  # killed node or dropped connection: outcome unknown
                if resp.status == 200:
                    acked[key] = key
                elif 400 <= resp.status < 500:
                    rejected.add(key)
                elif resp.status not in (503, 504):
                    errors.append(f"{key}: {resp.status} {resp.body!r}")

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        try:
            time.sleep(1.0)
            cluster.kill(leader)
            survivors = [n for n in cluster.node_ids if n != leader]
            cluster.wait_for_leader(timeout=5, among=survivors)
            time.sleep(1.0)
        finally:
            stop.set()
            for t in threads:
                t.join(15)
        self.assertEqual(errors, [])
        self.assertGreater(len(acked), 20, "the load generator made too little progress")
        new_leader, _ = cluster.wait_for_leader(timeout=5, among=survivors)
        missing: list[str] = []
        for key in acked:
            read = cluster.request(new_leader, "POST", "/query?consistency=strong", get(key))
            body: Any = read.json()
            if read.status != 200 or body != {"value": key}:
                missing.append(key)
        self.assertEqual(missing, [], f"{len(missing)} acknowledged writes lost")
        for key in rejected:
            read = cluster.request(new_leader, "POST", "/query?consistency=strong", get(key))
            self.assertEqual(read.json(), {"value": None})


class SeedExampleTests(ClusterTestCase):
    fsm = "graft.fsm.sqlite:SQLiteStateMachine"

    def test_seed_curl_examples(self) -> None:
        """The seed's two requests, exactly as curl sends them, work against a follower: the
        demo script is committed and the query lists the four users."""
        cluster = self.make_cluster()
        leader, _ = cluster.wait_for_leader(timeout=15)
        follower = next(n for n in cluster.node_ids if n != leader)
        demo = (REPO / "conf" / "demo.sql").read_bytes()
        headers = {"Content-Type": "text/plain"}
        resp = cluster.request(follower, "POST", "/command/", demo, headers)
        self.assertEqual(resp.status, 200, resp.body)
        query = cluster.request(follower, "GET", "/query/", b"SELECT * FROM users;", headers)
        self.assertEqual(query.status, 200, query.body)
        names = sorted(row[1] for row in query.json()["rows"])
        self.assertEqual(names, ["hamilton", "lovelace", "ritchie", "turing"])
