"""Snapshot files: the FSM's bytes in a data file, and a small manifest that vouches for them.

A snapshot is ``snap-<index>-<term>.data`` plus ``snap-<index>-<term>.manifest`` (index, term,
membership, FSM name, size, CRC32 of the data). Saving writes the data to a temp file, fsyncs,
renames; then the manifest the same way; then fsyncs the directory. The manifest is written
last, so its presence means the data beside it is complete. The previous snapshot is deleted
only after the new one is durable, so a crash at any point leaves at least one whole snapshot.
"""

from __future__ import annotations

import io
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from graft.raft.types import SnapshotMeta, membership_from_dict, membership_to_dict
from graft.storage.errors import CorruptionError, SnapshotSuperseded
from graft.storage.files import FileSystem, WritableFile, write_atomic
from graft.storage.state_files import decode_checked, encode_checked

_MANIFEST_MAGIC = b"graft-snapshot"
_DATA_SUFFIX = ".data"
_MANIFEST_SUFFIX = ".manifest"
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotInfo:
    """A durable snapshot, as its manifest describes it."""

    meta: SnapshotMeta
    fsm_name: str
    size: int
    crc32: int
    data_path: Path
    manifest_path: Path


def _stem(index: int, term: int) -> str:
    return f"snap-{index:020d}-{term:020d}"


def _parse_stem(name: str) -> tuple[int, int] | None:
    parts = name.split("-")
    if len(parts) != 3 or parts[0] != "snap" or not (parts[1].isdigit() and parts[2].isdigit()):
        return None
    return int(parts[1]), int(parts[2])


class _ChecksumSink(io.RawIOBase):
    """Forwards writes to a file of the file layer, counting bytes and a CRC32 on the way."""

    def __init__(self, handle: WritableFile) -> None:
        super().__init__()
        self._handle = handle
        self.size = 0
        self.crc32 = 0

    def writable(self) -> bool:
        return True

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        data = bytes(b)
        self._handle.write(data)
        self.size += len(data)
        self.crc32 = zlib.crc32(data, self.crc32)
        return len(data)


class SnapshotStore:
    """Finds, writes and reads the snapshot files of one data dir. Thread-safe."""

    def __init__(self, files: FileSystem, data_dir: Path) -> None:
        self._files = files
        self._dir = data_dir
        self._lock = threading.Lock()
        # The index of the newest snapshot on disk: a save at or below it is refused, so a
        # slow local save that finishes after a received snapshot cannot delete that one.
        self._newest = 0

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
        its data file is missing or of the wrong size."""
        with self._lock:
            found = self._snapshot_files()
            complete = sorted(
                key for key, suffixes in found.items() if _MANIFEST_SUFFIX in suffixes
            )
            info = self._read_manifest(*complete[-1]) if complete else None
            self._newest = max(self._newest, info.meta.index if info is not None else 0)
            if clean:
                keep = _stem(info.meta.index, info.meta.term) if info is not None else None
                self._remove_except(found, keep)
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
            info = SnapshotInfo(
                meta=meta,
                fsm_name=str(body["fsm"]),
                size=int(body["size"]),
                crc32=int(body["crc32"]),
                data_path=self._dir / (stem + _DATA_SUFFIX),
                manifest_path=path,
            )
        except (KeyError, TypeError, ValueError):
            raise CorruptionError(path, 0, "snapshot manifest fields are missing") from None
        if (meta.index, meta.term) != (index, term):
            raise CorruptionError(path, 0, "manifest index/term differ from its file name")
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

    def _remove_except(self, found: dict[tuple[int, int], set[str]], keep: str | None) -> None:
        removed = False
        for (index, term), suffixes in found.items():
            stem = _stem(index, term)
            if stem == keep:
                continue
            # Manifest first: a snapshot without its manifest is ignored, never half-trusted.
            for suffix in sorted(suffixes, key=lambda s: s != _MANIFEST_SUFFIX):
                self._files.unlink(self._dir / (stem + suffix))
                removed = True
        if removed:
            self._files.sync_dir(self._dir)

    def save(
        self, meta: SnapshotMeta, fsm_name: str, write: Callable[[BinaryIO], object]
    ) -> SnapshotInfo:
        """Write a new snapshot durably, then delete the older ones. SnapshotSuperseded (and
        nothing written) if a snapshot at or above ``meta.index`` is already on disk."""
        with self._lock:
            if meta.index <= self._newest:
                raise SnapshotSuperseded(
                    f"snapshot {meta.index} is not newer than snapshot {self._newest} on disk"
                )
            stem = _stem(meta.index, meta.term)
            data_path = self._dir / (stem + _DATA_SUFFIX)
            tmp = data_path.with_name(data_path.name + ".tmp")
            handle = self._files.create(tmp)
            try:
                sink = _ChecksumSink(handle)
                buffered = io.BufferedWriter(cast(Any, sink), _CHUNK)
                write(cast(BinaryIO, buffered))
                buffered.flush()
                handle.sync()
            finally:
                handle.close()
            self._files.rename(tmp, data_path)
            return self._commit(meta, fsm_name, stem, sink.size, sink.crc32)

    def install(self, meta: SnapshotMeta, fsm_name: str, source: Path) -> SnapshotInfo:
        """Copy a received snapshot file in as the newest snapshot."""

        def copy(sink: BinaryIO) -> None:
            with self._files.open_read(source) as src:
                while chunk := src.read(_CHUNK):
                    sink.write(chunk)

        return self.save(meta, fsm_name, copy)

    def _commit(
        self, meta: SnapshotMeta, fsm_name: str, stem: str, size: int, crc: int
    ) -> SnapshotInfo:
        body = {
            "index": meta.index,
            "term": meta.term,
            "membership": membership_to_dict(meta.membership),
            "fsm": fsm_name,
            "size": size,
            "crc32": crc,
            "stamp_floor_ns": meta.stamp_floor_ns,
        }
        manifest = self._dir / (stem + _MANIFEST_SUFFIX)
        write_atomic(self._files, manifest, encode_checked(_MANIFEST_MAGIC, body))
        self._newest = meta.index
        self._remove_except(self._snapshot_files(), stem)
        return SnapshotInfo(
            meta=meta,
            fsm_name=fsm_name,
            size=size,
            crc32=crc,
            data_path=self._dir / (stem + _DATA_SUFFIX),
            manifest_path=manifest,
        )

    def open(self, info: SnapshotInfo) -> BinaryIO:
        """The snapshot's data, checked against its manifest's CRC, positioned at the start."""
        source = self._files.open_read(info.data_path)
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
