"""The SQLite FSM's time and randomness come from the leader's stamp on the command's entry:
'now', CURRENT_TIMESTAMP (also as a column DEFAULT), random() and randomblob() give the same
values on every replica that applies the same entry, and are refused without a stamp."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from graft.fsm import CommandRejected, digest
from graft.fsm.sqlite import SQLiteStateMachine
from graft.fsm.sqlite.stamped import stamp_text
from graft.stamp import Stamp

# 2024-12-05 12:00:00.123456789 UTC
STAMP = Stamp(1_733_400_000_123_456_789, 0x5EED)
SCHEMA = (
    b"CREATE TABLE t (id INTEGER PRIMARY KEY, created TEXT DEFAULT CURRENT_TIMESTAMP, "
    b"day TEXT DEFAULT (CURRENT_DATE), at TEXT, r INTEGER, b BLOB, j REAL)"
)
INSERTS = (
    b"INSERT INTO t (at, r, b, j) VALUES (datetime('now'), random(), randomblob(16), "
    b"julianday('now'));"
    b"INSERT INTO t (at, r) VALUES (strftime('%Y-%m-%d %H:%M:%f'), random());"
    b"INSERT INTO t (at) VALUES (time('NOW', '+1 hour'))"
)
ROWS = b"SELECT id, created, day, at, r, hex(b), j FROM t ORDER BY id"


class StampedSQLTests(SynchronousTestCase):
    def make(self) -> SQLiteStateMachine:
        data_dir = Path(self.mktemp())
        fsm = SQLiteStateMachine(data_dir=data_dir)
        self.addCleanup(fsm.close)
        return fsm

    def rows(self, fsm: SQLiteStateMachine) -> list[list[Any]]:
        rows: list[list[Any]] = json.loads(fsm.query(ROWS))["rows"]
        return rows

    def run_commands(self, fsm: SQLiteStateMachine, stamp: Stamp) -> None:
        fsm.apply_stamped(SCHEMA, 1, stamp)
        fsm.apply_stamped(INSERTS, 2, stamp)

    def test_time_functions_read_the_stamp(self) -> None:
        """'now' in each date function, CURRENT_TIMESTAMP and CURRENT_DATE as column defaults
        are the stamp's time (UTC, to the millisecond, as SQLite's own 'now')."""
        fsm = self.make()
        self.run_commands(fsm, STAMP)
        rows = self.rows(fsm)
        self.assertEqual(stamp_text(STAMP), "2024-12-05 12:00:00.123")
        self.assertEqual([r[1] for r in rows], ["2024-12-05 12:00:00"] * 3)
        self.assertEqual([r[2] for r in rows], ["2024-12-05"] * 3)
        self.assertEqual(
            [r[3] for r in rows], ["2024-12-05 12:00:00", "2024-12-05 12:00:00.123", "13:00:00"]
        )
        self.assertAlmostEqual(rows[0][6], 2460650.0 + 0.123 / 86400, places=9)

    def test_replicas_with_the_same_stamps_hold_the_same_values(self) -> None:
        """Two replicas applying the same entries agree on every value and on the digest;
        another seed gives other random values (they are not constants)."""
        one, two, other = self.make(), self.make(), self.make()
        self.run_commands(one, STAMP)
        self.run_commands(two, STAMP)
        self.run_commands(other, Stamp(STAMP.time_ns, STAMP.seed + 1))
        self.assertEqual(self.rows(one), self.rows(two))
        self.assertEqual(digest(one), digest(two))
        randoms = [(r[4], r[5]) for r in self.rows(one)[:2]]
        self.assertNotEqual(randoms, [(r[4], r[5]) for r in self.rows(other)[:2]])
        self.assertNotEqual(randoms[0][0], randoms[1][0])  # each call draws anew
        self.assertEqual(len(randoms[0][1]), 32)  # 16 bytes in hex

    def test_without_a_stamp_they_are_refused_as_before(self) -> None:
        """An entry without a stamp (written before stamps) is refused as it was then, so a
        replay of an old log gives the state it gave."""
        fsm = self.make()
        fsm.apply_stamped(b"CREATE TABLE u (x)", 1, None)
        for sql, message in (
            (b"INSERT INTO u VALUES (datetime('now'))", "datetime() with 'now'"),
            (b"INSERT INTO u VALUES (random())", "random() is not deterministic"),
            (b"INSERT INTO u VALUES (CURRENT_TIMESTAMP)", "current_timestamp is not"),
        ):
            with self.assertRaises(CommandRejected) as caught:
                fsm.apply_stamped(sql, 2, None)
            self.assertIn(message, caught.exception.message)
        self.assertEqual(json.loads(fsm.query(b"SELECT count(*) FROM u"))["rows"], [[0]])

    def test_what_stays_refused_with_a_stamp(self) -> None:
        """The time zone stays refused, and randomblob() is bounded by the longest value."""
        fsm = self.make()
        fsm.apply_stamped(b"CREATE TABLE u (x)", 1, STAMP)
        for sql, message in (
            (b"INSERT INTO u VALUES (datetime('now', 'localtime'))", "time zone"),
            (b"INSERT INTO u VALUES (randomblob(2000000))", "longer than the longest value"),
            (b"INSERT INTO u VALUES (total_changes())", "not deterministic"),
        ):
            with self.assertRaises(CommandRejected) as caught:
                fsm.apply_stamped(sql, 2, STAMP)
            self.assertIn(message, caught.exception.message)
