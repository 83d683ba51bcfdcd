"""graft restore and graft recover on real data dirs, then real nodes started on them."""

from __future__ import annotations

import io
from pathlib import Path

from graft.config import load_config
from graft.fsm.kv import KeyValueStateMachine
from graft.ops import OperationError, recover_membership, restore_data_dir
from graft.testing.kv import get, put
from graft.testing.process_case import ProcessTestCase


class RestoreTests(ProcessTestCase):
    def test_new_cluster_seeded_from_a_backup(self) -> None:
        """Every node of a new cluster restored from the same backup starts with its state;
        the cluster elects a leader and takes writes after it."""
        backup = Path(self.mktemp())
        fsm = KeyValueStateMachine()
        for i in range(50):
            fsm.apply(put(f"k{i}", str(i)), i + 1)
        sink = io.BytesIO()
        fsm.snapshot(sink)
        backup.write_bytes(sink.getvalue())

        cluster = self.make_cluster(start=False)
        cfg = load_config(cluster.config_path)
        for node in cluster.node_ids:
            restore_data_dir(cfg, node, backup)
        with self.assertRaises(OperationError):
            restore_data_dir(cfg, "n1", backup)
        cluster.start()
        leader, _ = cluster.wait_for_leader(timeout=30)
        read = cluster.request(leader, "POST", "/query?consistency=strong", get("k49"))
        self.assertEqual(read.json(), {"value": "49"})
        wrote = cluster.request(leader, "POST", "/command", put("after", "yes"))
        self.assertEqual(wrote.status, 200, wrote.body)
        self.assertGreater(int(wrote.headers["Graft-Index"]), 1)

    def test_refuses_a_file_the_fsm_cannot_restore(self) -> None:
        """A file that is not a snapshot of the configured FSM is refused before anything is
        written."""
        cluster = self.make_cluster(start=False)
        cfg = load_config(cluster.config_path)
        junk = Path(self.mktemp())
        junk.write_bytes(b"not a snapshot")
        with self.assertRaises(OperationError) as caught:
            restore_data_dir(cfg, "n1", junk)
        self.assertIn("is not a snapshot that", str(caught.exception))
        self.assertFalse(cluster.data_dir("n1").exists())


class RecoverTests(ProcessTestCase):
    def test_single_survivor_recovers_quorum(self) -> None:
        """With two of three nodes lost for good, recover --members on the survivor makes it a
        cluster of one that elects itself and keeps the data it had."""
        cluster = self.make_cluster()
        leader, _ = cluster.wait_for_leader(timeout=30)
        for i in range(10):
            resp = cluster.request(leader, "POST", "/command", put(f"r{i}", str(i)))
            self.assertEqual(resp.status, 200, resp.body)
        cluster.wait_applied(int(resp.headers["Graft-Index"]), cluster.node_ids)
        for node in cluster.node_ids:
            cluster.stop(node)
        survivor = next(n for n in cluster.node_ids if n != leader)
        cfg = load_config(cluster.config_path)
        membership = recover_membership(cfg, survivor, [survivor])
        self.assertEqual(membership.voters, frozenset({survivor}))
        cluster.start(survivor)
        alone, _ = cluster.wait_for_leader(timeout=30, among=[survivor])
        self.assertEqual(alone, survivor)
        read = cluster.request(survivor, "POST", "/query?consistency=strong", get("r9"))
        self.assertEqual(read.json(), {"value": "9"})
        with self.assertRaises(OperationError):
            recover_membership(cfg, survivor, ["someone-else"])
