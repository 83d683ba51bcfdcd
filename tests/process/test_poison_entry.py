"""A poison entry on a real 3-node cluster: every node stops at it, `graft skip-entry` on each
stopped node lets them start again past it."""

from __future__ import annotations

import contextlib
import http.client
import re

from click.testing import CliRunner

from graft.testing.cluster import LocalCluster
from graft.testing.kv import get, put
from graft.testing.process_case import ProcessTestCase

POISON_INIT = "def init():\n    return {}\n"
POISON_EVAL = """
import json

CONTENT_TYPE = "application/json"


def apply(state, command):
    if command == b"poison":
        raise RuntimeError("a bug in the script")  # not CommandRejected: stops the node
    request = json.loads(command)
    return {**state, request["key"]: request["value"]}, "{}"


def query(state, query):
    return json.dumps(state.get(json.loads(query)["key"]))
"""


class SkipEntryTests(ProcessTestCase):
    def test_every_node_stops_at_a_poison_entry_until_it_is_skipped(self) -> None:
        """A command that makes the FSM raise stops every node that applies it, naming the
        entry and the command to run; after `graft skip-entry` on every node that holds it they
        start, skip it, keep the state from before and after it, and take writes."""
        cluster = self.make_cluster(
            extra={"fsm": {"init": "init.py", "eval": "eval.py"}}, start=False
        )
        (cluster.base / "init.py").write_text(POISON_INIT)
        (cluster.base / "eval.py").write_text(POISON_EVAL)
        cluster.start()
        leader, _ = cluster.wait_for_leader(timeout=30)
        resp = cluster.request(leader, "POST", "/command", put("before", "1"))
        self.assertEqual(resp.status, 200, resp.body)
        # The leader may stop before it answers.
        with contextlib.suppress(OSError, http.client.HTTPException):
            cluster.request(leader, "POST", "/command", b"poison", timeout=5)
        cluster.processes[leader].wait(60)  # it applies the entry first, always
        # After the write, unless the leader's one-time membership entry (the members'
        # addresses) landed between the two: every node must name the same entry.
        stopped_at = re.search(r"applying entry (\d+) ", cluster.logs(leader))
        assert stopped_at is not None, cluster.logs(leader)
        index = int(stopped_at[1])
        self.assertGreater(index, int(resp.headers["Graft-Index"]))
        # Every node that applies the entry stops at it. One that has not applied it when the
        # leader stopped (it may never learn it was committed: the nodes that knew it stop) is
        # stopped here, after checking it has not applied the entry and run on.
        for node in cluster.alive():
            status = cluster.status(node)
            if status is not None:
                self.assertLess(status["applied"], index, f"{node} applied it and runs on")
            cluster.stop(node, timeout=60)
        fatal = (
            rf"applying entry {index} \(term \d+\) to the FSM: it raised RuntimeError: "
            rf"a bug in the script.*graft skip-entry {index} -c CONFIG --node "
        )
        stopped = [n for n in cluster.node_ids if re.search(fatal + n, cluster.logs(n))]
        self.assertIn(leader, stopped)

        # `graft skip-entry` on every node whose log holds the entry (it refuses one whose log
        # does not: that node gets the entry later, stops at it, and is given the same remedy).
        skipped = {n for n in cluster.node_ids if self.skip_entry(cluster, n, index, n in stopped)}
        cluster.start()
        leader, _ = cluster.wait_for_leader(timeout=30)
        resp = cluster.request(leader, "POST", "/command", put("after", "2"))
        self.assertEqual(resp.status, 200, resp.body)
        after = int(resp.headers["Graft-Index"])
        for node in set(cluster.node_ids) - skipped:
            cluster.processes[node].wait(60)
            self.assertRegex(cluster.logs(node), fatal + node)
            self.assertTrue(self.skip_entry(cluster, node, index, True))
            cluster.start(node)
        cluster.wait_applied(after, cluster.node_ids, timeout=60)
        for node in cluster.node_ids:
            for key, value in (("before", "1"), ("after", "2")):
                read = cluster.request(node, "POST", "/query?consistency=strong", get(key))
                self.assertEqual((read.status, read.json()), (200, value), read.body)
            self.assertIn(f"entry {index} (term", cluster.logs(node))
            self.assertIn("is marked rejected on this node", cluster.logs(node))

    def skip_entry(self, cluster: LocalCluster, node: str, index: int, must: bool) -> bool:
        """`graft skip-entry INDEX` on the stopped ``node``: whether it marked the entry. When
        not ``must``, a log that does not hold the entry is no failure."""
        from graft.cli.app import main

        args = ["skip-entry", str(index), "-c", str(cluster.config_path), "--node", node]
        result = CliRunner().invoke(main, [*args, "--yes"])
        if result.exit_code == 0:
            return True
        self.assertFalse(must, result.output)
        self.assertIn("log holds entries", result.output)
        return False
