"""Real `twist graft` processes on 127.0.0.1: elections, failover, forwarding, reads, durability.

These are the slowest tests in the suite (each starts a cluster), so each test checks a whole
story rather than one assertion.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

from graft.testing.cluster import LocalCluster
from graft.testing.kv import get, put
from graft.testing.load import WriteLoad
from graft.testing.process_case import ProcessTestCase

REPO = Path(__file__).resolve().parents[2]


class ClusterTestCase(ProcessTestCase):
    fsm = "graft.fsm.kv:KeyValueStateMachine"

    def make_kv_cluster(self) -> LocalCluster:
        return self.make_cluster(fsm=self.fsm)

    def write_until_acked(self, cluster: LocalCluster, node: str, body: bytes) -> int:
        """An idempotent command through ``node``, asked again while the answer is 503 or 504
        (between leaders): its log index."""
        deadline = time.monotonic() + 60
        while True:
            resp = cluster.request(node, "POST", "/command", body, timeout=30)
            if resp.status not in (503, 504) or time.monotonic() > deadline:
                self.assertEqual(resp.status, 200, resp.body)
                return int(resp.headers["Graft-Index"])
            time.sleep(0.1)


class ElectionTests(ClusterTestCase):
    def test_leader_failover_and_rejoin(self) -> None:
        """Three nodes elect exactly one leader; after SIGKILL of the leader the other two elect
        a new one in a higher term; the killed node restarts from its data dir, catches up
        (applies a write made after its return) and serves the write made before its death.

        How long the failover takes is measured by `make bench` (benchmarks/suite/failover.py),
        not asserted here. That a returning node does not disrupt the leader (pre-vote) is
        checked on a deterministic clock in tests/raft/test_election.py
        (PreVoteTests.test_pre_vote_prevents_term_inflation): on two cores shared with other
        tests, a node stalled past its election timeout starts an election whatever the code."""
        cluster = self.make_kv_cluster()
        leader, term = cluster.wait_for_leader(timeout=30)
        resp = cluster.request(leader, "POST", "/command", put("k", "v1"))
        self.assertEqual(resp.status, 200, resp.body)

        cluster.kill(leader)
        survivors = [n for n in cluster.node_ids if n != leader]
        new_leader, new_term = cluster.wait_for_leader(timeout=30, among=survivors)
        self.assertGreater(new_term, term)

        cluster.start(leader)
        after = self.write_until_acked(cluster, new_leader, put("after", "rejoin"))
        cluster.wait_applied(after, cluster.node_ids, timeout=60)
        read = cluster.query(leader, get("k"))
        self.assertEqual(read.status, 200, read.body)
        self.assertEqual(read.json(), {"value": "v1"})


class ClientPathTests(ClusterTestCase):
    def test_forwarding_redirect_and_reads(self) -> None:
        """A follower forwards commands; ?redirect=true answers 307 to the leader; strong reads
        on a follower see a write the leader just acknowledged; min_index gives read-your-writes
        on a follower even at weak consistency."""
        cluster = self.make_kv_cluster()
        leader, _ = cluster.wait_for_leader(timeout=30)
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
        cluster = self.make_kv_cluster()
        leader, _ = cluster.wait_for_leader(timeout=30)
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
        present after the new leader takes over, and every write refused (every seventh is a
        put the FSM rejects, so there are some) is absent."""
        cluster = self.make_kv_cluster()
        leader, _ = cluster.wait_for_leader(timeout=30)
        with WriteLoad(cluster, workers=4, refuse_every=7) as load:
            load.wait_acked(20)
            cluster.kill(leader)
            survivors = [n for n in cluster.node_ids if n != leader]
            cluster.wait_for_leader(timeout=30, among=survivors)
            load.wait_acked(20)  # the load goes on through the new leader
        self.assertEqual(load.errors, [])
        self.assertEqual(load.unexpected_failures(), {})
        self.assertTrue(load.failed, "no write was refused: the absence check would be empty")
        new_leader, _ = cluster.wait_for_leader(timeout=30, among=survivors)
        missing: list[str] = []
        for key in load.acked:
            read = cluster.query(new_leader, get(key))
            body: Any = read.json()
            if read.status != 200 or body != {"value": key}:
                missing.append(f"{key} (acked by {load.acked[key]}): {read.status} {body}")
        self.assertEqual(missing, [], f"{len(missing)} acknowledged writes lost")
        for key in load.failed:
            read = cluster.query(new_leader, get(key))
            self.assertEqual((read.status, read.json()), (200, {"value": None}), key)


class SeedExampleTests(ClusterTestCase):
    fsm = "graft.fsm.sqlite:SQLiteStateMachine"

    def test_seed_curl_examples(self) -> None:
        """The seed's two requests, exactly as curl sends them, work against a follower: the
        demo script is committed and the query lists the four users."""
        cluster = self.make_kv_cluster()
        leader, _ = cluster.wait_for_leader(timeout=30)
        follower = next(n for n in cluster.node_ids if n != leader)
        demo = (REPO / "conf" / "demo.sql").read_bytes()
        headers = {"Content-Type": "text/plain"}
        resp = cluster.request(follower, "POST", "/command/", demo, headers)
        self.assertEqual(resp.status, 200, resp.body)
        query = cluster.request(follower, "GET", "/query/", b"SELECT * FROM users;", headers)
        self.assertEqual(query.status, 200, query.body)
        names = sorted(row[1] for row in query.json()["rows"])
        self.assertEqual(names, ["hamilton", "lovelace", "ritchie", "turing"])
