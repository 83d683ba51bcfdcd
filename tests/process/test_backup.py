"""`graft snapshot save` against a fresh real cluster: a backup in one command, with no
snapshot taken beforehand."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from twisted.trial import unittest

from graft.fsm.kv import KeyValueStateMachine
from graft.testing.cli import graft_cli
from graft.testing.cluster import LocalCluster


def put(key: str, value: str) -> bytes:
    return json.dumps({"op": "put", "key": key, "value": value}).encode()


class SnapshotSaveTests(unittest.TestCase):
    def test_fresh_cluster_backed_up_in_one_command(self) -> None:
        """On a cluster that never took a snapshot, `graft snapshot save` takes one and
        downloads it: the file holds every acknowledged write and matches the printed
        index and sha256. A second save right after finds that snapshot recent enough and
        downloads it again without taking another."""
        cluster = LocalCluster(Path(self.mktemp()))
        self.addCleanup(cluster.close)
        cluster.start()
        leader, _ = cluster.wait_for_leader(timeout=15)
        for i in range(20):
            wrote = cluster.request(leader, "POST", "/command", put(f"k{i}", str(i)))
            self.assertEqual(wrote.status, 200, wrote.body)
        applied = int(wrote.headers["Graft-Index"])
        status = cluster.status(leader)
        assert status is not None
        self.assertEqual(status["snapshot"]["index"], 0)

        target = Path(self.mktemp())
        config = str(cluster.config_path)
        ran = graft_cli("snapshot", "save", str(target), "-c", config, "--node", leader, "--json")
        self.assertEqual(ran.returncode, 0, ran.stderr)
        saved = json.loads(ran.stdout)
        self.assertTrue(saved["taken"])
        self.assertGreaterEqual(saved["index"], applied)
        self.assertEqual(saved["size"], target.stat().st_size)
        self.assertEqual(saved["sha256"], hashlib.sha256(target.read_bytes()).hexdigest())
        fsm = KeyValueStateMachine()
        with target.open("rb") as f:
            fsm.restore(f)
        self.assertEqual(
            json.loads(fsm.query(json.dumps({"op": "get", "key": "k19"}).encode())), {"value": "19"}
        )

        again = Path(self.mktemp())
        ran = graft_cli("snapshot", "save", str(again), "-c", config, "--node", leader)
        self.assertEqual(ran.returncode, 0, ran.stderr)
        self.assertTrue(ran.stdout.startswith("saved the snapshot of "), ran.stdout)
        self.assertIn(f"at index {saved['index']} ", ran.stdout)
        self.assertIn(f"sha256 {saved['sha256']}", ran.stdout)
