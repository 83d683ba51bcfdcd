"""Durable storage: the crash-safe log, hard state and snapshot files of one node.

A data dir holds::

    identity                        node id, cluster name, data dir format (written once)
    hardstate                       term, vote, commit (replaced atomically)
    log-<first index>.seg           the log, in segments of ``segment_bytes``
    snap-<index>-<term>.data        the newest snapshot's bytes
    snap-<index>-<term>.manifest    its index, term, membership, FSM name, size, CRC32
    snap-<index>-<term>.delta       an SQLite WAL delta being folded into .data (delta mode)
    rejected-entries                entries an operator marked rejected (graft skip-entry)

The directory is 0700 and every file in it 0600 (``permissions``).

Modules: ``records`` (the segment format), ``segments`` (segment files: replay, append,
truncate, delete), ``state_files`` (identity, hard state), ``snapshots``, ``recovery`` (what
a data dir holds, checked), ``writer`` (group commit on the writer thread), ``log``
(``DurableLog``, the core's ``LogStorage``), ``inspect`` (``check_data_dir``, ``dump_log``),
``sqlite_wal`` (folding an SQLite WAL delta into a snapshot), ``files`` (the file layer,
swappable for crash tests), ``permissions`` (who may read a data dir), ``rejected`` (the
poison entries an operator marked rejected).
"""

from graft.storage.errors import (
    CorruptionError,
    DeltaRefused,
    IdentityMismatch,
    SnapshotBusy,
    SnapshotSuperseded,
    StorageError,
)
from graft.storage.inspect import CheckReport, check_data_dir, dump_log
from graft.storage.log import DurableLog
from graft.storage.snapshots import SnapshotInfo

__all__ = [
    "CheckReport",
    "CorruptionError",
    "DeltaRefused",
    "DurableLog",
    "IdentityMismatch",
    "SnapshotBusy",
    "SnapshotInfo",
    "SnapshotSuperseded",
    "StorageError",
    "check_data_dir",
    "dump_log",
]
