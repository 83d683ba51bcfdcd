"""Entries of every kind the log has held, stamped or not, read back as written; a record of a
kind from a newer Graft is refused with the reason."""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from graft.driver.stamps import Stamper
from graft.raft.types import Entry, EntryKind, SnapshotMeta
from graft.stamp import Stamp, decode_stamped, encode_stamped
from graft.storage.files import OSFileSystem
from graft.storage.records import encode_segment_header, record_header, scan_segment
from tests.support.storage import open_log


class StampedLogTests(SynchronousTestCase):
    def test_a_log_without_stamps_opens_and_takes_stamped_entries(self) -> None:
        """A log written before stamps (NORMAL commands only) opens with no stamp in it; the
        stamped entries appended after them read back with their stamps, after a reopen."""
        files, data_dir = OSFileSystem(), Path(self.mktemp())
        old = [Entry(index=i, term=1, data=b"INSERT %d" % i) for i in range(1, 41)]
        log = open_log(files, data_dir)
        log.append_sync(old)
        log.close()
        log = open_log(files, data_dir)
        stamper = Stamper(wall_ns=lambda: 0, seed=lambda: 0)
        stamper.saw_log(log)
        self.assertEqual(stamper.floor, 0)
        new = [
            Entry(index=41, term=2, kind=EntryKind.NOOP),
            Entry(index=42, term=2, kind=EntryKind.STAMPED, data=encode_stamped(Stamp(7, 8), b"c")),
        ]
        log.append_sync(new)
        log.close()
        log = open_log(files, data_dir)
        self.addCleanup(log.close)
        self.assertEqual(log.entries(1, 43), old + new)
        self.assertEqual(decode_stamped(log.entries(42, 43)[0].data), (Stamp(7, 8), b"c"))
        stamper.saw_log(log)
        self.assertEqual(stamper.floor, 7)

    def test_an_unknown_kind_is_refused_naming_a_newer_graft(self) -> None:
        """A record of a kind this build does not know stops the scan, saying why."""
        segment = encode_segment_header(1) + record_header(1, 1, 9, b"x") + b"x"
        scan = scan_segment(segment, expected_first=1)
        self.assertEqual(scan.entries, [])
        self.assertIn("unknown kind 9 (a newer Graft's entry format?)", scan.problem or "")

    def test_the_snapshot_keeps_the_stamp_floor_for_a_compacted_log(self) -> None:
        """A snapshot's stamp floor survives a reopen; with the stamped entries compacted
        away, a node reads its floor from the snapshot."""
        files, data_dir = OSFileSystem(), Path(self.mktemp())
        log = open_log(files, data_dir)
        stamped = encode_stamped(Stamp(7_000, 1), b"c")
        log.append_sync(
            [Entry(index=i, term=1, kind=EntryKind.STAMPED, data=stamped) for i in range(1, 51)]
        )
        log.append_sync([Entry(index=i, term=2, kind=EntryKind.NOOP) for i in range(51, 302)])
        log.save_snapshot(
            SnapshotMeta(index=300, term=1, stamp_floor_ns=7_000), "kv", lambda s: None
        )
        compacted = log.compact(300)
        log.write_pending()
        self.successResultOf(compacted)
        log.close()
        log = open_log(files, data_dir)
        self.addCleanup(log.close)
        self.assertEqual(log.snapshot_meta().stamp_floor_ns, 7_000)
        self.assertFalse(
            any(
                e.kind is EntryKind.STAMPED
                for e in log.entries(log.first_index(), log.last_index() + 1)
            )
        )
        stamper = Stamper(wall_ns=lambda: 0, seed=lambda: 0)
        stamper.saw_log(log)
        self.assertEqual(stamper.floor, 7_000)
