"""An in-memory file system that remembers what was fsynced, for crash tests.

Every file keeps two versions: what reads see, and what the last fsync made durable. Names
work the same way: creating, renaming or deleting a file changes what ``listdir`` sees at once,
but survives a crash only after ``sync_dir`` (strict POSIX; real file systems often keep more,
never less). Every mutating call is one numbered *write point*; with ``crash_at=k`` the k-th
one raises ``Crash`` (after taking effect in the volatile view, so a write can be torn).

``after_crash()`` builds the file system a machine would find after the power cut: the durable
names and durable contents only, and, if ``torn``, a random prefix of the unsynced bytes most
recently written to one file (a write cut short mid-way); optionally with every directory
change kept as well.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import BinaryIO


class Crash(BaseException):
    """The simulated power cut. A BaseException, so no ``except Exception`` swallows it."""


class _Inode:
    __slots__ = ("data", "durable")

    def __init__(self, data: bytes = b"") -> None:
        self.data = bytearray(data)
        self.durable = bytes(data)


class _MemoryFile:
    def __init__(self, fs: FaultyFileSystem, inode: _Inode) -> None:
        self._fs = fs
        self._inode = inode
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "write to a closed file"
        self._inode.data += data
        self._fs.last_written = self._inode
        self._fs.point(f"write {len(data)}")

    def sync(self) -> None:
        assert not self.closed, "sync of a closed file"
        self._fs.point("fsync")
        self._inode.durable = bytes(self._inode.data)
        self._fs.syncs += 1

    def truncate(self, size: int) -> None:
        self._fs.point("truncate")
        del self._inode.data[size:]

    def pread(self, size: int, offset: int) -> bytes:
        return bytes(self._inode.data[offset : offset + size])

    def pwrite(self, data: bytes, offset: int) -> None:
        assert not self.closed, "write to a closed file"
        end = offset + len(data)
        if end > len(self._inode.data):
            self._inode.data += bytes(end - len(self._inode.data))
        self._inode.data[offset:end] = data
        self._fs.last_written = None  # not an append: no torn-prefix model for it
        self._fs.point(f"pwrite {len(data)}")

    def close(self) -> None:
        self.closed = True


class FaultyFileSystem:
    def __init__(self, *, crash_at: int | None = None) -> None:
        self.crash_at = crash_at
        self.points = 0  # write points passed so far
        self.syncs = 0
        self.names: dict[Path, _Inode] = {}
        self.durable_names: dict[Path, _Inode] = {}
        self.dirs: set[Path] = set()
        self.last_written: _Inode | None = None
        self.log: list[str] = []

    def point(self, what: str) -> None:
        self.points += 1
        self.log.append(what)
        if self.crash_at is not None and self.points >= self.crash_at:
            self.crash_at = None
            raise Crash(what)

    # -- FileSystem ---------------------------------------------------------------------------

    def makedirs(self, path: Path) -> None:
        path = Path(path)
        self.dirs.update([path, *path.parents])

    def listdir(self, path: Path) -> list[str]:
        if Path(path) not in self.dirs:
            raise FileNotFoundError(path)
        return sorted(p.name for p in self.names if p.parent == Path(path))

    def exists(self, path: Path) -> bool:
        return Path(path) in self.names or Path(path) in self.dirs

    def _inode(self, path: Path) -> _Inode:
        try:
            return self.names[Path(path)]
        except KeyError:
            raise FileNotFoundError(path) from None

    def size(self, path: Path) -> int:
        return len(self._inode(path).data)

    def read_bytes(self, path: Path) -> bytes:
        return bytes(self._inode(path).data)

    def open_read(self, path: Path) -> BinaryIO:
        return io.BytesIO(self.read_bytes(path))

    def open_append(self, path: Path) -> _MemoryFile:
        path = Path(path)
        if path not in self.names:
            return self.create(path)
        return _MemoryFile(self, self.names[path])

    def create(self, path: Path) -> _MemoryFile:
        path = Path(path)
        if path.parent not in self.dirs:
            raise FileNotFoundError(path.parent)
        self.point(f"create {path.name}")
        inode = _Inode()
        self.names[path] = inode
        return _MemoryFile(self, inode)

    def open_update(self, path: Path) -> _MemoryFile:
        return _MemoryFile(self, self._inode(path))

    def rename(self, src: Path, dst: Path) -> None:
        self.point(f"rename {Path(src).name}")
        self.names[Path(dst)] = self.names.pop(Path(src))

    def unlink(self, path: Path) -> None:
        self.point(f"unlink {Path(path).name}")
        del self.names[Path(path)]

    def sync_dir(self, path: Path) -> None:
        self.point("sync_dir")
        path = Path(path)
        self.durable_names = {p: i for p, i in self.durable_names.items() if p.parent != path}
        self.durable_names.update({p: i for p, i in self.names.items() if p.parent == path})

    # -- for tests ----------------------------------------------------------------------------

    def after_crash(
        self,
        *,
        torn: bool = False,
        rng: random.Random | None = None,
        names_too: bool = False,
    ) -> FaultyFileSystem:
        """The file system as found after a power cut at this moment.

        With ``names_too`` every create, rename and delete survives even without a directory
        sync (file systems that journal metadata eagerly), while contents still are only
        what was fsynced: a new file may come back empty."""
        survivor = FaultyFileSystem()
        survivor.dirs = set(self.dirs)
        names = self.names if names_too else self.durable_names
        for path, inode in names.items():
            content = inode.durable
            if torn and inode is self.last_written and rng is not None:
                current = bytes(inode.data)
                if current.startswith(content) and len(current) > len(content):
                    content = current[: rng.randint(len(content), len(current))]
            survivor.names[path] = _Inode(content)
        survivor.durable_names = dict(survivor.names)
        return survivor

    def copy(self) -> FaultyFileSystem:
        """A clean copy of the current (volatile) state, everything durable."""
        twin = FaultyFileSystem()
        twin.dirs = set(self.dirs)
        twin.names = {p: _Inode(bytes(i.data)) for p, i in self.names.items()}
        twin.durable_names = dict(twin.names)
        return twin
