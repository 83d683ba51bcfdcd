"""MemoryStorage: the in-memory LogStorage the tests, simulation and benchmark run on."""

from __future__ import annotations

from twisted.trial import unittest

from graft.raft.errors import LogCompacted, LogUnavailable
from graft.raft.memory import MemoryStorage
from graft.raft.types import Entry, EntryKind, HardState, Membership, encode_membership


def entries(first: int, terms: list[int]) -> list[Entry]:
    return [Entry(index=first + k, term=t, data=b"d" * 10) for k, t in enumerate(terms)]


class MemoryStorageTests(unittest.SynchronousTestCase):
    def test_fresh(self) -> None:
        """A fresh storage is empty, at index 0 of term 0, with no membership."""
        s = MemoryStorage()
        self.assertEqual((s.first_index(), s.last_index(), s.term(0)), (1, 0, 0))
        self.assertEqual(s.initial_state(), (HardState(), None))

    def test_append_replaces_suffix(self) -> None:
        """Appending at or below the last index replaces the conflicting suffix."""
        s = MemoryStorage()
        s.append(entries(1, [1, 1, 1, 1]))
        s.append(entries(3, [2]))
        self.assertEqual([s.term(i) for i in range(1, s.last_index() + 1)], [1, 1, 2])
        with self.assertRaises(LogUnavailable):
            s.append(entries(9, [2]))

    def test_bounds_and_byte_limit(self) -> None:
        """Reads outside the log raise; max_bytes truncates but returns at least one entry."""
        s = MemoryStorage()
        s.append(entries(1, [1] * 5))
        self.assertEqual(len(s.entries(1, 6, max_bytes=25)), 2)
        self.assertEqual(len(s.entries(1, 6, max_bytes=1)), 1)
        with self.assertRaises(LogUnavailable):
            s.term(6)
        with self.assertRaises(LogUnavailable):
            s.entries(1, 7)

    def test_compaction(self) -> None:
        """After compaction the snapshot index keeps its term; lower indexes are gone."""
        s = MemoryStorage()
        s.append(entries(1, [1, 1, 2, 2]))
        m = Membership(voters=frozenset({"a"}))
        s.compact(2, m)
        self.assertEqual((s.first_index(), s.term(2)), (3, 1))
        with self.assertRaises(LogCompacted):
            s.term(1)
        with self.assertRaises(LogCompacted):
            s.entries(2, 4)
        self.assertEqual(s.initial_state()[1], m)

    def test_membership_from_log(self) -> None:
        """initial_state reports the latest MEMBERSHIP entry in the log."""
        s = MemoryStorage()
        m = Membership(voters=frozenset({"a", "b"}))
        s.append([Entry(index=1, term=1, kind=EntryKind.MEMBERSHIP, data=encode_membership(m))])
        self.assertEqual(s.initial_state()[1], m)
