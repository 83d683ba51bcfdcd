"""Snapshot files, compaction and InstallSnapshot, including crashes in the middle of them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, BinaryIO

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from graft.raft.errors import LogCompacted
from graft.raft.types import Entry, HardState, Membership, SnapshotMeta
from graft.storage import DurableLog, SnapshotSuperseded
from tests.storage.faultfs import Crash, FaultyFileSystem
from tests.support.storage import DATA_DIR, open_log

MEMBERS = Membership(voters=frozenset({"n1", "n2", "n3"}))


def entries(first: int, last: int, term: int = 1) -> list[Entry]:
    return [Entry(index=i, term=term, data=b"%06d" % i * 10) for i in range(first, last + 1)]


def read_snapshot(log: DurableLog) -> tuple[SnapshotMeta, bytes] | None:
    opened = log.open_snapshot()
    if opened is None:
        return None
    meta, source = opened
    with source:
        return meta, source.read()


class SnapshotTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.files = FaultyFileSystem()
        self.log = open_log(self.files)
        self.log.append_sync(entries(1, 300))
        self.log.set_hard_state_sync(HardState(term=1, commit=300))

    def reopen(self) -> DurableLog:
        self.successResultOf(self.log.close())
        self.log = open_log(self.files)
        return self.log

    def test_save_and_read_back(self) -> None:
        """A saved snapshot is read back with its meta, FSM name and exact bytes after reopen,
        and replaces the previous one only once written."""
        meta = SnapshotMeta(index=100, term=1, membership=MEMBERS)
        self.log.save_snapshot(meta, "kv", lambda sink: sink.write(b"first"))
        newer = SnapshotMeta(index=200, term=1, membership=MEMBERS)
        self.log.save_snapshot(newer, "kv", lambda sink: sink.write(b"second" * 5000))
        log = self.reopen()
        self.assertEqual(read_snapshot(log), (newer, b"second" * 5000))
        info = log.snapshot_info()
        assert info is not None
        self.assertEqual(info.fsm_name, "kv")
        self.assertEqual(len([n for n in self.files.listdir(DATA_DIR) if n.startswith("snap-")]), 2)
        self.assertEqual(log.snapshot_meta(), newer)

    def test_membership_falls_back_to_the_snapshot(self) -> None:
        """With no MEMBERSHIP entry in the log, initial_state reports the snapshot's."""
        self.log.save_snapshot(
            SnapshotMeta(index=100, term=1, membership=MEMBERS), "kv", lambda s: None
        )
        self.assertEqual(self.reopen().initial_state()[1], MEMBERS)

    def test_compact_drops_whole_segments_keeping_trailing_entries(self) -> None:
        """compact deletes only whole segments below index - keep; reads below raise
        LogCompacted, the snapshot index's term stays known, and it holds after reopen."""
        self.log.save_snapshot(SnapshotMeta(index=250, term=1), "kv", lambda s: None)
        segments_before = [n for n in self.files.listdir(DATA_DIR) if n.endswith(".seg")]
        compacted = self.log.compact(250, keep=50)
        self.log.write_pending()
        self.successResultOf(compacted)
        first = self.log.first_index()
        self.assertGreater(first, 1)
        self.assertLessEqual(first, 201)  # the 50 trailing entries are kept
        self.assertRaises(LogCompacted, self.log.term, first - 1)
        self.assertEqual(self.log.term(250), 1)
        self.assertLess(
            len([n for n in self.files.listdir(DATA_DIR) if n.endswith(".seg")]),
            len(segments_before),
        )
        log = self.reopen()
        self.assertEqual((log.first_index(), log.last_index()), (first, 300))
        self.assertEqual(log.entries(first, 301), entries(first, 300))

    def test_compact_above_the_snapshot_is_refused(self) -> None:
        """Compaction past the snapshot would lose entries: it is a programming error."""
        self.assertRaises(ValueError, self.log.compact, 10)

    def install(self, meta: SnapshotMeta, data: bytes) -> None:
        received = DATA_DIR / "received.tmp"
        handle = self.files.create(received)
        handle.write(data)
        handle.close()
        installed = self.log.install_snapshot(meta, received, "kv")
        self.log.write_pending()
        self.successResultOf(installed)

    def test_install_matching_snapshot_keeps_the_log_after_it(self) -> None:
        """A received snapshot whose last entry is in the log keeps the entries after it."""
        self.install(SnapshotMeta(index=150, term=1, membership=MEMBERS), b"state")
        self.assertEqual(self.log.last_index(), 300)
        log = self.reopen()
        self.assertEqual(log.last_index(), 300)
        self.assertEqual(
            read_snapshot(log), (SnapshotMeta(index=150, term=1, membership=MEMBERS), b"state")
        )

    def test_install_conflicting_snapshot_discards_the_log(self) -> None:
        """A received snapshot that the log does not contain replaces the whole log; the
        next entry goes right after it (Raft Figure 13)."""
        meta = SnapshotMeta(index=500, term=3, membership=MEMBERS)
        self.install(meta, b"state")
        self.assertEqual((self.log.first_index(), self.log.last_index()), (501, 500))
        self.assertEqual(self.log.term(500), 3)
        self.log.append_sync(entries(501, 505, term=3))
        log = self.reopen()
        self.assertEqual((log.first_index(), log.last_index(), log.term(500)), (501, 505, 3))


class SnapshotCrashTests(SynchronousTestCase):
    """A crash at every write point of save + compact + install leaves a data dir that opens,
    with a whole snapshot and a log consistent with it."""

    def workload(self, files: FaultyFileSystem, done: list[str]) -> None:
        log = open_log(files)
        log.append_sync(entries(1, 300))
        log.set_hard_state_sync(HardState(term=1, commit=300))
        done.append("log")
        log.save_snapshot(SnapshotMeta(index=200, term=1), "kv", lambda s: s.write(b"A" * 3000))
        done.append("first snapshot")
        log.compact(200, keep=20)
        log.write_pending()
        done.append("compacted")
        log.save_snapshot(SnapshotMeta(index=280, term=1), "kv", lambda s: s.write(b"B" * 3000))
        done.append("second snapshot")
        received = DATA_DIR / "received.tmp"
        handle = files.create(received)
        handle.write(b"C" * 3000)
        handle.sync()
        handle.close()
        log.install_snapshot(SnapshotMeta(index=400, term=2), received, "kv")
        log.write_pending()
        done.append("installed")
        log.append_sync(entries(401, 410, term=2))
        done.append("appended")

    def test_crash_at_every_write_point(self) -> None:
        """Each crash point recovers to the last completed step or the one in progress."""
        clean = FaultyFileSystem()
        self.workload(clean, [])
        expected_snapshots: dict[str, set[bytes | None]] = {
            "log": {None, b"A"},
            "first snapshot": {b"A", b"B"},
            "compacted": {b"A", b"B"},
            "second snapshot": {b"B", b"C"},
            "installed": {b"C"},
            "appended": {b"C"},
        }
        for point in range(1, clean.points + 1):
            for names_too in (False, True):
                self.check_crash(point, names_too, expected_snapshots)

    def check_crash(
        self, point: int, names_too: bool, expected_snapshots: dict[str, set[bytes | None]]
    ) -> None:
        files = FaultyFileSystem(crash_at=point)
        done: list[str] = []
        with self.assertRaises(Crash):
            self.workload(files, done)
        where = f"crash at point {point} ({files.log[-1]}) after {done}, names_too={names_too}"
        log = open_log(files.after_crash(names_too=names_too))
        snapshot = read_snapshot(log)
        if not done:
            return
        kept = snapshot[1][:1] if snapshot else None
        self.assertIn(kept, expected_snapshots[done[-1]], where)
        # Whatever survived is one consistent log: every index from first to last readable,
        # and the snapshot's index has its term.
        log.entries(log.first_index(), log.last_index() + 1)
        meta = log.snapshot_meta()
        self.assertEqual(log.term(meta.index), meta.term, where)
        if snapshot is not None and snapshot[0].index == 400:
            self.assertGreaterEqual(log.first_index(), 401, where)
        else:
            self.assertEqual(log.last_index(), 300, where)


class _HookedLock:
    """A lock that runs ``hook`` once just before it is first taken: it puts another thread's
    work exactly between a caller's check and its locked section."""

    def __init__(self, lock: Any, hook: Callable[[], None]) -> None:
        self._lock = lock
        self._hook: Callable[[], None] | None = hook

    def __enter__(self) -> bool:
        hook, self._hook = self._hook, None
        if hook is not None:
            hook()
        return bool(self._lock.__enter__())

    def __exit__(self, *exc: object) -> None:
        self._lock.__exit__(*exc)


class SaveInstallRaceTests(SynchronousTestCase):
    """A follower's own snapshot N (written by a worker thread) raced by a snapshot M > N from
    the leader (installed by the reactor and the writer). Whatever the interleaving, the
    received snapshot wins: the log keeps claiming M, its term stays readable, M's file
    survives, and the node reopens on M."""

    own = SnapshotMeta(index=20, term=1, membership=MEMBERS)
    received = SnapshotMeta(index=50, term=2, membership=MEMBERS)

    def setUp(self) -> None:
        self.files = FaultyFileSystem()
        self.log = open_log(self.files)
        self.log.append_sync(entries(1, 30))
        self.log.set_hard_state_sync(HardState(term=1, commit=30))
        path = DATA_DIR / "received.tmp"
        handle = self.files.create(path)
        handle.write(b"leader's")
        handle.close()
        self.path = path

    def install(self) -> Deferred[None]:
        return self.log.install_snapshot(self.received, self.path, "kv")

    def save(self, write: Callable[[BinaryIO], object]) -> bool:
        """Save N as the worker thread does; True if it was dropped as superseded."""
        try:
            self.log.save_snapshot(self.own, "kv", write)
        except SnapshotSuperseded:
            return True
        return False

    def check_received_wins(self) -> None:
        log = self.log
        self.assertEqual(log.snapshot_meta(), self.received)
        self.assertEqual((log.first_index(), log.last_index()), (51, 50))
        self.assertEqual(log.term(50), 2)
        self.assertEqual(read_snapshot(log), (self.received, b"leader's"))
        self.successResultOf(log.close())
        again = open_log(self.files)
        self.assertEqual(again.snapshot_meta(), self.received)
        self.assertEqual((again.first_index(), again.last_index(), again.term(50)), (51, 50, 2))
        self.assertEqual(read_snapshot(again), (self.received, b"leader's"))

    def test_install_during_the_copy_wins_over_the_save(self) -> None:
        """The install arrives while the save copies the FSM (its file write waits for the
        save's): the save is dropped when it ends, instead of setting the log's snapshot back
        to N while the entries start at M + 1 (term(M) raising LogCompacted for ever)."""
        installed: list[Deferred[None]] = []

        def write(sink: BinaryIO) -> None:
            sink.write(b"own")
            installed.append(self.install())  # on the reactor, mid-copy

        dropped = self.save(write)
        self.log.write_pending()  # the writer's turn: M's file, the log discarded
        self.successResultOf(installed[0])
        self.check_received_wins()
        self.assertTrue(dropped, "the stale save was not reported as superseded")

    def test_install_written_before_the_save_starts_its_file(self) -> None:
        """The save has passed its first check when the install is written in full (the
        writer thread wins the race for the snapshot files): the save then writes nothing,
        instead of committing N and deleting M's file (a data dir that cannot start)."""
        installed: list[Deferred[None]] = []

        def install_now() -> None:
            installed.append(self.install())
            self.log.write_pending()

        store = self.log._snapshots
        store._lock = _HookedLock(store._lock, install_now)  # type: ignore[assignment]
        dropped = self.save(lambda sink: sink.write(b"own"))
        self.successResultOf(installed[0])
        self.check_received_wins()
        self.assertTrue(dropped, "the stale save was not reported as superseded")
