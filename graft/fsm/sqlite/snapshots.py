"""Writing and reading snapshots: the state pinned by a reader's read transaction copied with
SQLite's backup API to a temp file, made a rollback-journal database and streamed to the sink;
and a received snapshot copied into place after cheap checks of its structure.

Where the time goes for a 1 GB database is measured in docs/operations.md ("SQLite
snapshots"): most of a snapshot is the node's snapshot store writing, checksumming and
fsyncing the whole file (graft.storage), which the FSM cannot avoid; the FSM's part is the
backup (read through a memory map, not page by page) and one sequential copy.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from graft.fsm.base import CorruptSnapshot, FSMFailure
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
# The database header is the first 100 bytes of page 1.
_HEADER_SIZE = 100
COPY_CHUNK = 1024 * 1024
# The copy of the backup into the sink: large reads, so that the writer thread takes the GIL
# back (and makes the reactor thread wait for it) a few hundred times per GB, not thousands.
_SINK_CHUNK = 8 * 1024 * 1024
# The snapshot reader maps the database file rather than reading it with one pread per page:
# the backup of a 1 GB database takes about half the time. SQLite caps the map at its
# compile-time limit (2 GiB by default) and reads any page beyond it as before. The file is
# never truncated under the map: commands cannot VACUUM or set auto_vacuum, so the database
# never shrinks, and SQLite reads pages written since the snapshot began from the WAL.
READER_MMAP_BYTES = 1 << 40


def write_snapshot(
    reader: sqlite3.Connection,
    directory: Path,
    prefix: str,
    sink: BinaryIO,
    *,
    cookie: int,
    pages: int,
    progress: Callable[[int, int, int], object] | None,
    checkpoint: bool = True,
) -> None:
    """Copy the state pinned by ``reader``'s read transaction to ``sink``, then release it.

    Runs in a worker thread while the main connection goes on committing. Without
    ``checkpoint`` the WAL is left as it is: the next delta snapshot must still find in it
    every frame committed after the pinned state (graft.fsm.sqlite.wal_capture).
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
        if checkpoint:
            reader.execute("PRAGMA wal_checkpoint(PASSIVE)")
        with copy.open("r+b") as f:
            if copy.stat().st_size >= len(SQLITE_HEADER):  # not a database with no page
                f.seek(_FORMAT_VERSION_OFFSET)
                f.write(_ROLLBACK_FORMAT)
                f.seek(_SCHEMA_COOKIE_OFFSET)
                f.write(struct.pack(">I", cookie))
                f.seek(0)
            while chunk := f.read(_SINK_CHUNK):
                sink.write(chunk)
    except sqlite3.Error as e:
        raise environment_failure(e) or FSMFailure(
            f"SQLite could not write the snapshot ({e}); check the data dir {directory}"
        ) from e
    finally:
        reader.close()
        if copy is not None:
            copy.unlink(missing_ok=True)


def copy_into(source: BinaryIO, target: int) -> None:
    """Copy ``source`` from its position to its end into the file descriptor ``target``.

    From a regular file (a received or stored snapshot) the kernel copies the bytes
    (copy_file_range), without passing them through Python and without the GIL; from
    anything else (a stream, BytesIO), in chunks.
    """
    try:
        fd = source.fileno()
        start = source.tell()
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except (AttributeError, OSError, ValueError):
        regular = False
    if regular:
        offset = start
        try:
            while copied := os.copy_file_range(fd, target, 1 << 30, offset):
                offset += copied
            source.seek(offset)
            return
        except OSError:
            # Not supported between these files: start over with the plain copy.
            os.lseek(target, 0, os.SEEK_SET)
            os.ftruncate(target, 0)
            source.seek(start)
    while chunk := source.read(COPY_CHUNK):
        view = memoryview(chunk)
        while view:
            view = view[os.write(target, view) :]


def check_image(path: Path) -> None:
    """CorruptSnapshot unless ``path`` (not empty) has the structure of a whole SQLite
    database: its header, a valid page size, whole pages, and at least as many pages as the
    header counts (a snapshot cut short fails here, not at some later command)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        header = f.read(_HEADER_SIZE)
    if not header.startswith(SQLITE_HEADER):
        raise CorruptSnapshot(
            "the snapshot is not an SQLite database; restore a snapshot taken by graft.fsm.sqlite"
        )
    if len(header) < _HEADER_SIZE:
        raise CorruptSnapshot(
            f"the SQLite snapshot is cut short: {size} bytes, less than its 100-byte header; "
            "restore a complete snapshot"
        )
    (raw_page_size,) = struct.unpack(">H", header[16:18])
    page_size = 65536 if raw_page_size == 1 else raw_page_size
    if page_size < 512 or page_size & (page_size - 1):
        raise CorruptSnapshot(
            f"the SQLite snapshot's header gives an invalid page size ({raw_page_size}); "
            "restore a snapshot taken by graft.fsm.sqlite"
        )
    if size % page_size:
        raise CorruptSnapshot(
            f"the SQLite snapshot is cut short or padded: {size} bytes is not a whole number of "
            f"{page_size}-byte pages; restore a complete snapshot"
        )
    change_counter, pages = struct.unpack(">II", header[24:32])
    (valid_for,) = struct.unpack(">I", header[92:96])
    # SQLite trusts the page count in the header only when this holds (the file format).
    if pages and change_counter == valid_for and size // page_size < pages:
        raise CorruptSnapshot(
            f"the SQLite snapshot is cut short: its header counts {pages} pages of "
            f"{page_size} bytes, the file holds {size // page_size}; restore a complete snapshot"
        )
