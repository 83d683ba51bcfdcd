"""`graft status` against a real cluster (issue #22): with one of three nodes stopped it exits
non-zero and names the stopped member, learned from the cluster (the client is given only
one node's URL); the leader logs once that it cannot reach the stopped node."""

from __future__ import annotations

import json

from graft.cli.render import STATUS_UNREACHABLE_EXIT
from graft.testing.cli import graft_cli
from graft.testing.process_case import ProcessTestCase


class StatusProcessTests(ProcessTestCase):
    def test_stopped_member_is_named_and_the_exit_code_says_so(self) -> None:
        cluster = self.make_cluster()
        leader, _ = cluster.wait_for_leader(timeout=30)
        url = cluster.api_url(leader)

        healthy = graft_cli("status", "--url", url, "--json")
        self.assertEqual(healthy.returncode, 0, healthy.stdout + healthy.stderr)
        rows = {row["node"]: row for row in json.loads(healthy.stdout)}
        self.assertEqual(set(rows), {"n1", "n2", "n3"})
        self.assertEqual({row["member"] for row in rows.values()}, {"voter"})
        for row in rows.values():
            self.assertIsInstance(row["log_bytes"], int)
            self.assertIsInstance(row["fsm_bytes"], int)
            self.assertRegex(row["cert_expires"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")

        stopped = next(n for n in ("n1", "n2", "n3") if n != leader)
        # Lines before the stop do not count (peers start one after the other: the leader may
        # have said it could not reach one, then that it could again).
        start = len(cluster.logs(leader))
        cluster.stop(stopped)
        line = f"cannot reach peer {stopped}"
        self.wait_for(lambda: line in cluster.logs(leader)[start:], "the leader's line about it")

        ran = graft_cli("status", "--url", url)
        self.assertEqual(ran.returncode, STATUS_UNREACHABLE_EXIT, ran.stdout + ran.stderr)
        self.assertIn(f"graft status: voter {stopped} did not answer", ran.stderr)
        self.assertIn("connection refused", ran.stderr)
        unreachable = [r for r in ran.stdout.splitlines() if r.startswith(stopped)]
        self.assertEqual(len(unreachable), 1)
        self.assertIn("unreachable", unreachable[0])
        # The leader said it once, not once per redial.
        after = cluster.logs(leader)[start:]
        self.assertEqual(after.count(line), 1, after)
        self.assertIn("connection refused", after.split(line, 1)[1].splitlines()[0])
