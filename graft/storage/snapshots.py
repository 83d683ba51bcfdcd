"""Snapshot files: the FSM's bytes in a data file, and a small manifest that vouches for them.

A snapshot is ``snap-<index>-<term>.data`` plus ``snap-<index>-<term>.manifest`` (index, term,
membership, FSM name, size, CRC32 of the data). Saving writes the data to a temp file, fsyncs,
renames; then the manifest the same way; then fsyncs the directory. The manifest is written
last, so its presence means the data beside it is complete. The previous snapshot is deleted
only after the new one is durable, so a crash at any point leaves at least one whole snapshot.

Delta mode (``save_delta``), for an FSM whose state is an SQLite database: the FSM hands over
only the WAL frames written since its previous snapshot, and the store folds them into its
full copy (graft.storage.sqlite_wal), so that writing a snapshot costs what changed, not the
database's size. The steps, each durable before the next:

1. the delta is written to ``snap-<I>-<T>.delta`` (temp file, fsync, rename, directory fsync);
2. the manifest of I is written as *pending*: the base snapshot B (its size and CRC32) plus
   the delta (its size and CRC32). From here on I is the latest snapshot;
3. B's data file is renamed to I's (so that nothing else reads it) and the delta folded into
   it in place, then fsynced;
4. the manifest of I is rewritten as a whole snapshot (size, CRC32 of the folded file, and
   of each of its blocks: only the blocks the fold wrote are read again, the rest keep B's
   CRC32s, graft.storage.block_crc), and B's manifest and the delta are deleted.

A crash before 2 leaves B, and the leftovers are deleted at the next start; after 2, ``load``
finishes the fold: folding writes whole page images, so folding again over a file a crash
left half folded gives the same bytes. A fold changes the data file in place, so it waits
until no reader (a snapshot sent to a follower, a download) has the file open, and readers
cannot open it while a fold waits or runs (``open_image``, SnapshotBusy).

Each snapshot carries a ``chain`` token the FSM chose: a delta is accepted only on top of
the snapshot whose token the FSM names as its base, so a delta never lands on a snapshot the
FSM's WAL does not follow (one received from the leader, one written before a restart).

(Over 500 lines: the delta mode shares the manifest, the locks and the clean-up with whole
snapshots, and its crash handling reads best next to them.)
"""

from __future__ import annotations

import io
import struct
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from graft.raft.types import SnapshotMeta, membership_from_dict, membership_to_dict
from graft.storage.block_crc import (
    BLOCK_BYTES,
    BlockSums,
    TouchedBlocks,
    decode_blocks,
    encode_blocks,
)
from graft.storage.errors import (
    CorruptionError,
    DeltaRefused,
    SnapshotBusy,
    SnapshotSuperseded,
)
from graft.storage.files import FileSystem, write_atomic
from graft.storage.snapshot_io import ChecksumSink, Leased, TempTarget
from graft.storage.sqlite_wal import BadDelta, fold_wal, plan_fold
from graft.storage.state_files import decode_checked, encode_checked

_MANIFEST_MAGIC = b"graft-snapshot"
_DATA_SUFFIX = ".data"
_MANIFEST_SUFFIX = ".manifest"
_DELTA_SUFFIX = ".delta"
_CHUNK = 1 << 20
# How long a fold waits for readers of the full copy (snapshots being sent) to finish before
# the delta is dropped (DeltaRefused; the FSM's next snapshot is then a whole one).
FOLD_WAIT_SECONDS = 120.0
# The checksum pass over a folded file: large reads, during which zlib releases the GIL.
_CHECKSUM_CHUNK = 8 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingDelta:
    """A delta recorded in a snapshot's manifest and not yet folded into its data file."""

    base_path: Path  # the base snapshot's data file, until the fold renames it
    base_size: int
    base_crc32: int
    delta_path: Path
    delta_size: int
    delta_crc32: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotInfo:
    """A durable snapshot, as its manifest describes it."""

    meta: SnapshotMeta
    fsm_name: str
    size: int
    crc32: int
    data_path: Path
    manifest_path: Path
    # The FSM's token for this snapshot (delta mode), None for snapshots of other FSMs and
    # those received from a leader.
    chain: str | None = None
    # Set only while a delta is being folded (and by ``load(clean=False)`` after a crash
    # in the middle of one): size and crc32 are then 0, the data file not yet whole.
    pending: PendingDelta | None = None
    # The CRC32 of each BLOCK_BYTES block of the data (graft.storage.block_crc), so that a
    # fold re-reads only the blocks it wrote; None in manifests written without them.
    blocks: tuple[int, ...] | None = None


def _stem(index: int, term: int) -> str:
    return f"snap-{index:020d}-{term:020d}"


def _parse_stem(name: str) -> tuple[int, int] | None:
    parts = name.split("-")
    if len(parts) != 3 or parts[0] != "snap" or not (parts[1].isdigit() and parts[2].isdigit()):
        return None
    return int(parts[1]), int(parts[2])


class SnapshotStore:
    """Finds, writes and reads the snapshot files of one data dir. Thread-safe."""

    def __init__(self, files: FileSystem, data_dir: Path) -> None:
        self._files = files
        self._dir = data_dir
        self._lock = threading.Lock()
        # The index of the newest snapshot on disk: a save at or below it is refused, so a
        # slow local save that finishes after a received snapshot cannot delete that one.
        self._newest = 0
        # The newest snapshot's manifest (the base of the next delta).
        self._latest: SnapshotInfo | None = None
        # Readers of a data file (open_image) against folds that change it in place.
        self._leases = threading.Condition()
        self._readers = 0
        self._folding = False
        # Called with the name of each step of a delta save; crash tests raise from it.
        self.step: Callable[[str], object] = lambda name: None

    def _snapshot_files(self) -> dict[tuple[int, int], set[str]]:
        found: dict[tuple[int, int], set[str]] = {}
        for name in self._files.listdir(self._dir):
            stem, _, suffix = name.partition(".")
            key = _parse_stem(stem)
            if key is not None:
                found.setdefault(key, set()).add("." + suffix)
        return found

    def load(self, *, clean: bool = True) -> SnapshotInfo | None:
        """The newest snapshot whose manifest exists, checked; older ones and leftovers of an
        interrupted save are deleted when ``clean``. CorruptionError if the manifest is bad or
        its data file is missing or of the wrong size.

        A delta that a crash left unfolded is folded first when ``clean``; otherwise (a
        read-only look) the snapshot is returned as it is, ``pending``, and ``open``
        assembles its image in a temp file."""
        with self._lock:
            found = self._snapshot_files()
            complete = sorted(
                key for key, suffixes in found.items() if _MANIFEST_SUFFIX in suffixes
            )
            info = self._read_manifest(*complete[-1]) if complete else None
            self._newest = max(self._newest, info.meta.index if info is not None else 0)
            self._latest = info
            if clean:
                if info is not None and info.pending is not None:
                    with self._exclusive(wait=None):
                        info = self._fold(info)
                keep = _stem(info.meta.index, info.meta.term) if info is not None else None
                self._remove_except(self._snapshot_files(), keep)
            return info

    def _read_manifest(self, index: int, term: int) -> SnapshotInfo:
        stem = _stem(index, term)
        path = self._dir / (stem + _MANIFEST_SUFFIX)
        body = decode_checked(_MANIFEST_MAGIC, self._files.read_bytes(path), path)
        try:
            meta = SnapshotMeta(
                index=int(body["index"]),
                term=int(body["term"]),
                membership=membership_from_dict(body["membership"]),
                # Absent from manifests written before stamps.
                stamp_floor_ns=int(body.get("stamp_floor_ns", 0)),
            )
            chain = body.get("chain")
            delta = body.get("delta")
            pending = None
            if delta is not None:
                base = _stem(int(delta["base_index"]), int(delta["base_term"]))
                pending = PendingDelta(
                    base_path=self._dir / (base + _DATA_SUFFIX),
                    base_size=int(delta["base_size"]),
                    base_crc32=int(delta["base_crc32"]),
                    delta_path=self._dir / (stem + _DELTA_SUFFIX),
                    delta_size=int(delta["size"]),
                    delta_crc32=int(delta["crc32"]),
                )
            info = SnapshotInfo(
                meta=meta,
                fsm_name=str(body["fsm"]),
                size=int(body["size"]),
                crc32=int(body["crc32"]),
                data_path=self._dir / (stem + _DATA_SUFFIX),
                manifest_path=path,
                chain=None if chain is None else str(chain),
                pending=pending,
                blocks=_blocks(body.get("blocks"), int(body["size"])),
            )
        except (KeyError, TypeError, ValueError):
            raise CorruptionError(path, 0, "snapshot manifest fields are missing") from None
        if (meta.index, meta.term) != (index, term):
            raise CorruptionError(path, 0, "manifest index/term differ from its file name")
        if pending is not None:
            self._check_pending(info, pending)
            return info
        if not self._files.exists(info.data_path):
            raise CorruptionError(info.data_path, 0, "snapshot data file is missing")
        actual = self._files.size(info.data_path)
        if actual != info.size:
            raise CorruptionError(
                info.data_path,
                min(actual, info.size),
                f"snapshot data is {actual} bytes, its manifest says {info.size}",
            )
        return info

    def _check_pending(self, info: SnapshotInfo, pending: PendingDelta) -> None:
        if not self._files.exists(pending.delta_path):
            raise CorruptionError(pending.delta_path, 0, "snapshot delta file is missing")
        actual = self._files.size(pending.delta_path)
        if actual != pending.delta_size:
            raise CorruptionError(
                pending.delta_path,
                min(actual, pending.delta_size),
                f"snapshot delta is {actual} bytes, its manifest says {pending.delta_size}",
            )
        if self._files.exists(info.data_path):
            return  # the fold had started: the base's bytes are no longer checkable
        if not self._files.exists(pending.base_path):
            raise CorruptionError(pending.base_path, 0, "the delta's base snapshot is missing")
        actual = self._files.size(pending.base_path)
        if actual != pending.base_size:
            raise CorruptionError(
                pending.base_path,
                min(actual, pending.base_size),
                f"the delta's base is {actual} bytes, the manifest says {pending.base_size}",
            )

    def _remove_except(self, found: dict[tuple[int, int], set[str]], keep: str | None) -> None:
        removed = False
        for (index, term), suffixes in found.items():
            stem = _stem(index, term)
            if stem == keep:
                suffixes = {s for s in suffixes if s in (_DELTA_SUFFIX, ".delta.tmp")}
                if not suffixes or (self._latest is not None and self._latest.pending):
                    continue
            # Manifest first: a snapshot without its manifest is ignored, never half-trusted.
            for suffix in sorted(suffixes, key=lambda s: s != _MANIFEST_SUFFIX):
                self._files.unlink(self._dir / (stem + suffix))
                removed = True
        if removed:
            self._files.sync_dir(self._dir)

    def save(
        self,
        meta: SnapshotMeta,
        fsm_name: str,
        write: Callable[[BinaryIO], object],
        *,
        chain: str | None = None,
    ) -> SnapshotInfo:
        """Write a new snapshot durably, then delete the older ones. SnapshotSuperseded (and
        nothing written) if a snapshot at or above ``meta.index`` is already on disk.
        ``chain``: the FSM's token for it, which a later delta names as its base."""
        with self._lock:
            self._check_newer(meta)
            stem = _stem(meta.index, meta.term)
            size, crc, blocks = self._write_file(self._dir / (stem + _DATA_SUFFIX), write)
            return self._commit(meta, fsm_name, stem, size, crc, chain, blocks)

    def _check_newer(self, meta: SnapshotMeta) -> None:
        if meta.index <= self._newest:
            raise SnapshotSuperseded(
                f"snapshot {meta.index} is not newer than snapshot {self._newest} on disk"
            )

    def _write_file(
        self, path: Path, write: Callable[[BinaryIO], object]
    ) -> tuple[int, int, tuple[int, ...]]:
        """Fill ``path`` through ``write`` (temp file, fsync, rename): its size, CRC32 and
        blocks' CRC32s."""
        tmp = path.with_name(path.name + ".tmp")
        handle = self._files.create(tmp)
        try:
            sink = ChecksumSink(handle)
            buffered = io.BufferedWriter(cast(Any, sink), _CHUNK)
            write(cast(BinaryIO, buffered))
            buffered.flush()
            handle.sync()
        finally:
            handle.close()
        self._files.rename(tmp, path)
        blocks, crc = sink.sums.result()
        return sink.sums.size, crc, blocks

    def save_delta(
        self,
        meta: SnapshotMeta,
        fsm_name: str,
        write: Callable[[BinaryIO], object],
        *,
        base_chain: str,
        chain: str,
        wait: float = FOLD_WAIT_SECONDS,
    ) -> SnapshotInfo:
        """Save a snapshot as a delta (an SQLite WAL, which ``write`` fills) over the latest
        snapshot, whose chain token must be ``base_chain``, and fold it into the full copy
        (the steps are in the module docstring). DeltaRefused, with nothing kept, if the
        latest snapshot is not that base, the delta is malformed, or readers hold the full
        copy for longer than ``wait`` seconds; SnapshotSuperseded as ``save``."""
        # Wait for readers before taking the store's lock, which a received snapshot's
        # install needs meanwhile.
        with self._exclusive(wait=wait), self._lock:
            self._check_newer(meta)
            base = self._latest
            if base is None or base.pending is not None or base.chain != base_chain:
                raise DeltaRefused(
                    f"snapshot {meta.index}: the delta follows snapshot token {base_chain}, "
                    "which is not the latest snapshot on disk; take a whole snapshot"
                )
            stem = _stem(meta.index, meta.term)
            delta_path = self._dir / (stem + _DELTA_SUFFIX)
            size, crc, _ = self._write_file(delta_path, write)
            self._files.sync_dir(self._dir)
            self.step("delta-written")
            try:
                self._check_delta(delta_path, base)
            except BaseException:
                self._files.unlink(delta_path)
                raise
            info = SnapshotInfo(
                meta=meta,
                fsm_name=fsm_name,
                size=0,
                crc32=0,
                data_path=self._dir / (stem + _DATA_SUFFIX),
                manifest_path=self._dir / (stem + _MANIFEST_SUFFIX),
                chain=chain,
                pending=PendingDelta(
                    base_path=base.data_path,
                    base_size=base.size,
                    base_crc32=base.crc32,
                    delta_path=delta_path,
                    delta_size=size,
                    delta_crc32=crc,
                ),
            )
            self._write_manifest(info)
            self._newest = meta.index
            self._latest = info
            self.step("manifest-written")
            return self._fold(info, base.blocks)

    def _check_delta(self, delta_path: Path, base: SnapshotInfo) -> None:
        """DeltaRefused unless the delta is a WAL whose pages fit the base's."""
        with self._files.open_read(delta_path) as delta:
            try:
                page_size, _pages, _size = plan_fold(delta)
            except BadDelta as e:
                raise DeltaRefused(f"{delta_path.name}: {e}; take a whole snapshot") from None
        if page_size and base.size:
            with self._files.open_read(base.data_path) as f:
                header = f.read(100)
            (raw,) = struct.unpack(">H", header[16:18]) if len(header) >= 18 else (0,)
            if (65536 if raw == 1 else raw) != page_size:
                raise DeltaRefused(
                    f"{delta_path.name}: pages of {page_size} bytes over a snapshot whose "
                    f"pages are {raw}; take a whole snapshot"
                )

    @contextmanager
    def _exclusive(self, *, wait: float | None) -> Iterator[None]:
        """Stop new readers of data files and wait until the current ones are done (at most
        ``wait`` seconds: DeltaRefused); readers may open files again on leaving."""
        deadline = None if wait is None else time.monotonic() + wait
        with self._leases:
            self._folding = True
            while self._readers:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    self._folding = False
                    raise DeltaRefused(
                        f"snapshots being sent kept the full copy busy for {wait:.0f} s; "
                        "the delta is dropped and the next snapshot will be whole"
                    )
                self._leases.wait(left)
        try:
            yield
        finally:
            with self._leases:
                self._folding = False

    def _fold(self, info: SnapshotInfo, base_blocks: tuple[int, ...] | None = None) -> SnapshotInfo:
        """Steps 3 and 4 of a delta save (also run by ``load`` after a crash, without
        ``base_blocks``). With the base's blocks' CRC32s, the new ones come from re-reading
        only the blocks the fold wrote; else from reading the whole folded file."""
        pending = info.pending
        assert pending is not None
        if not self._files.exists(info.data_path):
            self._files.rename(pending.base_path, info.data_path)
            self._files.sync_dir(self._dir)
            self.step("base-moved")
        sums = self._fold_into(info.data_path, pending, base_blocks)
        self.step("folded")
        size = self._files.size(info.data_path)
        if sums is not None and len(sums[0]) == -(-size // BLOCK_BYTES):
            blocks, crc = sums
        else:
            size, crc, blocks = self._checksum(info.data_path)
        stem = _stem(info.meta.index, info.meta.term)
        return self._commit(info.meta, info.fsm_name, stem, size, crc, info.chain, blocks)

    def _fold_into(
        self, path: Path, pending: PendingDelta, base_blocks: tuple[int, ...] | None = None
    ) -> tuple[tuple[int, ...], int] | None:
        """Fold the delta into ``path`` and fsync it; with ``base_blocks`` (valid for the
        base's size), the folded file's blocks' CRC32s and CRC32."""
        with self._files.open_read(pending.delta_path) as delta:
            crc = 0
            while chunk := delta.read(_CHUNK):
                crc = zlib.crc32(chunk, crc)
            if crc != pending.delta_crc32:
                raise CorruptionError(pending.delta_path, 0, "snapshot delta checksum mismatch")
            if base_blocks is not None and len(base_blocks) != -(-pending.base_size // BLOCK_BYTES):
                base_blocks = None
            target = TouchedBlocks(self._files.open_update(path), pending.base_size)
            try:
                try:
                    fold_wal(delta, target, on_page=lambda n: self.step("fold-page"))
                except BadDelta as e:
                    raise CorruptionError(pending.delta_path, 0, str(e)) from None
                target.sync()
                return None if base_blocks is None else target.refolded(base_blocks)
            finally:
                target.close()

    def _checksum(self, path: Path) -> tuple[int, int, tuple[int, ...]]:
        sums = BlockSums()
        with self._files.open_read(path) as source:
            while chunk := source.read(_CHECKSUM_CHUNK):
                sums.update(chunk)  # zlib releases the GIL for large pieces
        blocks, crc = sums.result()
        return sums.size, crc, blocks

    def install(self, meta: SnapshotMeta, fsm_name: str, source: Path) -> SnapshotInfo:
        """Copy a received snapshot file in as the newest snapshot."""

        def copy(sink: BinaryIO) -> None:
            with self._files.open_read(source) as src:
                while chunk := src.read(_CHUNK):
                    sink.write(chunk)

        return self.save(meta, fsm_name, copy)

    def _write_manifest(self, info: SnapshotInfo) -> None:
        body: dict[str, Any] = {
            "index": info.meta.index,
            "term": info.meta.term,
            "membership": membership_to_dict(info.meta.membership),
            "fsm": info.fsm_name,
            "size": info.size,
            "crc32": info.crc32,
            "stamp_floor_ns": info.meta.stamp_floor_ns,
        }
        if info.chain is not None:
            body["chain"] = info.chain
        if info.blocks is not None:
            body["blocks"] = {"bytes": BLOCK_BYTES, "crc32": encode_blocks(info.blocks)}
        pending = info.pending
        if pending is not None:
            base = _parse_stem(pending.base_path.name.partition(".")[0])
            assert base is not None
            body["delta"] = {
                "base_index": base[0],
                "base_term": base[1],
                "base_size": pending.base_size,
                "base_crc32": pending.base_crc32,
                "size": pending.delta_size,
                "crc32": pending.delta_crc32,
            }
        write_atomic(self._files, info.manifest_path, encode_checked(_MANIFEST_MAGIC, body))

    def _commit(
        self,
        meta: SnapshotMeta,
        fsm_name: str,
        stem: str,
        size: int,
        crc: int,
        chain: str | None = None,
        blocks: tuple[int, ...] | None = None,
    ) -> SnapshotInfo:
        info = SnapshotInfo(
            meta=meta,
            fsm_name=fsm_name,
            size=size,
            crc32=crc,
            data_path=self._dir / (stem + _DATA_SUFFIX),
            manifest_path=self._dir / (stem + _MANIFEST_SUFFIX),
            chain=chain,
            blocks=blocks,
        )
        self._write_manifest(info)
        self._newest = meta.index
        self._latest = info
        self._remove_except(self._snapshot_files(), stem)
        return info

    def open_image(self, info: SnapshotInfo) -> BinaryIO:
        """The snapshot's data file, open for reading, not checked: no fold changes it until
        the file is closed. SnapshotBusy while a fold waits or runs (open again shortly)."""
        with self._leases:
            if self._folding or info.pending is not None:
                raise SnapshotBusy(
                    f"snapshot {info.meta.index} is being folded; open it again shortly"
                )
            source = self._files.open_read(info.data_path)
            self._readers += 1
        return cast(BinaryIO, Leased(source, self._release_reader))

    def _release_reader(self) -> None:
        with self._leases:
            self._readers -= 1
            self._leases.notify_all()

    def open(self, info: SnapshotInfo) -> BinaryIO:
        """The snapshot's data, checked against its manifest's CRC, positioned at the start.
        A ``pending`` snapshot (``load(clean=False)`` after a crash) is assembled in a temp
        file: its base copied, checked, and the delta folded into the copy."""
        if info.pending is not None:
            return self._assemble(info, info.pending)
        source = self.open_image(info)
        try:
            crc = 0
            while chunk := source.read(_CHUNK):
                crc = zlib.crc32(chunk, crc)
            if crc != info.crc32:
                raise CorruptionError(info.data_path, 0, "snapshot data checksum mismatch")
            source.seek(0)
        except BaseException:
            source.close()
            raise
        return source

    def _assemble(self, info: SnapshotInfo, pending: PendingDelta) -> BinaryIO:
        base = info.data_path if self._files.exists(info.data_path) else pending.base_path
        image = tempfile.TemporaryFile()  # noqa: SIM115 (returned to the caller, who closes it)
        try:
            crc = 0
            with self._files.open_read(base) as source:
                while chunk := source.read(_CHUNK):
                    crc = zlib.crc32(chunk, crc)
                    image.write(chunk)
            if base == pending.base_path and crc != pending.base_crc32:
                raise CorruptionError(base, 0, "snapshot data checksum mismatch")
            image.flush()
            self._fold_into_temp(image, pending)
            image.seek(0)
        except BaseException:
            image.close()
            raise
        return cast(BinaryIO, image)

    def _fold_into_temp(self, image: Any, pending: PendingDelta) -> None:
        with self._files.open_read(pending.delta_path) as delta:
            if zlib.crc32(delta.read()) != pending.delta_crc32:
                raise CorruptionError(pending.delta_path, 0, "snapshot delta checksum mismatch")
            try:
                fold_wal(delta, TempTarget(image))
            except BadDelta as e:
                raise CorruptionError(pending.delta_path, 0, str(e)) from None


def _blocks(field: Any, size: int) -> tuple[int, ...] | None:
    """A manifest's block CRC32s, if they are of this store's block size and fit ``size``
    (else None: the next fold reads the whole file). ValueError if malformed."""
    if field is None or int(field["bytes"]) != BLOCK_BYTES:
        return None
    blocks = decode_blocks(str(field["crc32"]))
    return blocks if len(blocks) == -(-size // BLOCK_BYTES) else None
