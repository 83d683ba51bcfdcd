"""graft.fsm.sqlite queries in worker threads (query_in_thread): read-only connections of their
own, a deadline, a cap on the answer's size, and restore/close while readers exist."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from graft.config import ConfigError
from graft.fsm import QueryRejected, QueryTimedOut, ThreadedQueries, threaded_query
from graft.fsm.kv import KeyValueStateMachine
from graft.fsm.sqlite import SQLiteStateMachine
from graft.fsm.sqlite import reads as sqlite_reads
from tests.fsm import test_sqlite
from tests.fsm.test_sqlite import DEMO_SQL, USERS, SQLiteTestCase

ENDLESS = b"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT max(x) FROM c"
# Far enough that no test reaches it: the tests that need a query to stop stop it otherwise.
FAR = 3600.0


def later(seconds: float = FAR) -> float:
    return time.monotonic() + seconds


class ThreadedQueryRulesTests(test_sqlite.QueryTests):
    """Every query test of tests.fsm.test_sqlite, answered by query_in_thread instead: the same
    answers, and the same refusals with the same messages."""

    def setUp(self) -> None:
        super().setUp()
        fsm = self.fsm
        fsm.query = lambda query: fsm.query_in_thread(query, later())  # type: ignore[method-assign]


class ReaderTestCase(SQLiteTestCase):
    def make(self, **options: Any) -> SQLiteStateMachine:
        data_dir = Path(self.mktemp())
        fsm = SQLiteStateMachine(data_dir=data_dir, base_dir=data_dir, **options)
        self.addCleanup(fsm.close)
        return fsm

    def read(self, fsm: SQLiteStateMachine, sql: bytes, deadline: float | None = None) -> Any:
        return json.loads(fsm.query_in_thread(sql, later() if deadline is None else deadline))

    def in_thread(self, fsm: SQLiteStateMachine, sql: bytes, deadline: float) -> list[Any]:
        """Start ``sql`` in a thread; the list gets its answer or exception when it ends."""
        outcome: list[Any] = []

        def run() -> None:
            try:
                outcome.append(fsm.query_in_thread(sql, deadline))
            except Exception as e:
                outcome.append(e)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.addCleanup(thread.join, 30)
        self.threads = getattr(self, "threads", [])
        self.threads.append(thread)
        return outcome

    def wait_until(self, condition: Any, what: str) -> None:
        give_up = time.monotonic() + 30
        while not condition():
            self.assertLess(time.monotonic(), give_up, f"gave up waiting until {what}")
            time.sleep(0.005)


class InterfaceTests(SynchronousTestCase):
    def test_sqlite_offers_threaded_queries_and_kv_does_not(self) -> None:
        """The driver finds query_in_thread on the SQLite FSM; kv keeps its reactor queries."""
        data_dir = Path(self.mktemp())
        sqlite = SQLiteStateMachine(data_dir=data_dir)
        self.addCleanup(sqlite.close)
        self.assertIsInstance(sqlite, ThreadedQueries)
        self.assertIsNotNone(threaded_query(sqlite))
        self.assertIsNone(threaded_query(KeyValueStateMachine()))


class DeadlineTests(ReaderTestCase):
    def test_endless_query_is_stopped_at_its_deadline(self) -> None:
        """The unbounded WITH RECURSIVE that froze a node forever raises QueryTimedOut once its
        deadline passes, and the FSM keeps answering and applying afterwards."""
        fsm = self.make()
        fsm.apply(DEMO_SQL, 1)
        self.assertRaises(QueryTimedOut, fsm.query_in_thread, ENDLESS, later(0.2))
        fsm.apply(b"INSERT INTO users (name) VALUES ('hopper');", 2)
        self.assertEqual(len(self.read(fsm, USERS)["rows"]), 5)

    def test_watchdog_interrupts_without_the_progress_handler(self) -> None:
        """The watchdog thread interrupts a query at its deadline by itself (the progress
        handler, which takes the GIL, is only the backstop), and runs no longer than needed."""
        self.patch(sqlite_reads, "_DEADLINE_CHECK_STEPS", 2**31 - 1)
        fsm = self.make()
        for _ in range(2):
            self.assertRaises(QueryTimedOut, fsm.query_in_thread, ENDLESS, later(0.1))
        self.assertEqual(fsm._busy_readers, {})
        fsm.close()
        watchdog = fsm._watchdog
        assert watchdog is not None
        watchdog.join(30)
        self.assertFalse(watchdog.is_alive(), "the watchdog outlived close()")

    def test_deadline_already_passed(self) -> None:
        """A query whose deadline passed while it waited for a thread does not start."""
        fsm = self.make()
        error = self.assertRaises(
            QueryTimedOut, fsm.query_in_thread, b"SELECT 1", time.monotonic() - 1
        )
        self.assertIn("deadline", str(error))

    def test_refusal_still_wins_over_a_passed_deadline(self) -> None:
        """A malformed query is refused as such, whatever its deadline."""
        fsm = self.make()
        self.assertRaises(QueryRejected, fsm.query_in_thread, b"SELECT 1; SELECT 2", 0.0)

    def test_endless_query_does_not_block_apply_or_other_queries(self) -> None:
        """While an endless query runs in one thread, commands apply and other queries answer
        (WAL: the reader holds no lock the writer needs); closing the FSM stops the query."""
        fsm = self.make()
        fsm.apply(DEMO_SQL, 1)
        outcome = self.in_thread(fsm, ENDLESS, later())
        self.wait_until(lambda: fsm._busy_readers, "the endless query runs")
        for i in range(3):
            fsm.apply(b"INSERT INTO users (name) VALUES ('x%d');" % i, 2 + i)
            self.assertEqual(len(self.read(fsm, USERS)["rows"]), 5 + i)
        self.assertEqual(outcome, [], "the endless query ended by itself")
        fsm.close()
        self.wait_until(lambda: outcome, "the endless query stops")
        self.assertIsInstance(outcome[0], QueryRejected)
        self.assertIn("shutting down", str(outcome[0]))
        self.assertRaises(QueryRejected, fsm.query_in_thread, b"SELECT 1", later())


class VisibilityTests(ReaderTestCase):
    def test_query_sees_every_applied_command(self) -> None:
        """Each query, on a reused reader connection, sees the commands applied before it."""
        fsm = self.make()
        fsm.apply(b"CREATE TABLE t (n INTEGER);", 1)
        for n in range(20):
            fsm.apply(b"INSERT INTO t VALUES (%d);" % n, n + 2)
            self.assertEqual(
                self.read(fsm, b"SELECT count(*), max(n) FROM t")["rows"], [[n + 1, n]]
            )
        self.assertLessEqual(len(fsm._idle_readers), 1, "one thread needs one reader")

    def test_concurrent_queries_each_see_applied_state(self) -> None:
        """Queries from several threads at once, interleaved with applies, all answer."""
        fsm = self.make()
        fsm.apply(b"CREATE TABLE t (n INTEGER);", 1)
        fsm.apply(b"INSERT INTO t VALUES (1);", 2)
        outcomes = [self.in_thread(fsm, b"SELECT count(*) FROM t", later()) for _ in range(8)]
        fsm.apply(b"INSERT INTO t VALUES (2);", 3)
        self.wait_until(lambda: all(outcomes), "every query answered")
        for outcome in outcomes:
            self.assertIn(json.loads(outcome[0])["rows"], ([[1]], [[2]]))
        self.assertEqual(self.read(fsm, b"SELECT count(*) FROM t")["rows"], [[2]])

    def test_readers_cannot_write(self) -> None:
        """The reader connection itself is read-only, below the authorizer's rules."""
        fsm = self.make()
        fsm.apply(DEMO_SQL, 1)
        reader = fsm._take_reader(later())
        try:
            reader.conn.set_authorizer(None)
            with self.assertRaises(Exception) as raised:
                reader.conn.execute("DELETE FROM users")
            self.assertIn("readonly", str(raised.exception).replace("-", ""))
        finally:
            fsm._give_back(reader)
        self.assertEqual(len(self.read(fsm, USERS)["rows"]), 4)


class RestoreTests(ReaderTestCase):
    def image(self, sql: bytes) -> bytes:
        source = self.make()
        source.apply(sql, 1)
        return self.snapshot(source)

    def test_idle_readers_never_read_the_replaced_file(self) -> None:
        """After a restore, queries answer from the restored state, though reader connections
        of the old file were open (idle) when it was replaced."""
        fsm = self.make()
        fsm.apply(DEMO_SQL, 1)
        self.assertEqual(len(self.read(fsm, USERS)["rows"]), 4)
        self.assertTrue(fsm._idle_readers, "a reader stays open between queries")
        fsm.restore(
            io.BytesIO(self.image(b"CREATE TABLE other (a); INSERT INTO other VALUES (7);"))
        )
        self.assertEqual(self.read(fsm, b"SELECT a FROM other")["rows"], [[7]])
        self.assertRaises(QueryRejected, fsm.query_in_thread, USERS, later())
        fsm.apply(b"INSERT INTO other VALUES (8);", 2)
        self.assertEqual(self.read(fsm, b"SELECT count(*) FROM other")["rows"], [[2]])

    def test_reader_busy_during_restore_finishes_on_its_pinned_state_then_closes(self) -> None:
        """A query whose read began before a restore answers from the state it pinned (current
        when it began, so not stale for it); its connection is then closed, not reused, and
        every later query reads the restored state."""
        fsm = self.make()
        fsm.apply(DEMO_SQL, 1)
        busy = fsm._take_reader(later())  # what query_in_thread does first: the read is pinned
        fsm.restore(io.BytesIO(self.image(b"CREATE TABLE users (id, name);")))
        old = json.loads(busy.run(USERS.decode(), later(), 1 << 20, lambda: False))
        self.assertEqual(len(old["rows"]), 4)
        fsm._give_back(busy)
        self.assertNotIn(busy, fsm._idle_readers)
        self.assertEqual(self.read(fsm, USERS)["rows"], [])
        fsm.apply(b"INSERT INTO users VALUES (1, 'kay');", 2)
        self.assertEqual(self.read(fsm, USERS)["rows"], [["kay"]])

    def test_restore_while_queries_run_in_threads(self) -> None:
        """Restores while an endless query runs in a thread: later queries see each restored
        state, and closing the FSM ends the running query."""
        fsm = self.make()
        fsm.apply(DEMO_SQL, 1)
        outcome = self.in_thread(fsm, ENDLESS, later())
        self.wait_until(lambda: fsm._busy_readers, "the endless query runs")
        for n in range(3):
            fsm.restore(
                io.BytesIO(self.image(b"CREATE TABLE t (n); INSERT INTO t VALUES (%d);" % n))
            )
            self.assertEqual(self.read(fsm, b"SELECT n FROM t")["rows"], [[n]])
        fsm.close()
        self.wait_until(lambda: outcome, "the endless query stops")
        self.assertIsInstance(outcome[0], QueryRejected)


class SizeCapTests(ReaderTestCase):
    def test_answer_over_the_cap_is_refused(self) -> None:
        """An answer larger than query_max_bytes is refused naming the cap, whether from many
        rows or one huge value (which SQLite refuses to build); smaller answers pass."""
        fsm = self.make(query_max_bytes=4096)
        for sql in (
            b"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT x FROM c",
            b"SELECT zeroblob(1000000000)",
            b"SELECT hex(zeroblob(3000))",
            b"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 100000) "
            b"SELECT group_concat(x) FROM c",
        ):
            error = self.assertRaises(QueryRejected, fsm.query_in_thread, sql, later())
            self.assertIn("4096 bytes", str(error))
            self.assertIn("query_max_bytes", str(error))
        answer = fsm.query_in_thread(
            b"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 500) "
            b"SELECT x FROM c",
            later(),
        )
        self.assertLessEqual(len(answer), 4096)
        self.assertEqual(len(json.loads(answer)["rows"]), 500)

    def test_printf_repeat_over_the_cap_refused_before_it_runs(self) -> None:
        """printf('%.*c', N, 'x') loops N times in one VM step, where no deadline can stop it:
        a reader refuses a count over the longest value an answer may hold before SQLite runs
        it (the command path has the same guard); smaller repeats and other formats pass."""
        fsm = self.make(query_max_bytes=4096)
        for sql in (
            b"SELECT printf('%.*c', 1000000000, 'x')",
            b"SELECT printf('%d %.*c', 1, '60000000', 'x')",
        ):
            error = self.assertRaises(QueryRejected, fsm.query_in_thread, sql, later())
            self.assertIn("4096 bytes", str(error))
        answer = json.loads(fsm.query_in_thread(b"SELECT printf('%.*c|%5d', 3, 'x', 7)", later()))
        self.assertEqual(answer["rows"], [["xxx|    7"]])

    def test_like_patterns_are_limited_as_in_commands(self) -> None:
        """A reader has the commands' LIKE pattern limit (a long pattern against a long value
        costs seconds in one VM step)."""
        fsm = self.make()
        pattern = "%a" * 100
        sql = f"SELECT 'abc' LIKE '{pattern}'".encode()
        self.assertRaises(QueryRejected, fsm.query_in_thread, sql, later())

    def test_cap_is_checked_in_the_config(self) -> None:
        """A query_max_bytes that is not a sensible number of bytes stops at start."""
        for bad in (0, -1, "8M", True, 1.5):
            with self.assertRaises(ConfigError) as raised:
                self.make(query_max_bytes=bad)
            self.assertIn("fsm.options.query_max_bytes", str(raised.exception))
