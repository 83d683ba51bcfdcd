"""A SQL command that is slow within its work budget, on a real 3-node SQLite cluster.

The budget counts SQLite VM steps, and a step over a large value takes long: a loop running
`instr()` over a freshly built 1 MB value per row takes seconds. Commands of the SQLite FSM apply
in each node's worker thread (graft.driver.fsm_work), so while one runs every node answers its
status, the leader keeps leading in the same term, and afterwards the cluster takes writes with
replicas that agree. Before, the leader's reactor stopped for the whole command, the followers
elected another leader, which then stopped on the same entry in turn.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from graft.testing.cluster import Response
from graft.testing.hostile import SQLITE_FSM, assert_replicas_equal
from graft.testing.process_case import ProcessTestCase

ROWS = 3000  # about 3 s of one core for each node, ~5 s on a busy 2-core machine
SLOW = (
    f"WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM r LIMIT {ROWS}) "
    "INSERT INTO t(v) SELECT count(*) FROM r "
    "WHERE instr(hex(zeroblob(500000)) || i, 'zz') > 0"
).encode()


class SlowCommandTests(ProcessTestCase):
    def test_a_slow_command_costs_no_election(self) -> None:
        cluster = self.make_cluster(
            fsm=SQLITE_FSM,
            election_ms=1000,
            heartbeat_ms=100,
            extra={"api": {"command_timeout_ms": 120_000}},
        )
        leader, term = cluster.wait_for_leader(timeout=30)
        made = cluster.request(leader, "POST", "/command", b"CREATE TABLE t (v INTEGER)")
        self.assertEqual(made.status, 200, made.body)
        index = int(made.headers["Graft-Index"])
        cluster.wait_applied(index, cluster.node_ids, timeout=30)

        answer: dict[str, Any] = {}

        def send() -> None:
            started = time.monotonic()
            try:
                answer["response"] = cluster.request(leader, "POST", "/command", SLOW, timeout=120)
            except Exception as e:  # shown by the assertion below
                answer["error"] = repr(e)
            answer["seconds"] = time.monotonic() - started

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        busy_answers = 0  # statuses the leader gave while applying the slow entry
        while sender.is_alive():
            for node in cluster.node_ids:
                status = cluster.status(node, timeout=3)
                self.assertIsNotNone(status, f"{node} did not answer /status within 3 s")
                assert status is not None
                self.assertEqual((status["term"], status["leader"]), (term, leader), node)
                if node == leader and status["commit"] > status["applied"] > index - 1:
                    busy_answers += 1
            time.sleep(0.2)
        sender.join()
        response: Response | None = answer.get("response")
        assert response is not None, answer
        self.assertEqual(response.status, 200, response.body)
        self.assertGreater(busy_answers, 0, f"the command took {answer['seconds']:.2f} s")

        after = cluster.request(leader, "POST", "/command", b"INSERT INTO t(v) VALUES (7)")
        self.assertEqual(after.status, 200, after.body)
        cluster.wait_applied(int(after.headers["Graft-Index"]), cluster.node_ids, timeout=60)
        assert_replicas_equal(cluster)
        self.assertEqual(cluster.wait_for_leader(timeout=30), (leader, term))
