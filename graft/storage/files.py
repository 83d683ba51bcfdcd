"""The file layer: the few file operations the storage needs, behind a protocol.

The durable log does all its I/O through a ``FileSystem`` so that crash tests can swap in an
in-memory one that records writes and fsyncs and throws away whatever was not synced. The real
one below maps each call onto one or two system calls and nothing else: no buffering, so what
the log writes is what reaches the kernel.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Protocol

# A data dir holds the whole replicated state (the database, the log): only the node's own
# user may read it. The modes are given explicitly, so they hold whatever the umask is.
DATA_DIR_MODE = 0o700
FILE_MODE = 0o600


class WritableFile(Protocol):
    def write(self, data: bytes) -> None:
        """Write all of ``data`` at the end of the file."""
        ...

    def sync(self) -> None:
        """Make everything written so far durable (fsync)."""
        ...

    def truncate(self, size: int) -> None:
        """Cut the file to ``size`` bytes; later writes go after that."""
        ...

    def close(self) -> None: ...


class UpdatableFile(WritableFile, Protocol):
    """A file written in place (the snapshot store folds a delta into its full copy)."""

    def pread(self, size: int, offset: int) -> bytes:
        """Up to ``size`` bytes from ``offset``."""
        ...

    def pwrite(self, data: bytes, offset: int) -> None:
        """Write all of ``data`` at ``offset``, extending the file if need be."""
        ...


class FileSystem(Protocol):
    def makedirs(self, path: Path) -> None: ...

    def listdir(self, path: Path) -> list[str]: ...

    def exists(self, path: Path) -> bool: ...

    def size(self, path: Path) -> int: ...

    def read_bytes(self, path: Path) -> bytes: ...

    def open_read(self, path: Path) -> BinaryIO: ...

    def open_append(self, path: Path) -> WritableFile:
        """Open (creating if missing) for appending."""
        ...

    def create(self, path: Path) -> WritableFile:
        """Create an empty file, replacing any file of that name."""
        ...

    def open_update(self, path: Path) -> UpdatableFile:
        """Open an existing file for reading and writing in place."""
        ...

    def rename(self, src: Path, dst: Path) -> None:
        """Atomically replace ``dst`` by ``src`` (durable once the directory is synced)."""
        ...

    def unlink(self, path: Path) -> None: ...

    def sync_dir(self, path: Path) -> None:
        """Make creations, renames and deletions in the directory durable."""
        ...


class _OSFile:
    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def sync(self) -> None:
        os.fsync(self._fd)

    def truncate(self, size: int) -> None:
        os.ftruncate(self._fd, size)

    def pread(self, size: int, offset: int) -> bytes:
        return os.pread(self._fd, size, offset)

    def pwrite(self, data: bytes, offset: int) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(self._fd, view, offset)
            view, offset = view[written:], offset + written

    def close(self) -> None:
        os.close(self._fd)


class OSFileSystem:
    """The real file system."""

    def makedirs(self, path: Path) -> None:
        path.mkdir(mode=DATA_DIR_MODE, parents=True, exist_ok=True)

    def listdir(self, path: Path) -> list[str]:
        return os.listdir(path)

    def exists(self, path: Path) -> bool:
        return path.exists()

    def size(self, path: Path) -> int:
        return path.stat().st_size

    def read_bytes(self, path: Path) -> bytes:
        return path.read_bytes()

    def open_read(self, path: Path) -> BinaryIO:
        return open(path, "rb")  # the caller closes it

    def open_append(self, path: Path) -> WritableFile:
        # O_APPEND: after a truncate the next write lands at the new end.
        return _OSFile(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE))

    def create(self, path: Path) -> WritableFile:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND
        return _OSFile(os.open(path, flags, FILE_MODE))

    def open_update(self, path: Path) -> UpdatableFile:
        return _OSFile(os.open(path, os.O_RDWR))

    def rename(self, src: Path, dst: Path) -> None:
        os.replace(src, dst)

    def unlink(self, path: Path) -> None:
        os.unlink(path)

    def sync_dir(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(files: FileSystem, path: Path, data: bytes, *, sync_dir: bool = True) -> None:
    """Replace ``path`` by ``data`` so that a crash leaves the old or the new content, whole.

    Write a temporary file, fsync it, rename it over ``path``, then fsync the directory so the
    rename itself survives a crash. Without ``sync_dir`` a crash may bring back the old file,
    never a partial one.
    """
    tmp = path.with_name(path.name + ".tmp")
    handle = files.create(tmp)
    try:
        handle.write(data)
        handle.sync()
    finally:
        handle.close()
    files.rename(tmp, path)
    if sync_dir:
        files.sync_dir(path.parent)
