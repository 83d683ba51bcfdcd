"""Bad input against a real SQLite cluster with tokens on: each gets its status and JSON error,
and none changes the replicated state."""

from __future__ import annotations

import hashlib
import json

from graft.testing.cluster import Response
from graft.testing.process_case import ProcessTestCase

TOKENS = {"read": "r-token", "write": "w-token", "admin": "a-token"}


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class BadInputTests(ProcessTestCase):
    def setUp(self) -> None:
        self.cluster = self.make_cluster(
            fsm="graft.fsm.sqlite:SQLiteStateMachine",
            extra={
                "api": {
                    "tokens": {role: [_digest(t)] for role, t in TOKENS.items()},
                    "max_body_bytes": 4096,
                }
            },
            status_token=TOKENS["read"],
        )
        self.leader, _ = self.cluster.wait_for_leader(timeout=30)
        self.follower = next(n for n in self.cluster.node_ids if n != self.leader)
        ok = self.send(
            "POST", "/command", b"CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL);"
        )
        self.assertEqual(ok.status, 200, ok.body)

    def send(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        token: str | None = "a-token",
        node: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        return self.cluster.request(node or self.follower, method, path, body, all_headers)

    def rows(self, node: str) -> list[list[object]]:
        resp = self.send(
            "POST", "/query?consistency=strong", b"SELECT k, v FROM t ORDER BY k", node=node
        )
        self.assertEqual(resp.status, 200, resp.body)
        rows: list[list[object]] = resp.json()["rows"]
        return rows

    def assertError(self, resp: Response, status: int, code: str) -> None:
        self.assertEqual(resp.status, status, resp.body)
        self.assertEqual(resp.headers.get("Content-Type"), "application/json")
        body = json.loads(resp.body)
        self.assertEqual(body["error"]["code"], code, body)
        self.assertTrue(body["error"]["message"])

    def test_each_bad_input_is_refused_and_changes_nothing(self) -> None:
        """Bad base64, malformed batch JSON, an unknown consistency, a non-numeric min_index, an
        oversized body, a write sent as a query, an unknown route, a wrong method and missing or
        wrong tokens: each gets its status and JSON error code, and the table stays empty."""
        cases = [
            (("POST", "/command?encoding=base64", b"%%%not-base64"), 400, "bad_request"),
            (("POST", "/commands", b"[not json"), 400, "bad_request"),
            (("POST", "/commands", b'{"not": "an array"}'), 400, "bad_request"),
            (("POST", "/query?consistency=fresh", b"SELECT 1"), 400, "bad_request"),
            (("POST", "/query?min_index=soon", b"SELECT 1"), 400, "bad_request"),
            (
                ("POST", "/command", b"INSERT INTO t VALUES ('x', 1);" * 400),
                413,
                "payload_too_large",
            ),
            (
                ("POST", "/query?consistency=strong", b"INSERT INTO t VALUES ('q', 1)"),
                400,
                "bad_request",
            ),
            (("GET", "/no/such/route", None), 404, "not_found"),
            (("GET", "/command", None), 405, "method_not_allowed"),
        ]
        for (method, path, body), status, code in cases:
            with self.subTest(path=path):
                self.assertError(self.send(method, path, body), status, code)
        insert = b"INSERT INTO t VALUES ('tok', 1)"
        self.assertError(self.send("POST", "/command", insert, token=None), 401, "unauthorized")
        self.assertError(self.send("POST", "/command", insert, token="nope"), 401, "unauthorized")
        self.assertError(self.send("POST", "/command", insert, token="r-token"), 403, "forbidden")
        self.assertEqual(self.send("GET", "/health", token=None).status, 200)
        for node in self.cluster.node_ids:
            self.assertEqual(self.rows(node), [], f"bad input changed the state on {node}")

    def test_failing_sql_is_committed_as_rejected_everywhere(self) -> None:
        """SQL that fails inside a command is a 422 carrying its log index; the whole script is
        rolled back, and every node reached the same outcome at that index."""
        ok = self.send("POST", "/command", b"INSERT INTO t VALUES ('a', 1);")
        self.assertEqual(ok.status, 200, ok.body)
        bad = self.send(
            "POST", "/command", b"INSERT INTO t VALUES ('b', 2); INSERT INTO t VALUES ('a', 3);"
        )
        self.assertError(bad, 422, "fsm_error")
        index = int(bad.headers["Graft-Index"])
        self.assertGreater(index, int(ok.headers["Graft-Index"]))
        self.cluster.wait_applied(index, self.cluster.node_ids)
        for node in self.cluster.node_ids:
            resp = self.send(
                "POST",
                f"/query?consistency=weak&min_index={index}",
                b"SELECT k, v FROM t ORDER BY k",
                node=node,
            )
            self.assertEqual(resp.status, 200, resp.body)
            self.assertEqual(resp.json()["rows"], [["a", 1]], f"{node} diverged")
