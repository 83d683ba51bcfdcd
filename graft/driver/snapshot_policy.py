"""When a node snapshots its FSM: the trigger rule (pure) and the counts it reads.

A snapshot writes the whole state, so taking one every N entries costs, per write, an amount
that grows with the state: at 500k keys the kv FSM spent half of the leader's time in
snapshots. The rule here is the one of Ongaro's thesis (chapter 5): snapshot when the log
written since the last snapshot is a fixed multiple (``log_ratio``) of the last snapshot's
size. Each snapshot then costs about S (the state's size) and comes after ratio x S bytes of
log, so the snapshot work per byte written is about 1/ratio whatever the state's size; the
log since the last snapshot (disk, and the replay at a restart) stays below ratio x S.

``min_entries`` (the ``snapshot.entries`` key) is a floor: never a snapshot before that many
entries were applied since the last one, so a tiny state does not snapshot on every few
entries. With ``log_ratio`` 0 the rule is the entry count alone (a snapshot every
``min_entries`` entries), what Graft did before the ratio.

``max_log_bytes`` caps the log between snapshots whatever the state's size (0: no cap), so
the data dir stays under its space quota: past that cap the cost per write grows with the
state again, which is the price of a bounded disk.

An FSM with a write-ahead log that only a snapshot empties (SQLite in delta mode) has a
trigger of its own: a snapshot once that WAL grew by ``wal_bytes`` (32 MiB), whatever the
entry and log rules say. The bound is fixed rather than a multiple of the state: a delta
costs at most the WAL written since the previous one, so the work per byte written is flat
either way, and a fixed bound keeps the WAL's pages in the page cache, written to disk by
the kernel's periodic writeback, at the same few tens of MB per node as the database grows
(at the database's size they came to hundreds of MB every 30 s, and the log's fsyncs
queued behind them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from graft.raft.types import Entry
from graft.storage.records import RECORD_HEADER_SIZE

__all__ = ["WAL_BOUND_BYTES", "SnapshotPolicy", "log_bytes", "snapshot_due"]

WAL_BOUND_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotPolicy:
    min_entries: int  # 0: no automatic snapshots
    log_ratio: float = 0.0  # 0: the entry count alone decides
    max_log_bytes: int = 0  # a snapshot once this much log was written, whatever the ratio
    wal_bytes: int = WAL_BOUND_BYTES  # the FSM's WAL grown by this much: a snapshot


def snapshot_due(
    policy: SnapshotPolicy,
    *,
    entries_since: int,
    log_bytes_since: int,
    last_snapshot_bytes: int,
    wal_bytes_since: int = 0,
) -> bool:
    """True when a snapshot should be taken now.

    ``entries_since`` and ``log_bytes_since``: the entries applied since the last snapshot's
    index and the bytes they take in the log; ``last_snapshot_bytes``: the size of the last
    snapshot's file (0 before the first one); ``wal_bytes_since``: how much the FSM's WAL
    grew since the last snapshot (0 for an FSM without one)."""
    if policy.min_entries <= 0 or entries_since <= 0:
        return False
    if wal_bytes_since >= policy.wal_bytes:
        return True
    if entries_since < policy.min_entries:
        return False
    if 0 < policy.max_log_bytes <= log_bytes_since:
        return True
    return log_bytes_since >= policy.log_ratio * last_snapshot_bytes


def log_bytes(entries: Sequence[Entry]) -> int:
    """What ``entries`` take in the log's segment files (their records: header and data)."""
    return sum(len(entry.data) for entry in entries) + RECORD_HEADER_SIZE * len(entries)
