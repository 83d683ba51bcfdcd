"""Damaged data dirs: each is refused with one line naming the file, the offset and the remedy,
never opened as a silently shorter log; the refusal leaves the files as they were."""

from __future__ import annotations

import os
from pathlib import Path

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from graft.raft.types import Entry, HardState, Membership, SnapshotMeta
from graft.storage import CorruptionError, DurableLog, check_data_dir
from graft.storage.records import RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE

RECORDS = 200
COMMIT = 190


class CorruptionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        log = self.open()
        log.append_sync([Entry(index=i, term=1, data=b"%05d" % i * 20) for i in range(1, 201)])
        log.set_hard_state_sync(HardState(term=1, vote="n1", commit=COMMIT))
        self.successResultOf(log.close())
        self.segments = sorted(p for p in self.dir.iterdir() if p.suffix == ".seg")
        self.assertGreaterEqual(len(self.segments), 4)

    def open(self) -> DurableLog:
        return DurableLog.open(
            self.dir,
            node_id="n1",
            cluster="test",
            segment_bytes=4096,
            reactor=Clock(),
            threaded=False,
        )

    def contents(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(self.dir.iterdir())}

    def assertRefused(self, path: Path, offset: int | None = None) -> None:
        before = self.contents()
        with self.assertRaises(CorruptionError) as caught:
            self.open()
        error = caught.exception
        message = str(error)
        self.assertNotIn("\n", message)
        self.assertIn(str(path), message)
        self.assertIn("restore this node from a peer", message)
        self.assertEqual(error.path, path)
        if offset is not None:
            self.assertEqual(error.offset, offset)
            self.assertIn(f"offset {offset}", message)
        self.assertEqual(self.contents(), before, "a refused open must not change any file")
        self.assertFalse(check_data_dir(self.dir).ok)

    def flip(self, path: Path, offset: int) -> None:
        raw = bytearray(path.read_bytes())
        raw[offset] ^= 0x40
        path.write_bytes(bytes(raw))

    def test_flipped_data_byte_mid_segment(self) -> None:
        """A flipped byte inside a record's data in a middle segment is refused at that
        record's offset."""
        path = self.segments[1]
        self.flip(path, SEGMENT_HEADER_SIZE + RECORD_HEADER_SIZE + 5)
        self.assertRefused(path, SEGMENT_HEADER_SIZE)

    def test_flipped_byte_mid_last_segment(self) -> None:
        """A flipped byte in a record of the last segment that is not the final record is
        corruption, not a torn write."""
        path = self.segments[-1]
        self.flip(path, SEGMENT_HEADER_SIZE + RECORD_HEADER_SIZE + 3)
        self.assertRefused(path, SEGMENT_HEADER_SIZE)

    def test_flipped_length_field(self) -> None:
        """A damaged length field (which would make the record look cut short) is caught by the
        header checksum and refused, not cut off as a torn tail."""
        path = self.segments[-1]
        self.flip(path, SEGMENT_HEADER_SIZE + 2)
        self.assertRefused(path, SEGMENT_HEADER_SIZE)

    def test_truncated_mid_segment(self) -> None:
        """A middle segment cut in half is refused (the next segment no longer follows on)."""
        path = self.segments[1]
        with open(path, "r+b") as handle:
            handle.truncate(os.path.getsize(path) // 2)
        self.assertRefused(path)

    def test_last_segment_cut_below_commit(self) -> None:
        """The last segment cut below the committed index is refused, though it looks torn."""
        path = self.segments[-1]
        with open(path, "r+b") as handle:
            handle.truncate(SEGMENT_HEADER_SIZE + 10)
        self.assertRefused(self.dir / "hardstate")

    def test_deleted_middle_segment(self) -> None:
        """A missing segment in the middle is refused, naming the one after the gap."""
        self.segments[2].unlink()
        self.assertRefused(self.segments[3], 0)

    def test_deleted_first_segment(self) -> None:
        """A log that no longer starts at index 1 without a snapshot is refused."""
        self.segments[0].unlink()
        self.assertRefused(self.segments[1], 0)

    def test_deleted_last_segment(self) -> None:
        """Losing the newest segment (holding committed entries) is refused."""
        self.segments[-1].unlink()
        self.assertRefused(self.dir / "hardstate")

    def test_corrupted_hard_state(self) -> None:
        """A flipped byte in the hard state file is refused by its checksum."""
        path = self.dir / "hardstate"
        self.flip(path, len(path.read_bytes()) - 5)
        self.assertRefused(path)

    def test_corrupted_identity(self) -> None:
        """A damaged identity file is refused rather than rewritten."""
        path = self.dir / "identity"
        self.flip(path, len(path.read_bytes()) - 5)
        self.assertRefused(path)

    def test_corrupted_snapshot_manifest(self) -> None:
        """A flipped byte in the snapshot manifest is refused by its checksum."""
        log = self.open()
        meta = SnapshotMeta(index=100, term=1, membership=Membership(voters=frozenset({"n1"})))
        log.save_snapshot(meta, "kv", lambda sink: sink.write(b"state" * 1000))
        self.successResultOf(log.close())
        (manifest,) = self.dir.glob("*.manifest")
        self.flip(manifest, len(manifest.read_bytes()) - 10)
        self.assertRefused(manifest)

    def test_corrupted_snapshot_data(self) -> None:
        """Snapshot data that no longer matches its manifest's checksum is refused when read."""
        log = self.open()
        meta = SnapshotMeta(index=100, term=1, membership=Membership(voters=frozenset({"n1"})))
        log.save_snapshot(meta, "kv", lambda sink: sink.write(b"state" * 1000))
        self.successResultOf(log.close())
        (data,) = self.dir.glob("*.data")
        self.flip(data, 1234)
        log = self.open()
        with self.assertRaises(CorruptionError) as caught:
            log.open_snapshot()
        self.assertIn(str(data), str(caught.exception))
        self.assertFalse(check_data_dir(self.dir).ok)

    def test_torn_final_record_is_cut_and_the_log_goes_on(self) -> None:
        """A final record cut short (above the commit index) is the one allowed repair: the log
        opens without it and accepts new entries there."""
        path = self.segments[-1]
        with open(path, "r+b") as handle:
            handle.truncate(os.path.getsize(path) - 7)
        self.assertTrue(check_data_dir(self.dir).ok)
        log = self.open()
        self.assertEqual(log.last_index(), RECORDS - 1)
        self.assertTrue(any("torn" in note for note in log.notes))
        log.append_sync([Entry(index=RECORDS, term=2, data=b"new")])
        self.successResultOf(log.close())
        self.assertEqual(self.open().entries(RECORDS, RECORDS + 1)[0].data, b"new")

    def test_zero_filled_tail_is_cut(self) -> None:
        """Zeros after the last record (a crash after the file grew but before its data landed)
        are a torn tail: cut, not refused."""
        path = self.segments[-1]
        with open(path, "ab") as handle:
            handle.write(bytes(300))
        log = self.open()
        self.assertEqual(log.last_index(), RECORDS)
        self.successResultOf(log.close())
        self.assertFalse(path.read_bytes().endswith(bytes(300)))
