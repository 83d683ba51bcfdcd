"""The log's segment files on disk: replay at open, then appends, truncation and deletion.

Only one thread touches a ``SegmentSet`` after open (the writer thread, or the caller in the
synchronous mode). The ordering rules that make a crash at any point recoverable:

- appends of a batch go out in one write per segment and one fsync;
- appends go to the last segment only if it has the current format (``FORMAT_VERSION``); a
  last segment of an older format is left whole and a new segment starts;
- before a new segment is created the full one is fsynced, so every segment but the last is
  always whole on disk, and only the last may end in a torn record;
- truncating a suffix first deletes the later segments (newest first, each deletion made
  durable), then cuts the segment that holds the index and fsyncs it, before anything new is
  appended;
- compaction deletes whole segments, oldest first, never the last one.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from graft.raft.types import Entry
from graft.storage.errors import CorruptionError
from graft.storage.files import FileSystem, WritableFile
from graft.storage.records import (
    FORMAT_VERSION,
    RECORD_HEADER_SIZE,
    SEGMENT_HEADER_SIZE,
    SegmentScan,
    encode_records,
    encode_segment_header,
    parse_segment_name,
    scan_segment,
    segment_name,
)


@dataclass(slots=True, kw_only=True)
class Segment:
    """One segment file and where its records start.

    Where each record starts is only needed to truncate, which is rare, so appends do not
    compute it per record: the records found at open have their offsets, those appended since
    are kept as their data sizes after ``appended_at``, and ``offset_of`` adds those up when
    asked.
    """

    first_index: int
    path: Path
    size: int
    version: int = FORMAT_VERSION
    offsets: array[int] = field(default_factory=lambda: array("Q"))  # records found at open
    # The data sizes of the records appended since, in order (sizes, not the entries: the
    # collector would track those; see graft.storage.columns).
    appended: array[int] = field(default_factory=lambda: array("I"))
    appended_at: int = 0  # the offset of appended[0]

    @property
    def count(self) -> int:
        return len(self.offsets) + len(self.appended)

    @property
    def last_index(self) -> int:
        return self.first_index + self.count - 1

    def add(self, entries: Sequence[Entry], size: int) -> None:
        """Note ``entries``, ``size`` bytes of records, as written at the end."""
        if not self.appended:
            self.appended_at = self.size
        self.appended.extend([len(e.data) for e in entries])
        self.size += size

    def offset_of(self, index: int) -> int:
        """Where the record of ``index`` starts (or the end of the file, after the last)."""
        position = index - self.first_index
        found = len(self.offsets)
        if position < found:
            return self.offsets[position]
        if not self.appended:
            return self.size
        before = self.appended[: position - found]
        return self.appended_at + sum(before) + RECORD_HEADER_SIZE * len(before)

    def cut(self, index: int) -> None:
        """Forget the records from ``index`` on (the caller cuts the file at ``size``)."""
        size = self.offset_of(index)
        position = index - self.first_index
        found = len(self.offsets)
        if position < found:
            del self.offsets[position:]
            del self.appended[:]
        else:
            del self.appended[position - found :]
        self.size = size


@dataclass(slots=True, kw_only=True)
class Replay:
    """What replaying the segment files found: the segments and all their entries in order,
    and the repairs ``repair`` will make (nothing is changed on disk until then)."""

    segments: list[Segment]
    entries: list[Entry]
    first_index: int  # index of entries[0] (or where the next entry goes if there is none)
    notes: list[str]  # what was (or will be) repaired, for the operator's log
    stale: list[Path]  # whole segments below a gap covered by the snapshot
    cut: tuple[Path, int] | None = None  # torn tail: cut this file at this offset
    remove: Path | None = None  # a last segment whose header was never completed


def list_segments(files: FileSystem, data_dir: Path) -> list[tuple[int, Path]]:
    found = []
    for name in files.listdir(data_dir):
        first = parse_segment_name(name)
        if first is not None:
            found.append((first, data_dir / name))
    found.sort()
    return found


def scan_files(
    files: FileSystem, data_dir: Path, *, floor_index: int = 0
) -> tuple[list[tuple[Path, SegmentScan]], list[str], list[Path]]:
    """Scan every segment, newest last. A gap between segments is corruption unless everything
    before it is at or below ``floor_index`` (covered by a snapshot, left by an interrupted
    compaction): those older segments are then returned as stale. Read-only; the torn-tail
    decision is the caller's (the last scan may carry ``torn``)."""
    notes: list[str] = []
    stale: list[Path] = []
    listed = list_segments(files, data_dir)
    scans: list[tuple[Path, SegmentScan]] = []
    min_term = 0
    for position, (first, path) in enumerate(listed):
        is_last = position == len(listed) - 1
        if scans:
            previous = scans[-1][1]
            if first != previous.last_index + 1:
                if previous.last_index <= floor_index and first <= floor_index + 1:
                    notes.append(
                        f"{len(scans)} segment(s) before {path.name} are covered by the "
                        "snapshot and left over from a compaction: deleted"
                    )
                    stale.extend(p for p, _ in scans)
                    scans.clear()
                    min_term = 0
                else:
                    raise CorruptionError(
                        path,
                        0,
                        f"segment starts at index {first} but the previous one ends at "
                        f"{previous.last_index} (a segment is missing or damaged)",
                    )
        scan = scan_segment(files.read_bytes(path), expected_first=first, min_term=min_term)
        if scan.problem is not None and not (scan.torn and is_last):
            raise CorruptionError(path, scan.problem_offset, scan.problem)
        if scan.entries:
            min_term = scan.entries[-1].term
        scans.append((path, scan))
    return scans, notes, stale


def replay(files: FileSystem, data_dir: Path, *, floor_index: int) -> Replay:
    """Read the segments back; a torn final record is noted for ``repair`` to cut (the one
    repair that is allowed). Read-only."""
    scans, notes, stale = scan_files(files, data_dir, floor_index=floor_index)
    segments: list[Segment] = []
    entries: list[Entry] = []
    cut: tuple[Path, int] | None = None
    remove: Path | None = None
    for path, scan in scans:
        if scan.problem is not None:  # only the last segment gets here: a torn tail
            if scan.end < SEGMENT_HEADER_SIZE:
                notes.append(f"{path.name}: deleted, its header was never completed")
                remove = path
                continue
            notes.append(
                f"{path.name}: cut a torn final record at offset {scan.end} ({scan.problem})"
            )
            cut = (path, scan.end)
        segments.append(
            Segment(
                first_index=scan.first_index,
                path=path,
                size=scan.end,
                version=scan.version,
                offsets=scan.offsets,
            )
        )
        entries.extend(scan.entries)
    first = segments[0].first_index if segments else floor_index + 1
    return Replay(
        segments=segments,
        entries=entries,
        first_index=first,
        notes=notes,
        stale=stale,
        cut=cut,
        remove=remove,
    )


def repair(files: FileSystem, data_dir: Path, found: Replay) -> None:
    """Make the disk match what ``replay`` returned: cut the torn tail, delete the leftovers."""
    if found.cut is not None:
        path, size = found.cut
        handle = files.open_append(path)
        try:
            handle.truncate(size)
            handle.sync()
        finally:
            handle.close()
    removed = [*found.stale, *([found.remove] if found.remove is not None else [])]
    for path in removed:
        files.unlink(path)
    if removed:
        files.sync_dir(data_dir)


class SegmentSet:
    """Appends to, truncates and deletes the segment files (one thread only)."""

    def __init__(
        self,
        files: FileSystem,
        data_dir: Path,
        *,
        segment_bytes: int,
        segments: list[Segment],
        next_index: int,
        on_fsync: Callable[[float], None] | None = None,
    ) -> None:
        self._files = files
        self._dir = data_dir
        self._segment_bytes = segment_bytes
        self.segments = segments
        self.next_index = next_index
        self._on_fsync = on_fsync
        self._handle: WritableFile | None = None  # open on the last segment
        self._pending: list[bytes] = []  # bytes for the last segment, not yet written
        self._unsynced = False
        self._dir_dirty = False

    @property
    def last_index(self) -> int:
        return self.next_index - 1

    def _active(self) -> WritableFile:
        if self._handle is None:
            self._handle = self._files.open_append(self.segments[-1].path)
        return self._handle

    def _new_segment(self, first_index: int) -> None:
        self._flush()
        if self.segments:
            self._sync_file()
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        path = self._dir / segment_name(first_index)
        self._handle = self._files.create(path)
        self.segments.append(Segment(first_index=first_index, path=path, size=0))
        self._pending.append(encode_segment_header(first_index))
        self.segments[-1].size = SEGMENT_HEADER_SIZE
        self._unsynced = True
        self._dir_dirty = True

    def append(self, entries: Sequence[Entry], encoded: bytes | None = None) -> None:
        """Queue ``entries`` for the next ``sync``; ``encoded`` is ``encode_records(entries)``
        if the caller already has it (the log encodes on the reactor thread, while this
        thread waits on the previous fsync)."""
        if not entries:
            return
        first = entries[0].index
        if first < self.next_index:
            self.truncate_from(first)
        elif first > self.next_index:
            raise ValueError(f"entry {first} does not follow the last index {self.last_index}")
        if encoded is None:
            encoded = encode_records(entries)
        if not self.segments or self.segments[-1].version != FORMAT_VERSION:
            self._new_segment(first)
        segment = self.segments[-1]
        self._unsynced = True
        if segment.size + len(encoded) <= self._segment_bytes:
            segment.add(entries, len(encoded))
            self._pending.append(encoded)
        else:
            self._append_rolling(entries, encoded)
        self.next_index = entries[-1].index + 1

    def _append_rolling(self, entries: Sequence[Entry], encoded: bytes) -> None:
        """Append records one by one, starting a new segment where the current one is full."""
        segment = self.segments[-1]
        limit = self._segment_bytes
        view = memoryview(encoded)
        start = 0  # of the records not yet queued for the current segment, in ``encoded``
        end = 0
        run = 0  # of the entries in that part
        for position, entry in enumerate(entries):
            record_size = RECORD_HEADER_SIZE + len(entry.data)
            if segment.size + end - start + record_size > limit and (segment.count or run):
                self._pending.append(bytes(view[start:end]))
                segment.add(entries[position - run : position], end - start)
                start = end
                run = 0
                self._new_segment(entry.index)
                segment = self.segments[-1]
            end += record_size
            run += 1
        self._pending.append(bytes(view[start:end]))
        segment.add(entries[len(entries) - run :], end - start)

    def _flush(self) -> None:
        pending = self._pending
        if pending:
            self._active().write(pending[0] if len(pending) == 1 else b"".join(pending))
            pending.clear()

    def _sync_file(self) -> None:
        if self._unsynced:
            started = time.perf_counter()
            self._active().sync()
            if self._on_fsync is not None:
                self._on_fsync(time.perf_counter() - started)
            self._unsynced = False

    def sync(self) -> None:
        """Write out the batch and make it durable (file, then directory if it changed)."""
        if self.segments:
            self._flush()
            self._sync_file()
        if self._dir_dirty:
            self._files.sync_dir(self._dir)
            self._dir_dirty = False

    def _close_handle(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def truncate_from(self, index: int) -> None:
        """Durably remove every entry from ``index`` on."""
        self.sync()
        while self.segments and self.segments[-1].first_index >= index:
            self._close_handle()
            self._files.unlink(self.segments.pop().path)
            self._files.sync_dir(self._dir)
        if self.segments and self.segments[-1].last_index >= index:
            segment = self.segments[-1]
            segment.cut(index)
            handle = self._active()
            handle.truncate(segment.size)
            self._unsynced = True
            self._sync_file()
        self.next_index = index

    def drop_before(self, index: int) -> int:
        """Delete whole segments whose entries are all below ``index`` (never the last one).
        Returns the first index still on disk."""
        self.sync()
        dropped = False
        while len(self.segments) > 1 and self.segments[0].last_index < index:
            self._files.unlink(self.segments.pop(0).path)
            dropped = True
        if dropped:
            self._files.sync_dir(self._dir)
        return self.segments[0].first_index if self.segments else self.next_index

    def discard_all(self, next_index: int) -> None:
        """Delete every segment; the next append starts a new one at ``next_index``."""
        self.sync()
        self._close_handle()
        while self.segments:
            self._files.unlink(self.segments.pop().path)
        self._files.sync_dir(self._dir)
        self.next_index = next_index

    def close(self) -> None:
        self.sync()
        self._close_handle()

    def abandon(self) -> None:
        """Close without writing (after a write failed)."""
        self._pending.clear()
        self._close_handle()
