"""SQL time and randomness in commands against real processes: the values the leader's stamp
gives are the same on every replica, also on a follower restarted from its snapshot."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from twisted.trial import unittest

from graft.testing.cluster import LocalCluster

SCHEMA = (
    b"CREATE TABLE t (id INTEGER PRIMARY KEY, created TEXT DEFAULT CURRENT_TIMESTAMP, "
    b"at TEXT, r INTEGER, b BLOB)"
)
INSERT = b"INSERT INTO t (at, r, b) VALUES (datetime('now'), random(), randomblob(8));"
ROWS = b"SELECT id, created, at, r, hex(b) FROM t ORDER BY id"
TEXT = {"Content-Type": "text/plain"}


class SQLTimeProcessTests(unittest.TestCase):
    def command(self, node: str, sql: bytes) -> int:
        resp = self.cluster.request(node, "POST", "/command", sql, TEXT)
        self.assertEqual(resp.status, 200, resp.body)
        return int(resp.headers["Graft-Index"])

    def rows(self, node: str, index: int) -> list[list[Any]]:
        path = f"/query?consistency=weak&min_index={index}"
        resp = self.cluster.request(node, "POST", path, ROWS, TEXT, timeout=20)
        self.assertEqual(resp.status, 200, resp.body)
        rows: list[list[Any]] = resp.json()["rows"]
        return rows

    def test_time_and_random_agree_after_snapshot_and_restart(self) -> None:
        """datetime('now'), a DEFAULT CURRENT_TIMESTAMP column, random() and randomblob() sent
        through a follower commit with the leader's time, every replica holds the same rows
        and digest (GET /cluster/check), and so does a follower restarted from its snapshot
        with stamped entries after it to replay."""
        self.cluster = cluster = LocalCluster(
            Path(self.mktemp()), fsm="graft.fsm.sqlite:SQLiteStateMachine"
        )
        self.addCleanup(cluster.close)
        cluster.start()
        leader, _ = cluster.wait_for_leader(timeout=15)
        follower = next(n for n in cluster.node_ids if n != leader)
        self.command(follower, SCHEMA)
        self.command(follower, INSERT * 3)
        taken = cluster.request(follower, "POST", "/cluster/snapshot", timeout=20)
        self.assertEqual(taken.status, 200, taken.body)
        self.assertGreater(taken.json()["index"], 0)
        index = self.command(leader, INSERT)

        rows = self.rows(leader, index)
        self.assertEqual(len(rows), 4)
        today = time.strftime("%Y-%m-%d", time.gmtime())
        for _, created, at, r, blob in rows:
            self.assertEqual(created, at)
            self.assertLessEqual(abs(int(created[:4]) - int(today[:4])), 1, created)
            self.assertIsInstance(r, int)
            self.assertEqual(len(blob), 16)
        self.assertEqual(len({row[3] for row in rows}), 4)  # random, not a constant
        for node in cluster.node_ids:
            self.assertEqual(self.rows(node, index), rows, node)

        cluster.stop(follower)
        cluster.start(follower)
        cluster.wait_until_serving(follower, timeout=30)
        self.assertEqual(self.rows(follower, index), rows)
        check = cluster.request(follower, "GET", "/cluster/check", timeout=60)
        self.assertEqual(check.status, 200, check.body)
        result: dict[str, Any] = json.loads(check.body)
        self.assertTrue(result["ok"], result)
        self.assertEqual(len({m["digest"] for m in result["members"].values()}), 1, result)
