"""The storage interface the core reads, as in etcd-raft's ``Storage``.

The core only *reads* storage: entries it produced reach storage through ``Ready.entries`` and
the driver's write, and the core reads them back after ``advance``. Both the in-memory storage
(graft.raft.memory, for tests) and the durable one (graft.storage) implement this protocol.
"""

from __future__ import annotations

from typing import Protocol

from graft.raft.types import Entry, HardState, Membership, SnapshotMeta


class LogStorage(Protocol):
    def initial_state(self) -> tuple[HardState, Membership | None]:
        """The durable hard state and the latest membership in the log or snapshot (None if none:
        a fresh node, which then uses RaftConfig.bootstrap)."""
        ...

    def first_index(self) -> int:
        """The first index still in the log: snapshot index + 1 (1 for a fresh log)."""
        ...

    def last_index(self) -> int:
        """The last index in the log, or the snapshot index if the log is empty after it."""
        ...

    def term(self, index: int) -> int:
        """The term of ``index``, valid from snapshot index (its term) to last_index.

        Raises LogCompacted below the snapshot index, LogUnavailable above last_index.
        """
        ...

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries [lo, hi). With max_bytes, stop once the data would exceed it, but always
        return at least one entry when lo < hi. Raises LogCompacted / LogUnavailable."""
        ...

    def snapshot_meta(self) -> SnapshotMeta:
        """The latest snapshot's metadata (index 0 when there is none)."""
        ...


class WritableLogStorage(LogStorage, Protocol):
    """What the driver (or a test) does with a Ready's persistence part, synchronously."""

    def append(self, entries: tuple[Entry, ...] | list[Entry]) -> None:
        """Append entries; the first may be at or below last_index + 1, in which case the
        conflicting suffix from that index on is replaced."""
        ...

    def set_hard_state(self, hard_state: HardState) -> None: ...


def limit_bytes(entries: list[Entry], max_bytes: int | None) -> list[Entry]:
    """The longest prefix of ``entries`` whose data fits in ``max_bytes`` (at least one entry),
    as LogStorage.entries promises."""
    if max_bytes is None:
        return entries
    size = 0
    for count, entry in enumerate(entries):
        size += len(entry.data)
        if size > max_bytes and count > 0:
            return entries[:count]
    return entries
