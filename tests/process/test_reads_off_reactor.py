"""A query that never ends, against a real 3-node SQLite cluster: it runs in a query thread of
the leader, which meanwhile answers /health, commits writes and keeps its leadership; the query
is stopped at its time limit with 504 query_timeout."""

from __future__ import annotations

import json
import threading

from graft.testing.cluster import Response
from graft.testing.process_case import ProcessTestCase

ENDLESS = b"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT max(x) FROM c"
LIMIT = "10s"


class ReadsOffTheReactorTests(ProcessTestCase):
    def setUp(self) -> None:
        self.cluster = self.make_cluster(fsm="graft.fsm.sqlite:SQLiteStateMachine")
        self.leader, self.term = self.cluster.wait_for_leader(timeout=30)
        self.follower = next(n for n in self.cluster.node_ids if n != self.leader)
        ok = self.cluster.request(self.leader, "POST", "/command", b"CREATE TABLE t (n INTEGER);")
        self.assertEqual(ok.status, 200, ok.body)

    def metric(self, node: str, name: str) -> float:
        return self.cluster.metric(node, name)

    def test_endless_query_leaves_the_leader_serving(self) -> None:
        """The unbounded WITH RECURSIVE sent to a follower at default consistency (so it runs on
        the leader) used to freeze the leader for good. Now, while it runs: the leader answers
        /health, commits writes, answers other queries and stays leader in the same term; then
        the query is stopped at its ?timeout= and the client gets 504 query_timeout."""
        outcome: list[Response | BaseException] = []

        def endless() -> None:
            try:
                outcome.append(
                    self.cluster.request(
                        self.follower, "POST", f"/query?timeout={LIMIT}", ENDLESS, timeout=120
                    )
                )
            except BaseException as e:  # reported by the assertions below
                outcome.append(e)

        thread = threading.Thread(target=endless, daemon=True)
        thread.start()
        self.wait_for(
            lambda: self.metric(self.leader, "graft_queries_in_threads") == 1,
            "the endless query runs in a query thread of the leader",
        )

        health = self.cluster.request(self.leader, "GET", "/health", timeout=5)
        self.assertEqual(health.status, 200, health.body)
        for n in range(3):
            write = self.cluster.request(
                self.follower, "POST", "/command", b"INSERT INTO t VALUES (%d);" % n, timeout=5
            )
            self.assertEqual(write.status, 200, write.body)
        read = self.cluster.request(
            self.leader, "POST", "/query?consistency=strong", b"SELECT count(*) FROM t", timeout=5
        )
        self.assertEqual((read.status, read.json()["rows"]), (200, [[3]]), read.body)
        status = self.cluster.status(self.leader, timeout=5)
        assert status is not None
        self.assertEqual((status["role"], status["term"]), ("leader", self.term))

        # All of the above happened while the endless query was running.
        self.assertEqual(outcome, [], "the endless query ended before the checks were done")
        self.assertEqual(self.metric(self.leader, "graft_queries_in_threads"), 1)

        thread.join(120)
        self.assertFalse(thread.is_alive(), "the endless query's client never got an answer")
        (answer,) = outcome
        assert isinstance(answer, Response), answer
        self.assertEqual(answer.status, 504, answer.body)
        error = json.loads(answer.body)["error"]
        self.assertEqual(error["code"], "query_timeout")
        self.assertIn("time limit of 10 s", error["message"])
        self.assertEqual(self.metric(self.leader, "graft_query_timeouts"), 1)
        self.assertEqual(self.metric(self.leader, "graft_queries_in_threads"), 0)
        for node in self.cluster.node_ids:
            self.assertEqual(self.cluster.request(node, "GET", "/health").status, 200)
