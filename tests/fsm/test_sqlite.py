"""graft.fsm.sqlite: atomic SQL scripts, read-only queries, determinism, snapshots."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from graft.fsm import CommandRejected, CorruptSnapshot, FSMFailure, QueryRejected
from graft.fsm.sqlite import SQLiteStateMachine
from graft.fsm.sqlite.sql import _has_code, split_statements

DEMO_SQL = (Path(__file__).resolve().parents[2] / "conf" / "demo.sql").read_bytes()
USERS = b"SELECT name FROM users ORDER BY id;"


class SQLiteTestCase(SynchronousTestCase):
    def make(self) -> SQLiteStateMachine:
        data_dir = Path(self.mktemp())
        fsm = SQLiteStateMachine(data_dir=data_dir, base_dir=data_dir)
        self.addCleanup(fsm.close)
        return fsm

    def query(self, fsm: SQLiteStateMachine, sql: bytes) -> Any:
        return json.loads(fsm.query(sql))

    def apply(self, fsm: SQLiteStateMachine, sql: bytes) -> Any:
        return json.loads(fsm.apply(sql, 1))

    def snapshot(self, fsm: SQLiteStateMachine) -> bytes:
        sink = io.BytesIO()
        fsm.snapshot(sink)
        return sink.getvalue()


class DemoTests(SQLiteTestCase):
    def test_demo_sql_then_seed_select(self) -> None:
        """conf/demo.sql as a command, then the seed's `SELECT * FROM users;` lists the four
        names."""
        fsm = self.make()
        self.assertEqual(self.apply(fsm, DEMO_SQL), {"changes": 4, "last_insert_rowid": 4})
        self.assertEqual(
            self.query(fsm, b"SELECT * FROM users;"),
            {
                "columns": ["id", "name"],
                "rows": [[1, "turing"], [2, "ritchie"], [3, "lovelace"], [4, "hamilton"]],
            },
        )

    def test_demo_sql_twice_is_idempotent(self) -> None:
        """demo.sql again changes nothing and reports no inserted row."""
        fsm = self.make()
        fsm.apply(DEMO_SQL, 1)
        self.assertEqual(self.apply(fsm, DEMO_SQL), {"changes": 0, "last_insert_rowid": None})
        self.assertEqual(len(self.query(fsm, USERS)["rows"]), 4)

    def test_content_type(self) -> None:
        """Answers are JSON."""
        self.assertEqual(self.make().content_type, "application/json")

    def test_database_file_is_recreated_at_start(self) -> None:
        """A database file left in data_dir is discarded: the log is the truth."""
        data_dir = Path(self.mktemp())
        first = SQLiteStateMachine(data_dir=data_dir, base_dir=data_dir)
        first.apply(DEMO_SQL, 1)
        first.close()
        self.assertTrue((data_dir / "fsm.sqlite3").exists())
        second = SQLiteStateMachine(data_dir=data_dir, base_dir=data_dir)
        self.addCleanup(second.close)
        self.assertEqual(
            self.query(second, b"SELECT count(*) FROM sqlite_master"),
            {"columns": ["count(*)"], "rows": [[0]]},
        )


class CommandTests(SQLiteTestCase):
    def setUp(self) -> None:
        self.fsm = self.make()
        self.fsm.apply(DEMO_SQL, 1)

    def assertRejected(self, sql: bytes, message: str) -> None:
        before = self.snapshot(self.fsm)
        error = self.assertRaises(CommandRejected, self.fsm.apply, sql, 2)
        self.assertIn(message, str(error))
        self.assertEqual(self.snapshot(self.fsm), before, "a rejected command changed the state")

    def test_failing_statement_rolls_back_the_whole_script(self) -> None:
        """When the third statement fails, the first two are undone too, and the message says
        which statement failed and why."""
        self.assertRejected(
            b"INSERT INTO users (name) VALUES ('hopper');"
            b"UPDATE users SET name = 'kay' WHERE name = 'ritchie';"
            b"INSERT INTO users (name) VALUES ('turing');",
            "statement 3 failed: UNIQUE constraint failed: users.name; "
            "the whole command was rolled back",
        )
        self.assertEqual(
            self.query(self.fsm, USERS)["rows"],
            [["turing"], ["ritchie"], ["lovelace"], ["hamilton"]],
        )

    def test_syntax_error_rejected(self) -> None:
        """A syntax error is a rejection with SQLite's message."""
        self.assertRejected(b"INSERT INTO users VALUES (;", "statement 1 failed: ")

    def test_changes_and_last_insert_rowid(self) -> None:
        """The answer counts the changed rows and the last rowid this command inserted."""
        result = self.apply(
            self.fsm,
            b"INSERT INTO users (name) VALUES ('hopper'), ('kay'); DELETE FROM users WHERE id = 1;",
        )
        self.assertEqual(result, {"changes": 3, "last_insert_rowid": 6})
        self.assertEqual(
            self.apply(self.fsm, b"UPDATE users SET name = upper(name);"),
            {"changes": 5, "last_insert_rowid": None},
        )

    def test_final_select_rows_are_returned(self) -> None:
        """A script ending in a SELECT (or RETURNING) also answers its rows."""
        result = self.apply(
            self.fsm,
            b"INSERT INTO users (name) VALUES ('hopper') RETURNING id, name;",
        )
        self.assertEqual(
            result,
            {
                "changes": 1,
                "last_insert_rowid": 5,
                "columns": ["id", "name"],
                "rows": [[5, "hopper"]],
            },
        )

    def test_last_insert_rowid_function_is_deterministic(self) -> None:
        """last_insert_rowid() in a command sees only this command's inserts."""
        self.fsm.apply(b"CREATE TABLE log (user_id INTEGER);", 2)
        result = self.apply(self.fsm, b"INSERT INTO log VALUES (last_insert_rowid());")
        self.assertEqual(result["changes"], 1)
        self.assertEqual(self.query(self.fsm, b"SELECT user_id FROM log")["rows"], [[-(1 << 63)]])

    def test_semicolons_in_strings_and_triggers(self) -> None:
        """Statements are split by SQLite's tokenizer: ';' in strings and trigger bodies is
        not a boundary."""
        self.apply(
            self.fsm,
            b"CREATE TABLE audit (note TEXT);"
            b"CREATE TRIGGER t AFTER INSERT ON users BEGIN "
            b"INSERT INTO audit VALUES ('added; ' || new.name); END;"
            b"INSERT INTO users (name) VALUES ('a;b');",
        )
        self.assertEqual(self.query(self.fsm, b"SELECT note FROM audit")["rows"], [["added; a;b"]])

    def test_non_deterministic_functions_refused(self) -> None:
        """random(), 'now', the local time zone and CURRENT_TIMESTAMP defaults are refused in
        commands and change nothing."""
        for sql, message in [
            (b"INSERT INTO users (name) VALUES (random());", "random() is not deterministic"),
            (b"INSERT INTO users (name) VALUES (hex(randomblob(4)));", "randomblob() is not"),
            (b"INSERT INTO users (name) VALUES (datetime('now'));", "datetime() with 'now'"),
            (b"INSERT INTO users (name) VALUES (date());", "date() with 'now'"),
            (b"INSERT INTO users (name) VALUES (strftime('%s'));", "strftime() with 'now'"),
            (
                b"INSERT INTO users (name) VALUES (date('2020-01-01', 'localtime'));",
                "'localtime' modifier",
            ),
            (b"INSERT INTO users (name) VALUES (CURRENT_TIMESTAMP);", "current_timestamp is not"),
            (
                b"CREATE TABLE t (a, at DEFAULT CURRENT_TIME); INSERT INTO t (a) VALUES (1);",
                "current_time is not",
            ),
            (b"SELECT total_changes();", "total_changes() is not"),
        ]:
            with self.subTest(sql=sql):
                self.assertRejected(sql, message)

    def test_fixed_dates_allowed(self) -> None:
        """Date functions on literal times are deterministic and allowed."""
        result = self.apply(
            self.fsm, b"SELECT date('2024-02-28', '+1 day'), julianday('2000-01-01');"
        )
        self.assertEqual(result["rows"], [["2024-02-29", 2451544.5]])

    def test_transaction_control_refused(self) -> None:
        """BEGIN/COMMIT/ROLLBACK inside a command are refused: a COMMIT must not make the
        statements before it survive a later failure."""
        self.assertRejected(
            b"INSERT INTO users (name) VALUES ('hopper'); COMMIT;", "transaction control"
        )
        self.assertRejected(b"BEGIN;", "transaction control")
        self.assertRejected(b"ROLLBACK;", "transaction control")

    def test_temp_attach_and_pragmas_refused(self) -> None:
        """TEMP objects, ATTACH and connection PRAGMAs would not survive a snapshot: refused."""
        self.assertRejected(b"CREATE TEMP TABLE t (a);", "TEMP tables")
        self.assertRejected(b"ATTACH ':memory:' AS other;", "ATTACH is not allowed")
        self.assertRejected(b"PRAGMA journal_mode = WAL;", "PRAGMA journal_mode is not allowed")
        self.assertRejected(b"PRAGMA foreign_keys = OFF;", "PRAGMA foreign_keys is not allowed")

    def test_user_version_allowed(self) -> None:
        """PRAGMA user_version lives in the database file, so commands may set it."""
        self.fsm.apply(b"PRAGMA user_version = 7;", 2)
        self.assertEqual(self.query(self.fsm, b"PRAGMA user_version")["rows"], [[7]])

    def test_not_utf8_rejected(self) -> None:
        """A command that is not UTF-8 is rejected."""
        self.assertRejected(b"\xff\xfe", "not UTF-8")

    def test_empty_command_is_a_no_op(self) -> None:
        """A blank or comment-only script changes nothing and answers zero changes."""
        self.assertEqual(
            self.apply(self.fsm, b"  -- nothing\n"), {"changes": 0, "last_insert_rowid": None}
        )

    def test_foreign_keys_enforced(self) -> None:
        """Foreign keys are on, so a dangling reference is rejected."""
        self.fsm.apply(b"CREATE TABLE posts (user_id INTEGER REFERENCES users(id));", 2)
        self.assertRejected(b"INSERT INTO posts VALUES (99);", "FOREIGN KEY constraint failed")


class FailureTests(SQLiteTestCase):
    def test_disk_full_is_a_failure_not_a_rejection(self) -> None:
        """A full disk is local to this machine, so it raises FSMFailure (the node must stop),
        not CommandRejected, and nothing is half-applied."""
        fsm = self.make()
        fsm.apply(DEMO_SQL, 1)
        before = self.snapshot(fsm)
        # Stand-in for a full disk: cap the file at its current size (users cannot set this).
        fsm._conn.execute("PRAGMA max_page_count = 3")
        error = self.assertRaises(
            FSMFailure,
            fsm.apply,
            b"CREATE TABLE big (b BLOB); INSERT INTO big VALUES (zeroblob(100000));",
            2,
        )
        self.assertIn("SQLITE_FULL", str(error))
        self.assertIn("restart it", str(error))
        self.assertNotIsInstance(error, CommandRejected)
        self.assertEqual(self.snapshot(fsm), before)


class QueryTests(SQLiteTestCase):
    def setUp(self) -> None:
        self.fsm = self.make()
        self.fsm.apply(DEMO_SQL, 1)

    def assertRefused(self, sql: bytes, message: str) -> None:
        before = self.snapshot(self.fsm)
        error = self.assertRaises(QueryRejected, self.fsm.query, sql)
        self.assertIn(message, str(error))
        self.assertEqual(self.snapshot(self.fsm), before, "a refused query changed the state")

    def test_write_statement_refused(self) -> None:
        """A write sent as a query is refused and changes nothing."""
        self.assertRefused(
            b"INSERT INTO users (name) VALUES ('hopper');",
            "a query must be read-only but this statement does INSERT on users",
        )
        self.assertRefused(b"DELETE FROM users;", "does DELETE on users")
        self.assertRefused(b"UPDATE users SET name = 'x';", "does UPDATE on users")
        self.assertRefused(b"DROP TABLE users;", "a schema change")
        self.assertRefused(b"CREATE TABLE t (a);", "a schema change")
        self.assertRefused(b"PRAGMA user_version = 3;", "PRAGMA user_version is not allowed")
        self.assertRefused(b"BEGIN;", "transaction control")
        self.assertRefused(b"ATTACH ':memory:' AS x;", "ATTACH")
        self.assertEqual(len(self.query(self.fsm, USERS)["rows"]), 4)

    def test_statement_run_as_command_is_still_checked_as_query(self) -> None:
        """The exact text of a command, sent again as a query, is refused: no prepared-statement
        cache lets it skip the read-only check."""
        statement = b"DELETE FROM users WHERE name = 'hamilton';"
        self.fsm.apply(statement, 2)
        self.fsm.apply(b"INSERT INTO users (name) VALUES ('hamilton');", 3)
        self.assertRefused(statement, "does DELETE on users")
        self.assertRefused(statement.rstrip(b";"), "does DELETE on users")

    def test_write_hidden_after_a_select_refused(self) -> None:
        """Several statements are refused, so a write cannot ride behind a SELECT."""
        self.assertRefused(
            b"SELECT 1; DELETE FROM users;", "the query has 2 statements; expected exactly one"
        )

    def test_empty_query_refused(self) -> None:
        """An empty query is refused."""
        self.assertRefused(b"  ", "the query is empty")

    def test_error_refused(self) -> None:
        """A failing statement becomes QueryRejected with SQLite's message."""
        self.assertRefused(b"SELECT * FROM nowhere", "no such table: nowhere")

    def test_result_encoding(self) -> None:
        """Blobs are base64 strings, NULL is null, non-finite reals are null, numbers stay
        numbers."""
        self.assertEqual(
            self.query(self.fsm, b"SELECT x'00ff', NULL, 1.5, 9e999, 'caf\xc3\xa9' AS s"),
            {
                "columns": ["x'00ff'", "NULL", "1.5", "9e999", "s"],
                "rows": [["AP8=", None, 1.5, None, "caf\u00e9"]],
            },
        )

    def test_introspection_and_clock_allowed(self) -> None:
        """Queries may read the schema and use the clock and random() (they change nothing)."""
        info = self.query(self.fsm, b"PRAGMA table_info(users)")
        self.assertEqual([row[1] for row in info["rows"]], ["id", "name"])
        now = self.query(self.fsm, b"SELECT datetime('now') IS NOT NULL, random() IS NOT NULL")
        self.assertEqual(now["rows"], [[1, 1]])

    def test_read_uncommitted_readable_not_settable(self) -> None:
        """SQLAlchemy reads PRAGMA read_uncommitted on each new connection: a query may read it
        (always 0 here), never set it."""
        self.assertEqual(self.query(self.fsm, b"PRAGMA read_uncommitted")["rows"], [[0]])
        self.assertRefused(b"PRAGMA read_uncommitted = 1;", "PRAGMA read_uncommitted")

    def test_cte_query(self) -> None:
        """A WITH RECURSIVE query is read-only and allowed."""
        result = self.query(
            self.fsm,
            b"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3) "
            b"SELECT x FROM c",
        )
        self.assertEqual(result["rows"], [[1], [2], [3]])


class SnapshotTests(SQLiteTestCase):
    def test_round_trip(self) -> None:
        """restore(snapshot()) on a fresh FSM gives the same data and the same snapshot bytes."""
        source = self.make()
        source.apply(DEMO_SQL, 1)
        source.apply(b"CREATE TABLE t (b BLOB); INSERT INTO t VALUES (x'0102');", 2)
        image = self.snapshot(source)
        target = self.make()
        target.apply(b"CREATE TABLE junk (a);", 1)
        target.restore(io.BytesIO(image))
        self.assertEqual(target.query(USERS), source.query(USERS))
        self.assertEqual(target.query(b"SELECT b FROM t"), source.query(b"SELECT b FROM t"))
        self.assertEqual(
            self.query(target, b"SELECT name FROM sqlite_master WHERE name = 'junk'")["rows"], []
        )
        self.assertEqual(self.snapshot(target), image)

    def test_commands_after_restore_match_replay(self) -> None:
        """A restored replica answers later commands exactly like one that replayed the log."""
        replayed = self.make()
        replayed.apply(DEMO_SQL, 1)
        restored = self.make()
        restored.restore(io.BytesIO(self.snapshot(replayed)))
        for index, sql in enumerate(
            [
                b"INSERT OR IGNORE INTO users (name) VALUES ('turing');",
                b"INSERT INTO users (name) VALUES ('kay');",
                b"UPDATE users SET name = name || '!' WHERE id < 3;",
            ],
            start=2,
        ):
            self.assertEqual(restored.apply(sql, index), replayed.apply(sql, index))
        self.assertEqual(self.snapshot(restored), self.snapshot(replayed))

    def test_empty_state_round_trip(self) -> None:
        """An empty database snapshots and restores to an empty database."""
        image = self.snapshot(self.make())
        target = self.make()
        target.apply(DEMO_SQL, 1)
        target.restore(io.BytesIO(image))
        self.assertEqual(self.query(target, b"SELECT count(*) FROM sqlite_master")["rows"], [[0]])
        target.restore(io.BytesIO(b""))
        self.assertEqual(self.query(target, b"SELECT count(*) FROM sqlite_master")["rows"], [[0]])

    def test_garbage_snapshot_refused(self) -> None:
        """Bytes that are not an SQLite database raise CorruptSnapshot."""
        self.assertRaises(CorruptSnapshot, self.make().restore, io.BytesIO(b"not a database"))

    def test_determinism(self) -> None:
        """Two instances fed the same commands give the same answers and the same snapshot
        bytes, rejections included."""
        commands = [
            DEMO_SQL,
            b"CREATE TABLE k (id INTEGER PRIMARY KEY, v TEXT, at TEXT);",
            b"INSERT INTO k (v, at) VALUES ('a', date('2024-01-01', '+3 days'));",
            b"INSERT INTO k (v) VALUES ('b'); INSERT INTO k (id, v) VALUES (1, 'dup');",
            b"INSERT INTO k (v) VALUES (random());",
            b"UPDATE k SET v = v || id; SELECT * FROM k;",
        ]
        outputs: list[list[bytes]] = []
        images = []
        for _ in range(2):
            fsm = self.make()
            answers = []
            for index, command in enumerate(commands, start=1):
                try:
                    answers.append(fsm.apply(command, index))
                except CommandRejected as e:
                    answers.append(str(e).encode())
            outputs.append(answers)
            images.append(self.snapshot(fsm))
        self.assertEqual(outputs[0], outputs[1])
        self.assertEqual(images[0], images[1])


class SplitStatementsTests(SynchronousTestCase):
    def test_split(self) -> None:
        """Statements end at ';' outside strings, comments and trigger bodies; blank and
        comment-only pieces are dropped; an unfinished tail is kept for SQLite to report."""
        self.assertEqual(
            split_statements("SELECT ';'; -- a; b\nSELECT 2;; /* ; */ SELECT 3"),
            ["SELECT ';';", " -- a; b\nSELECT 2;", " /* ; */ SELECT 3;"],
        )
        self.assertEqual(split_statements(" -- only a comment"), [])
        self.assertEqual(split_statements("SELECT 1; SELECT 'open"), ["SELECT 1;", " SELECT 'open"])


def _split_by_prefixes(script: str) -> list[str]:
    """The splitting rule as first written (each semicolon tries the whole statement so far):
    the reference the bounded split_statements must agree with on every script it accepts."""
    statements: list[str] = []
    current: list[str] = []
    for piece in script.split(";"):
        current.append(piece)
        candidate = ";".join(current) + ";"
        if sqlite3.complete_statement(candidate):
            statements.append(candidate)
            current = []
    tail = ";".join(current)
    if current and tail.strip():
        statements.append(tail)
    return [s for s in statements if _has_code(s)]


_SQL_TOKENS = [
    ";",
    "'",
    '"',
    "`",
    "[",
    "]",
    "--",
    "\n",
    "/*",
    "*/",
    " ",
    "x",
    " SELECT 1",
    "CASE",
    " CREATE TRIGGER t AFTER INSERT ON x ",
    " CREATE TEMP TRIGGER u BEFORE DELETE ON y ",
    " BEGIN ",
    " END",
    " EXPLAIN ",
]


class SplitBudgetTests(SQLiteTestCase):
    @settings(max_examples=2000, deadline=None)
    @given(st.lists(st.sampled_from(_SQL_TOKENS), max_size=20))
    def test_same_statements_as_the_prefix_rule(self, tokens: list[str]) -> None:
        """Splitting by one scan per statement gives exactly the statements the prefix rule
        gave, so logs written before the scan budget apply the same."""
        script = "".join(tokens)
        self.assertEqual(split_statements(script), _split_by_prefixes(script))

    def test_semicolons_in_an_unfinished_statement_are_refused_at_once(self) -> None:
        """One quote then 200,000 semicolons: the prefix rule would scan ~2*10^10 characters on
        every replica (hours); the budget refuses it, as a command and as a query."""
        fsm = self.make()
        body = ("'" + ";" * 200_000).encode()
        with self.assertRaises(CommandRejected) as caught:
            fsm.apply(body, 1)
        self.assertIn("too many semicolons inside one unfinished statement", str(caught.exception))
        with self.assertRaises(QueryRejected):
            fsm.query(body)
        self.apply(fsm, b"CREATE TABLE t(a); INSERT INTO t VALUES (1)")  # the FSM goes on
        self.assertEqual(self.query(fsm, b"SELECT a FROM t")["rows"], [[1]])

    def test_a_long_trigger_still_splits(self) -> None:
        """A trigger body of 500 statements (a semicolon each) is well inside the budget."""
        body = "; ".join("INSERT INTO log VALUES (NEW.a)" for _ in range(500))
        script = (
            "CREATE TABLE t(a); CREATE TABLE log(a); "
            f"CREATE TRIGGER g AFTER INSERT ON t BEGIN {body}; END; INSERT INTO t VALUES (7)"
        )
        self.assertEqual(len(split_statements(script)), 4)
