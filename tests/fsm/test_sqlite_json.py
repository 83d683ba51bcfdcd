"""The SQLite FSM's JSON form (graft.fsm.sqlite.jsonform, .jsonrun): bound parameters, typed
results, several statements with a result each, in one transaction or each on its own."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from graft.fsm import CommandRejected, FSMFailure, QueryRejected, digest
from graft.fsm.sqlite import SQLiteStateMachine
from graft.fsm.sqlite.jsonform import (
    MalformedRequest,
    SqlRequest,
    Statement,
    decode_value,
    dump_request,
    encode_value,
    is_json_form,
    parse_request,
    render_results,
)

SCHEMA = (
    "CREATE TABLE t(id INTEGER PRIMARY KEY, n INTEGER, r REAL, s TEXT, b BLOB, "
    "at DATETIME, price DECIMAL(10, 2))"
)


def request(*statements: Any, transaction: bool | None = None) -> bytes:
    """The JSON form of ``statements``: each SQL text, or (SQL, params)."""
    items = [
        {"sql": s} if isinstance(s, str) else {"sql": s[0], "params": s[1]} for s in statements
    ]
    document: dict[str, Any] = {"statements": items}
    if transaction is not None:
        document["transaction"] = transaction
    return json.dumps(document).encode()


class JsonFormTestCase(SynchronousTestCase):
    def make(self) -> SQLiteStateMachine:
        data_dir = Path(self.mktemp())
        fsm = SQLiteStateMachine(data_dir=data_dir, base_dir=data_dir)
        self.addCleanup(fsm.close)
        return fsm

    def command(self, fsm: SQLiteStateMachine, *statements: Any, **kw: Any) -> list[Any]:
        answer = json.loads(fsm.apply(request(*statements, **kw), 1))
        self.assertEqual(list(answer), ["results"])
        results: list[Any] = answer["results"]
        self.assertEqual(len(results), len(statements))
        return results

    def query(self, fsm: SQLiteStateMachine, *statements: Any) -> list[Any]:
        """The query through query_in_thread (what the node runs); the main connection's
        ``query`` must answer the same."""
        body = request(*statements)
        threaded = json.loads(fsm.query_in_thread(body, time.monotonic() + 10))
        self.assertEqual(json.loads(fsm.query(body)), threaded)
        results: list[Any] = threaded["results"]
        return results

    def table(self) -> SQLiteStateMachine:
        fsm = self.make()
        fsm.apply(SCHEMA.encode(), 1)
        return fsm


class ParameterTests(JsonFormTestCase):
    def test_positional_and_named_parameters(self) -> None:
        """``?`` binds a list in order, ``:name`` binds an object by name; each write says
        its rowid and rows changed, in order."""
        fsm = self.table()
        results = self.command(
            fsm,
            ("INSERT INTO t(n, s) VALUES (?, ?)", [1, "one"]),
            ("INSERT INTO t(n, s) VALUES (:n, :s)", {"n": 2, "s": "two"}),
            ("UPDATE t SET s = upper(s) WHERE n >= ?", [1]),
        )
        self.assertEqual(
            results,
            [
                {"last_insert_id": 1, "rows_affected": 1},
                {"last_insert_id": 2, "rows_affected": 1},
                {"last_insert_id": 2, "rows_affected": 2},
            ],
        )
        (rows,) = self.query(fsm, ("SELECT n, s FROM t WHERE n = :n OR s = ?2", {"n": 1}))
        self.assertIn("error", rows)  # a name cannot bind ?2: that statement fails alone
        (rows,) = self.query(fsm, ("SELECT n, s FROM t WHERE n > ? ORDER BY n", [0]))
        self.assertEqual(rows["values"], [[1, "ONE"], [2, "TWO"]])

    def test_injection_attempt_stays_data(self) -> None:
        """SQL in a parameter is stored as text, byte for byte; the table is still there."""
        fsm = self.table()
        evil = "x'); DROP TABLE t; --"
        self.command(fsm, ("INSERT INTO t(s) VALUES (?)", [evil]))
        (rows,) = self.query(fsm, ("SELECT s FROM t WHERE s = ?", [evil]))
        self.assertEqual(rows["values"], [[evil]])
        (count,) = self.query(fsm, "SELECT count(*) FROM sqlite_master WHERE name = 't'")
        self.assertEqual(count["values"], [[1]])

    def test_blob_null_and_large_integers_round_trip(self) -> None:
        """A BLOB (with NUL and high bytes) comes back as the same bytes; NULL as null;
        integers beyond 2**53 (where a double loses digits) exactly, up to 2**63-1."""
        fsm = self.table()
        data = bytes(range(256))
        blob = {"blob": base64.b64encode(data).decode()}
        big = [2**53 + 1, 2**63 - 1, -(2**63)]
        for value in big:
            self.command(fsm, ("INSERT INTO t(n, b, s) VALUES (?, ?, ?)", [value, blob, None]))
        (rows,) = self.query(fsm, "SELECT n, b, s, typeof(n) FROM t ORDER BY id")
        self.assertEqual(rows["values"], [[v, blob, None, "integer"] for v in big])
        (raw,) = self.query(fsm, ("SELECT b = ?, length(b) FROM t LIMIT 1", [blob]))
        self.assertEqual(raw["values"], [[1, 256]])
        # And in the text of the answer, the digits themselves (no float rounding).
        body = fsm.query_in_thread(request("SELECT n FROM t ORDER BY id"), time.monotonic() + 5)
        self.assertIn(b"[9007199254740993]", body)
        self.assertIn(b"[9223372036854775807]", body)

    def test_typed_columns(self) -> None:
        """``types`` is each column's declared type as written, "" for an expression; values
        keep their storage class (REAL a number, TEXT a string)."""
        fsm = self.table()
        (returned,) = self.command(
            fsm,
            (
                "INSERT INTO t(n, r, s, at, price) VALUES (?, ?, ?, ?, ?) "
                "RETURNING id, r, at, price, n + 1",
                [7, 2.5, "s", "2026-01-02 03:04:05", 9.99],
            ),
        )
        self.assertEqual(returned["columns"], ["id", "r", "at", "price", "n + 1"])
        self.assertEqual(returned["types"], ["INTEGER", "REAL", "DATETIME", "DECIMAL(10, 2)", ""])
        self.assertEqual(returned["values"], [[1, 2.5, "2026-01-02 03:04:05", 9.99, 8]])
        (rows,) = self.query(fsm, "SELECT t.*, 1.0 * n AS x FROM t")
        self.assertEqual(
            rows["types"],
            ["INTEGER", "INTEGER", "REAL", "TEXT", "BLOB", "DATETIME", "DECIMAL(10, 2)", ""],
        )
        self.assertEqual(rows["values"], [[1, 7, 2.5, "s", None, "2026-01-02 03:04:05", 9.99, 7.0]])

    def test_plain_text_form_unchanged(self) -> None:
        """A body that does not start with ``{`` is an SQL script, answered as before."""
        fsm = self.table()
        self.assertEqual(
            json.loads(fsm.apply(b"INSERT INTO t(n) VALUES (1); SELECT n FROM t;", 2)),
            {"changes": 1, "last_insert_rowid": 1, "columns": ["n"], "rows": [[1]]},
        )
        self.assertEqual(
            json.loads(fsm.query(b"SELECT n FROM t")), {"columns": ["n"], "rows": [[1]]}
        )


class TransactionTests(JsonFormTestCase):
    def test_all_or_nothing_by_default(self) -> None:
        """A failing statement rolls back the whole request: its error is at its position,
        the ones before say they were rolled back, the ones after that they did not run; the
        command is still applied (an answer, not a rejection) and changes nothing."""
        fsm = self.table()
        results = self.command(
            fsm,
            ("INSERT INTO t(id, n) VALUES (?, ?)", [1, 10]),
            ("INSERT INTO t(id, n) VALUES (?, ?)", [1, 11]),
            "INSERT INTO t(n) VALUES (12)",
        )
        self.assertEqual(
            results,
            [
                {"error": "rolled back: statement 2 failed"},
                {"error": "UNIQUE constraint failed: t.id"},
                {"error": "not run: statement 2 failed"},
            ],
        )
        (rows,) = self.query(fsm, "SELECT count(*) FROM t")
        self.assertEqual(rows["values"], [[0]])

    def test_transaction_false_keeps_the_others(self) -> None:
        """With "transaction": false each statement stands alone: a failure (constraint, or a
        refused non-deterministic function) undoes only itself."""
        fsm = self.table()
        results = self.command(
            fsm,
            ("INSERT INTO t(id, n) VALUES (?, ?)", [1, 10]),
            ("INSERT INTO t(id, n) VALUES (?, ?)", [1, 11]),
            "INSERT INTO t(n) VALUES (random())",
            "INSERT INTO t(n) VALUES (12)",
            transaction=False,
        )
        self.assertEqual(results[0], {"last_insert_id": 1, "rows_affected": 1})
        self.assertEqual(results[1], {"error": "UNIQUE constraint failed: t.id"})
        self.assertIn("random() is not deterministic", results[2]["error"])
        self.assertEqual(results[3], {"last_insert_id": 2, "rows_affected": 1})
        (rows,) = self.query(fsm, "SELECT n FROM t ORDER BY id")
        self.assertEqual(rows["values"], [[10], [12]])

    def test_rules_apply_to_every_statement(self) -> None:
        """The determinism rules and refusals act on each statement, not only the first."""
        fsm = self.table()
        results = self.command(
            fsm, "INSERT INTO t(n) VALUES (1)", "INSERT INTO t(s) VALUES (datetime('now'))"
        )
        self.assertIn("datetime() with 'now'", results[1]["error"])
        results = self.command(fsm, "SELECT 1", "BEGIN", transaction=False)
        self.assertIn("error", results[1])
        # Two statements in one "sql" fail before either runs; the table is still there.
        results = self.command(fsm, "INSERT INTO t(n) VALUES (1); DROP TABLE t")
        self.assertIn("one statement at a time", results[0]["error"])
        (rows,) = self.query(fsm, "SELECT count(*) FROM t")
        self.assertEqual(rows["values"], [[0]])

    def test_queries_answer_each_statement(self) -> None:
        """A query's statements each get rows or an error; a write in a query is refused
        for that statement only."""
        fsm = self.table()
        results = self.query(fsm, "SELECT 1 AS one", "DELETE FROM t", ("SELECT ? AS p", [None]))
        self.assertEqual(results[0], {"columns": ["one"], "types": [""], "values": [[1]]})
        self.assertIn("read-only", results[1]["error"])
        self.assertEqual(results[2]["values"], [[None]])

    def test_every_replica_the_same(self) -> None:
        """Replicas applying the same JSON-form commands (successes, failures, rolled-back
        transactions) give the same answers and end in states with the same digest."""
        commands = [
            request(SCHEMA),
            request(("INSERT INTO t(n, b) VALUES (?, ?)", [2**62, {"blob": "AAEC"}])),
            request("INSERT INTO t(n) VALUES (1)", "INSERT INTO t(id) VALUES (1)"),
            request(
                "INSERT INTO t(n) VALUES (2)", "INSERT INTO t(id) VALUES (1)", transaction=False
            ),
            request(("UPDATE t SET s = :s RETURNING id, s", {"s": "z"})),
        ]
        answers = []
        replicas = [self.make(), self.make()]
        for fsm in replicas:
            answers.append([fsm.apply(c, i) for i, c in enumerate(commands, start=1)])
        self.assertEqual(answers[0], answers[1])
        self.assertEqual(digest(replicas[0]), digest(replicas[1]))
        # A replica that missed the failing statements holds something else.
        other = self.make()
        for i, c in enumerate(commands[:2], start=1):
            other.apply(c, i)
        self.assertNotEqual(digest(other), digest(replicas[0]))


class RefusalTests(JsonFormTestCase):
    def test_malformed_requests_are_rejected_before_running(self) -> None:
        """A body that starts with ``{`` but is not a valid request is CommandRejected (a
        query: QueryRejected), and nothing runs."""
        fsm = self.table()
        bad = [
            b"{",
            b'{"statements": []}',
            b'{"statements": [{"sql": "INSERT INTO t(n) VALUES (1)"}], "extra": 1}',
            request(("INSERT INTO t(n) VALUES (?)", [2**63])),
            request(("INSERT INTO t(n) VALUES (?)", [-(2**63) - 1])),
            request("  \n "),
            request(("INSERT INTO t(n) VALUES (?)", [[1]])),
            request(("INSERT INTO t(b) VALUES (?)", [{"blob": "not base64!"}])),
            b'{"statements": [{"sql": "SELECT ?", "params": [NaN]}]}',
            b'{"statements": [{"sql": "SELECT ?", "params": [1e999]}]}',
            b'{"statements": [{"sql": "SELECT ?", "params": ["\\ud800"]}]}',
            b'{"statements": [{"sql": "SELECT 1", "sql": "SELECT 2"}]}',
            b'{"statements": [{"sql": "SELECT ?", "params": ['
            + b"[" * 50000
            + b"]" * 50000
            + b"]}]}",
            request(("SELECT ?", ["x" * (1024 * 1024 + 1)])),
            request(("SELECT 1", list(range(1000)))),
            request("SELECT 1", transaction="yes"),  # type: ignore[arg-type]
        ]
        for body in bad:
            self.assertRaises(CommandRejected, fsm.apply, body, 2)
            self.assertRaises(QueryRejected, fsm.query_in_thread, body, time.monotonic() + 5)
        (rows,) = self.query(fsm, "SELECT count(*) FROM t")
        self.assertEqual(rows["values"], [[0]])

    def test_result_caps_count_all_statements(self) -> None:
        """The rows every statement of a command returns count together against the cap: two
        statements of 60,000 rows each go over 100,000 and the request is rolled back."""
        fsm = self.table()
        rows = "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 60000) "
        results = self.command(
            fsm, rows + "SELECT i FROM c", "INSERT INTO t(n) VALUES (1)", rows + "SELECT i FROM c"
        )
        self.assertIn("SQLITE_MAX_RESULT_ROWS", results[2]["error"])
        self.assertEqual(results[1], {"error": "rolled back: statement 3 failed"})

    def test_rowid_checks_are_statement_errors(self) -> None:
        """The checks after a command apply to the JSON form too, as the error of a statement:
        an AUTOINCREMENT table at its largest rowid (SQLITE_FULL on every replica, not this
        machine's failure), and a statement leaving the largest rowid in a table."""
        fsm = self.make()
        top = 2**63 - 1
        self.command(
            fsm, "CREATE TABLE a(id INTEGER PRIMARY KEY AUTOINCREMENT, x)", "CREATE TABLE w(x)"
        )
        results = self.command(
            fsm,
            "INSERT INTO w VALUES (1)",
            ("INSERT INTO a VALUES (?, 1), (NULL, 2)", [top]),
            "INSERT INTO w VALUES (3)",
            transaction=False,
        )
        self.assertEqual(results[0], {"last_insert_id": 1, "rows_affected": 1})
        self.assertIn("table a has used its largest AUTOINCREMENT rowid", results[1]["error"])
        self.assertEqual(results[2], {"last_insert_id": 2, "rows_affected": 1})
        results = self.command(
            fsm, "INSERT INTO w VALUES (4)", ("INSERT INTO w(rowid) VALUES (?)", [top])
        )
        self.assertEqual(results[0], {"error": "rolled back: statement 2 failed"})
        self.assertIn(f"leaves a row with rowid {top}", results[1]["error"])
        (rows,) = self.query(fsm, "SELECT x FROM w ORDER BY rowid")
        self.assertEqual(rows["values"], [[1], [3]])

    def test_disk_full_is_a_failure(self) -> None:
        """This machine's failure is FSMFailure, not a statement's error."""
        fsm = self.table()
        fsm._conn.execute("PRAGMA max_page_count = 3")
        self.assertRaises(
            FSMFailure,
            fsm.apply,
            request(("INSERT INTO t(b) VALUES (zeroblob(?))", [100000])),
            2,
        )


class PureFunctionTests(SynchronousTestCase):
    def test_parse_request(self) -> None:
        """parse_request gives the statements with their parameters, BLOBs as bytes."""
        parsed = parse_request(
            b' {"statements": [{"sql": "SELECT ?, ?", "params": [1, {"blob": "AP8="}]},'
            b' {"sql": "SELECT :a", "params": {"a": null}}, {"sql": "SELECT 1"}],'
            b' "transaction": false}'
        )
        self.assertEqual(
            parsed.statements,
            (
                Statement("SELECT ?, ?", (1, b"\x00\xff")),
                Statement("SELECT :a", {"a": None}),
                Statement("SELECT 1", None),
            ),
        )
        self.assertFalse(parsed.transaction)
        self.assertRaises(MalformedRequest, parse_request, b"[1]")
        # dump_request writes what parse_request reads back.
        self.assertEqual(parse_request(dump_request(parsed)), parsed)
        built = SqlRequest((Statement("SELECT ?", (b"\x01", 2**63 - 1, None)),), transaction=True)
        self.assertEqual(parse_request(dump_request(built)), built)

    def test_is_json_form_and_encoding(self) -> None:
        self.assertTrue(is_json_form(b'\n {"statements": []}'))
        self.assertFalse(is_json_form(b"SELECT '{'"))
        self.assertEqual(encode_value(b"\x00"), {"blob": "AA=="})
        self.assertEqual(decode_value({"blob": "AA=="}), b"\x00")
        self.assertEqual(decode_value("AA=="), "AA==")
        self.assertIsNone(encode_value(float("inf")))
        self.assertEqual(encode_value(2**63 - 1), 2**63 - 1)
        self.assertEqual(render_results([{"error": "é"}]), '{"results":[{"error":"é"}]}'.encode())
