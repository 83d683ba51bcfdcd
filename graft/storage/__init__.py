"""Durable storage: the crash-safe log, hard state and snapshot files of one node."""

from graft.storage.errors import CorruptionError, IdentityMismatch, StorageError
from graft.storage.inspect import CheckReport, check_data_dir, dump_log
from graft.storage.log import DurableLog
from graft.storage.snapshots import SnapshotInfo

__all__ = [
    "CheckReport",
    "CorruptionError",
    "DurableLog",
    "IdentityMismatch",
    "SnapshotInfo",
    "StorageError",
    "check_data_dir",
    "dump_log",
]
