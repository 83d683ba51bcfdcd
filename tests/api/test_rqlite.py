"""rqlite's API (graft.api.rqlite) against a FakeBackend with canned FSM answers, in memory:
what reaches the FSM (Graft's JSON SQL form) and what rqlite's clients get back."""

from __future__ import annotations

import base64
import json
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from graft.api.limits import origin_form
from graft.api.rqlite.response import time_text, unix_time
from graft.config import ApiLimits
from graft.driver.port import Consistency
from graft.errors import BadRequest, NoLeader
from tests.api.fakes import READER, WRITER, ApiTestCase, Settings, tokens


def fsm_answer(*results: dict[str, Any]) -> bytes:
    return json.dumps({"results": list(results)}).encode()


def basic(user: str, password: str) -> dict[str, str]:
    pair = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {pair}"}


class RqliteTestCase(ApiTestCase):
    """The fake FSM answers in the JSON form: ``self.answer`` for commands, a row for reads."""

    def setUp(self) -> None:
        super().setUp()
        self.answer = fsm_answer({"last_insert_id": 1, "rows_affected": 1})
        self.backend.output_for = lambda command: self.answer
        self.backend.query_output = fsm_answer({"columns": ["1"], "types": [""], "values": [[1]]})


class ExecuteTests(RqliteTestCase):
    def submitted_form(self) -> Any:
        (commands,) = self.backend.submitted
        (command,) = commands
        return json.loads(command)

    def test_statement_shapes_become_the_json_form(self) -> None:
        """Strings, positional and named parameters, BLOBs as x'hex' and byte arrays, booleans
        and integers past 64 bits: one command holding Graft's JSON form, in a transaction
        when ?transaction is present (with no value, as pyrqlite sends it)."""
        body = [
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v)",
            ["INSERT INTO t(v) VALUES (?)", "x"],
            ["INSERT INTO t(v) VALUES (:v)", {"v": 5}],
            ["INSERT INTO t(v) VALUES (?), (?), (?)", "x'0aFF'", [1, 2, 255], True],
            ["INSERT INTO t(v) VALUES (?), (?)", 2**63, None],
            ["SELECT 1"],
        ]
        answer = self.call("POST", "/db/execute?transaction", json=body)
        self.assertEqual(answer.status, 200, answer.body)
        self.assertNotIn(b"true", self.backend.submitted[0][0].split(b'"transaction"')[0])
        blob = {"blob": base64.b64encode(b"\x0a\xff").decode()}
        self.assertEqual(
            self.submitted_form(),
            {
                "statements": [
                    {"sql": "CREATE TABLE t (id INTEGER PRIMARY KEY, v)"},
                    {"sql": "INSERT INTO t(v) VALUES (?)", "params": ["x"]},
                    {"sql": "INSERT INTO t(v) VALUES (:v)", "params": {"v": 5}},
                    {
                        "sql": "INSERT INTO t(v) VALUES (?), (?), (?)",
                        "params": [blob, {"blob": base64.b64encode(b"\x01\x02\xff").decode()}, 1],
                    },
                    {"sql": "INSERT INTO t(v) VALUES (?), (?)", "params": [float(2**63), None]},
                    {"sql": "SELECT 1"},
                ],
                "transaction": True,
            },
        )

    def test_without_transaction_each_statement_stands_alone(self) -> None:
        self.call("POST", "/db/execute", json=["DELETE FROM t"])
        self.assertIs(self.submitted_form()["transaction"], False)

    def test_text_plain_body_is_one_statement(self) -> None:
        self.call(
            "POST",
            "/db/execute",
            data=b"INSERT INTO t VALUES ('a;b')",
            headers={"Content-Type": "text/plain"},
        )
        self.assertEqual(
            self.submitted_form()["statements"], [{"sql": "INSERT INTO t VALUES ('a;b')"}]
        )

    def test_results_in_rqlite_shape(self) -> None:
        """Zero counts are left out (a CREATE answers {}), errors stay per statement, 200."""
        self.answer = fsm_answer(
            {"last_insert_id": 0, "rows_affected": 0},
            {"last_insert_id": 7, "rows_affected": 2},
            {"error": "UNIQUE constraint failed: t.id"},
        )
        answer = self.call("POST", "/db/execute", json=["a", "b", "c"])
        self.assertEqual(answer.status, 200)
        self.assertEqual(
            answer.json(),
            {
                "results": [
                    {},
                    {"last_insert_id": 7, "rows_affected": 2},
                    {"error": "UNIQUE constraint failed: t.id"},
                ]
            },
        )
        self.assertEqual(answer.header("Graft-Index"), "10")

    def test_fsm_refusal_is_a_statement_error(self) -> None:
        """A command the FSM refuses as a whole is answered as rqlite answers an SQL error."""
        self.backend.rejected.add(
            json.dumps(
                {"statements": [{"sql": "INSERT x"}], "transaction": False},
                separators=(",", ":"),
            ).encode()
        )
        answer = self.call("POST", "/db/execute", json=["INSERT x"])
        self.assertEqual(answer.status, 200)
        (result,) = answer.json()["results"]
        self.assertIn("rejected", result["error"])

    def test_timings_raft_index_queue_and_pretty(self) -> None:
        answer = self.call(
            "POST", "/db/execute?timings&raft_index&queue&wait&pretty", json=["INSERT 1"]
        )
        document = answer.json()
        self.assertEqual(
            set(document), {"results", "time", "raft_index", "sequence_number"}, document
        )
        self.assertEqual(document["raft_index"], 10)
        self.assertIn(b'\n    "results"', answer.body)

    def test_malformed_requests_are_400(self) -> None:
        for body, why in (
            (b"[", "not JSON"),
            (b'{"a": 1}', "not an array"),
            (b"[]", "no statements"),
            (b"[1]", "statement not a string"),
            (b'[["SELECT ?", 1, {"a": 2}]]', "mixed parameters"),
            (b'[["SELECT ?", [1, 300]]]', "not bytes"),
            (b'[["SELECT ?", [[1]]]]', "nested array"),
            (b"[" * 100 + b"]" * 100, "too deep"),
        ):
            with self.subTest(why):
                answer = self.call("POST", "/db/execute", data=body)
                self.assertError(answer, 400, "bad_request")
        self.assertEqual(self.backend.submitted, [])

    def test_statement_count_limit(self) -> None:
        self.serve(Settings(limits=ApiLimits(max_batch_commands=3)))
        answer = self.call("POST", "/db/execute", json=["a"] * 4)
        self.assertError(answer, 413, "payload_too_large")
        self.assertEqual(self.backend.submitted, [])

    def test_follower_forwards_or_redirects(self) -> None:
        """On a follower the statements go to the backend (which forwards); with ?redirect
        the answer is rqlite's 301 to the same path and query on the leader."""
        self.backend.leader = "ritchie"
        answer = self.call(
            "POST", "/db/execute?redirect&transaction", json=["INSERT 1"], allow_redirects=False
        )
        self.assertEqual(answer.status, 301)
        self.assertEqual(
            answer.header("Location"), "http://127.0.0.1:8081/db/execute?redirect&transaction"
        )
        self.assertEqual(self.backend.submitted, [])
        self.assertEqual(self.call("POST", "/db/execute", json=["INSERT 1"]).status, 200)
        self.assertEqual(len(self.backend.submitted), 1)

    def test_no_leader_is_503(self) -> None:
        self.backend.failure = NoLeader("no leader is known")
        self.assertError(self.call("POST", "/db/execute", json=["a"]), 503, "no_leader")


class QueryTests(RqliteTestCase):
    def test_get_q_with_level_freshness_timeout(self) -> None:
        self.backend.query_output = fsm_answer({"columns": ["1"], "types": [""], "values": [[1]]})
        answer = self.call("GET", "/db/query?q=SELECT%201&level=none&freshness=1.5s&timeout=2s")
        self.assertEqual(answer.status, 200, answer.body)
        self.assertEqual(
            answer.json(), {"results": [{"columns": ["1"], "types": ["integer"], "values": [[1]]}]}
        )
        (call,) = self.backend.queries
        self.assertEqual(
            json.loads(call.query),
            {"statements": [{"sql": "SELECT 1"}], "transaction": False},
        )
        self.assertEqual(call.consistency, Consistency.WEAK)
        self.assertEqual(call.max_lag_ms, 1500)
        self.assertEqual(call.timeout, 2.0)

    def test_levels_map_onto_consistencies(self) -> None:
        for level, expected in (
            ("", Consistency.DEFAULT),
            ("none", Consistency.WEAK),
            ("weak", Consistency.DEFAULT),
            ("auto", Consistency.DEFAULT),
            ("linearizable", Consistency.STRONG),
            ("STRONG", Consistency.STRONG),
        ):
            with self.subTest(level):
                self.backend.queries.clear()
                self.call("GET", f"/db/query?q=SELECT%201&level={level}")
                self.assertEqual(self.backend.queries[0].consistency, expected)
                # freshness only bounds level=none reads, as in rqlite
                self.assertIsNone(self.backend.queries[0].max_lag_ms)
        self.assertError(
            self.call("GET", "/db/query?q=SELECT%201&level=eventual"), 400, "bad_request"
        )

    def test_bad_parameters_are_400(self) -> None:
        self.serve(Settings(max_query_timeout_ms=5000))
        for query in ("timeout=10x", "timeout=6s", "freshness=-1s", "timeout=" + "1ns" * 14, "q="):
            with self.subTest(query):
                answer = self.call(
                    "GET", f"/db/query?q=SELECT%201&{query}".replace("q=SELECT%201&q=", "q=")
                )
                self.assertError(answer, 400, "bad_request")
        self.assertEqual(self.backend.queries, [])

    def test_post_statements(self) -> None:
        self.call("POST", "/db/query?transaction", json=[["SELECT * FROM t WHERE id = ?", 4]])
        self.assertEqual(
            json.loads(self.backend.queries[0].query),
            {
                "statements": [{"sql": "SELECT * FROM t WHERE id = ?", "params": [4]}],
                "transaction": True,
            },
        )

    def test_refused_read_is_a_statement_error(self) -> None:
        self.backend.failure = BadRequest("the query writes: send it as a command")
        answer = self.call("GET", "/db/query?q=DELETE%20FROM%20t")
        self.assertEqual(answer.status, 200)
        self.assertEqual(
            answer.json(), {"results": [{"error": "the query writes: send it as a command"}]}
        )

    def test_redirect_only_for_leader_reads(self) -> None:
        self.backend.leader = "ritchie"
        answer = self.call("GET", "/db/query?q=SELECT%201&redirect", allow_redirects=False)
        self.assertEqual(answer.status, 301)
        self.assertEqual(
            answer.header("Location"), "http://127.0.0.1:8081/db/query?q=SELECT%201&redirect"
        )
        local = self.call("GET", "/db/query?q=SELECT%201&redirect&level=none")
        self.assertEqual(local.status, 200)

    def test_types_and_values_rendered_as_rqlite_does(self) -> None:
        """Lower-case declared types, empty ones from the first non-NULL value, BLOBs as
        base64, time columns as RFC 3339 (pyrqlite needs the T), booleans as booleans."""
        blob = base64.b64encode(b"\x00\x01").decode()
        self.backend.query_output = fsm_answer(
            {
                "columns": ["id", "at", "ts", "day", "data", "expr", "ok", "note"],
                "types": [
                    "INTEGER",
                    "DATETIME",
                    "timestamp",
                    "DATE",
                    "BLOB",
                    "",
                    "BOOLEAN",
                    "TEXT",
                ],
                "values": [
                    [
                        1,
                        "2024-05-01 12:30:00",
                        "2024-05-01 12:30:00.250000",
                        "2024-05-01",
                        {"blob": blob},
                        None,
                        1,
                        "2024-05-01 12:30:00",
                    ],
                    [2, 1714566600, "not a time", None, None, 2.5, 0, None],
                ],
            },
            {"columns": ["n"], "types": ["integer"], "values": []},
        )
        answer = self.call("GET", "/db/query?q=SELECT%20*%20FROM%20t")
        self.assertEqual(
            answer.json()["results"],
            [
                {
                    "columns": ["id", "at", "ts", "day", "data", "expr", "ok", "note"],
                    "types": [
                        "integer",
                        "datetime",
                        "timestamp",
                        "date",
                        "blob",
                        "real",
                        "boolean",
                        "text",
                    ],
                    "values": [
                        [
                            1,
                            "2024-05-01T12:30:00Z",
                            "2024-05-01T12:30:00.25Z",
                            "2024-05-01T00:00:00Z",
                            blob,
                            None,
                            True,
                            "2024-05-01 12:30:00",
                        ],
                        [2, "2024-05-01T12:30:00Z", "not a time", None, None, 2.5, False, None],
                    ],
                },
                {"columns": ["n"], "types": ["integer"]},
            ],
        )
        values = answer.json()["results"][0]["values"]
        self.assertIs(values[0][6], True)  # not 1: a JSON boolean
        self.assertIs(values[1][6], False)

    def test_associative_writes_have_null_rows(self) -> None:
        """In associative form rqlite gives write results "rows": null, so a client can tell
        them from reads."""
        answer = self.call("POST", "/db/execute?associative", json=["a", "b"])
        self.assertEqual(
            answer.json(), {"results": [{"last_insert_id": 1, "rows_affected": 1, "rows": None}]}
        )

    def test_associative_and_blob_array(self) -> None:
        blob = base64.b64encode(b"\x00\xff").decode()
        self.backend.query_output = fsm_answer(
            {
                "columns": ["id", "data"],
                "types": ["integer", "blob"],
                "values": [[1, {"blob": blob}]],
            }
        )
        answer = self.call("GET", "/db/query?q=SELECT%201&associative&blob_array")
        self.assertEqual(
            answer.json(),
            {
                "results": [
                    {
                        "types": {"id": "integer", "data": "blob"},
                        "rows": [{"id": 1, "data": [0, 255]}],
                    }
                ]
            },
        )

    def test_time_text_forms(self) -> None:
        for text, expected in (
            ("2024-05-01T12:30", "2024-05-01T12:30:00Z"),
            ("2024-05-01 12:30:05Z", "2024-05-01T12:30:05Z"),
            ("2024-05-01 12:30:05.123456789+02:00", "2024-05-01T12:30:05.123456789+02:00"),
            ("2024-05-01 12:30:05-00:00", "2024-05-01T12:30:05Z"),
            ("2024-13-01", "2024-13-01"),
            ("2024-05-01 12:30:05+25:00", "2024-05-01 12:30:05+25:00"),
            ("yesterday", "yesterday"),
        ):
            with self.subTest(text):
                self.assertEqual(time_text(text), expected)
        self.assertEqual(unix_time(1714566600123), "2024-05-01T12:30:00.123Z")
        self.assertEqual(unix_time(10**18), 10**18)


class RequestTests(RqliteTestCase):
    def test_selects_read_and_anything_else_writes(self) -> None:
        self.answer = fsm_answer({"rows_affected": 1})
        self.call("POST", "/db/request?level=strong", json=["SELECT 1", [" select ?", 2]])
        self.assertEqual(len(self.backend.queries), 1)
        self.assertEqual(self.backend.queries[0].consistency, Consistency.STRONG)
        self.assertEqual(self.backend.submitted, [])
        answer = self.call("POST", "/db/request", json=["SELECT 1", "INSERT INTO t VALUES (1)"])
        self.assertEqual(answer.json(), {"results": [{"rows_affected": 1}]})
        self.assertEqual(len(self.backend.submitted), 1)
        self.assertEqual(len(self.backend.queries), 1)

    def test_wrong_method_is_405(self) -> None:
        self.assertError(self.call("GET", "/db/request"), 405, "method_not_allowed")
        self.assertError(self.call("GET", "/db/execute"), 405, "method_not_allowed")


class ReadyzTests(RqliteTestCase):
    def test_ready_not_ready_and_noleader(self) -> None:
        answer = self.call("GET", "/readyz")
        self.assertEqual(
            (answer.status, answer.body), (200, b"[+]node ok\n[+]leader ok\n[+]store ok")
        )
        self.backend.apply_lag = 3
        answer = self.call("GET", "/readyz")
        self.assertEqual(answer.status, 503)
        self.assertIn(b"store not ready", answer.body)
        self.backend.leader = None
        answer = self.call("GET", "/readyz")
        self.assertEqual(
            (answer.status, answer.body), (503, b"[+]node ok\n[+]leader does not exist")
        )
        self.assertEqual(self.call("GET", "/readyz?noleader").status, 200)


class BasicAuthTests(RqliteTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.serve(Settings(tokens=tokens(read=READER, write=WRITER)))

    def test_basic_password_is_the_token(self) -> None:
        ok = self.call("POST", "/db/execute", json=["INSERT 1"], headers=basic("app", WRITER))
        self.assertEqual(ok.status, 200, ok.body)
        low = self.call("POST", "/db/execute", json=["INSERT 1"], headers=basic("app", READER))
        self.assertError(low, 403, "forbidden")
        read = self.call("GET", "/db/query?q=SELECT%201", headers=basic("x", READER))
        self.assertEqual(read.status, 200)
        self.assertEqual(len(self.backend.submitted), 1)

    def test_wrong_or_missing_credentials_are_401(self) -> None:
        for headers in (
            basic("app", "wrong"),
            {"Authorization": "Basic !!!"},
            basic("app", ""),
            {},
        ):
            with self.subTest(headers):
                answer = self.call("POST", "/db/execute", json=["INSERT 1"], headers=headers)
                self.assertError(answer, 401, "unauthorized")
        self.assertEqual(self.backend.submitted, [])


class OriginFormTests(SynchronousTestCase):
    def test_absolute_targets_become_paths(self) -> None:
        """pyrqlite follows a redirect by sending the Location as the request target."""
        for target, path in (
            (b"http://127.0.0.1:4001/db/execute?redirect", b"/db/execute?redirect"),
            (b"HTTPS://h/db/query", b"/db/query"),
            (b"http://h:1?q=1", b"/?q=1"),
            (b"http://h", b"/"),
            (b"/db/query?q=http://x/y", b"/db/query?q=http://x/y"),
            (b"ftp://h/x", b"ftp://h/x"),
        ):
            with self.subTest(target):
                self.assertEqual(origin_form(target), path)
