"""Client sessions on real node processes, over raw HTTP: a numbered command resent around a
leader SIGKILL, through a follower, to a node restarted from its own snapshot and to one
that installed the leader's snapshot (each made the leader) is applied once, answered the
same each time."""

from __future__ import annotations

import json
from functools import partial
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

    def transfer(self, cluster: LocalCluster, target: str) -> Any:
        """POST /cluster/leader to ``target`` on whichever node leads now; None to try again."""
        try:
            leader, _ = cluster.wait_for_leader(timeout=30)
            if leader == target:
                return {"leader": target}
            body = json.dumps({"id": target}).encode()
            resp = cluster.request(leader, "POST", "/cluster/leader", body, timeout=30)
        except (OSError, AssertionError):
            return None
        return resp.json() if resp.status == 200 else None

    def installed(self, cluster: LocalCluster, node: str) -> bool:
        try:
            return cluster.metric(node, "graft_snapshots_installed_total") >= 1
        except (OSError, KeyError, AssertionError):
            return False  # not serving yet

    def counter(self, cluster: LocalCluster, node: str) -> Any:
        resp = cluster.query(node, b"SELECT n FROM counter", consistency="weak")
        self.assertEqual(resp.status, 200, resp.body)
        return json.loads(resp.body)["rows"][0][0]

    def test_resent_command_is_applied_once(self) -> None:
        snapshots = {"entries": 1_000_000, "trailing": 0, "segment_bytes": 4096}
        cluster = self.make_cluster(fsm=SQLITE_FSM, extra={"snapshot": snapshots})
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

        # Enough entries for whole log segments to go when the survivors compact.
        pad = b"CREATE TABLE pad (x TEXT)"
        self.assertEqual(cluster.request(second, "POST", "/command", pad).status, 200)
        for _ in range(30):
            fill = b"INSERT INTO pad VALUES ('" + b"p" * 300 + b"')"
            self.assertEqual(cluster.request(second, "POST", "/command", fill).status, 200)
        for node in survivors:
            took = cluster.request(node, "POST", "/cluster/snapshot")
            self.assertEqual(took.status, 200, took.body)
        # One survivor restarts from its own snapshot; the killed leader, behind the
        # compacted logs, gets the new leader's snapshot.
        cluster.stop(other)
        cluster.start(other, leader)
        self.wait_for(
            lambda: self.installed(cluster, leader), f"{leader} installs the leader's snapshot"
        )
        # Each of them, made the leader, answers the resent command as a duplicate.
        for target in (leader, other):
            moved = self.wait_for(
                partial(self.transfer, cluster, target), f"leadership moves to {target}"
            )
            self.assertEqual(moved["leader"], target)
            again = self.send(cluster, target, sid, 1)
            self.assertEqual((again.status, again.body), (first.status, first.body), target)
            self.assertEqual(again.headers["Graft-Index"], index)
            self.assertEqual(again.headers.get("Graft-Duplicate"), "true")

        fresh = self.send(cluster, other, sid, 2)
        self.assertEqual(fresh.status, 200, fresh.body)
        cluster.wait_applied(int(fresh.headers["Graft-Index"]), nodes=cluster.node_ids)
        for node in cluster.node_ids:
            self.assertEqual(self.counter(cluster, node), 2, node)
        check = cluster.request(other, "GET", "/cluster/check")
        self.assertEqual(check.status, 200, check.body)
        self.assertTrue(json.loads(check.body)["ok"], check.body)
