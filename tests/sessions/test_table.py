"""The session table (graft.sessions.table) and the session operations (envelope): verdicts,
acknowledged floors, expiry by stamp time, eviction, the bound on results, settings, and the
encoding that snapshots carry."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from graft.sessions import envelope
from graft.sessions.table import (
    SessionSettings,
    SessionTable,
    StoredResult,
    TableFormatError,
    Verdict,
    session_id,
)

S = 10**9  # a second in stamp time


def result(index: int) -> StoredResult:
    return StoredResult(index=index, term=1, output=b'{"n":%d}' % index, error=None)


class TableTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.table = SessionTable(SessionSettings(idle_ns=60 * S, max_sessions=3, max_results=4))

    def test_new_then_duplicate(self) -> None:
        """A sequence is NEW until its result is recorded, then DUPLICATE with that result."""
        sid = self.table.register(5, 0xAB, 0)
        self.assertEqual(self.table.check(sid, 1, 0, S), (Verdict.NEW, None))
        self.table.record(sid, 1, result(6))
        self.assertEqual(self.table.check(sid, 1, 0, 2 * S), (Verdict.DUPLICATE, result(6)))
        self.assertEqual(self.table.check(sid, 2, 0, 2 * S), (Verdict.NEW, None))

    def test_ids_come_from_the_entry(self) -> None:
        self.assertEqual(session_id(5, 0xAB), "5-00000000000000ab")
        self.assertEqual(self.table.register(5, 0xAB, 0), "5-00000000000000ab")
        self.assertTrue(envelope.SESSION_ID.fullmatch(session_id(2**63, 2**64 - 1)))

    def test_unknown_session_is_expired(self) -> None:
        self.assertEqual(self.table.check("9-0", 1, 0, 0), (Verdict.EXPIRED, None))

    def test_acked_forgets_lower_sequences(self) -> None:
        """Graft-Acked k drops results below k; a sequence below it is FORGOTTEN, not NEW."""
        sid = self.table.register(1, 0, 0)
        for n in (1, 2, 3):
            self.table.check(sid, n, 0, 0)
            self.table.record(sid, n, result(n + 1))
        self.assertEqual(self.table.check(sid, 3, 3, 0), (Verdict.DUPLICATE, result(4)))
        self.assertEqual(self.table.check(sid, 2, 0, 0), (Verdict.FORGOTTEN, None))
        self.assertEqual(self.table.check(sid, 1, 0, 0), (Verdict.FORGOTTEN, None))

    def test_idle_sessions_expire_by_stamp_time(self) -> None:
        """Idle for the idle time is still alive; a nanosecond more is expired, also for a
        session whose command would have been a duplicate."""
        sid = self.table.register(1, 0, 0)
        self.table.check(sid, 1, 0, 10 * S)
        self.table.record(sid, 1, result(2))
        self.assertEqual(self.table.check(sid, 1, 0, 70 * S)[0], Verdict.DUPLICATE)
        self.assertEqual(self.table.check(sid, 1, 0, 130 * S + 1), (Verdict.EXPIRED, None))
        self.assertNotIn(sid, self.table)

    def test_a_full_table_evicts_the_least_recently_used(self) -> None:
        a = self.table.register(1, 0, 0)
        b = self.table.register(2, 0, S)
        c = self.table.register(3, 0, 2 * S)
        self.table.check(a, 1, 0, 3 * S)  # a is used again: b is now the oldest
        d = self.table.register(4, 0, 4 * S)
        self.assertEqual(len(self.table), 3)
        self.assertEqual(self.table.check(b, 1, 0, 5 * S)[0], Verdict.EXPIRED)
        for sid in (a, c, d):
            self.assertIn(sid, self.table)

    def test_results_are_bounded_per_session(self) -> None:
        """Past max_results the lowest sequence's result goes and the floor rises over it."""
        sid = self.table.register(1, 0, 0)
        for n in range(1, 6):
            self.table.check(sid, n, 0, 0)
            self.table.record(sid, n, result(n))
        self.assertEqual(self.table.check(sid, 1, 0, 0)[0], Verdict.FORGOTTEN)
        self.assertEqual(self.table.check(sid, 2, 0, 0)[0], Verdict.DUPLICATE)

    def test_settings_apply_at_once(self) -> None:
        for i in range(3):
            self.table.register(i + 1, 0, i)
        sid = self.table.register(9, 0, 9)
        for n in range(1, 5):
            self.table.record(sid, n, result(n))
        self.table.configure(SessionSettings(idle_ns=60 * S, max_sessions=1, max_results=2))
        self.assertEqual(len(self.table), 1)
        self.assertEqual(self.table.check(sid, 2, 0, 10)[0], Verdict.FORGOTTEN)
        self.assertEqual(self.table.check(sid, 3, 0, 10)[0], Verdict.DUPLICATE)

    def test_encode_decode_gives_the_same_table(self) -> None:
        """A decoded table encodes to the same bytes and gives the same verdicts, eviction
        order included."""
        a = self.table.register(1, 7, 0)
        self.table.record(a, 1, StoredResult(2, 1, b"\x00\xff", None))
        self.table.record(a, 2, StoredResult(3, 1, b"", "refused"))
        b = self.table.register(4, 8, S)
        self.table.check(a, 3, 2, 2 * S)  # a is now the most recently used
        copy = SessionTable.decode(self.table.encode())
        self.assertEqual(copy.encode(), self.table.encode())
        self.assertEqual(copy.digest(), self.table.digest())
        self.assertEqual(copy.check(a, 2, 0, 3 * S), (Verdict.DUPLICATE, result_error()))
        self.assertEqual(copy.check(a, 1, 0, 3 * S)[0], Verdict.FORGOTTEN)
        copy.register(5, 0, 3 * S)
        copy.register(6, 0, 3 * S)
        self.assertNotIn(b, copy)  # b was the least recently used

    def test_digest_differs_with_the_table(self) -> None:
        before = self.table.digest()
        self.table.register(1, 0, 0)
        self.assertNotEqual(self.table.digest(), before)

    def test_decode_refuses_garbage(self) -> None:
        for data in (b"", b"[]", b'{"format":"x"}', b'{"format":"graft.sessions/1"}', b"\xff"):
            self.assertRaises(TableFormatError, SessionTable.decode, data)


def result_error() -> StoredResult:
    return StoredResult(3, 1, b"", "refused")


class EnvelopeTests(SynchronousTestCase):
    def test_round_trips(self) -> None:
        self.assertEqual(envelope.decode(envelope.encode_register()), envelope.Register())
        ops = envelope.encode_numbered("1-ab", 7, 3, [b"x", b""])
        self.assertEqual(
            [envelope.decode(o) for o in ops],
            [
                envelope.NumberedCommand("1-ab", 7, 3, b"x"),
                envelope.NumberedCommand("1-ab", 8, 3, b""),
            ],
        )
        settings = SessionSettings(5 * S, 10, 20)
        self.assertEqual(
            envelope.decode(envelope.encode_settings(settings)), envelope.SetSettings(settings)
        )

    def test_refuses_what_it_cannot_read(self) -> None:
        good = envelope.encode_command("1-ab", 1, 0, b"c")
        for body in (b"", b"\x09", b"\x01x", good[:10], b"\x02\x03a\xffb" + good[6:], b"\x03"):
            self.assertRaises(envelope.EnvelopeError, envelope.decode, body)
        zero = envelope.encode_command("1-ab", 1, 0, b"c").replace(
            (1).to_bytes(8, "little"), bytes(8), 1
        )
        self.assertRaises(envelope.EnvelopeError, envelope.decode, zero)
