"""The durable log the storage tests open: on a file system of their choosing (usually
tests.storage.faultfs's, which injects crashes), single-threaded, on a Clock."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.task import Clock

from graft.storage import DurableLog
from graft.storage.files import FileSystem

DATA_DIR = Path("/data/n1")
# Small segments, so a few hundred entries already span several files.
SEGMENT_BYTES = 4096


def open_log(
    files: FileSystem, data_dir: Path = DATA_DIR, *, commit_interval: float = 0.0
) -> DurableLog:
    """Open (or create) node n1's log in ``data_dir`` on ``files``; writes run in the calling
    thread, and by default every commit index is written (no ``commit_interval`` batching)."""
    return DurableLog.open(
        data_dir,
        node_id="n1",
        cluster="test",
        segment_bytes=SEGMENT_BYTES,
        files=files,
        reactor=Clock(),
        threaded=False,
        commit_interval=commit_interval,
    )
