"""The leader's stamps on commands (graft.stamp): time from the wall clock, never going back.

The rule (docs/architecture.md, "The stamp"): a command's time is the proposing leader's wall
clock, but never earlier than the latest stamp this node has seen in its log. A new leader's
log holds every committed entry (Raft's leader completeness), and its own entries follow them,
so the times along the committed log never go backwards, across leader changes too. Seeing a
stamp counts whether the entry came from this node's proposals, from a leader's AppendEntries,
or from the log on disk at start; an entry a later leader overwrites may have raised the floor
a little higher than needed, which only keeps the order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from graft.raft.storage import LogStorage
from graft.raft.types import Entry, EntryKind
from graft.stamp import STAMP_VERSION, encode_batch, stamp_time_ns

# How many entries the start-up scan for the latest stamp reads at a time.
_SCAN_CHUNK = 512


class Stamper:
    """Stamps the commands this node proposes as leader; follows the stamps in its log."""

    def __init__(self, *, wall_ns: Callable[[], int], seed: Callable[[], int]) -> None:
        self._wall_ns = wall_ns
        self._seed = seed
        self.floor = 0  # the latest stamp time this node has seen in its log (0: none)

    def stamp(self, commands: Sequence[bytes], version: int = STAMP_VERSION) -> list[bytes]:
        """The data of STAMPED entries for ``commands``: one time for the batch (no earlier
        than the floor), a seed for each (``SESSION_VERSION``: they are session operations)."""
        time_ns = max(self._wall_ns(), self.floor)
        self.floor = time_ns
        return encode_batch(time_ns, self._seed, commands, version)

    def saw(self, entries: Sequence[Entry]) -> None:
        """Entries appended to this node's log: raise the floor to the latest stamp among
        them (only the last stamped entry needs reading: times never go back in a log)."""
        stamped = EntryKind.STAMPED
        for entry in reversed(entries):
            if entry.kind is stamped:
                time_ns = stamp_time_ns(entry.data)
                if time_ns is not None and time_ns > self.floor:
                    self.floor = time_ns
                return

    def saw_floor(self, time_ns: int) -> None:
        """A snapshot's stamp floor (SnapshotMeta.stamp_floor_ns): no stamp it covers is
        later, and its entries are no longer in the log to be seen."""
        self.floor = max(self.floor, time_ns)

    def saw_log(self, storage: LogStorage) -> None:
        """At start: the floor from the snapshot and the latest stamped entry in the log on
        disk, read from the end backwards (a log written before stamps holds none: then it
        is read whole, once)."""
        self.saw_floor(storage.snapshot_meta().stamp_floor_ns)
        first, hi = storage.first_index(), storage.last_index() + 1
        while hi > first:
            lo = max(first, hi - _SCAN_CHUNK)
            entries = storage.entries(lo, hi)
            for entry in reversed(entries):
                if entry.kind is EntryKind.STAMPED:
                    self.saw([entry])
                    return
            hi = lo
