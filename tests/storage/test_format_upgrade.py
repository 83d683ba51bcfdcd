"""A data dir written in segment format 1 (earlier builds) opens, reads and takes writes;
new records always go into format 2 segments, and damage to a format 1 segment is refused
as clearly as in format 2."""

from __future__ import annotations

import random
import zlib
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from graft.raft.types import Entry, HardState
from graft.storage import CorruptionError, check_data_dir, dump_log
from graft.storage.files import FileSystem, OSFileSystem, write_atomic
from graft.storage.records import (
    FORMAT_VERSION,
    RECORD_HEADER_SIZE,
    SEGMENT_HEADER_SIZE,
    scan_segment,
)
from graft.storage.state_files import read_identity, write_hard_state
from tests.storage.faultfs import Crash, FaultyFileSystem
from tests.storage.format1 import write_format1_segments
from tests.support.storage import open_log

OLD = 60  # entries written in format 1
PER_SEGMENT = 25


def old_entries() -> list[Entry]:
    return [Entry(index=i, term=1 + i // 40, data=b"old %03d" % i * 3) for i in range(1, OLD + 1)]


def make_format1_dir(data_dir: Path, files: FileSystem) -> list[Path]:
    """A data dir as an earlier build left it: identity, hard state, format 1 segments."""
    files.makedirs(data_dir)
    # The identity file exactly as earlier builds wrote it (data dir format 1).
    body = b'{"cluster":"test","format":1,"node_id":"n1"}'
    identity = b"graft-identity %08x\n" % zlib.crc32(body) + body + b"\n"
    write_atomic(files, data_dir / "identity", identity)
    write_hard_state(files, data_dir, HardState(term=2, vote="n1", commit=OLD - 5))
    return write_format1_segments(files, data_dir, old_entries(), PER_SEGMENT)


def version_of(files: FileSystem, path: Path) -> int:
    return scan_segment(files.read_bytes(path)).version


class Format1Tests(SynchronousTestCase):
    def setUp(self) -> None:
        self.files = OSFileSystem()
        self.dir = Path(self.mktemp())
        self.old = make_format1_dir(self.dir, self.files)

    def test_format1_segments_open_and_read(self) -> None:
        """Every format 1 record is read back; check and dump see the same log."""
        log = open_log(self.files, self.dir)
        self.assertEqual(log.entries(1, OLD + 1), old_entries())
        self.assertEqual(log.hard_state.commit, OLD - 5)
        identity = read_identity(self.files, self.dir)
        self.assertEqual((identity.node_id, identity.format) if identity else None, ("n1", 1))
        report = check_data_dir(self.dir)
        self.assertTrue(report.ok, report.lines)
        self.assertIn(f"{self.old[0].name}: entries 1..25, ", "\n".join(report.lines))
        self.assertIn("format 1", "\n".join(report.lines))
        self.assertEqual(list(dump_log(self.dir, 20, 30)), old_entries()[19:30])

    def test_appends_start_a_format2_segment(self) -> None:
        """Appending after a format 1 segment leaves that file as it was and starts a new
        segment in the current format; everything survives a reopen."""
        before = {p: p.read_bytes() for p in self.old}
        log = open_log(self.files, self.dir)
        new = [Entry(index=i, term=3, data=b"new %03d" % i) for i in range(OLD + 1, OLD + 31)]
        log.append_sync(new)
        log.close()
        self.assertEqual({p: p.read_bytes() for p in self.old}, before)
        segments = sorted(p for p in self.dir.iterdir() if p.suffix == ".seg")
        self.assertEqual(segments[: len(self.old)], self.old)
        self.assertEqual([version_of(self.files, p) for p in segments[len(self.old) :]], [2])
        self.assertEqual(FORMAT_VERSION, 2)
        again = open_log(self.files, self.dir)
        self.assertEqual(again.entries(1, OLD + 31), old_entries() + new)

    def test_truncation_inside_a_format1_segment(self) -> None:
        """A conflicting suffix that starts inside the last format 1 segment is cut at the
        right record, and the replacement goes into a format 2 segment."""
        log = open_log(self.files, self.dir)
        cut_at = OLD - 7
        new = [Entry(index=i, term=4, data=b"x%d" % i) for i in range(cut_at, cut_at + 12)]
        log.append_sync(new)
        log.close()
        last_old = self.old[-1]
        kept = cut_at - (len(self.old) - 1) * PER_SEGMENT - 1
        self.assertEqual(len(scan_segment(last_old.read_bytes()).entries), kept)
        again = open_log(self.files, self.dir)
        self.assertEqual(again.entries(1, cut_at + 12), old_entries()[: cut_at - 1] + new)

    def test_flipped_data_byte_in_a_format1_segment(self) -> None:
        """A flipped data byte in a middle format 1 segment is refused at that record."""
        path = self.old[1]
        raw = bytearray(path.read_bytes())
        raw[SEGMENT_HEADER_SIZE + RECORD_HEADER_SIZE + 2] ^= 0x10
        path.write_bytes(bytes(raw))
        with self.assertRaises(CorruptionError) as caught:
            open_log(self.files, self.dir)
        self.assertEqual((caught.exception.path, caught.exception.offset), (path, 24))

    def test_flipped_length_in_the_last_format1_segment(self) -> None:
        """A damaged length field in the last format 1 segment is corruption, not a torn
        tail: the header checksum catches it."""
        path = self.old[-1]
        raw = bytearray(path.read_bytes())
        raw[SEGMENT_HEADER_SIZE + 1] ^= 0x01
        path.write_bytes(bytes(raw))
        with self.assertRaises(CorruptionError) as caught:
            open_log(self.files, self.dir)
        self.assertEqual((caught.exception.path, caught.exception.offset), (path, 24))


class Format1CrashTests(SynchronousTestCase):
    def test_crash_at_every_write_point_after_format1(self) -> None:
        """Crashing at every write point while a log that starts in format 1 rolls into
        format 2 (and replaces a suffix that reaches back into format 1) recovers every
        acknowledged entry, and nothing that was never written."""
        data_dir = Path("/data/n1")
        base = FaultyFileSystem()
        base.makedirs(data_dir)
        make_format1_dir(data_dir, base)
        batches = [
            [Entry(index=i, term=3, data=b"a%d" % i * 9) for i in range(OLD + 1, OLD + 21)],
            [Entry(index=i, term=4, data=b"b%d" % i * 7) for i in range(OLD - 3, OLD + 60)],
            [Entry(index=i, term=4, data=b"c%d" % i) for i in range(OLD + 60, OLD + 70)],
        ]
        logs = [old_entries()]
        for batch in batches:
            logs.append(logs[-1][: batch[0].index - 1] + batch)
        rng = random.Random(7)
        point = 0
        while True:
            point += 1
            files = base.copy()
            files.crash_at = files.points + point
            acked = 0
            try:
                log = open_log(files, data_dir)
                for batch in batches:
                    log.append_sync(batch)
                    acked += 1
            except Crash:
                pass
            else:
                self.assertEqual(acked, len(batches))
                break
            for torn in (False, True):
                survivor = files.after_crash(torn=torn, rng=rng)
                found = open_log(survivor, data_dir)
                got = found.entries(found.first_index(), found.last_index() + 1)
                where = f"crash at point {point} (acked {acked}), torn={torn}"
                self.assertTrue(
                    any(got == log[: len(got)] for log in logs[acked : acked + 2]), where
                )
                # Every acknowledged entry that the write in flight did not come to replace.
                must_keep = len(logs[acked])
                if acked < len(batches):
                    must_keep = min(must_keep, batches[acked][0].index - 1)
                self.assertGreaterEqual(len(got), must_keep, where)
        self.assertGreater(point, 10)
