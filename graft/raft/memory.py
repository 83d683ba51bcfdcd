"""An in-memory WritableLogStorage for tests, the simulation and the benchmark.

It keeps everything in one list that starts right after the snapshot, so ``term`` and
``entries`` are list indexing. Nothing survives the process: a simulated crash keeps the
MemoryStorage object (the "disk") and throws the RaftNode away.
"""

from __future__ import annotations

from graft.raft.errors import LogCompacted, LogUnavailable
from graft.raft.storage import limit_bytes
from graft.raft.types import (
    Entry,
    EntryKind,
    HardState,
    Membership,
    SnapshotMeta,
    decode_membership,
)


class MemoryStorage:
    def __init__(self, snapshot: SnapshotMeta | None = None) -> None:
        self._hard_state = HardState()
        self._snapshot = snapshot if snapshot is not None else SnapshotMeta()
        # _entries[k] holds index snapshot.index + 1 + k.
        self._entries: list[Entry] = []

    # -- LogStorage -------------------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, Membership | None]:
        for entry in reversed(self._entries):
            if entry.kind is EntryKind.MEMBERSHIP:
                return self._hard_state, decode_membership(entry.data)
        if self._snapshot.index > 0:
            return self._hard_state, self._snapshot.membership
        return self._hard_state, None

    def first_index(self) -> int:
        return self._snapshot.index + 1

    def last_index(self) -> int:
        return self._snapshot.index + len(self._entries)

    def term(self, index: int) -> int:
        offset = self._snapshot.index
        if index == offset:
            return self._snapshot.term
        if index < offset:
            raise LogCompacted(f"index {index} is inside the snapshot at {offset}")
        if index > offset + len(self._entries):
            raise LogUnavailable(f"index {index} is beyond the last index {self.last_index()}")
        return self._entries[index - offset - 1].term

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        offset = self._snapshot.index
        if lo <= offset:
            raise LogCompacted(f"index {lo} is inside the snapshot at {offset}")
        if hi > offset + len(self._entries) + 1:
            raise LogUnavailable(f"index {hi - 1} is beyond the last index {self.last_index()}")
        return limit_bytes(self._entries[lo - offset - 1 : hi - offset - 1], max_bytes)

    def snapshot_meta(self) -> SnapshotMeta:
        return self._snapshot

    # -- WritableLogStorage -----------------------------------------------------------------

    def append(self, entries: tuple[Entry, ...] | list[Entry]) -> None:
        if not entries:
            return
        offset = self._snapshot.index
        first = entries[0].index
        if first > self.last_index() + 1:
            raise LogUnavailable(
                f"append at {first} would leave a gap after {self.last_index()}; "
                "append entries contiguously"
            )
        skip = max(0, offset + 1 - first)  # entries already covered by the snapshot
        del self._entries[max(0, first - offset - 1) :]
        self._entries.extend(entries[skip:])

    def set_hard_state(self, hard_state: HardState) -> None:
        self._hard_state = hard_state

    # -- snapshots (for tests of the snapshot seam) -----------------------------------------

    def hard_state(self) -> HardState:
        return self._hard_state

    def compact(self, index: int, membership: Membership) -> None:
        """Drop entries up to ``index`` as if a snapshot covering them had been taken."""
        if index <= self._snapshot.index:
            return
        term = self.term(index)
        del self._entries[: index - self._snapshot.index]
        self._snapshot = SnapshotMeta(index=index, term=term, membership=membership)

    def apply_snapshot(self, meta: SnapshotMeta) -> None:
        """Replace the whole log by a received snapshot."""
        self._snapshot = meta
        self._entries = []
