"""Folding an SQLite write-ahead log into a database file: the snapshot store's delta mode.

A delta is the bytes of an SQLite WAL file (sqlite.org/fileformat2.html, "The WAL file
format"): a 32-byte header, then frames of a 24-byte header and one whole page each. A frame
whose header records a database size is a commit frame; frames after the last commit frame
belong to no committed transaction, and a frame whose salts differ from the header's is left
over from an earlier use of the file. Folding writes the newest version of each page the
committed frames hold at its place in the database file, then sets the file's length to the
size the last commit records.

Every write is a whole page image, so folding the same delta again, over the untouched file or
over one a crash left half folded, gives the same bytes: that is what makes a fold
crash-safe, provided the delta is durable before the fold starts and kept until it is done.

The store checks a delta's CRC32 before folding it; this module checks only its structure.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from typing import BinaryIO

from graft.storage.files import UpdatableFile

WAL_HEADER_BYTES = 32
FRAME_HEADER_BYTES = 24
_MAGICS = (0x377F0682, 0x377F0683)
_WAL_VERSION = 3007000
_DB_HEADER = b"SQLite format 3\x00"
# Bytes 18 and 19 of a database header: 1 for a rollback journal, 2 for WAL. Page 1 as the
# FSM's WAL holds it says 2; the store keeps images in the rollback format, as the FSM writes
# its full snapshots, so that a tool opens one as it is.
_FORMAT_OFFSET = 18
_ROLLBACK_FORMAT = b"\x01\x01"


class BadDelta(ValueError):
    """The bytes are not an SQLite WAL that fits the database."""


def wal_length(header: bytes, frames: int) -> int:
    """The bytes of a WAL with this 32-byte header and its first ``frames`` frames."""
    (page_size,) = struct.unpack(">I", header[8:12])
    return WAL_HEADER_BYTES + frames * (FRAME_HEADER_BYTES + int(page_size))


def plan_fold(delta: BinaryIO) -> tuple[int, dict[int, int], int]:
    """(page size, page number -> offset of its newest committed image, database pages after
    the last commit) for the WAL in ``delta``; (0, {}, -1) for an empty delta or one with no
    committed frame. BadDelta if its header is not a WAL's."""
    header = delta.read(WAL_HEADER_BYTES)
    if not header:
        return 0, {}, -1
    if len(header) < WAL_HEADER_BYTES:
        raise BadDelta(f"the delta is {len(header)} bytes, shorter than a WAL header")
    magic, version, page_size = struct.unpack(">III", header[:12])
    if magic not in _MAGICS or version != _WAL_VERSION:
        raise BadDelta("the delta does not start with an SQLite WAL header")
    if page_size < 512 or page_size > 65536 or page_size & (page_size - 1):
        raise BadDelta(f"the delta's WAL header gives an invalid page size ({page_size})")
    salts = header[16:24]
    newest: dict[int, int] = {}  # since the last commit frame seen
    committed: dict[int, int] = {}
    pages = -1
    offset = WAL_HEADER_BYTES
    frame_bytes = FRAME_HEADER_BYTES + page_size
    while True:
        delta.seek(offset)
        frame = delta.read(FRAME_HEADER_BYTES)
        if len(frame) < FRAME_HEADER_BYTES or frame[8:16] != salts:
            break
        page, commit = struct.unpack(">II", frame[:8])
        if page == 0:
            raise BadDelta(f"the delta's frame at byte {offset} names page 0")
        newest[page] = offset + FRAME_HEADER_BYTES
        if commit:
            committed.update(newest)
            newest.clear()
            pages = commit
        offset += frame_bytes
    end = delta.seek(0, os.SEEK_END)
    if committed and max(committed.values()) + page_size > end:
        raise BadDelta("the delta is cut short inside a committed frame")
    return page_size, committed, pages


def fold_wal(
    delta: BinaryIO, target: UpdatableFile, *, on_page: Callable[[int], object] | None = None
) -> int:
    """Fold the committed frames of the WAL in ``delta`` into the database ``target``, in
    page order; ``on_page(n)`` after the n-th page written. Returns the pages written. The
    caller fsyncs."""
    delta.seek(0)
    page_size, pages, size = plan_fold(delta)
    if size < 0:
        return 0
    head = target.pread(100, 0)
    if head.startswith(_DB_HEADER) and len(head) >= 18:
        (raw,) = struct.unpack(">H", head[16:18])
        if (65536 if raw == 1 else raw) != page_size:
            raise BadDelta(
                f"the delta's pages are {page_size} bytes, the database's {raw}: "
                "it belongs to another database"
            )
    written = 0
    for number in sorted(pages):
        if number > size:
            continue  # the last commit cut the database below this page
        delta.seek(pages[number])
        image = delta.read(page_size)
        if number == 1 and image.startswith(_DB_HEADER):
            image = image[:_FORMAT_OFFSET] + _ROLLBACK_FORMAT + image[_FORMAT_OFFSET + 2 :]
        target.pwrite(image, (number - 1) * page_size)
        written += 1
        if on_page is not None:
            on_page(written)
    target.truncate(size * page_size)
    return written


def compact_wal(source: BinaryIO, sink: BinaryIO) -> int:
    """Write to ``sink`` the WAL in ``source`` reduced to what a fold uses: the newest
    committed image of each page, one frame each in page order, the last one the commit
    (with the database size). A page that many commands changed is written once, not once per
    command. Returns the frames written (0 and nothing written when nothing was committed).

    The frames keep the WAL's layout and salts; their checksums are not recomputed (a fold
    does not read them, and the store's CRC32 covers the whole delta), so SQLite itself
    would not replay the result."""
    source.seek(0)
    page_size, pages, size = plan_fold(source)
    numbers = sorted(n for n in pages if n <= size)
    if not numbers:
        return 0
    source.seek(0)
    header = source.read(WAL_HEADER_BYTES)
    sink.write(header)
    salts = header[16:24]
    for i, number in enumerate(numbers):
        commit = size if i == len(numbers) - 1 else 0
        source.seek(pages[number])
        sink.write(struct.pack(">II", number, commit) + salts + bytes(8))
        sink.write(source.read(page_size))
    return len(numbers)
