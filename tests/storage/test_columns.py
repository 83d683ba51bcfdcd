"""The log's in-memory entries as columns the garbage collector does not track."""

from __future__ import annotations

import gc
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from graft.raft.types import Entry, EntryKind
from graft.storage.columns import RELEASE_SLICE, EntryColumns, release_in_slices


def entries(first: int, count: int) -> list[Entry]:
    kinds = (EntryKind.NORMAL, EntryKind.NOOP, EntryKind.MEMBERSHIP)
    return [
        Entry(index=i, term=1 + i // 3, kind=kinds[i % 3], data=b"x" * (i % 5))
        for i in range(first, first + count)
    ]


class EntryColumnsTests(SynchronousTestCase):
    def test_entries_come_back_equal(self) -> None:
        """What goes in comes out as equal Entry objects, by offset from the first index."""
        stored = entries(10, 9)
        columns = EntryColumns(stored)
        self.assertEqual(len(columns), 9)
        self.assertEqual(columns.entries(0, 9, 10), stored)
        self.assertEqual(columns.entries(2, 5, 10), stored[2:5])
        self.assertEqual((columns.term(4), columns.kind(4)), (stored[4].term, stored[4].kind))

    def test_max_bytes_cuts_before_making_entries(self) -> None:
        """With max_bytes the longest prefix that fits comes back, and at least one entry."""
        columns = EntryColumns(entries(1, 9))  # data sizes 1, 2, 3, 4, 0, 1, 2, 3, 4
        self.assertEqual([e.index for e in columns.entries(0, 9, 1, max_bytes=6)], [1, 2, 3])
        self.assertEqual([e.index for e in columns.entries(3, 9, 1, max_bytes=0)], [4])

    def test_truncate_and_drop_front(self) -> None:
        """A conflicting suffix is cut off and compacted entries leave from the front."""
        stored = entries(1, 9)
        columns = EntryColumns(stored)
        columns.truncate(6)
        columns.extend(entries(7, 2))
        dropped = columns.drop_front(4)
        self.assertEqual(columns.entries(0, len(columns), 5), stored[4:6] + entries(7, 2))
        self.assertEqual(dropped, [e.data for e in stored[:4]])

    def test_the_collector_tracks_no_entry(self) -> None:
        """The columns are a fixed handful of containers, whatever their length, and none of
        the data items is tracked by the cyclic collector: collections do not scan the log
        entry by entry."""
        columns = EntryColumns(entries(1, 1000))
        held = [o for o in gc.get_referents(columns) if not isinstance(o, type)]
        self.assertEqual(len(held), 3)
        (data,) = [o for o in held if isinstance(o, list)]
        self.assertEqual(len(data), 1000)
        self.assertFalse(any(gc.is_tracked(item) for item in data))

    def test_dropped_entries_are_freed_a_slice_a_turn(self) -> None:
        """A compaction's dropped data is freed RELEASE_SLICE items per reactor turn, not in
        one call that holds the reactor thread for a million frees."""
        turns: list[tuple[Any, ...]] = []

        def call_later(delay: float, f: Any, *args: Any) -> None:
            self.assertEqual(delay, 0)
            turns.append((f, *args))

        garbage = [bytes([i % 256]) * 8 for i in range(2 * RELEASE_SLICE + 5)]
        release_in_slices(garbage, call_later)
        self.assertEqual(len(garbage), RELEASE_SLICE + 5)
        f, *args = turns.pop()
        f(*args)
        self.assertEqual(len(garbage), 5)
        f, *args = turns.pop()
        f(*args)
        self.assertEqual((garbage, turns), ([], []))
