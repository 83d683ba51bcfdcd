"""Writing a snapshot: the state pinned by a reader's read transaction copied with SQLite's
backup API to a temp file, made a rollback-journal database, and streamed to the sink."""

from __future__ import annotations

import os
import shutil
import sqlite3
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from graft.fsm.base import FSMFailure
from graft.fsm.sqlite.sql import environment_failure

SQLITE_HEADER = b"SQLite format 3\x00"
# Bytes 18 and 19 of the header: the file format write and read versions, 2 in WAL mode and 1
# in rollback-journal mode. A backup of a WAL database copies 2; snapshots are stored with 1.
_FORMAT_VERSION_OFFSET = 18
_ROLLBACK_FORMAT = b"\x01\x01"
# Bytes 40-43: the schema cookie (PRAGMA schema_version). The backup API sets the copy's to its
# own old value plus one; the snapshot carries the source's, so that a restored replica answers
# PRAGMA schema_version like one that replayed the log.
_SCHEMA_COOKIE_OFFSET = 40
COPY_CHUNK = 1024 * 1024


def write_snapshot(
    reader: sqlite3.Connection,
    directory: Path,
    prefix: str,
    sink: BinaryIO,
    *,
    cookie: int,
    pages: int,
    progress: Callable[[int, int, int], object] | None,
) -> None:
    """Copy the state pinned by ``reader``'s read transaction to ``sink``, then release it.

    Runs in a worker thread while the main connection goes on committing.
    """
    copy: Path | None = None
    try:
        fd, name = tempfile.mkstemp(dir=directory, prefix=prefix)
        os.close(fd)
        copy = Path(name)
        target = sqlite3.connect(copy)
        try:
            # A scratch file: no journal, no fsync.
            target.execute("PRAGMA journal_mode=OFF")
            target.execute("PRAGMA synchronous=OFF")
            # By default all pages in one step, without the GIL. The source side reads through
            # the open read transaction, so the copy is the pinned state even though other
            # connections commit meanwhile, and it never restarts (a restart needs a change
            # seen by the backup's own source connection between steps).
            reader.backup(target, pages=pages, progress=progress)
        finally:
            target.close()
        # Free the WAL first: the file holds the state now.
        reader.execute("ROLLBACK")
        reader.execute("PRAGMA wal_checkpoint(PASSIVE)")
        with copy.open("r+b") as f:
            if copy.stat().st_size >= len(SQLITE_HEADER):  # not a database with no page
                f.seek(_FORMAT_VERSION_OFFSET)
                f.write(_ROLLBACK_FORMAT)
                f.seek(_SCHEMA_COOKIE_OFFSET)
                f.write(struct.pack(">I", cookie))
                f.seek(0)
            shutil.copyfileobj(f, sink, COPY_CHUNK)
    except sqlite3.Error as e:
        raise environment_failure(e) or FSMFailure(
            f"SQLite could not write the snapshot ({e}); check the data dir {directory}"
        ) from e
    finally:
        reader.close()
        if copy is not None:
            copy.unlink(missing_ok=True)
