"""Client sessions on real node processes, over raw HTTP: a numbered command resent around a
leader SIGKILL, through a follower, and to a node restarted from its snapshot (then made the
leader) is applied once, answered the same each time."""

from __future__ import annotations

import json
from typing import Any

from graft.testing.cluster import LocalCluster, Response
from graft.testing.process_case import ProcessTestCase

SQLITE_FSM = "graft.fsm.sqlite:SQLiteStateMachine"
INCREMENT = b"UPDATE counter SET n = n + 1"


class SessionProcessTests(ProcessTestCase):
    def send(self, cluster: LocalCluster, node: str, sid: str, n: int) -> Response:
        """The increment as (sid, n), on ``node``; sent again while no leader can take it."""
        headers = {"Graft-Session": sid, "Graft-Sequence": str(n)}

        def answered() -> Response | None:
            try:
                resp = cluster.request(node, "POST", "/command", INCREMENT, headers=headers)
            except OSError:
                return None
            return resp if resp.status not in (503, 504) else None

        resp: Response = self.wait_for(answered, f"{node} answers ({sid}, {n})")
        return resp

    def counter(self, cluster: LocalCluster, node: str) -> Any:
        resp = cluster.query(node, b"SELECT n FROM counter", consistency="weak")
        self.assertEqual(resp.status, 200, resp.body)
        return json.loads(resp.body)["rows"][0][0]

    def test_resent_command_is_applied_once(self) -> None:
        cluster = self.make_cluster(fsm=SQLITE_FSM)
        leader, term = cluster.wait_for_leader(timeout=30)
        setup = b"CREATE TABLE counter (n INTEGER); INSERT INTO counter VALUES (0)"
        self.assertEqual(cluster.request(leader, "POST", "/command", setup).status, 200)
        follower = next(n for n in cluster.node_ids if n != leader)
        registered = cluster.request(follower, "POST", "/sessions")
        self.assertEqual(registered.status, 200, registered.body)
        sid = json.loads(registered.body)["session"]

        first = self.send(cluster, leader, sid, 1)
        self.assertEqual(first.status, 200, first.body)
        self.assertNotIn("Graft-Duplicate", first.headers)
        index = first.headers["Graft-Index"]
        cluster.wait_applied(int(index))

        # The leader dies (SIGKILL); the same command again, through a follower.
        cluster.kill(leader)
        survivors = [n for n in cluster.node_ids if n != leader]
        second, _ = cluster.wait_for_leader(timeout=30, among=survivors, exclude_term=term)
        other = next(n for n in survivors if n != second)
        again = self.send(cluster, other, sid, 1)
        self.assertEqual((again.status, again.body), (first.status, first.body))
        self.assertEqual(again.headers["Graft-Index"], index)
        self.assertEqual(again.headers.get("Graft-Duplicate"), "true")

        # A node restarted from its own snapshot, then made the leader, still knows it.
        took = cluster.request(other, "POST", "/cluster/snapshot")
        self.assertEqual(took.status, 200, took.body)
        cluster.stop(other)
        cluster.start(other)
        cluster.start(leader)
        moved = cluster.request(
            second, "POST", "/cluster/leader", json.dumps({"id": other}).encode()
        )
        self.assertEqual(moved.status, 200, moved.body)
        cluster.wait_for_leader(timeout=30)
        third = self.send(cluster, other, sid, 1)
        self.assertEqual((third.status, third.body), (first.status, first.body))
        self.assertEqual(third.headers.get("Graft-Duplicate"), "true")

        fresh = self.send(cluster, other, sid, 2)
        self.assertEqual(fresh.status, 200, fresh.body)
        cluster.wait_applied(int(fresh.headers["Graft-Index"]), nodes=cluster.node_ids)
        for node in cluster.node_ids:
            self.assertEqual(self.counter(cluster, node), 2, node)
        check = cluster.request(other, "GET", "/cluster/check")
        self.assertEqual(check.status, 200, check.body)
        self.assertTrue(json.loads(check.body)["ok"], check.body)
