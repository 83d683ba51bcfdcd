"""Delta snapshots' capture of the SQLite WAL, with the reactor thread doing only bookkeeping.

In delta mode the FSM's WAL is checkpointed by nothing but this module, so it holds every
page written since the previous snapshot. A delta is the newest image of each of those pages
(in the compacted WAL format graft.storage.sqlite_wal folds). Three steps:

1. ``begin_capture``, on the reactor thread between two commands: pin the state with a read
   transaction on a second connection and read the last committed frame (``mxFrame``) and
   the WAL's salts from the wal-index header (one ``pread`` of the ``-shm`` file). The
   snapshot's frames are those from the cursor (where the previous delta ended) to it.
2. ``WalCapture.prepare``, in a worker thread while commands go on: find the newest frame of
   each page among them through the wal-index, copy those images (and the *carry*, below)
   to a temp file, then checkpoint (backfill) them into the database file. Frames up to
   ``mxFrame`` do not change meanwhile: SQLite appends new frames after them, and only
   rewrites the WAL from its start after a checkpoint has copied every frame into the
   database, which the pinned read transaction prevents (and so does ``wal_autocheckpoint``
   0: the only checkpoints are this module's). The same pin limits the checkpoint to the
   snapshot's frames; then the reader ends.
3. ``WalCapture.finish``, on the reactor thread again: the frames committed while step 2 ran
   (few: what commands wrote during it) belong to the next delta. They are copied to a
   *carry* file, and the WAL is reset (checkpoint RESTART, not waiting for readers: a
   query's open transaction leaves it as it is, and the cursor then says where the next
   delta starts in it). The next delta is the carry plus the WAL's frames from the cursor.

The WAL restarts from its first frame (new salts) only at a write that finds every frame
checkpointed, which the pinned reader limits to the capture's frames: a restart seen at
``finish`` means the WAL holds only frames after the snapshot. If the wal-index cannot be
read, ``finish`` says so and the FSM's next snapshot is whole. A restore of
the database takes ``lock`` (so never while ``prepare`` reads) and abandons a pending
capture: its pinned reader is closed at once, and its ``prepare`` fails rather than read
files that are now another database's.
"""

from __future__ import annotations

import array
import os
import sqlite3
import struct
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from graft.fsm.base import FSMFailure
from graft.fsm.sqlite.sql import environment_failure
from graft.storage.sqlite_wal import BadDelta, plan_fold

# The WAL file: a 32-byte header, then frames of a 24-byte header and one page.
_WAL_HEADER = 32
_FRAME_HEADER = 24
# The wal-index (-shm, sqlite.org/walformat.html): two copies of a 48-byte header, the
# checkpoint info (first the frames backfilled), 136 bytes in all; then the page number of
# each frame, 4062 in the first 32 KiB block and 4096 at the start of each next one (native
# byte order).
_SHM_HEADER = 136
_SHM_COPY = 48
_SHM_BLOCK = 32768
_SHM_FIRST = 4062
_SHM_PER_BLOCK = 4096
_WAL_INDEX_VERSION = 3007000
_COPY_CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class WalMark:
    """The wal-index header's last committed frame and the WAL's salts (8 raw bytes, as in
    the WAL header; they change each time the WAL is restarted from its start)."""

    frames: int
    salts: bytes
    page_size: int
    backfilled: int = 0  # frames a checkpoint copied into the database file

    @property
    def pending_bytes(self) -> int:
        """The bytes of the WAL's frames no checkpoint has copied into the database yet."""
        pending = self.frames - self.backfilled
        return pending * (_FRAME_HEADER + self.page_size) if pending > 0 else 0


def read_mark(shm: Path) -> WalMark | None:
    """The wal-index header of ``shm``; None if it is missing or not consistent (its two
    copies differ: being written; call only where no write can be under way)."""
    try:
        fd = os.open(shm, os.O_RDONLY)
    except OSError:
        return None
    try:
        head = os.pread(fd, 2 * _SHM_COPY + 4, 0)
    finally:
        os.close(fd)
    if len(head) < 2 * _SHM_COPY + 4 or head[:_SHM_COPY] != head[_SHM_COPY : 2 * _SHM_COPY]:
        return None
    version = struct.unpack("=I", head[:4])[0]
    if version != _WAL_INDEX_VERSION or not head[12]:
        return None
    (encoded,) = struct.unpack("=H", head[14:16])
    page_size = (encoded & 0xFF00) | ((encoded & 0x0001) << 16)
    return WalMark(
        frames=struct.unpack("=I", head[16:20])[0],
        salts=head[32:40],
        page_size=page_size,
        backfilled=struct.unpack("=I", head[2 * _SHM_COPY : 2 * _SHM_COPY + 4])[0],
    )


@dataclass(slots=True)
class WalCursor:
    """Where the next delta starts: the carry (compacted frames committed after the previous
    snapshot that the WAL may no longer hold) and frame ``next`` of the WAL with ``salts``
    (from frame 1 if the WAL has other salts: it was restarted since)."""

    salts: bytes | None = None
    next: int = 1
    carry: Path | None = None
    pending: WalCapture | None = None  # the capture begun last, not finished or abandoned

    def start(self, mark: WalMark) -> int:
        return self.next if mark.salts == self.salts else 1

    def drop_carry(self) -> None:
        if self.carry is not None:
            self.carry.unlink(missing_ok=True)
            self.carry = None


def begin_capture(
    path: Path, cursor: WalCursor, lock: threading.RLock, prefix: str
) -> WalCapture | None:
    """Step 1 (module docstring), on the thread that applies commands, between two. None if
    the wal-index cannot be read: the caller takes a whole snapshot instead."""
    shm = path.with_name(path.name + "-shm")
    reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error:
        reader.close()
        raise
    mark = read_mark(shm)
    if mark is None:
        reader.close()
        return None
    capture = WalCapture(
        path=path,
        reader=reader,
        start=cursor.start(mark),
        mark=mark,
        carry=cursor.carry,
        cursor=cursor,
        lock=lock,
        prefix=prefix,
    )
    abandon(cursor)
    # The capture takes the carry; the next delta starts after the frames it reads.
    cursor.salts, cursor.next, cursor.carry = mark.salts, mark.frames + 1, None
    cursor.pending = capture
    return capture


def mark_whole(path: Path, cursor: WalCursor) -> bool:
    """A whole snapshot pins the state now (on the thread that applies commands): the next
    delta starts at the WAL's next frame. False if the wal-index cannot be read: the next
    delta then holds all the WAL (pages the whole snapshot has too, which is harmless)."""
    abandon(cursor)
    cursor.drop_carry()
    mark = read_mark(path.with_name(path.name + "-shm"))
    if mark is None:
        cursor.salts, cursor.next = None, 1
        return False
    cursor.salts, cursor.next = mark.salts, mark.frames + 1
    return True


def abandon(cursor: WalCursor) -> None:
    """Drop the pending capture (a restore, a new snapshot begun): its reader is closed now
    and its ``prepare`` fails if it still runs."""
    if cursor.pending is not None:
        cursor.pending.close()
        cursor.pending = None


class WalCapture:
    """One delta: ``prepare`` (worker thread), ``finish`` (the commands' thread), and the
    writer (``__call__``, worker thread) that hands the compacted frames to the store."""

    def __init__(
        self,
        *,
        path: Path,
        reader: sqlite3.Connection,
        start: int,
        mark: WalMark,
        carry: Path | None,
        cursor: WalCursor,
        lock: threading.RLock,
        prefix: str,
    ) -> None:
        self._path = path
        self._reader: sqlite3.Connection | None = reader
        self.start = start
        self.mark = mark
        self._carry = carry
        self._cursor = cursor
        self._lock = lock
        self._prefix = prefix
        self.copy: Path | None = None  # the compacted delta
        self.prepared = False
        self.busy = False  # the WAL could not be reset at finish (a query's open read)
        self._closed = False

    # -- step 2, in a worker thread --------------------------------------------------------

    def prepare(self) -> None:
        with self._lock:
            if self._closed:
                raise FSMFailure(
                    "the snapshot's WAL capture was abandoned (the database was restored "
                    "meanwhile); the next snapshot is whole"
                )
            if self.prepared:
                return
            try:
                self._prepare()
            except sqlite3.Error as e:
                self._discard()
                raise environment_failure(e) or FSMFailure(
                    f"SQLite could not write the snapshot ({e}); check the data dir "
                    f"{self._path.parent}"
                ) from e
            except BaseException:
                self._discard()
                raise

    def _prepare(self) -> None:
        fd, name = tempfile.mkstemp(dir=self._path.parent, prefix=self._prefix)
        self.copy = Path(name)
        with os.fdopen(fd, "wb") as out:
            write_frames(self._path, self.start, self.mark, self._carry, out)
        if self.start <= self.mark.frames:
            # Backfill the snapshot's frames into the database file now, off the commands'
            # thread; the pinned reader keeps it from going past them (module docstring).
            conn = sqlite3.connect(self._path, isolation_level=None)
            try:
                conn.execute("PRAGMA synchronous=OFF")
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            finally:
                conn.close()
        self._end_read()
        if self._carry is not None:
            self._carry.unlink(missing_ok=True)
            self._carry = None
        self.prepared = True

    # -- step 3, on the commands' thread ---------------------------------------------------

    def finish(self, conn: sqlite3.Connection) -> bool:
        """Move the frames committed since the capture began to the carry and reset the WAL.
        False if the wal-index cannot be read (the next snapshot must be whole)."""
        cursor = self._cursor
        if cursor.pending is not self or not self.prepared:
            return True  # abandoned (a restore breaks the chain itself), or never prepared
        cursor.pending = None
        mark = read_mark(self._path.with_name(self._path.name + "-shm"))
        if mark is None:
            return False
        # If the WAL started over since the reader ended (other salts: a write found every
        # frame checkpointed, and the pinned reader kept the checkpoint to the capture's
        # frames), all it holds now came after the snapshot.
        first = self.mark.frames + 1 if mark.salts == self.mark.salts else 1
        if first == self.mark.frames + 1 and mark.frames < self.mark.frames:
            return False
        carry: Path | None = None
        if mark.frames >= first:
            fd, name = tempfile.mkstemp(dir=self._path.parent, prefix=self._prefix + "carry-")
            carry = Path(name)
            try:
                with os.fdopen(fd, "wb") as out:
                    write_frames(self._path, first, mark, None, out)
            except BaseException:
                carry.unlink(missing_ok=True)
                raise
        self.busy = restart_wal(conn)
        cursor.salts, cursor.next, cursor.carry = mark.salts, mark.frames + 1, carry
        return True

    # -- the writer, in a worker thread ----------------------------------------------------

    def __call__(self, sink: BinaryIO) -> None:
        self.prepare()
        copy = self.copy
        assert copy is not None
        try:
            with copy.open("rb") as f:
                while chunk := f.read(_COPY_CHUNK):
                    sink.write(chunk)
        finally:
            copy.unlink(missing_ok=True)

    def close(self) -> None:
        """Release what the capture holds if its writer never runs (or is abandoned)."""
        with self._lock:
            self._closed = True
            self._discard()

    def _discard(self) -> None:
        self._end_read()
        for path in (self.copy, self._carry):
            if path is not None:
                path.unlink(missing_ok=True)

    def _end_read(self) -> None:
        if self._reader is not None:
            reader, self._reader = self._reader, None
            reader.close()


def restart_wal(conn: sqlite3.Connection) -> bool:
    """Checkpoint the WAL into the database so that the next write starts it over from its
    first frame, without waiting for readers (busy timeout 0): True if a reader's open
    transaction kept it from that. The file keeps its size until that write, which cuts it
    (the FSM's ``journal_size_limit``)."""
    return _checkpoint_now(conn, "RESTART")


def reset_wal(conn: sqlite3.Connection) -> bool:
    """Checkpoint the WAL into the database and truncate it, without waiting for readers
    (busy timeout 0): True if a reader's open transaction kept it from being reset."""
    return _checkpoint_now(conn, "TRUNCATE")


def _checkpoint_now(conn: sqlite3.Connection, mode: str) -> bool:
    """``PRAGMA wal_checkpoint(mode)`` with a busy timeout of 0: True if SQLite reports it
    was kept from completing."""
    timeout = conn.execute("PRAGMA busy_timeout").fetchone()[0]
    conn.execute("PRAGMA busy_timeout=0")
    try:
        return bool(conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()[0])
    finally:
        conn.execute(f"PRAGMA busy_timeout={int(timeout)}")


def write_frames(path: Path, start: int, mark: WalMark, carry: Path | None, out: BinaryIO) -> int:
    """Write to ``out`` a compacted WAL (graft.storage.sqlite_wal.compact_wal's format: the
    newest image of each page, in page order, the last frame the commit with the database's
    size) of the carry's frames and frames ``start`` to ``mark.frames`` of ``path``'s WAL,
    the WAL's winning over the carry's. Returns the frames written (0: nothing written).

    The WAL's frames are found through the wal-index and each is checked against its own
    header (page number, salts; the last one must be a commit): FSMFailure if any does not
    fit, which makes this snapshot fail and the next one whole."""
    sources: dict[int, tuple[int, int]] = {}  # page -> (which file, offset of its image)
    header = b""
    size = -1
    page_size = 0
    files: list[int] = []
    try:
        if carry is not None:
            fd = os.open(carry, os.O_RDONLY)
            files.append(fd)
            with os.fdopen(os.dup(fd), "rb") as f:
                try:
                    page_size, pages, size = plan_fold(f)
                except BadDelta as e:
                    raise FSMFailure(
                        f"the snapshot's carried WAL frames are malformed ({e})"
                    ) from None
                f.seek(0)
                header = f.read(_WAL_HEADER)
            for number, offset in pages.items():
                sources[number] = (fd, offset)
        if start <= mark.frames:
            wal = path.with_name(path.name + "-wal")
            fd = os.open(wal, os.O_RDONLY)
            files.append(fd)
            header, page_size, size = _wal_frames(
                fd, path.with_name(path.name + "-shm"), start, mark, sources
            )
        numbers = sorted(n for n in sources if 0 < n <= size)
        if not numbers:
            return 0
        salts = header[16:24]
        out.write(header)
        for i, number in enumerate(numbers):
            fd, offset = sources[number]
            image = os.pread(fd, page_size, offset)
            if len(image) != page_size:
                raise FSMFailure(f"a WAL frame of page {number} is cut short")
            commit = size if i == len(numbers) - 1 else 0
            out.write(struct.pack(">II", number, commit) + salts + bytes(8))
            out.write(image)
        return len(numbers)
    finally:
        for fd in files:
            os.close(fd)


def _wal_frames(
    wal: int, shm: Path, start: int, mark: WalMark, sources: dict[int, tuple[int, int]]
) -> tuple[bytes, int, int]:
    """Add to ``sources`` the newest of frames ``start``..``mark.frames`` of each page;
    (the WAL header, page size, database pages at the last frame's commit)."""
    header = os.pread(wal, _WAL_HEADER, 0)
    if len(header) != _WAL_HEADER or header[16:24] != mark.salts:
        raise FSMFailure("the WAL's header does not match its index; the next snapshot is whole")
    (page_size,) = struct.unpack(">I", header[8:12])
    frame_bytes = _FRAME_HEADER + page_size
    pages = _index(shm, start, mark.frames)
    newest = dict(zip(pages, range(start, mark.frames + 1), strict=True))  # last one wins
    last = os.pread(wal, _FRAME_HEADER, _WAL_HEADER + (mark.frames - 1) * frame_bytes)
    size = struct.unpack(">I", last[4:8])[0] if len(last) == _FRAME_HEADER else 0
    if not size or last[8:16] != mark.salts:
        raise FSMFailure("the WAL's last indexed frame is not a commit; the next snapshot is whole")
    for number, frame in newest.items():
        offset = _WAL_HEADER + (frame - 1) * frame_bytes
        head = os.pread(wal, _FRAME_HEADER, offset)
        if (
            len(head) != _FRAME_HEADER
            or head[8:16] != mark.salts
            or struct.unpack(">I", head[:4])[0] != number
        ):
            raise FSMFailure(
                f"WAL frame {frame} does not match its index; the next snapshot is whole"
            )
        sources[number] = (wal, offset + _FRAME_HEADER)
    return header, page_size, size


def _index(shm: Path, first: int, last: int) -> array.array[int]:
    """The page numbers of frames ``first``..``last`` (1-based) from the wal-index."""
    pages: array.array[int] = array.array("I")
    fd = os.open(shm, os.O_RDONLY)
    try:
        frame = first
        while frame <= last:
            if frame <= _SHM_FIRST:
                block, slot, room = 0, frame - 1, _SHM_FIRST - frame + 1
                base = _SHM_HEADER
            else:
                block, slot = divmod(frame - _SHM_FIRST - 1, _SHM_PER_BLOCK)
                block += 1
                room = _SHM_PER_BLOCK - slot
                base = block * _SHM_BLOCK
            take = min(room, last - frame + 1)
            chunk = os.pread(fd, 4 * take, base + 4 * slot)
            if len(chunk) != 4 * take:
                raise FSMFailure(
                    "the wal-index is shorter than the WAL; the next snapshot is whole"
                )
            pages.frombytes(chunk)
            frame += take
    finally:
        os.close(fd)
    return pages
