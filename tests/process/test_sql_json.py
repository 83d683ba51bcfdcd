"""The SQLite FSM's JSON form on real `twist graft` processes: the README's parameterised curl
requests through followers, `graft command -p` / `graft query --param-json`, and the replica
check agreeing on every node afterwards."""

from __future__ import annotations

import json
from pathlib import Path

from twisted.trial import unittest

from graft.testing.cli import graft_cli
from graft.testing.cluster import LocalCluster

JSON = {"Content-Type": "application/json"}


class SqlJsonProcessTests(unittest.TestCase):
    def test_parameterised_sql_on_a_real_cluster(self) -> None:
        """A JSON-form command to one follower and a strong JSON-form query to the other give
        typed results; the CLI binds -p and --param-json; every replica's digest is equal."""
        cluster = LocalCluster(Path(self.mktemp()), fsm="graft.fsm.sqlite:SQLiteStateMachine")
        self.addCleanup(cluster.close)
        cluster.start()
        leader, _ = cluster.wait_for_leader(timeout=30)
        first, second = [n for n in cluster.node_ids if n != leader]
        schema = b"CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, at DATETIME);"
        self.assertEqual(cluster.request(first, "POST", "/command", schema).status, 200)
        command = {
            "statements": [
                {
                    "sql": "INSERT INTO users(name) VALUES (?)",
                    "params": ["x'); DROP TABLE users;--"],
                },
                {
                    "sql": "INSERT INTO users(name, at) VALUES (:n, :at)",
                    "params": {"n": "o'neil", "at": "2026-12-06 06:00:00"},
                },
            ]
        }
        answer = cluster.request(first, "POST", "/command", json.dumps(command).encode(), JSON)
        self.assertEqual(answer.status, 200, answer.body)
        self.assertEqual(
            answer.json()["results"],
            [{"last_insert_id": 1, "rows_affected": 1}, {"last_insert_id": 2, "rows_affected": 1}],
        )
        url = cluster.api_url(second)
        ran = graft_cli(
            "command",
            "--url",
            url,
            "INSERT INTO users(id, name) VALUES (?, ?)",
            "-p",
            str(2**62),
            "-p",
            "hopper",
        )
        self.assertEqual(ran.returncode, 0, ran.stdout + ran.stderr)
        self.assertIn("1 row affected", ran.stdout)
        query = {
            "statements": [{"sql": "SELECT * FROM users WHERE id >= ? ORDER BY id", "params": [1]}]
        }
        answer = cluster.request(
            second, "POST", "/query?consistency=strong", json.dumps(query).encode(), JSON
        )
        self.assertEqual(answer.status, 200, answer.body)
        (rows,) = answer.json()["results"]
        self.assertEqual(rows["types"], ["INTEGER", "TEXT", "DATETIME"])
        self.assertEqual(
            rows["values"],
            [
                [1, "x'); DROP TABLE users;--", None],
                [2, "o'neil", "2026-12-06 06:00:00"],
                [2**62, "hopper", None],
            ],
        )
        ran = graft_cli(
            "query",
            "--url",
            url,
            "--consistency",
            "strong",
            "SELECT name FROM users WHERE id = :id",
            "--param-json",
            '{"id": 2}',
        )
        self.assertEqual(ran.returncode, 0, ran.stdout + ran.stderr)
        self.assertIn("o'neil", ran.stdout)
        check = cluster.request(leader, "GET", "/cluster/check", timeout=60)
        self.assertEqual(check.status, 200, check.body)
        result = check.json()
        self.assertTrue(result["ok"] and result["complete"], result)
        self.assertEqual(len({m["digest"] for m in result["members"].values()}), 1, result)
