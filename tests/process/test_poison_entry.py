"""A poison entry on a real 3-node cluster: every node stops at it, `graft skip-entry` on each
stopped node lets them start again past it."""

from __future__ import annotations

import contextlib
import re

from click.testing import CliRunner

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
        """A command that makes the FSM raise stops every node, naming the entry and the
        command to run; after `graft skip-entry` on every stopped node they start, skip it,
        keep the state from before and after it, and take writes."""
        from graft.cli import main

        cluster = self.make_cluster(
            extra={"fsm": {"init": "init.py", "eval": "eval.py"}}, start=False
        )
        (cluster.base / "init.py").write_text(POISON_INIT)
        (cluster.base / "eval.py").write_text(POISON_EVAL)
        cluster.start()
        leader, _ = cluster.wait_for_leader(timeout=30)
        resp = cluster.request(leader, "POST", "/command", put("before", "1"))
        self.assertEqual(resp.status, 200, resp.body)
        with contextlib.suppress(OSError):  # the leader may stop before it answers
            cluster.request(leader, "POST", "/command", b"poison", timeout=5)
        for node in cluster.node_ids:
            cluster.processes[node].wait(30)
        # After the write, unless the leader's one-time membership entry (the members'
        # addresses) landed between the two: every node must name the same entry.
        stopped_at = re.search(r"applying entry (\d+) ", cluster.logs(leader))
        assert stopped_at is not None, cluster.logs(leader)
        index = int(stopped_at[1])
        self.assertGreater(index, int(resp.headers["Graft-Index"]))
        for node in cluster.node_ids:
            self.assertRegex(
                cluster.logs(node),
                rf"applying entry {index} \(term \d+\) to the FSM: it raised RuntimeError: "
                rf"a bug in the script.*graft skip-entry {index} -c CONFIG --node {node}",
            )

        for node in cluster.node_ids:
            args = ["skip-entry", str(index), "-c", str(cluster.config_path), "--node", node]
            result = CliRunner().invoke(main, [*args, "--yes"])
            self.assertEqual(result.exit_code, 0, result.output)
        cluster.start()
        leader, _ = cluster.wait_for_leader(timeout=30)
        resp = cluster.request(leader, "POST", "/command", put("after", "2"))
        self.assertEqual(resp.status, 200, resp.body)
        for node in cluster.node_ids:
            for key, value in (("before", "1"), ("after", "2")):
                read = cluster.request(node, "POST", "/query?consistency=strong", get(key))
                self.assertEqual((read.status, read.json()), (200, value), read.body)
            self.assertIn(f"entry {index} (term", cluster.logs(node))
            self.assertIn("is marked rejected on this node", cluster.logs(node))
