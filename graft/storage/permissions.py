"""Who may read a data dir: its owner only.

A data dir holds the whole replicated state (the FSM's database, every command in the log), so
the directory is 0700 and every file in it 0600. The storage layer creates its own files with
those modes whatever the umask (``graft.storage.files``); files that other code creates there
(SQLite's database and its ``-wal``/``-shm``, snapshot files on their way in) get them from the
node process's umask, which ``set_private_umask`` sets at start. A data dir written by an older
version, or with a looser umask, is tightened when the node starts, and each change is logged.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from graft.storage.files import DATA_DIR_MODE, FILE_MODE

# Masks the group and other bits of every file and directory the process creates.
PRIVATE_UMASK = 0o077


def tighten_data_dir(data_dir: Path) -> list[str]:
    """Make ``data_dir`` 0700 and the files and directories in it 0600 and 0700 where their
    modes allow more; returns one line per change, for the operator's log.

    Only permissions beyond the private mode are removed (a file at 0400 stays 0400). Symbolic
    links are left alone: their target is not the data dir's to change.
    """
    changes: list[str] = []
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        return changes
    changes.extend(_tighten(data_dir, DATA_DIR_MODE, "data dir"))
    with os.scandir(data_dir) as listing:
        for item in listing:
            try:
                mode = item.stat(follow_symlinks=False).st_mode
            except FileNotFoundError:
                continue  # removed meanwhile (a temp file)
            if stat.S_ISDIR(mode):
                changes.extend(_tighten(Path(item.path), DATA_DIR_MODE, "directory"))
            elif stat.S_ISREG(mode):
                changes.extend(_tighten(Path(item.path), FILE_MODE, "file"))
    return changes


def _tighten(path: Path, allowed: int, what: str) -> list[str]:
    try:
        mode = stat.S_IMODE(path.lstat().st_mode)
    except FileNotFoundError:
        return []
    if mode & ~allowed == 0:
        return []
    tightened = mode & allowed
    os.chmod(path, tightened)
    return [
        f"{what} {path} was mode {mode:04o} (readable by other local users): now {tightened:04o}"
    ]


def file_mode(path: Path) -> int:
    """The permission bits of ``path`` (for tests and checks)."""
    return stat.S_IMODE(Path(path).stat().st_mode)


def set_private_umask() -> int:
    """Make every file this process creates from now on private; returns the old umask."""
    return os.umask(PRIVATE_UMASK)
