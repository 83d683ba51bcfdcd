"""Errors of the durable storage. Every message names the file and says what to do next."""

from __future__ import annotations

from pathlib import Path

RESTORE_ADVICE = (
    "restore this node from a peer: stop it, move its data dir aside and let it rejoin "
    "(or restore a snapshot), then start it again"
)


class StorageError(Exception):
    """The data dir cannot be used as it is; the node must not start (or must stop)."""


class CorruptionError(StorageError):
    """Bytes on disk fail their checksum or do not follow on: the data dir cannot be trusted."""

    def __init__(self, path: Path | str, offset: int, problem: str) -> None:
        super().__init__(f"{path}: corrupt at offset {offset}: {problem}; {RESTORE_ADVICE}")
        self.path = Path(path)
        self.offset = offset
        self.problem = problem


class IdentityMismatch(StorageError):
    """The data dir was written by another node or for another cluster."""


class SnapshotSuperseded(ValueError):
    """A snapshot being saved is not newer than one this node already has (typically one the
    leader sent while the save was under way): the save is dropped and the newer one kept."""


class DeltaRefused(ValueError):
    """A delta snapshot cannot be saved on top of the store's latest snapshot (it is not the
    base the FSM named, the delta is malformed, or readers kept the full copy busy): nothing
    was kept, and the FSM's next snapshot must be a whole one."""


class SnapshotBusy(StorageError):
    """The latest snapshot's data file is being folded (delta mode); open it again shortly."""
