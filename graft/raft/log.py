"""The node's view of its log: durable entries in storage plus a not-yet-persisted tail.

Indexes, in increasing order::

    snapshot.index  <  applied  <=  applying  <=  committed  <=  last_index
                                        handed: last index given to the driver to persist

Entries the core creates (proposals on a leader, AppendEntries on a follower) go into
``_unstable`` first. ``take_next_unstable_entries`` hands them to the driver in a Ready;
``stable_to`` (from ``advance``) drops them once storage holds them. A conflicting append may
replace a suffix that is already in storage: the tail then starts below storage's last index
and shadows it, and the next Ready carries the replacement (storage replaces the suffix on
append).

A snapshot received from the leader (``restore``) empties the log after its index at once, but
storage only adopts it when the driver installs ``Ready.snapshot``. Until ``snapshot_installed``
(from ``advance``) the pending snapshot overrides storage for every read: its index is the
log's floor and storage's older entries are invisible.
"""

from __future__ import annotations

from graft.raft.errors import LogCompacted, LogUnavailable
from graft.raft.storage import LogStorage, limit_bytes
from graft.raft.types import Entry, SnapshotMeta


class LogInvariantError(AssertionError):
    """The core was asked to break one of its own invariants: a bug, never a peer's fault."""


class RaftLog:
    def __init__(self, storage: LogStorage, *, committed: int, applied: int) -> None:
        self.storage = storage
        snapshot_index = storage.snapshot_meta().index
        last = storage.last_index()
        self._unstable: list[Entry] = []
        self._offset = last + 1  # index of _unstable[0]
        self.handed = last
        self.applied = max(applied, snapshot_index)
        self.committed = min(max(committed, self.applied), last)
        self.applying = self.applied
        # First index written by the last maybe_append (0: it wrote nothing).
        self.appended_from = 0
        # A snapshot restored from the leader that storage does not hold yet, and whether a
        # Ready has handed it to the driver.
        self.pending_snapshot: SnapshotMeta | None = None
        self.snapshot_handed = False

    # -- reading ----------------------------------------------------------------------------

    def first_index(self) -> int:
        if self.pending_snapshot is not None:
            return self.pending_snapshot.index + 1
        return self.storage.first_index()

    def snapshot_meta(self) -> SnapshotMeta:
        """The snapshot the log starts after: a pending restore, else storage's."""
        if self.pending_snapshot is not None:
            return self.pending_snapshot
        return self.storage.snapshot_meta()

    def last_index(self) -> int:
        if self._unstable:
            return self._offset + len(self._unstable) - 1
        if self.pending_snapshot is not None:
            return self.pending_snapshot.index
        return self.storage.last_index()

    def persisted_index(self) -> int:
        """The last index known durable and still part of this log."""
        if self._unstable:
            return self._offset - 1
        if self.pending_snapshot is not None:
            return self.pending_snapshot.index
        return self.storage.last_index()

    def last_term(self) -> int:
        if self._unstable:
            return self._unstable[-1].term
        if self.pending_snapshot is not None:
            return self.pending_snapshot.term
        return self.storage.term(self.storage.last_index())

    def term(self, index: int) -> int:
        """The term of ``index``; raises LogCompacted / LogUnavailable outside the log."""
        k = index - self._offset
        if k >= 0:
            if k < len(self._unstable):
                return self._unstable[k].term
            raise LogUnavailable(f"index {index} is beyond the last index {self.last_index()}")
        snap = self.pending_snapshot
        if snap is not None:
            if index == snap.index:
                return snap.term
            if index < snap.index:
                raise LogCompacted(f"index {index} is inside the snapshot at {snap.index}")
            raise LogUnavailable(f"index {index} is beyond the last index {self.last_index()}")
        return self.storage.term(index)

    def term_or_none(self, index: int) -> int | None:
        try:
            return self.term(index)
        except (LogCompacted, LogUnavailable):
            return None

    def match_term(self, index: int, term: int) -> bool:
        if index > self.last_index():
            return False
        return self.term_or_none(index) == term

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries [lo, hi), stopping once max_bytes is exceeded (at least one entry)."""
        if lo >= hi:
            return []
        snap = self.pending_snapshot
        if snap is not None and lo <= snap.index:
            raise LogCompacted(f"index {lo} is inside the snapshot at {snap.index}")
        offset = self._offset
        if lo >= offset:
            out = self._unstable[lo - offset : hi - offset]
            if len(out) < hi - lo:
                raise LogUnavailable(f"index {hi - 1} is beyond the last index")
        elif hi <= offset:
            out = self.storage.entries(lo, hi, max_bytes)
            return out
        else:
            out = self.storage.entries(lo, offset, max_bytes)
            if len(out) < offset - lo:
                return out
            out = out + self._unstable[: hi - offset]
        return limit_bytes(out, max_bytes)

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Would a candidate with this last entry have a log at least as up to date as ours?"""
        my_term = self.last_term()
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index())

    def find_conflict_by_term(self, index: int, term: int) -> int:
        """The largest index <= ``index`` whose term is <= ``term`` (fast back-tracking).

        Every entry in (result, index] has a term greater than ``term``, so none of them can
        match a log whose entry at ``index`` has ``term``: a leader may skip them in one step.
        """
        index = min(index, self.last_index())
        floor = self.snapshot_meta().index
        while index > floor:
            t = self.term_or_none(index)
            if t is None or t <= term:
                break
            index -= 1
        return index

    # -- writing ----------------------------------------------------------------------------

    def append(self, entries: list[Entry]) -> None:
        """Append entries, replacing any suffix from entries[0].index on."""
        if not entries:
            return
        after = entries[0].index
        if after <= self.committed:
            raise LogInvariantError(
                f"refusing to overwrite committed index {after} (commit {self.committed})"
            )
        end = self._offset + len(self._unstable)
        if after == end:
            self._unstable.extend(entries)
        elif after <= self._offset:
            # Replaces entries that are already in storage (or the whole tail).
            self._offset = after
            self._unstable = list(entries)
        else:
            del self._unstable[after - self._offset :]
            self._unstable.extend(entries)
        if after - 1 < self.handed:
            self.handed = after - 1

    def maybe_append(
        self, prev_index: int, prev_term: int, commit: int, entries: tuple[Entry, ...]
    ) -> int | None:
        """Follower side of AppendEntries: the new last matching index, or None on mismatch."""
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        last = self.last_index()
        self.appended_from = 0
        for k, entry in enumerate(entries):
            if entry.index > last or self.term_or_none(entry.index) != entry.term:
                self.append(list(entries[k:]))
                self.appended_from = entry.index
                break
        self.commit_to(min(commit, last_new))
        return last_new

    def commit_to(self, index: int) -> bool:
        if index > self.committed:
            if index > self.last_index():
                raise LogInvariantError(
                    f"commit {index} is beyond the last index {self.last_index()}"
                )
            self.committed = index
            return True
        return False

    # -- the Ready cycle --------------------------------------------------------------------
    #
    # Pairs in etcd-raft's vocabulary: ``has_next_X`` says whether the next Ready carries X
    # (unstable entries or snapshot: not yet persisted; committed entries: not yet applied);
    # ``take_next_X`` hands X out for that Ready and marks it handed, so it leaves once.

    def has_next_unstable_entries(self) -> bool:
        return self.handed < self._offset + len(self._unstable) - 1

    def take_next_unstable_entries(self) -> tuple[Entry, ...]:
        """The entries the driver must persist next; marks them handed out."""
        start = self.handed + 1 - self._offset
        if start >= len(self._unstable):
            return ()
        out = tuple(self._unstable[start:])
        self.handed = out[-1].index
        return out

    def stable_to(self, index: int, term: int) -> None:
        """Storage now holds everything up to ``index`` (if the log still has that entry)."""
        if index > self.handed:
            # Written before a restore emptied the log: what follows was never handed out.
            return
        k = index - self._offset
        if 0 <= k < len(self._unstable) and self._unstable[k].term == term:
            del self._unstable[: k + 1]
            self._offset = index + 1

    def has_next_committed_entries(self) -> bool:
        return self.applying < min(self.committed, self.handed)

    def take_next_committed_entries(self) -> tuple[Entry, ...]:
        hi = min(self.committed, self.handed)
        if self.applying >= hi:
            return ()
        out = tuple(self.entries(self.applying + 1, hi + 1))
        self.applying = hi
        return out

    def applied_to(self, index: int) -> None:
        if index > self.applied:
            self.applied = index

    # -- snapshots --------------------------------------------------------------------------

    def restore(self, meta: SnapshotMeta) -> None:
        """Adopt a snapshot from the leader: the log becomes empty after ``meta.index``."""
        if meta.index <= self.committed:
            raise LogInvariantError(
                f"refusing to restore snapshot {meta.index} at or below commit {self.committed}"
            )
        self._unstable = []
        self._offset = meta.index + 1
        self.handed = meta.index
        self.committed = self.applied = self.applying = meta.index
        self.appended_from = 0
        self.pending_snapshot = meta
        self.snapshot_handed = False

    def has_next_unstable_snapshot(self) -> bool:
        return self.pending_snapshot is not None and not self.snapshot_handed

    def take_next_unstable_snapshot(self) -> SnapshotMeta | None:
        """The restored snapshot the driver must install next (once)."""
        if not self.has_next_unstable_snapshot():
            return None
        self.snapshot_handed = True
        return self.pending_snapshot

    def snapshot_installed(self, meta: SnapshotMeta) -> None:
        """Storage now holds ``meta`` (unless a newer restore happened meanwhile)."""
        pending = self.pending_snapshot
        if pending is not None and self.snapshot_handed and pending.index <= meta.index:
            self.pending_snapshot = None
            self.snapshot_handed = False
            if not self._unstable:
                # Storage may have kept entries after the snapshot (Figure 13 keeps a log that
                # holds the snapshot's last entry): they are durable, so count them handed.
                last = self.storage.last_index()
                self._offset = last + 1
                self.handed = max(self.handed, last)
