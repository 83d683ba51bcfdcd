"""DurableLog as the core's LogStorage, in the synchronous mode over the in-memory file system."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from graft.raft.errors import LogUnavailable
from graft.raft.types import (
    Entry,
    EntryKind,
    HardState,
    Membership,
    SnapshotMeta,
    encode_membership,
)
from graft.storage import DurableLog, IdentityMismatch, StorageError
from graft.storage.records import encode_record, encode_records
from tests.storage.faultfs import FaultyFileSystem

DATA = Path("/data/n1")


def entries(first: int, last: int, term: int = 1, size: int = 10) -> list[Entry]:
    return [Entry(index=i, term=term, data=bytes([i % 256]) * size) for i in range(first, last + 1)]


class LogTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.files = FaultyFileSystem()
        self.clock = Clock()

    def open(self, **kwargs: object) -> DurableLog:
        options: dict[str, object] = {
            "node_id": "n1",
            "cluster": "test",
            "files": self.files,
            "reactor": self.clock,
            "threaded": False,
            "segment_bytes": 4096,
        }
        options.update(kwargs)
        return DurableLog.open(DATA, **options)  # type: ignore[arg-type]

    def reopen(self, log: DurableLog) -> DurableLog:
        self.successResultOf(log.close())
        return self.open()


class EncodingTests(SynchronousTestCase):
    def test_batch_encoding_matches_record_encoding(self) -> None:
        """encode_records gives exactly the records encode_record gives, in order, whatever
        the kinds, terms and data sizes (empty data included)."""
        mixed = [
            Entry(index=i, term=1 + i // 7, kind=EntryKind(i % 3), data=bytes(range(i % 50)))
            for i in range(5, 90)
        ]
        self.assertEqual(encode_records(mixed), b"".join(map(encode_record, mixed)))
        self.assertEqual(encode_records([]), b"")


class FreshAndReopenTests(LogTestCase):
    def test_fresh_dir_is_an_empty_log(self) -> None:
        """A missing data dir is created and starts empty: no hard state, no membership."""
        log = self.open()
        self.assertEqual(log.initial_state(), (HardState(), None))
        self.assertEqual((log.first_index(), log.last_index()), (1, 0))
        self.assertEqual(log.term(0), 0)
        self.assertEqual(log.snapshot_meta(), SnapshotMeta())
        self.assertIn("identity", self.files.listdir(DATA))

    def test_entries_and_hard_state_survive_reopen(self) -> None:
        """What was persisted is read back identically after a reopen, across segments."""
        log = self.open()
        written = entries(1, 200, size=50)
        log.persist(HardState(term=3, vote="n2", commit=150), written)
        self.clock.advance(0)
        log = self.reopen(log)
        self.assertEqual(log.entries(1, 201), written)
        self.assertEqual(log.initial_state()[0], HardState(term=3, vote="n2", commit=150))
        self.assertGreater(len([n for n in self.files.listdir(DATA) if n.endswith(".seg")]), 2)

    def test_other_node_or_cluster_is_refused(self) -> None:
        """A data dir written by another node id or another cluster refuses to open."""
        self.successResultOf(self.open().close())
        with self.assertRaises(IdentityMismatch) as caught:
            self.open(node_id="n2")
        self.assertIn("'n1'", str(caught.exception))
        with self.assertRaises(IdentityMismatch):
            self.open(cluster="other")

    def test_data_without_identity_is_refused(self) -> None:
        """A dir with log files but no identity file is not silently adopted."""
        log = self.open()
        log.append_sync(entries(1, 3))
        self.successResultOf(log.close())
        self.files.unlink(DATA / "identity")
        with self.assertRaises(StorageError):
            self.open()


class ReadTests(LogTestCase):
    def test_term_and_entries_bounds(self) -> None:
        """Reads beyond the log raise LogUnavailable; entries honours [lo, hi)."""
        log = self.open()
        log.append_sync(entries(1, 5, term=2))
        self.assertEqual(log.term(5), 2)
        self.assertRaises(LogUnavailable, log.term, 6)
        self.assertRaises(LogUnavailable, log.entries, 1, 7)
        self.assertEqual([e.index for e in log.entries(2, 4)], [2, 3])
        self.assertEqual(log.entries(3, 3), [])

    def test_max_bytes_limits_but_returns_at_least_one(self) -> None:
        """max_bytes stops before the data would exceed it, yet one entry always comes back."""
        log = self.open()
        log.append_sync(entries(1, 5, size=10))
        self.assertEqual(len(log.entries(1, 6, max_bytes=25)), 2)
        self.assertEqual(len(log.entries(1, 6, max_bytes=1)), 1)

    def test_latest_membership_entry_wins(self) -> None:
        """initial_state returns the membership of the newest MEMBERSHIP entry in the log."""
        log = self.open()
        first = Membership(voters=frozenset({"n1"}))
        second = Membership(voters=frozenset({"n1", "n2"}), learners=frozenset({"n3"}))
        log.append_sync(
            [
                Entry(index=1, term=1, kind=EntryKind.MEMBERSHIP, data=encode_membership(first)),
                Entry(index=2, term=1),
                Entry(index=3, term=1, kind=EntryKind.MEMBERSHIP, data=encode_membership(second)),
            ]
        )
        log = self.reopen(log)
        self.assertEqual(log.initial_state()[1], second)


class PersistTests(LogTestCase):
    def test_reads_see_persisted_entries_before_they_are_durable(self) -> None:
        """persist updates the in-memory view at once; the Deferred fires only after the write."""
        log = self.open()
        fired: list[int] = []
        log.persist(None, entries(1, 3)).addCallback(lambda _: fired.append(1))
        self.assertEqual(log.last_index(), 3)
        self.assertEqual((fired, log.durable_index), ([], 0))
        self.clock.advance(0)
        self.assertEqual((fired, log.durable_index), ([1], 3))

    def test_one_turn_of_persists_is_one_fsync(self) -> None:
        """All persists of one reactor turn are written with a single fsync, and fire in order."""
        log = self.open()
        self.clock.advance(0)
        before = self.files.syncs
        order: list[int] = []

        def note(_: None, i: int) -> None:
            order.append(i)

        for i in range(1, 51):
            log.persist(None, entries(i, i)).addCallback(note, i)
        self.clock.advance(0)
        self.assertEqual(order, list(range(1, 51)))
        self.assertEqual(self.files.syncs - before, 1)

    def test_batch_rolls_segments_like_single_appends(self) -> None:
        """A batch spanning several segments leaves the same files, byte for byte, as the same
        entries appended one at a time, and reads back whole."""
        batch = entries(1, 100, size=100)  # 129-byte records, about 31 to a 4096-byte segment
        log = self.open()
        log.persist(None, batch)
        self.clock.advance(0)
        log = self.reopen(log)
        self.assertEqual(log.entries(1, 101), batch)
        one_by_one = FaultyFileSystem()
        single = self.open(files=one_by_one)
        for entry in batch:
            single.append_sync([entry])
        self.successResultOf(single.close())
        names = sorted(n for n in self.files.listdir(DATA) if n.endswith(".seg"))
        self.assertGreater(len(names), 2)
        self.assertEqual(names, sorted(n for n in one_by_one.listdir(DATA) if n.endswith(".seg")))
        for name in names:
            self.assertEqual(self.files.read_bytes(DATA / name), one_by_one.read_bytes(DATA / name))

    def test_conflicting_suffix_is_replaced_durably(self) -> None:
        """Entries starting inside the log replace everything from there, on disk too."""
        log = self.open()
        log.append_sync(entries(1, 100, term=1, size=100))
        log.persist(None, entries(40, 45, term=2))
        self.clock.advance(0)
        self.assertEqual((log.last_index(), log.term(40)), (45, 2))
        log = self.reopen(log)
        self.assertEqual((log.last_index(), log.term(39), log.term(40)), (45, 1, 2))

    def test_truncation_cuts_at_every_record_boundary(self) -> None:
        """Record offsets are worked out only when truncating: cutting at any index, whether
        the record was found at open or appended since (in batches of several sizes, across
        segment rolls), leaves exactly the records before it, byte for byte."""
        log = self.open()
        log.append_sync(entries(1, 30, size=50))
        log = self.reopen(log)  # 1..30 are now records found at open
        first = 31
        for count, size in ((1, 7), (5, 200), (17, 33), (40, 90), (3, 1)):
            log.persist(None, entries(first, first + count - 1, size=size))
            first += count
        self.clock.advance(0)
        full = log.entries(1, first)
        expected = {}
        for cut in (1, 2, 17, 30, 31, 32, 36, 37, 52, 53, 80, first - 2, first - 1):
            twin = self.files.copy()
            cut_log = self.open(files=twin)
            cut_log.append_sync([Entry(index=cut, term=2, data=b"new")])
            self.successResultOf(cut_log.close())
            expected[cut] = [*full[: cut - 1], Entry(index=cut, term=2, data=b"new")]
            reopened = self.open(files=twin.copy())
            self.assertEqual(reopened.entries(1, cut + 1), expected[cut], f"cut at {cut}")
        for cut in (36, 53, first - 1):  # and with the cut made by the log that appended them
            twin = self.files.copy()
            same = self.open(files=twin)
            same.append_sync(full[29:45])  # re-appends 30.. as records appended since open
            same.append_sync(full[45:])
            same.append_sync([Entry(index=cut, term=2, data=b"new")])
            self.successResultOf(same.close())
            self.assertEqual(self.open(files=twin.copy()).entries(1, cut + 1), expected[cut])

    def test_gap_is_rejected(self) -> None:
        """Entries that would leave a hole after the last index are a programming error."""
        log = self.open()
        log.append_sync(entries(1, 3))
        self.assertRaises(ValueError, log.persist, None, entries(5, 6))

    def test_commit_only_changes_are_throttled(self) -> None:
        """A commit-only hard state change rides with the next write, which writes it at most
        once per commit_interval; the latest one is written on close."""
        now = [0.0]
        log = self.open(commit_interval=1.0, clock=lambda: now[0])
        log.append_sync(entries(1, 10))
        log.set_hard_state_sync(HardState(term=1))
        for commit in range(1, 6):
            log.persist(HardState(term=1, commit=commit), entries(10 + commit, 10 + commit))
            self.clock.advance(0)
        self.assertIn(b'"commit":1,', self.files.read_bytes(DATA / "hardstate"))
        now[0] = 1.5
        log.persist(HardState(term=1, commit=6), entries(16, 16))
        self.clock.advance(0)
        self.assertIn(b'"commit":6,', self.files.read_bytes(DATA / "hardstate"))
        log.persist(HardState(term=1, commit=7), [])
        self.clock.advance(0)
        log = self.reopen(log)
        self.assertEqual(log.initial_state()[0].commit, 7)

    def test_commit_only_change_fires_at_once_when_nothing_is_queued(self) -> None:
        """With nothing queued, a change of only the commit index fires without a write (no
        writer round trip at low load) and goes to disk with the next write; a change of term
        or vote, or one behind a queued write, still waits for the disk, in call order."""
        now = [0.0]
        log = self.open(commit_interval=0.0, clock=lambda: now[0])
        log.append_sync(entries(1, 3))
        log.set_hard_state_sync(HardState(term=1))
        writes = self.files.points
        fired = log.persist(HardState(term=1, commit=2), [])
        self.successResultOf(fired)
        self.assertEqual(self.files.points, writes, "nothing was written")
        self.assertEqual(log.hard_state.commit, 2)
        # Behind a queued write it keeps its place.
        order: list[str] = []
        log.persist(None, entries(4, 4)).addCallback(lambda _: order.append("append"))
        log.persist(HardState(term=1, commit=3), []).addCallback(lambda _: order.append("commit"))
        self.assertEqual(order, [])
        self.clock.advance(0)
        self.assertEqual(order, ["append", "commit"])
        self.assertIn(b'"commit":3,', self.files.read_bytes(DATA / "hardstate"))
        # A new term is never fired early.
        vote = log.persist(HardState(term=2, vote="n2", commit=3), [])
        self.assertNoResult(vote)
        self.clock.advance(0)
        self.successResultOf(vote)
        # The carried commit index reaches the disk with the next write, or on close.
        self.successResultOf(log.persist(HardState(term=2, vote="n2", commit=4), []))
        self.assertIn(b'"commit":3,', self.files.read_bytes(DATA / "hardstate"))
        log = self.reopen(log)
        self.assertEqual(log.initial_state()[0], HardState(term=2, vote="n2", commit=4))

    def test_term_change_is_durable_before_the_deferred_fires(self) -> None:
        """A new term or vote is on disk (renamed and directory-synced) when persist fires."""
        log = self.open(commit_interval=100.0)
        log.persist(HardState(term=7, vote="n3"), [])
        self.clock.advance(0)
        crashed = self.files.after_crash()
        again = DurableLog.open(
            DATA, node_id="n1", cluster="test", files=crashed, reactor=Clock(), threaded=False
        )
        self.assertEqual(again.initial_state()[0], HardState(term=7, vote="n3"))

    def test_closed_log_refuses_writes(self) -> None:
        """persist after close fails with StorageError rather than being lost."""
        log = self.open()
        self.successResultOf(log.close())
        self.failureResultOf(log.persist(None, entries(1, 1)), StorageError)
