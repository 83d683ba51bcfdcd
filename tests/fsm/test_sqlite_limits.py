"""graft.fsm.sqlite is total: commands that used to stop, freeze or split the replicas (issue #14)
get a deterministic CommandRejected with the state unchanged."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from graft.fsm import CommandRejected, FSMFailure, QueryRejected
from graft.fsm.limits import (
    SQLITE_MAX_RESULT_BYTES,
    SQLITE_MAX_RESULT_ROWS,
    SQLITE_VM_STEP_BUDGET,
    determinism_settings,
)
from graft.fsm.sqlite import SQLiteStateMachine

MAX_ROWID = (1 << 63) - 1


class LimitsTestCase(SynchronousTestCase):
    def make(self) -> SQLiteStateMachine:
        data_dir = Path(self.mktemp())
        fsm = SQLiteStateMachine(data_dir=data_dir, base_dir=data_dir)
        self.addCleanup(fsm.close)
        return fsm

    def setUp(self) -> None:
        self.fsm = self.make()
        self.fsm.apply(
            b"CREATE TABLE w (x);"
            b"CREATE TABLE a (id INTEGER PRIMARY KEY AUTOINCREMENT, x);"
            b"INSERT INTO w VALUES (1);",
            1,
        )

    def image(self, fsm: SQLiteStateMachine) -> bytes:
        sink = io.BytesIO()
        fsm.snapshot(sink)
        return sink.getvalue()

    def assertRejected(self, sql: bytes, message: str) -> str:
        before = self.image(self.fsm)
        error = self.assertRaises(CommandRejected, self.fsm.apply, sql, 2)
        self.assertIn(message, str(error))
        self.assertEqual(self.image(self.fsm), before, "a rejected command changed the state")
        # The FSM goes on: the next command works.
        self.fsm.apply(b"INSERT INTO w VALUES (2); DELETE FROM w WHERE x = 2;", 3)
        return str(error)


class NulCharacterTests(LimitsTestCase):
    def test_nul_in_sql_refused(self) -> None:
        """A NUL character in a command or a query is refused before the text is split (found
        by the hostile fuzz: Python's statement splitter raised ValueError and stopped every
        replica); char(0) and X'00' still make one."""
        for sql in (b"INSERT INTO w VALUES (1);\x00", b"\x00", b"INSERT INTO w VALUES ('a\x00b');"):
            with self.subTest(sql=sql):
                self.assertRejected(sql, "NUL character")
        for query in (b"SELECT 1\x00", b"SELECT '\x00'"):
            error = self.assertRaises(QueryRejected, self.fsm.query, query)
            self.assertIn("NUL character", str(error))
            error = self.assertRaises(QueryRejected, self.fsm.query_in_thread, query, 1e12)
            self.assertIn("NUL character", str(error))
        answer = json.loads(self.fsm.apply(b"INSERT INTO w VALUES (char(0)) RETURNING x;", 4))
        self.assertEqual(answer["rows"], [["\x00"]])


class WorkBudgetTests(LimitsTestCase):
    def test_recursion_over_the_budget_rejected(self) -> None:
        """A recursive CTE of 10 million rows (about 50 million VM steps) is refused at the
        budget, naming it; before, it ran to the end (and unbounded, forever)."""
        message = self.assertRejected(
            b"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 10000000) "
            b"SELECT count(*) FROM c;",
            f"the command ran more than {SQLITE_VM_STEP_BUDGET} SQLite VM steps",
        )
        self.assertIn("SQLITE_VM_STEP_BUDGET", message)

    def test_unbounded_recursion_ends(self) -> None:
        """`WITH RECURSIVE` without a bound inside a write ends with a rejection (it froze the
        node before: it never ended)."""
        self.assertRejected(
            b"INSERT INTO w SELECT x FROM "
            b"(WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c);",
            "SQLite VM steps",
        )

    def test_bulk_insert_of_10k_rows_passes(self) -> None:
        """A legitimate bulk insert, one statement or ten thousand, fits in the budget."""
        values = ",".join(f"({i}, 'name {i}', {i}.5)" for i in range(10_000))
        self.fsm.apply(b"CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, v REAL);", 2)
        result = json.loads(self.fsm.apply(f"INSERT INTO t VALUES {values};".encode(), 3))
        self.assertEqual(result["changes"], 10_000)
        script = "".join(f"INSERT INTO t (name) VALUES ('n{i}');" for i in range(10_000))
        result = json.loads(self.fsm.apply(script.encode(), 4))
        self.assertEqual(result["changes"], 10_000)

    def test_budget_is_per_command(self) -> None:
        """Each command starts with the whole budget."""
        sql = (
            b"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 500000) "
            b"SELECT count(*) FROM c;"
        )
        for index in range(2, 6):
            self.assertEqual(json.loads(self.fsm.apply(sql, index))["rows"], [[500000]])

    def test_queries_are_not_budgeted_here(self) -> None:
        """The budget is for commands (reads have their own time limit)."""
        sql = (
            b"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 3000000) "
            b"SELECT count(*) FROM c"
        )
        self.assertEqual(json.loads(self.fsm.query(sql))["rows"], [[3000000]])


class SizeLimitTests(LimitsTestCase):
    def test_huge_values_rejected(self) -> None:
        """Values over SQLITE_LIMIT_LENGTH are refused instead of allocated (50 MB here; up to
        about 1 GB before)."""
        for sql in [
            b"INSERT INTO w VALUES (zeroblob(50000000));",
            b"SELECT zeroblob(2000000000);",
            b"INSERT INTO w SELECT replace(printf('%.*c', 1000000, 'x'), 'x', 'xxxxxxxxxx');",
            b"INSERT INTO w VALUES (hex(zeroblob(3000000)));",
        ]:
            with self.subTest(sql=sql):
                self.assertRejected(sql, "string or blob too big")

    def test_printf_repeat_refused_before_it_runs(self) -> None:
        """printf('%.*c', N, 'x') loops N times in one VM step whatever the length limit (9 s
        for N = 10**9); a count over the limit is refused up front."""
        for sql in [
            b"SELECT printf('%.*c', 1000000000, 'x');",
            b"INSERT INTO w VALUES (format('%5.50000000c', 'x'));",
            b"SELECT printf('%d %.*c', 1, '60000000', 'x');",
        ]:
            with self.subTest(sql=sql):
                self.assertRejected(sql, "SQLITE_LIMIT_LENGTH")
        result = json.loads(self.fsm.apply(b"SELECT printf('%.*c|%5d', 3, 'x', 7);", 4))
        self.assertEqual(result["rows"], [["xxx|    7"]])

    def test_printf_repeat_refused_in_queries_too(self) -> None:
        """A query cannot be interrupted inside one VM step either: the same check."""
        error = self.assertRaises(
            QueryRejected, self.fsm.query, b"SELECT printf('%.*c', 1000000000, 'x')"
        )
        self.assertIn("SQLITE_LIMIT_LENGTH", str(error))

    def test_final_rows_capped(self) -> None:
        """A command's final SELECT may return at most SQLITE_MAX_RESULT_ROWS rows."""
        self.assertRejected(
            f"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
            f"LIMIT {SQLITE_MAX_RESULT_ROWS + 1}) SELECT x FROM c;".encode(),
            f"returns more than {SQLITE_MAX_RESULT_ROWS} rows (SQLITE_MAX_RESULT_ROWS)",
        )
        result = json.loads(
            self.fsm.apply(
                f"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                f"LIMIT {SQLITE_MAX_RESULT_ROWS}) SELECT x FROM c;".encode(),
                4,
            )
        )
        self.assertEqual(len(result["rows"]), SQLITE_MAX_RESULT_ROWS)

    def test_final_bytes_capped(self) -> None:
        """... and at most SQLITE_MAX_RESULT_BYTES bytes."""
        self.assertRejected(
            b"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 10) "
            b"SELECT zeroblob(1000000) FROM c;",
            f"returns more than {SQLITE_MAX_RESULT_BYTES} bytes (SQLITE_MAX_RESULT_BYTES)",
        )

    def test_rows_of_earlier_statements_are_not_kept(self) -> None:
        """Only the final statement's rows are answered (and capped)."""
        result = json.loads(
            self.fsm.apply(
                b"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 200000) "
                b"SELECT x FROM c; SELECT 1;",
                2,
            )
        )
        self.assertEqual(result["rows"], [[1]])


class AutoincrementTests(LimitsTestCase):
    def test_exhausted_table_is_a_rejection(self) -> None:
        """A table whose AUTOINCREMENT sequence is at the largest rowid (state made before this
        check existed): an insert fails with SQLITE_FULL on every replica, which used to be a
        machine failure that stopped them all; now a rejection naming the table."""
        conn = self.fsm._conn  # a state older commands could leave behind
        conn.execute(f"INSERT INTO a VALUES ({MAX_ROWID}, 0)")
        conn.execute("DELETE FROM a")
        message = self.assertRejected(
            b"INSERT INTO a (x) VALUES (1);", "table a has used its largest AUTOINCREMENT rowid"
        )
        self.assertIn("SQLITE_FULL", message)

    def test_exhausted_in_the_same_command(self) -> None:
        """The sequence reaching its end in an earlier statement of the same command."""
        self.assertRejected(
            f"INSERT INTO w VALUES (3); INSERT INTO a VALUES ({MAX_ROWID}, 1);"
            f"INSERT INTO a (x) VALUES (2);".encode(),
            "table a has used its largest AUTOINCREMENT rowid",
        )

    def test_exhausted_in_the_same_statement(self) -> None:
        """... or within one statement (this stopped every node: CREATE TABLE and one INSERT
        are all it takes)."""
        self.assertRejected(
            f"INSERT INTO a VALUES ({MAX_ROWID}, 1), (NULL, 2);".encode(),
            "table a has used its largest AUTOINCREMENT rowid",
        )
        self.assertRejected(
            f"INSERT INTO w VALUES (5); INSERT INTO a VALUES ({MAX_ROWID - 1}, 1), (NULL, 2), "
            f"(NULL, 3);".encode(),
            "table a has used its largest AUTOINCREMENT rowid",
        )

    def test_command_may_not_leave_the_sequence_at_its_end(self) -> None:
        """Nor may a command leave the sequence there (deleting the row keeps the sequence)."""
        self.assertRejected(
            f"INSERT INTO a VALUES ({MAX_ROWID}, 1); DELETE FROM a;".encode(),
            "leaves the AUTOINCREMENT sequence of table a at",
        )

    def test_command_may_not_set_the_sequence_to_its_end(self) -> None:
        """Writing sqlite_sequence directly counts too; other tables' inserts are not blocked
        by an older exhausted sequence."""
        self.fsm.apply(b"INSERT INTO a (x) VALUES (1);", 2)
        self.assertRejected(
            f"UPDATE sqlite_sequence SET seq = {MAX_ROWID} WHERE name = 'a';".encode(),
            "leaves the AUTOINCREMENT sequence of table a at",
        )
        self.fsm._conn.execute(f"UPDATE sqlite_sequence SET seq = {MAX_ROWID}")  # an old state
        self.fsm.apply(b"INSERT INTO w VALUES (7); DELETE FROM w WHERE x = 7;", 3)

    def test_disk_full_still_a_failure(self) -> None:
        """SQLITE_FULL with no exhausted sequence stays a machine failure."""
        self.fsm._conn.execute("PRAGMA max_page_count = 3")  # stand-in for a full disk
        self.assertRaises(
            FSMFailure, self.fsm.apply, b"INSERT INTO a (x) VALUES (zeroblob(100000));", 2
        )


def dump(fsm: SQLiteStateMachine) -> Any:
    """Every table's rows (with rowids), in order: what two replicas must agree on."""
    tables = json.loads(
        fsm.query(b"SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
    )["rows"]
    state = {}
    for (name,) in tables:
        rows = json.loads(fsm.query(f'SELECT rowid, * FROM "{name}" ORDER BY rowid'.encode()))
        state[name] = rows["rows"]
    return state


class DivergenceTests(LimitsTestCase):
    """Each command runs on two FSMs with different data dirs; their answers and states must
    be equal, and the command refused."""

    def on_two(self, *commands: bytes) -> list[str]:
        replicas = [self.make(), self.make()]
        answers: list[list[str]] = [[], []]
        for fsm, answer in zip(replicas, answers, strict=True):
            fsm.apply(b"CREATE TABLE w (x); INSERT INTO w VALUES (1);", 1)
            for index, command in enumerate(commands, start=2):
                try:
                    answer.append(fsm.apply(command, index).decode())
                except CommandRejected as e:
                    answer.append(f"rejected: {e}")
        self.assertEqual(answers[0], answers[1])
        self.assertEqual(dump(replicas[0]), dump(replicas[1]))
        return answers[0]

    def test_largest_rowid_then_insert(self) -> None:
        """Once a table holds rowid 2**63-1 SQLite picks the next rowid at random: three nodes
        stored three rowids. A command leaving that rowid is refused."""
        answers = self.on_two(
            f"INSERT INTO w (rowid, x) VALUES ({MAX_ROWID}, 1); INSERT INTO w VALUES (2);".encode(),
            f"INSERT INTO w (rowid, x) VALUES ({MAX_ROWID - 1}, 1); INSERT INTO w VALUES (2);"
            "".encode(),
            f"INSERT INTO w (rowid, x) VALUES ({MAX_ROWID}, 1);".encode(),
            f"UPDATE w SET rowid = {MAX_ROWID};".encode(),
            b"INSERT INTO w (x) VALUES (3);",
        )
        for answer in answers[:4]:
            self.assertIn(f"leaves a row with rowid {MAX_ROWID}", answer)
        self.assertIn('"changes":1', answers[4])

    def test_without_rowid_tables_are_fine(self) -> None:
        """WITHOUT ROWID tables have no rowid to run out of."""
        replica = self.make()
        replica.apply(b"CREATE TABLE n (k INTEGER PRIMARY KEY, v) WITHOUT ROWID;", 1)
        replica.apply(f"INSERT INTO n VALUES ({MAX_ROWID}, 1);".encode(), 2)
        replica.apply(b"CREATE TABLE h (rowid, _rowid_, oid);", 3)
        replica.apply(f"INSERT INTO h VALUES ({MAX_ROWID}, 1, 2);".encode(), 4)

    def test_database_list(self) -> None:
        """Each node stored its own file path."""
        answers = self.on_two(
            b"INSERT INTO w SELECT file FROM pragma_database_list;",
            b"INSERT INTO w SELECT file FROM pragma_database_list();",
            b"PRAGMA database_list;",
        )
        for answer in answers:
            self.assertIn("PRAGMA database_list", answer)

    def test_build_dependent_functions(self) -> None:
        """Functions whose result depends on the SQLite build or the C math library are refused
        in commands (also as column DEFAULTs and in triggers)."""
        answers = self.on_two(
            b"INSERT INTO w VALUES (sqlite_version());",
            b"INSERT INTO w VALUES (sqlite_source_id());",
            b"INSERT INTO w VALUES (sqlite_compileoption_get(0));",
            b"INSERT INTO w VALUES (sqlite_compileoption_used('ENABLE_FTS5'));",
            b"INSERT INTO w VALUES (fts3_tokenizer('simple'));",
            b"INSERT INTO w VALUES (fts5_source_id());",
            b"INSERT INTO w VALUES (sin(1));",
            b"INSERT INTO w VALUES (pow(2, 0.5));",
            b"INSERT INTO w VALUES (ln(3));",
            b"CREATE TABLE d (x, v DEFAULT (sqlite_version())); INSERT INTO d (x) VALUES (1);",
            b"CREATE TABLE g (x); CREATE TRIGGER tg AFTER INSERT ON g BEGIN "
            b"INSERT INTO w VALUES (sqlite_source_id()); END; INSERT INTO g VALUES (1);",
        )
        for answer in answers:
            self.assertIn("not allowed in a command", answer)
        self.assertIn("depends on the SQLite build or the machine's math library", answers[0])

    def test_layout_tables_and_build_pragmas(self) -> None:
        """dbstat (page offsets), the build's lists and the O(database) checks: refused."""
        answers = self.on_two(
            b"INSERT INTO w SELECT pgoffset FROM dbstat;",
            b"INSERT INTO w SELECT name FROM pragma_function_list;",
            b"INSERT INTO w SELECT name FROM pragma_module_list;",
            b"PRAGMA integrity_check;",
            b"INSERT INTO w SELECT * FROM pragma_quick_check;",
            b"CREATE VIRTUAL TABLE s USING dbstat;",
        )
        for answer in answers:
            self.assertIn("not allowed in a command", answer)

    def test_deterministic_functions_still_allowed(self) -> None:
        """Exact math and the rest of SQLite's functions stay usable in commands."""
        answers = self.on_two(
            b"SELECT sqrt(16), floor(2.5), ceil(2.5), mod(7, 3), abs(-1), pi() > 3, "
            b"json_extract('{\"a\": 1}', '$.a'), printf('%05.1f', 2.25);"
        )
        self.assertEqual(json.loads(answers[0])["rows"], [[4.0, 2.0, 3.0, 1.0, 1, 1, 1, "002.3"]])

    def test_queries_may_use_them(self) -> None:
        """Queries read the build's answers as they are."""
        result = json.loads(
            self.fsm.query(
                b"SELECT sqlite_version(), round(sin(0), 3), length(printf('%.3c', 'x'))"
            )
        )
        self.assertEqual(result["rows"][0][1:], [0.0, 3])
        self.assertEqual(result["rows"][0][0], determinism_settings()["sqlite_version"])


class DeterminismSettingsTests(SynchronousTestCase):
    def test_settings(self) -> None:
        """The settings nodes compare: the limits, the SQLite version and compile options."""
        settings = determinism_settings()
        json.dumps(settings)  # JSON data, to send at the hello
        self.assertEqual(settings["sqlite_vm_step_budget"], SQLITE_VM_STEP_BUDGET)
        options = settings["sqlite_compile_options"]
        assert isinstance(options, list)
        self.assertEqual(options, sorted(options))
        self.assertIn("SQLITE_LIMIT_LENGTH", settings["sqlite_connection_limits"])


class FunctionCallBudgetTests(LimitsTestCase):
    def test_python_function_calls_count_against_the_budget(self) -> None:
        """printf and the date functions run as Python (about 100 VM steps' time each): each
        call counts SQLITE_FUNCTION_CALL_STEPS steps, so a command cannot make millions."""
        self.assertRejected(
            b"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 60000) "
            b"SELECT count(printf('%d', x)) FROM c;",
            "SQLite VM steps",
        )
        result = self.fsm.apply(
            b"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 30000) "
            b"SELECT count(date('2024-01-01', '+' || x || ' days')) FROM c;",
            4,
        )
        self.assertEqual(json.loads(result)["rows"], [[30000]])


class RowidCacheTests(LimitsTestCase):
    def test_rejected_schema_change_does_not_hide_a_table(self) -> None:
        """A refused command that recreated a table WITHOUT ROWID is rolled back; the table
        has its rowid again and is checked as before (a replica that restarted would)."""
        self.assertRejected(
            f"DROP TABLE w; CREATE TABLE w (k PRIMARY KEY) WITHOUT ROWID;"
            f"INSERT INTO w VALUES (1); INSERT INTO a VALUES ({MAX_ROWID}, 1);".encode(),
            "leaves a row with rowid",
        )
        self.assertRejected(
            f"INSERT INTO w (rowid, x) VALUES ({MAX_ROWID}, 1);".encode(), "leaves a row with rowid"
        )
