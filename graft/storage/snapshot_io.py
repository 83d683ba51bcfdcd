"""The file wrappers the snapshot store hands around: a sink that checksums what it writes,
a temp file a fold writes into, and a data file lent to a reader (graft.storage.snapshots)."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any, BinaryIO

from graft.storage.block_crc import BlockSums
from graft.storage.files import WritableFile


class ChecksumSink(io.RawIOBase):
    """Forwards writes to a file of the file layer, counting bytes and the CRC32 of each
    block on the way (the whole file's follows from them)."""

    def __init__(self, handle: WritableFile) -> None:
        super().__init__()
        self._handle = handle
        self.sums = BlockSums()

    def writable(self) -> bool:
        return True

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        data = bytes(b)
        self._handle.write(data)
        self.sums.update(data)
        return len(data)


class TempTarget:
    """A temp file as the target of a fold (``UpdatableFile``)."""

    def __init__(self, f: Any) -> None:
        self._f = f

    def pread(self, size: int, offset: int) -> bytes:
        self._f.seek(offset)
        return bytes(self._f.read(size))

    def pwrite(self, data: bytes, offset: int) -> None:
        self._f.seek(offset)
        self._f.write(data)

    def write(self, data: bytes) -> None:
        self._f.seek(0, 2)
        self._f.write(data)

    def truncate(self, size: int) -> None:
        self._f.truncate(size)

    def sync(self) -> None:
        self._f.flush()

    def close(self) -> None:
        pass


class Leased:
    """A data file a reader holds: closing it (once) lets folds go ahead."""

    def __init__(self, source: BinaryIO, release: Callable[[], None]) -> None:
        self._source = source
        self._release: Callable[[], None] | None = release

    def __getattr__(self, name: str) -> Any:
        return getattr(self._source, name)

    def close(self) -> None:
        try:
            self._source.close()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()

    def __enter__(self) -> Leased:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if self._release is not None:
            self.close()
