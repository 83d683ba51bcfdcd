"""Writing and reading snapshots: the state pinned by a reader's read transaction copied with
SQLite's backup API to a temp file, made a rollback-journal database and streamed to the sink;
and a received snapshot copied into place after cheap checks of its structure.

Where the time goes for a 1 GB database is measured in docs/operations.md ("SQLite
snapshots"): most of a snapshot is the node's snapshot store writing, checksumming and
fsyncing the whole file (graft.storage), which the FSM cannot avoid; the FSM's part is the
backup (read through a memory map, not page by page) and one sequential copy.
"""

from __future__ import annotations

import array
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
from graft.storage.sqlite_wal import BadDelta, compact_wal

SQLITE_HEADER = b"SQLite format 3\x00"
# Bytes 18 and 19 of the header: the file format write and read versions, 2 in WAL mode and 1
# in rollback-journal mode. A backup of a WAL database copies 2; snapshots are stored with 1.
_FORMAT_VERSION_OFFSET = 18
_ROLLBACK_FORMAT = b"\x01\x01"
# Bytes 40-43: the schema cookie (PRAGMA schema_version). The backup API sets the copy's to its
# own old value plus one; the snapshot carries the source's, so that a restored replica answers
# PRAGMA schema_version like one that replayed the log.
_SCHEMA_COOKIE_OFFSET = 40
# The WAL file: a 32-byte header, then frames of a 24-byte header and one page.
_WAL_HEADER = 32
_FRAME_HEADER = 24
# The wal-index (-shm): a 136-byte header, then the page number of each frame, 4062 in the
# first 32 KiB block and 4096 at the start of each next one (sqlite.org/walformat.html).
_SHM_HEADER = 136
_SHM_BLOCK = 32768
_SHM_FIRST = 4062
_SHM_PER_BLOCK = 4096
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
    every frame committed after the pinned state (see ``capture_wal``).
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


class DeltaWriter:
    """Writes a captured WAL (a temp file) to the sink once, compacted to the newest image of
    each page (graft.storage.sqlite_wal.compact_wal), then deletes it."""

    def __init__(self, copy: Path, *, busy: bool) -> None:
        self.copy = copy
        # The WAL could not be reset (a reader's open transaction): the next delta repeats
        # this one's frames, which folding tolerates (whole page images, applied in order).
        self.busy = busy

    def __call__(self, sink: BinaryIO) -> None:
        try:
            with self.copy.open("rb") as f:
                compact_wal(f, sink)
        except BadDelta as e:
            raise FSMFailure(
                f"the WAL copied for a snapshot is malformed ({e}); restart the node to "
                "rebuild its database"
            ) from None
        finally:
            self.close()

    def close(self) -> None:
        self.copy.unlink(missing_ok=True)


def reset_wal(conn: sqlite3.Connection) -> bool:
    """Checkpoint the WAL into the database and truncate it, without waiting for readers
    (busy timeout 0): True if a reader's open transaction kept it from being reset."""
    timeout = conn.execute("PRAGMA busy_timeout").fetchone()[0]
    conn.execute("PRAGMA busy_timeout=0")
    try:
        return bool(conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0])
    finally:
        conn.execute(f"PRAGMA busy_timeout={int(timeout)}")


def capture_wal(conn: sqlite3.Connection, path: Path, prefix: str) -> DeltaWriter | None:
    """The delta of a snapshot in delta mode: the newest committed frame of each page in
    ``path``'s WAL, copied now, on the calling thread (the reactor's, between two commands,
    so nothing commits meanwhile); then the WAL is checkpointed and truncated, so that the
    next delta holds only what commits from now on. None if the database is not in WAL mode.

    The frames are found through the wal-index and checked against their headers
    (``_copy_newest``), else the whole WAL is copied by the kernel; the checkpoint writes
    each changed page once into the database file, without fsync (``synchronous=OFF``):
    both cost what changed since the last snapshot, not the database's size. The TRUNCATE
    checkpoint does not wait for readers (busy timeout 0): when a query's read transaction
    keeps the WAL from being reset, the frames stay and the next delta repeats them, which
    is harmless.
    """
    directory = path.parent
    wal = path.with_name(path.name + "-wal")
    shm = path.with_name(path.name + "-shm")
    _busy, frames, _done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    if frames < 0:
        return None
    fd, name = tempfile.mkstemp(dir=directory, prefix=prefix)
    copy = Path(name)
    try:
        try:
            if frames > 0:
                with wal.open("rb") as source:
                    header = source.read(_WAL_HEADER)
                    (page_size,) = struct.unpack(">I", header[8:12])
                    if not _copy_newest(source.fileno(), shm, fd, header, frames):
                        os.ftruncate(fd, 0)
                        length = _WAL_HEADER + frames * (_FRAME_HEADER + page_size)
                        _copy_range(source.fileno(), fd, length, path)
        finally:
            os.close(fd)
        busy = reset_wal(conn)
    except sqlite3.Error as e:
        copy.unlink(missing_ok=True)
        raise environment_failure(e) or FSMFailure(
            f"SQLite could not write the snapshot ({e}); check the data dir {directory}"
        ) from e
    except BaseException:
        copy.unlink(missing_ok=True)
        raise
    return DeltaWriter(copy, busy=bool(busy))


def _copy_newest(wal: int, shm: Path, target: int, header: bytes, frames: int) -> bool:
    """Copy into ``target`` a compacted WAL (as graft.storage.sqlite_wal.compact_wal writes)
    of the first ``frames`` frames of the WAL open at ``wal``: only the newest frame of each
    page, found through the wal-index (the ``-shm`` file, sqlite.org/walformat.html: after
    its 136-byte header, the page number of each frame, 4062 in the first 32 KiB block and
    4096 in each next one, native byte order). So the calling thread copies what changed,
    not every version of every page the commands wrote.

    Every frame copied is checked against its own header in the WAL (page number, salts,
    and the commit on the last frame); False, with ``target`` to be discarded, if anything
    does not fit: the caller then copies the WAL as it is."""
    (page_size,) = struct.unpack(">I", header[8:12])
    frame_bytes = _FRAME_HEADER + page_size
    try:
        with shm.open("rb") as f:
            index = f.read(_SHM_BLOCK * ((frames + _SHM_FIRST - 1) // _SHM_PER_BLOCK + 1))
    except OSError:
        return False
    pages = array.array("I")
    first = index[_SHM_HEADER : _SHM_HEADER + 4 * min(frames, _SHM_FIRST)]
    pages.frombytes(first)
    block = 1
    while len(pages) < frames:
        start = block * _SHM_BLOCK
        take = min(frames - len(pages), _SHM_PER_BLOCK)
        chunk = index[start : start + 4 * take]
        if len(chunk) != 4 * take:
            return False
        pages.frombytes(chunk)
        block += 1
    if len(pages) != frames:
        return False
    newest = dict(zip(pages, range(1, frames + 1), strict=True))  # the last frame wins
    last = os.pread(wal, _FRAME_HEADER, _WAL_HEADER + (frames - 1) * frame_bytes)
    size = struct.unpack(">I", last[4:8])[0] if len(last) == _FRAME_HEADER else 0
    if not size or last[8:16] != header[16:24]:
        return False
    numbers = sorted(n for n in newest if 0 < n <= size)
    if not numbers:
        return False
    out = [header]
    for i, number in enumerate(numbers):
        frame = newest[number]
        offset = _WAL_HEADER + (frame - 1) * frame_bytes
        data = os.pread(wal, frame_bytes, offset)
        if len(data) != frame_bytes or data[8:16] != header[16:24]:
            return False
        if struct.unpack(">I", data[:4])[0] != number:
            return False
        commit = size if i == len(numbers) - 1 else 0
        out.append(struct.pack(">II", number, commit) + header[16:24] + bytes(8))
        out.append(data[_FRAME_HEADER:])
    blob = b"".join(out)
    view = memoryview(blob)
    while view:
        view = view[os.write(target, view) :]
    return True


def _copy_range(source: int, target: int, length: int, path: Path) -> None:
    """The first ``length`` bytes of ``source`` into ``target``: by the kernel
    (copy_file_range) where the file system allows, else through a buffer."""
    offset = 0
    while offset < length:
        try:
            copied = os.copy_file_range(source, target, length - offset, offset, offset)
        except OSError:
            copied = os.pwrite(
                target, os.pread(source, min(COPY_CHUNK, length - offset), offset), offset
            )
        if not copied:
            raise FSMFailure(
                f"the WAL of {path} ends before its last committed frame; restart the node "
                "to rebuild its database"
            )
        offset += copied


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
