"""Opening a data dir after a crash, at the boundaries of the recovery rules: written to kill
the mutants `make mutate` found alive in recovery and segment replay (docs/testing.md,
"Mutation testing"). Only DurableLog.open / append / save_snapshot / close and the files on
disk are used."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from graft.raft.errors import LogCompacted
from graft.raft.types import Entry, HardState, Membership, SnapshotMeta
from graft.storage import CorruptionError, DurableLog
from graft.storage.records import (
    SEGMENT_HEADER_SIZE,
    encode_record,
    encode_records,
    encode_segment_header,
    parse_segment_name,
    segment_name,
)
from graft.storage.state_files import HARD_STATE_FILE
from tests.storage.faultfs import FaultyFileSystem

DATA = Path("/data/n1")
MEMBERS = Membership(voters=frozenset({"n1", "n2", "n3"}))


def entries(first: int, last: int, term: int = 1) -> list[Entry]:
    return [Entry(index=i, term=term, data=b"%06d" % i * 10) for i in range(first, last + 1)]


class RecoveryTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.files = FaultyFileSystem()

    def open(self) -> DurableLog:
        return DurableLog.open(
            DATA,
            node_id="n1",
            cluster="test",
            files=self.files,
            reactor=Clock(),
            threaded=False,
            segment_bytes=4096,
        )

    def write(self, log_entries: list[Entry], *, commit: int = 0, term: int = 1) -> None:
        log = self.open()
        log.append_sync(log_entries)
        log.set_hard_state_sync(HardState(term=term, commit=commit))
        self.successResultOf(log.close())

    def leave_snapshot(self, index: int, term: int) -> None:
        """A snapshot file at (index, term), the log left as it is: what a crash between an
        install's snapshot file and its log discard leaves."""
        log = self.open()
        log.save_snapshot(SnapshotMeta(index=index, term=term, membership=MEMBERS), "kv", _fill)
        self.successResultOf(log.close())

    def reopen(self, log: DurableLog) -> DurableLog:
        self.successResultOf(log.close())
        return self.open()


def _fill(sink: object) -> None:
    sink.write(b"state")  # type: ignore[attr-defined]


class SnapshotAndLogTests(RecoveryTestCase):
    def assertDiscarded(self, log: DurableLog, floor: int, term: int) -> None:
        self.assertEqual((log.first_index(), log.last_index()), (floor + 1, floor))
        self.assertEqual(log.term(floor), term)
        self.assertTrue(any("interrupted snapshot install" in n for n in log.notes))

    def test_log_that_ends_at_the_snapshot_is_kept(self) -> None:
        """A log whose last entry is the snapshot's (same index and term) is consistent."""
        self.write(entries(1, 150))
        self.leave_snapshot(150, 1)
        log = self.open()
        self.assertEqual((log.first_index(), log.last_index()), (1, 150))
        self.assertEqual(log.entries(150, 151), entries(150, 150))

    def test_log_that_ends_at_the_snapshot_with_another_term_is_discarded(self) -> None:
        self.write(entries(1, 150))
        self.leave_snapshot(150, 2)
        self.assertDiscarded(self.open(), 150, 2)

    def test_terms_past_256_are_compared_by_value(self) -> None:
        """A log of term 300 that holds the snapshot's last entry (term 300) is kept: terms
        read back from disk are equal to the snapshot's, though not the same int objects."""
        self.write(entries(1, 200, term=300), term=300)
        self.leave_snapshot(150, 300)
        log = self.open()
        self.assertEqual((log.first_index(), log.last_index()), (1, 200))

    def test_log_that_ends_just_before_the_snapshot_is_discarded(self) -> None:
        self.write(entries(1, 149))
        self.leave_snapshot(150, 1)
        self.assertDiscarded(self.open(), 150, 1)

    def test_log_with_an_older_term_at_the_snapshot_is_discarded(self) -> None:
        self.write(entries(1, 200))
        self.leave_snapshot(150, 2)
        self.assertDiscarded(self.open(), 150, 2)

    def test_log_with_a_newer_term_at_the_snapshot_is_discarded(self) -> None:
        self.write(entries(1, 200, term=3))
        self.leave_snapshot(150, 2)
        self.assertDiscarded(self.open(), 150, 2)

    def test_discard_is_made_on_disk_and_the_log_goes_on_after_the_snapshot(self) -> None:
        self.write(entries(1, 200))
        self.leave_snapshot(150, 2)
        log = self.open()
        log = self.reopen(log)  # nothing of the old log comes back
        self.assertEqual((log.first_index(), log.last_index()), (151, 150))
        with self.assertRaises(LogCompacted):
            log.entries(150, 151)
        log.append_sync(entries(151, 155, term=2))
        log = self.reopen(log)
        self.assertEqual(log.entries(151, 156), entries(151, 155, term=2))

    def install(self, log: DurableLog, meta: SnapshotMeta) -> None:
        received = DATA / "received.tmp"
        handle = self.files.create(received)
        handle.write(b"state")
        handle.close()
        installed = log.install_snapshot(meta, received, "kv")
        log.write_pending()
        self.successResultOf(installed)

    def test_log_whose_first_entry_conflicts_with_the_snapshot_is_discarded(self) -> None:
        """The snapshot's index is the log's first entry (a log that starts after an earlier
        snapshot), with another term."""
        log = self.open()
        self.install(log, SnapshotMeta(index=100, term=1, membership=MEMBERS))
        log.append_sync(entries(101, 200))
        self.successResultOf(log.close())
        self.leave_snapshot(101, 2)
        self.assertDiscarded(self.open(), 101, 2)

    def test_log_that_starts_past_the_snapshot_is_refused(self) -> None:
        """Entries between the snapshot and the log's first segment are missing: refused,
        naming the first segment left, at its start."""
        log = self.open()
        self.install(log, SnapshotMeta(index=100, term=1, membership=MEMBERS))
        log.append_sync(entries(101, 400))
        self.successResultOf(log.close())
        segments = sorted(n for n in self.files.listdir(DATA) if parse_segment_name(n))
        self.assertGreaterEqual(len(segments), 3)
        self.files.unlink(DATA / segments[0])
        with self.assertRaises(CorruptionError) as caught:
            self.open()
        self.assertEqual(caught.exception.path, DATA / segments[1])
        self.assertEqual(caught.exception.offset, 0)

    def test_gap_of_one_entry_after_the_snapshot_is_refused(self) -> None:
        """The snapshot ends two before the log's first entry: the one in between is lost."""
        log = self.open()
        self.install(log, SnapshotMeta(index=100, term=1, membership=MEMBERS))
        log.append_sync(entries(101, 400))
        self.successResultOf(log.close())
        segments = sorted(n for n in self.files.listdir(DATA) if parse_segment_name(n))
        second = parse_segment_name(segments[1])
        assert second is not None
        self.leave_snapshot(second - 2, 1)
        self.files.unlink(DATA / segments[0])
        with self.assertRaises(CorruptionError) as caught:
            self.open()
        self.assertEqual(caught.exception.path, DATA / segments[1])


class FirstIndexTests(RecoveryTestCase):
    def test_log_starting_below_index_1_without_a_snapshot_is_refused(self) -> None:
        """Index 0 holds no entry in Raft: a segment that starts there is not a log."""
        self.successResultOf(self.open().close())
        handle = self.files.create(DATA / segment_name(0))
        handle.write(encode_segment_header(0) + encode_record(Entry(index=0, term=1, data=b"x")))
        handle.sync()
        handle.close()
        with self.assertRaises(CorruptionError):
            self.open()


class CommitIndexTests(RecoveryTestCase):
    def test_commit_one_past_the_log_is_refused(self) -> None:
        """A commit index one past the last entry on disk: the tail that held it is lost."""
        self.write(entries(1, 200), commit=201)
        with self.assertRaises(CorruptionError) as caught:
            self.open()
        self.assertEqual(caught.exception.path, DATA / HARD_STATE_FILE)
        self.assertEqual(caught.exception.offset, 0)

    def test_commit_at_the_last_entry_opens(self) -> None:
        self.write(entries(1, 200), commit=200)
        self.assertEqual(self.open().hard_state.commit, 200)


class SegmentReplayTests(RecoveryTestCase):
    def segments(self) -> list[str]:
        return sorted(n for n in self.files.listdir(DATA) if parse_segment_name(n))

    def test_leftover_below_a_gap_covered_by_the_snapshot_is_deleted(self) -> None:
        """An interrupted compaction may leave an old segment, then a gap, then the log: when
        the snapshot covers the old segment and the gap, the old one is deleted, not refused."""
        self.write(entries(1, 400))
        names = self.segments()
        self.assertGreaterEqual(len(names), 5)
        third = parse_segment_name(names[2])
        fourth = parse_segment_name(names[3])
        assert third is not None and fourth is not None
        # The snapshot ends inside the fourth segment: the first ends well below it, and the
        # third starts well below it too.
        self.leave_snapshot(fourth + 1, 1)
        self.files.unlink(DATA / names[1])
        log = self.open()
        self.assertTrue(any("covered by the snapshot" in n for n in log.notes))
        self.assertEqual(log.first_index(), third)
        self.assertNotIn(names[0], self.files.listdir(DATA))

    def test_gap_that_ends_right_after_the_snapshot_is_covered(self) -> None:
        """The same when the log after the gap starts right after the snapshot's index."""
        self.write(entries(1, 400))
        names = self.segments()
        third = parse_segment_name(names[2])
        assert third is not None
        self.leave_snapshot(third - 1, 1)
        self.files.unlink(DATA / names[1])
        log = self.open()
        self.assertEqual(log.first_index(), third)
        self.assertNotIn(names[0], self.files.listdir(DATA))

    def test_torn_tail_is_cut_in_a_log_of_300_segments(self) -> None:
        """Past 256 segments (where CPython stops sharing int objects) the last segment is
        still recognised as the last: its torn record is cut, not refused."""
        big = [Entry(index=i, term=1, data=b"%06d" % i * 600) for i in range(1, 301)]
        self.write(big)
        names = self.segments()
        self.assertGreater(len(names), 257)
        last = DATA / names[-1]
        raw = self.files.read_bytes(last)
        handle = self.files.create(last)
        handle.write(raw[:-7])
        handle.sync()
        handle.close()
        log = self.open()
        self.assertTrue(any("torn" in n for n in log.notes))
        self.assertEqual(log.last_index(), 299)

    def cut_last_segment(self, size: int) -> Path:
        last = DATA / self.segments()[-1]
        raw = self.files.read_bytes(last)
        handle = self.files.create(last)
        handle.write(raw[:size])
        handle.sync()
        handle.close()
        return last

    def test_last_segment_with_an_incomplete_header_is_deleted(self) -> None:
        self.write(entries(1, 200))
        before = self.segments()
        first_of_last = parse_segment_name(before[-1])
        assert first_of_last is not None
        last = self.cut_last_segment(SEGMENT_HEADER_SIZE - 3)
        log = self.open()
        self.assertTrue(any("header was never completed" in n for n in log.notes))
        self.assertNotIn(last.name, self.files.listdir(DATA))
        self.assertEqual(log.last_index(), first_of_last - 1)
        log.append_sync(entries(first_of_last, first_of_last + 2))
        log = self.reopen(log)
        self.assertEqual(log.last_index(), first_of_last + 2)

    def test_last_segment_whose_first_record_is_torn_is_cut_to_its_header(self) -> None:
        self.write(entries(1, 200))
        first_of_last = parse_segment_name(self.segments()[-1])
        assert first_of_last is not None
        last = self.cut_last_segment(SEGMENT_HEADER_SIZE + 7)
        log = self.open()
        self.assertTrue(any("cut a torn final record" in n for n in log.notes))
        self.assertEqual(len(self.files.read_bytes(last)), SEGMENT_HEADER_SIZE)
        self.assertEqual(log.last_index(), first_of_last - 1)

    def test_term_going_down_across_a_segment_boundary_is_refused(self) -> None:
        """The first term of a segment is checked against the last term of the one before,
        not its first."""
        self.write([Entry(index=i, term=i, data=b"%06d" % i * 10) for i in range(1, 201)])
        names = self.segments()
        first_a, first_b = parse_segment_name(names[0]), parse_segment_name(names[1])
        last_b = parse_segment_name(names[2])
        assert first_a is not None and first_b is not None and last_b is not None
        # The second segment rewritten with the first segment's first term throughout: not
        # below that, but below the first segment's last term.
        rewritten = [
            Entry(index=i, term=first_a, data=b"%06d" % i * 10) for i in range(first_b, last_b)
        ]
        handle = self.files.create(DATA / names[1])
        handle.write(encode_segment_header(first_b) + encode_records(rewritten))
        handle.sync()
        handle.close()
        with self.assertRaises(CorruptionError) as caught:
            self.open()
        self.assertEqual(caught.exception.path, DATA / names[1])

    def test_overlapping_segments_are_refused(self) -> None:
        """A segment that starts inside the one before it (no write path makes one: a copied
        or damaged dir) is refused, not read as a log with indexes twice."""
        self.write(entries(1, 200))
        names = self.segments()
        first_b = parse_segment_name(names[1])
        assert first_b is not None
        overlap = first_b - 5
        self.files.unlink(DATA / names[1])
        handle = self.files.create(DATA / segment_name(overlap))
        handle.write(encode_segment_header(overlap) + encode_records(entries(overlap, first_b + 3)))
        handle.sync()
        handle.close()
        with self.assertRaises(CorruptionError) as caught:
            self.open()
        self.assertEqual(caught.exception.path, DATA / segment_name(overlap))
