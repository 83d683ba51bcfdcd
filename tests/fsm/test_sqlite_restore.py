"""Restoring an SQLite snapshot: the kernel copy from a file, its fallback, and snapshots cut
short or damaged refused with a clear error before the live database is touched."""

from __future__ import annotations

import io
import json
import os
import struct
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from graft.fsm import CorruptSnapshot, digest
from graft.fsm.sqlite import SQLiteStateMachine

ROWS = b"SELECT id, name, length(v) FROM t ORDER BY id"


class RestoreTestCase(SynchronousTestCase):
    def make(self) -> SQLiteStateMachine:
        data_dir = Path(self.mktemp())
        fsm = SQLiteStateMachine(data_dir=data_dir, base_dir=data_dir)
        self.addCleanup(fsm.close)
        return fsm

    def filled(self, rows: int = 2000) -> SQLiteStateMachine:
        fsm = self.make()
        fsm.apply(b"CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, v BLOB);", 1)
        fsm.apply(b"CREATE INDEX t_name ON t(name);", 2)
        fsm.apply(
            b"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %d) "
            b"INSERT INTO t (name, v) SELECT 'row' || i, zeroblob(100) FROM n;" % rows,
            3,
        )
        return fsm

    def image(self, fsm: SQLiteStateMachine) -> bytes:
        sink = io.BytesIO()
        fsm.snapshot(sink)
        return sink.getvalue()

    def in_file(self, data: bytes, prefix: bytes = b"") -> Any:
        path = Path(self.mktemp())
        path.write_bytes(prefix + data)
        f = path.open("rb")
        self.addCleanup(f.close)
        f.seek(len(prefix))
        return f


class CopyTests(RestoreTestCase):
    def test_restore_from_a_file_is_a_kernel_copy(self) -> None:
        """From a regular file the bytes go through copy_file_range, from the file's current
        position (what precedes it is not part of the snapshot), and the restored replica
        holds the rows and the digest of the one that replayed the log."""
        source = self.filled()
        image = self.image(source)
        calls: list[int] = []
        real = os.copy_file_range

        def counting(src: int, dst: int, count: int, offset_src: Any = None) -> int:
            calls.append(count)
            return real(src, dst, count, offset_src)

        self.patch(os, "copy_file_range", counting)
        target = self.make()
        target.apply(b"CREATE TABLE junk (x);", 1)
        target.restore(self.in_file(image, prefix=b"not part of it" * 100))
        self.assertGreater(len(calls), 0)
        self.assertEqual(target.query(ROWS), source.query(ROWS))
        self.assertEqual(digest(target), digest(source))

    def test_kernel_copy_refused_midway_falls_back_to_a_plain_copy(self) -> None:
        """copy_file_range failing after it copied part of the file (EXDEV, ENOSYS on some
        file systems): the copy starts over with reads and writes, and the result is whole."""
        source = self.filled()
        image = self.image(source)
        real = os.copy_file_range
        calls: list[int] = []

        def partly(src: int, dst: int, count: int, offset_src: Any = None) -> int:
            calls.append(count)
            if len(calls) > 1:
                raise OSError(18, "Invalid cross-device link (test)")
            return real(src, dst, min(count, 3 * 4096 + 100), offset_src)

        self.patch(os, "copy_file_range", partly)
        target = self.make()
        target.restore(self.in_file(image))
        self.assertEqual(len(calls), 2)
        self.assertEqual(target.query(ROWS), source.query(ROWS))
        self.assertEqual(self.image(target), image)

    def test_restore_from_a_stream_still_works(self) -> None:
        """A source without a file descriptor (a socket's stream, BytesIO) is copied in chunks."""
        source = self.filled(50)
        target = self.make()
        target.restore(io.BytesIO(self.image(source)))
        self.assertEqual(target.query(ROWS), source.query(ROWS))


class DamagedSnapshotTests(RestoreTestCase):
    def refused(self, data: bytes, expected: str) -> None:
        """restore(data) raises CorruptSnapshot whose message contains ``expected``, and the
        live database is the one from before (nothing was replaced), with no temp file."""
        fsm = self.filled(100)
        before = fsm.query(ROWS)
        for source in (io.BytesIO(data), self.in_file(data)):
            with self.assertRaises(CorruptSnapshot) as caught:
                fsm.restore(source)
            self.assertIn(expected, str(caught.exception))
            self.assertEqual(fsm.query(ROWS), before)
            names = sorted(p.name for p in fsm._path.parent.iterdir())
            self.assertEqual(names, ["fsm.sqlite3", "fsm.sqlite3-shm", "fsm.sqlite3-wal"])

    def test_cut_by_whole_pages(self) -> None:
        """A snapshot missing its last pages would open (page 1 is whole) and fail only at a
        later command; the page count in its header gives it away."""
        image = self.image(self.filled())
        self.assertGreater(len(image), 8 * 4096)
        self.refused(image[: -4 * 4096], "its header counts")

    def test_cut_inside_a_page(self) -> None:
        image = self.image(self.filled())
        self.refused(image[:-100], "not a whole number of 4096-byte pages")

    def test_cut_inside_the_header(self) -> None:
        image = self.image(self.filled())
        self.refused(image[:60], "less than its 100-byte header")

    def test_invalid_page_size(self) -> None:
        image = bytearray(self.image(self.filled()))
        image[16:18] = struct.pack(">H", 1000)
        self.refused(bytes(image), "invalid page size (1000)")

    def test_not_a_database(self) -> None:
        self.refused(b"PK\x03\x04 a zip file, say" * 50, "not an SQLite database")

    def test_header_count_is_ignored_when_sqlite_would_ignore_it(self) -> None:
        """A database written by an old SQLite (change counter and version-valid-for differ)
        has a stale page count: it is not held against the file, as SQLite does not."""
        source = self.filled()
        image = bytearray(self.image(source))
        image[92:96] = struct.pack(">I", struct.unpack(">I", image[24:28])[0] + 1)
        image[28:32] = struct.pack(">I", 10**6)
        target = self.make()
        target.restore(io.BytesIO(bytes(image)))
        self.assertEqual(target.query(ROWS), source.query(ROWS))
        count = json.loads(target.query(b"SELECT count(*) FROM t"))["rows"]
        self.assertEqual(count, [[2000]])


class CrashTests(RestoreTestCase):
    def test_start_after_a_crash_mid_restore_or_mid_snapshot(self) -> None:
        """A crash during a restore (its temp copy half written, or written and not yet moved
        into place) or during a snapshot's copy leaves temp files beside the database; the
        next start removes them and starts from an empty database, which the node then
        restores from its stored snapshot and log."""
        fsm = self.filled(100)
        image = self.image(fsm)
        directory = fsm._path.parent
        fsm.close()
        (directory / "fsm.sqlite3.restore-abc123").write_bytes(image[: len(image) // 2])
        (directory / "fsm.sqlite3.restore-def456").write_bytes(image)
        (directory / "fsm.sqlite3.snapshot-0a1b2c").write_bytes(image[:4096])
        again = SQLiteStateMachine(data_dir=directory, base_dir=directory)
        self.addCleanup(again.close)
        self.assertEqual([p.name for p in directory.iterdir()], ["fsm.sqlite3"])
        self.assertEqual(
            json.loads(again.query(b"SELECT count(*) FROM sqlite_master"))["rows"], [[0]]
        )
        again.restore(self.in_file(image))
        self.assertEqual(digest(again), digest(self.filled(100)))
