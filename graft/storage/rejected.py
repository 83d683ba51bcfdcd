"""The entries an operator marked rejected on this node (``graft skip-entry``): the last resort
against a poison entry, a committed command that makes the FSM raise on every replay.

The file ``rejected-entries`` in the data dir lists each such entry by index, term and the
SHA-256 of its data, in the checked format of the hard state (magic, CRC32, JSON). The driver
reads it at start and treats a listed entry as a command the FSM refused (state unchanged),
but only if the entry in the log is the one that was marked: same term, same data. Replicas
stay identical only if every one of them skips the same entry, which is the operator's
responsibility (docs/operations.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from graft.raft.types import Entry
from graft.storage.errors import CorruptionError
from graft.storage.files import FileSystem, OSFileSystem, write_atomic
from graft.storage.state_files import decode_checked, encode_checked

REJECTED_FILE = "rejected-entries"
_MAGIC = b"graft-rejected-entries"


@dataclass(frozen=True, slots=True, kw_only=True)
class RejectedEntry:
    index: int
    term: int
    sha256: str  # hex digest of the entry's data

    @classmethod
    def of(cls, entry: Entry) -> RejectedEntry:
        return cls(index=entry.index, term=entry.term, sha256=data_digest(entry.data))

    def matches(self, entry: Entry) -> bool:
        """Whether ``entry`` is the one that was marked (not a later entry at its index)."""
        return (
            entry.index == self.index
            and entry.term == self.term
            and data_digest(entry.data) == self.sha256
        )


def data_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_rejected(data_dir: Path, files: FileSystem | None = None) -> dict[int, RejectedEntry]:
    """The marked entries by index (empty if there is no file); CorruptionError if damaged."""
    files = files if files is not None else OSFileSystem()
    path = Path(data_dir) / REJECTED_FILE
    if not files.exists(path):
        return {}
    body = decode_checked(_MAGIC, files.read_bytes(path), path)
    found: dict[int, RejectedEntry] = {}
    try:
        for item in body["entries"]:
            marked = RejectedEntry(
                index=int(item["index"]), term=int(item["term"]), sha256=str(item["sha256"])
            )
            found[marked.index] = marked
    except (KeyError, TypeError, ValueError):
        raise CorruptionError(path, 0, "rejected entry fields are missing") from None
    return found


def write_rejected(
    data_dir: Path, rejected: Mapping[int, RejectedEntry], files: FileSystem | None = None
) -> None:
    """Replace the file atomically with ``rejected``."""
    files = files if files is not None else OSFileSystem()
    body = {
        "entries": [
            {"index": r.index, "term": r.term, "sha256": r.sha256}
            for r in sorted(rejected.values(), key=lambda r: r.index)
        ]
    }
    write_atomic(files, Path(data_dir) / REJECTED_FILE, encode_checked(_MAGIC, body))
