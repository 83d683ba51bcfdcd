"""The log's entries in memory, kept where the garbage collector does not look.

DurableLog keeps every entry since the start of the oldest kept segment in memory: up to a
64 MiB segment's worth, half a million small entries. As ``Entry`` objects each one is tracked
by CPython's cyclic collector (any class with slots is), although an entry holds only numbers
and bytes and can never be part of a cycle; every collection of the generations they sit in
scans them all, and under batched writes those pauses reached 100 ms. Here the terms live in
an array, the kinds in a bytearray and the data in a list of bytes: one tracked object (the
list), whose items the collector skips. ``Entry`` objects are made again when read.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Sequence

from graft.raft.types import Entry, EntryKind, make_entry

_KIND_OF = {int(kind): kind for kind in EntryKind}


class EntryColumns:
    """Consecutive entries, by offset from the first (the caller keeps the first index)."""

    __slots__ = ("_data", "_kinds", "_terms")

    def __init__(self, entries: Iterable[Entry] = ()) -> None:
        self._terms: array[int] = array("Q")
        self._kinds = bytearray()
        self._data: list[bytes] = []
        self.extend(list(entries))

    def __len__(self) -> int:
        return len(self._data)

    def term(self, offset: int) -> int:
        return self._terms[offset]

    def kind(self, offset: int) -> EntryKind:
        return _KIND_OF[self._kinds[offset]]

    def data(self, offset: int) -> bytes:
        return self._data[offset]

    def entries(
        self, lo: int, hi: int, first_index: int, max_bytes: int | None = None
    ) -> list[Entry]:
        """The entries at offsets [lo, hi), as ``Entry`` objects (``first_index`` is offset
        0): with ``max_bytes``, the longest prefix whose data fits (at least one entry), cut
        before any is made, as ``LogStorage.entries`` promises."""
        if max_bytes is not None:
            size = 0
            data = self._data
            for offset in range(lo, hi):
                size += len(data[offset])
                if size > max_bytes and offset > lo:
                    hi = offset
                    break
        kind_of = _KIND_OF
        return [
            make_entry(first_index + offset, term, kind_of[kind], data)
            for offset, term, kind, data in zip(
                range(lo, hi),
                self._terms[lo:hi],
                self._kinds[lo:hi],
                self._data[lo:hi],
                strict=True,
            )
        ]

    def extend(self, entries: Sequence[Entry]) -> None:
        self._terms.extend([e.term for e in entries])
        self._kinds.extend([e.kind for e in entries])
        self._data.extend([e.data for e in entries])

    def truncate(self, offset: int) -> None:
        """Forget the entries from ``offset`` on."""
        del self._terms[offset:]
        del self._kinds[offset:]
        del self._data[offset:]

    def drop_front(self, count: int) -> list[bytes]:
        """Forget the first ``count`` entries; their data is returned, still alive, for the
        caller to free in pieces: freeing a million bytes objects in one ``del`` held the
        reactor thread for tens of milliseconds (``release_in_slices``)."""
        del self._terms[:count]
        del self._kinds[:count]
        # The kept tail is copied (a compaction keeps few entries), not the dropped head.
        dropped = self._data
        self._data = dropped[count:]
        del dropped[count:]
        return dropped


# The entries one reactor turn frees (``release_in_slices``): about a millisecond's work.
RELEASE_SLICE = 20_000


def release_in_slices(garbage: list[bytes], call_later: Callable[..., object]) -> None:
    """Free ``garbage`` RELEASE_SLICE items a turn, from the end (no memmove), through
    ``call_later(0, ...)``, so that other work runs between the slices."""
    del garbage[-RELEASE_SLICE:]
    if garbage:
        call_later(0, release_in_slices, garbage, call_later)
