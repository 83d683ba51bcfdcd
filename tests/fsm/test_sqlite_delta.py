"""The SQLite FSM's delta snapshots: its WAL's frames since its previous snapshot, folded by
the snapshot store (graft.storage.snapshots, delta mode) into an image equal to the state
pinned when the snapshot began."""

from __future__ import annotations

import io
import sqlite3
import threading
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from graft.fsm import FSMFailure, IncrementalSnapshot, digest
from graft.fsm.kv import KeyValueStateMachine
from graft.fsm.sqlite import SQLiteStateMachine, wal_capture
from graft.raft.types import SnapshotMeta
from graft.sessions.machine import MAGIC, with_sessions
from graft.storage.files import OSFileSystem
from graft.storage.snapshots import SnapshotStore

ROWS = b"SELECT id, name, length(v) FROM t ORDER BY id"


class DeltaTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.fsm = self.make()
        self.index = 0
        self.apply(b"CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, v BLOB)")
        self.apply(b"CREATE INDEX t_name ON t(name)")
        self.fill(0)
        node = Path(self.mktemp())
        node.mkdir()
        self.store = SnapshotStore(OSFileSystem(), node)
        self.store.load()

    def make(self) -> SQLiteStateMachine:
        data_dir = Path(self.mktemp())
        fsm = SQLiteStateMachine(data_dir=data_dir, base_dir=data_dir)
        self.addCleanup(fsm.close)
        return fsm

    def apply(self, command: bytes) -> None:
        self.index += 1
        self.fsm.apply(command, self.index)

    def fill(self, round: int) -> None:
        self.apply(
            b"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300) "
            b"INSERT INTO t (name, v) SELECT 'r%d-' || i, zeroblob(120) FROM n" % round
        )
        self.apply(b"UPDATE t SET v = zeroblob(10) WHERE id %% 7 = %d" % (round % 7))
        self.apply(b"DELETE FROM t WHERE id %% 13 = %d" % (round % 13))

    def begin(self) -> IncrementalSnapshot:
        latest = self.store.load(clean=False)
        return self.fsm.begin_incremental_snapshot(latest.chain if latest else None)

    def save(self, plan: IncrementalSnapshot, base: str | None) -> None:
        """Save ``plan`` as the driver does: a delta's ``prepare`` and ``finish`` first."""
        meta = SnapshotMeta(index=self.index, term=1)
        if plan.prepare is not None and plan.finish is not None:
            plan.prepare()
            plan.finish()
        if plan.delta:
            assert base is not None
            self.store.save_delta(meta, "sqlite", plan.write, base_chain=base, chain=plan.token)
        else:
            self.store.save(meta, "sqlite", plan.write, chain=plan.token)

    def take(self) -> bool:
        """Take a snapshot through the store: whether it was a delta."""
        latest = self.store.load(clean=False)
        plan = self.begin()
        self.save(plan, latest.chain if latest else None)
        return plan.delta

    def snapshot(self) -> tuple[bool, bytes, str]:
        """Take a snapshot through the store; then change the state further while the writer
        has not run yet. Whether it was a delta, the rows and digest it must hold."""
        latest = self.store.load(clean=False)
        base = latest.chain if latest else None
        plan = self.fsm.begin_incremental_snapshot(base)
        rows, state = self.fsm.query(ROWS), digest(self.fsm)
        self.fill(self.index)  # after the pinned point: not in this snapshot
        self.save(plan, base)
        return plan.delta, rows, state

    def restored(self) -> SQLiteStateMachine:
        latest = self.store.load()
        assert latest is not None
        replica = self.make()
        with self.store.open(latest) as source:
            replica.restore(source)
        return replica


class DeltaSnapshotTests(DeltaTestCase):
    def test_deltas_fold_to_the_pinned_state(self) -> None:
        """The first snapshot is whole, the next ones deltas; each stored image, restored
        into a new replica, holds the rows and the digest the FSM had when the snapshot
        began, although commands changed it before the writer ran."""
        kinds = []
        for _ in range(4):
            delta, rows, state = self.snapshot()
            kinds.append(delta)
            replica = self.restored()
            self.assertEqual(replica.query(ROWS), rows)
            self.assertEqual(digest(replica), state)
            self.assertEqual(
                replica.query(b"PRAGMA schema_version"), self.fsm.query(b"PRAGMA schema_version")
            )
        self.assertEqual(kinds, [False, True, True, True])

    def test_a_delta_costs_what_changed(self) -> None:
        """A delta holds each changed page once: after one row changed by many commands it
        is a few pages, a small fraction of the database and of the WAL it was taken from;
        and the capture empties the WAL once it is finished, not before."""
        self.take()  # whole
        for _ in range(20):
            self.fill(self.index)
        self.take()  # a delta of the fills: the next one must not repeat them
        for i in range(200):
            self.apply(b"UPDATE t SET name = 'changed %d' WHERE id = (SELECT max(id) FROM t)" % i)
        wal = self.fsm.wal_bytes()
        plan = self.begin()
        self.assertTrue(plan.delta)
        assert plan.prepare is not None and plan.finish is not None
        plan.prepare()
        plan.finish()
        self.assertEqual(self.fsm.wal_bytes(), 0)  # reset: the next delta starts empty
        sink = _Counter()
        plan.write(sink)  # type: ignore[arg-type]
        self.assertLess(sink.size * 20, self.fsm.size_bytes())
        self.assertLess(sink.size * 20, wal)

    def test_the_wal_file_shrinks_at_the_first_commit_after_a_delta(self) -> None:
        """The WAL grew by megabytes between two snapshots; after the delta's capture reset
        it, the next command's commit cuts the file to what that commit wrote, so the pages
        of the earlier frames leave the page cache without being written to disk."""
        self.take()  # whole
        self.apply(
            b"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) "
            b"INSERT INTO t (name, v) SELECT 'big' || i, zeroblob(3000) FROM n"
        )
        wal = self.fsm._path.with_name(self.fsm._path.name + "-wal")
        self.assertGreater(wal.stat().st_size, 6 * 2**20)
        self.assertTrue(self.take())
        self.apply(b"UPDATE t SET name = 'after' WHERE id = 1")
        self.assertGreater(wal.stat().st_size, 0)  # cut, not emptied (see the FSM's docstring)
        self.assertLess(wal.stat().st_size, 64 * 1024)
        delta, rows, state = self.snapshot()  # and the next delta still holds that command
        self.assertTrue(delta)
        replica = self.restored()
        self.assertEqual(replica.query(ROWS), rows)
        self.assertEqual(digest(replica), state)

    def test_changes_larger_than_an_autocheckpoint_are_kept(self) -> None:
        """Between two snapshots commands write more pages than SQLite's automatic
        checkpoint would let the WAL hold (1,000 by default) and go on writing: the delta
        still holds them all (the WAL is checkpointed only by snapshots)."""
        self.snapshot()
        self.apply(
            b"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) "
            b"INSERT INTO t (name, v) SELECT 'big' || i, zeroblob(3000) FROM n"
        )
        self.fill(self.index)
        delta, rows, state = self.snapshot()
        self.assertTrue(delta)
        replica = self.restored()
        self.assertEqual(replica.query(ROWS), rows)
        self.assertEqual(digest(replica), state)

    def test_whole_snapshot_when_the_chain_is_broken(self) -> None:
        """A whole snapshot, not a delta: when the store's latest snapshot is not the FSM's
        last one (another token, none), after a restore, and after a plain begin_snapshot
        (whose writer checkpoints the WAL)."""
        self.snapshot()
        latest = self.store.load(clean=False)
        assert latest is not None and latest.chain is not None
        self.assertFalse(self.fsm.begin_incremental_snapshot("another").delta)
        self.assertFalse(self.fsm.begin_incremental_snapshot(None).delta)
        plan = self.fsm.begin_incremental_snapshot(None)
        self.assertTrue(self.fsm.begin_incremental_snapshot(plan.token).delta)

        plan = self.fsm.begin_incremental_snapshot(None)
        self.fsm.begin_snapshot()(_Counter())  # type: ignore[arg-type]
        self.assertFalse(self.fsm.begin_incremental_snapshot(plan.token).delta)

        plan = self.fsm.begin_incremental_snapshot(None)
        with self.store.open(latest) as source:
            self.fsm.restore(source)
        self.assertFalse(self.fsm.begin_incremental_snapshot(plan.token).delta)

    def test_a_reader_does_not_block_the_capture(self) -> None:
        """A query's open read transaction keeps the WAL from being reset: the capture does
        not wait for it (even with a long busy timeout on the connection), and the next
        delta, which starts after the frames left in the WAL, still folds to the right
        state."""
        self.snapshot()
        self.fill(self.index)
        self.fsm._conn.execute("PRAGMA busy_timeout=600000")
        reader = sqlite3.connect(f"file:{self.fsm._path}?mode=ro", uri=True)
        self.addCleanup(reader.close)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM t").fetchone()
        latest = self.store.load(clean=False)
        assert latest is not None
        plan = self.begin()
        self.assertTrue(plan.delta)
        thread = threading.Thread(target=lambda: self.save(plan, latest.chain))
        thread.start()
        thread.join(60)
        self.assertFalse(thread.is_alive(), "the capture waited for the reader")
        self.assertTrue(plan.write.busy)  # type: ignore[attr-defined]
        self.fill(self.index)
        reader.execute("ROLLBACK")
        delta, rows, state = self.snapshot()
        self.assertTrue(delta)
        replica = self.restored()
        self.assertEqual(replica.query(ROWS), rows)
        self.assertEqual(digest(replica), state)

    def test_an_unused_whole_snapshot_is_released(self) -> None:
        """``close`` on a whole snapshot never written ends its pinned read transaction, so
        the WAL can be reset again."""
        plan = self.begin()
        self.assertFalse(plan.delta)
        self.fill(self.index)
        self.assertTrue(wal_capture.reset_wal(self.fsm._conn))  # busy: the reader pins it
        plan.close()
        self.assertFalse(wal_capture.reset_wal(self.fsm._conn))

    def test_an_unused_delta_is_released(self) -> None:
        """``close`` on a delta never written ends its pinned read (the WAL can be reset
        again) and deletes its prepared copy."""
        self.snapshot()
        self.fill(self.index)
        plan = self.begin()
        self.assertTrue(plan.delta)
        assert plan.prepare is not None
        self.assertTrue(wal_capture.reset_wal(self.fsm._conn))  # busy: the capture pins it
        plan.prepare()
        self.assertEqual(len(list(self.fsm._path.parent.glob("*.delta-*"))), 1)
        plan.close()
        self.assertEqual(list(self.fsm._path.parent.glob("*.delta-*")), [])


class _Counter:
    def __init__(self) -> None:
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        return len(data)


class SessionedDeltaTests(DeltaTestCase):
    def test_sessions_make_every_snapshot_whole(self) -> None:
        """Behind the session layer (as the driver runs every FSM), SQLite's deltas are used
        while no session exists; once one does, every snapshot is the whole container with
        the session table, never a delta that would leave the table out."""
        machine = with_sessions(self.fsm)
        plan = machine.begin_incremental_snapshot(None)
        self.assertFalse(plan.delta)
        plan.close()
        plan = machine.begin_incremental_snapshot(None)
        follow = machine.begin_incremental_snapshot(plan.token)
        self.assertTrue(follow.delta)
        follow.close()
        plan.close()
        machine.table.register(index=self.index, seed=1, now_ns=1)
        plan = machine.begin_incremental_snapshot(None)
        again = machine.begin_incremental_snapshot(plan.token)
        self.assertFalse(again.delta)
        sink = io.BytesIO()
        again.write(sink)
        self.assertTrue(sink.getvalue().startswith(MAGIC))
        plan.close()

    def test_no_incremental_snapshots_for_other_fsms(self) -> None:
        """The session layer offers begin_incremental_snapshot only over an FSM that has it."""
        machine = with_sessions(KeyValueStateMachine())
        self.assertIsNone(getattr(machine, "begin_incremental_snapshot", None))


class CaptureTests(DeltaTestCase):
    def test_the_wal_index_finds_the_newest_pages(self) -> None:
        """The capture copies, through the wal-index, the newest frame of each page only:
        its copy is already compact (a fraction of the WAL), and the snapshot is right."""
        self.take()
        for i in range(100):
            self.apply(b"UPDATE t SET name = 'n%d' WHERE id = 7" % i)
        wal = self.fsm._path.with_name(self.fsm._path.name + "-wal").stat().st_size
        plan = self.begin()
        assert plan.prepare is not None
        plan.prepare()
        copy = plan.write.copy  # type: ignore[attr-defined]
        self.assertLess(copy.stat().st_size * 10, wal)
        rows, state = self.fsm.query(ROWS), digest(self.fsm)
        latest = self.store.load(clean=False)
        assert latest is not None
        self.save(plan, latest.chain)
        replica = self.restored()
        self.assertEqual((replica.query(ROWS), digest(replica)), (rows, state))


class CaptureStepsTests(DeltaTestCase):
    """The capture in its three steps (graft.fsm.sqlite.wal_capture): the reactor's part
    reads no page, commands committed while the worker thread copies go to the next delta,
    and a restore in between abandons the capture."""

    def chain(self) -> str:
        latest = self.store.load(clean=False)
        assert latest is not None and latest.chain is not None
        return latest.chain

    def test_the_calling_thread_copies_only_what_came_during_the_copy(self) -> None:
        """``begin`` reads no WAL frame; ``prepare`` reads the snapshot's frames; ``finish``
        reads only the frames committed after the snapshot (the commands run between)."""
        self.take()
        for _ in range(5):
            self.fill(self.index)
        calls: list[tuple[str, int, int]] = []
        original = wal_capture.write_frames

        def recording(path: Path, start: int, mark: wal_capture.WalMark, *rest: object) -> int:
            calls.append((step[0], start, mark.frames))
            return original(path, start, mark, *rest)  # type: ignore[arg-type]

        self.patch(wal_capture, "write_frames", recording)
        step = ["begin"]
        plan = self.begin()
        assert plan.prepare is not None and plan.finish is not None
        self.assertEqual(calls, [])
        step[0] = "prepare"
        plan.prepare()
        self.fill(self.index)  # while the worker thread would copy
        step[0] = "finish"
        plan.finish()
        [(_, _, pinned), (name, start, last)] = calls
        self.assertEqual(name, "finish")
        self.assertGreater(last, 0)
        self.assertLess(last - start + 1, pinned)  # the three commands' frames, not all

    def test_commands_during_the_copy_go_to_the_next_delta(self) -> None:
        """Commands committed after the snapshot's pin, before and after its copy, are not
        in it; the WAL is then reset, and the next delta holds them (from the carry). The
        copy's checkpoint stops at the pinned frames: past them, the next write would start
        the WAL over and lose the frames committed before the copy from the next delta."""
        self.take()
        self.fill(self.index)
        base = self.chain()
        plan = self.begin()
        rows, state = self.fsm.query(ROWS), digest(self.fsm)
        assert plan.prepare is not None and plan.finish is not None
        for i in range(3):  # rows on pages of their own, which nothing writes again
            self.apply(b"INSERT INTO t (name, v) VALUES ('big %d', zeroblob(9000))" % i)
        plan.prepare()
        self.fill(self.index)
        plan.finish()
        self.assertEqual(plan.write.busy, False)  # type: ignore[attr-defined]
        self.save(plan, base)
        replica = self.restored()
        self.assertEqual((replica.query(ROWS), digest(replica)), (rows, state))
        delta, rows, state = self.snapshot()
        self.assertTrue(delta)
        replica = self.restored()
        self.assertEqual((replica.query(ROWS), digest(replica)), (rows, state))

    def test_the_wal_started_over_before_finish(self) -> None:
        """No command came during the copy, so its checkpoint left every frame in the
        database and the next write starts the WAL over (new salts): ``finish`` carries
        that new WAL's frames, and the next snapshot is a delta with them."""
        self.take()
        self.fill(self.index)
        base = self.chain()
        plan = self.begin()
        assert plan.prepare is not None and plan.finish is not None
        plan.prepare()
        before = wal_capture.read_mark(self.fsm._shm_path)
        self.fill(self.index)
        after = wal_capture.read_mark(self.fsm._shm_path)
        assert before is not None and after is not None
        self.assertNotEqual(before.salts, after.salts)  # it started over
        plan.finish()
        self.save(plan, base)
        delta, rows, state = self.snapshot()
        self.assertTrue(delta)
        replica = self.restored()
        self.assertEqual((replica.query(ROWS), digest(replica)), (rows, state))

    def test_a_restore_abandons_the_capture(self) -> None:
        """A restore between ``begin`` and ``prepare`` ends the capture's pinned read at once
        and ``prepare`` then fails rather than read the new database's files; its temp files
        are gone, the commands after the restore are kept, and the next snapshot is whole."""
        self.take()
        self.fill(self.index)
        plan = self.begin()
        assert plan.prepare is not None
        latest = self.store.load()
        assert latest is not None
        with self.store.open(latest) as source:
            self.fsm.restore(source)
        self.assertIsNone(plan.write._reader)  # type: ignore[attr-defined]
        rows = self.fsm.query(ROWS)
        self.fill(self.index)
        with self.assertRaises(FSMFailure):
            plan.prepare()
        self.assertNotEqual(self.fsm.query(ROWS), rows)  # the commands after it are there
        self.assertEqual(list(self.fsm._path.parent.glob("*.delta-*")), [])
        self.assertFalse(self.fsm.begin_incremental_snapshot(plan.token).delta)

    def test_commands_while_a_real_thread_copies(self) -> None:
        """Rounds of deltas whose ``prepare`` runs in a real thread while this one applies
        commands (as the reactor does): each folded snapshot holds exactly the pinned
        state, and the WAL stays small instead of growing with every round."""
        self.take()
        for round in range(6):
            for _ in range(3):
                self.fill(self.index)
            base = self.chain()
            plan = self.begin()
            rows, state = self.fsm.query(ROWS), digest(self.fsm)
            assert plan.prepare is not None and plan.finish is not None
            thread = threading.Thread(target=plan.prepare)
            thread.start()
            applied = 0
            while thread.is_alive() or applied < 2:
                # New rows: pages filled now are not written again by later commands.
                self.apply(
                    b"INSERT INTO t (name, v) VALUES ('during %d-%d', zeroblob(200))"
                    % (round, applied)
                )
                applied += 1
            thread.join()
            plan.finish()
            self.save(plan, base)
            replica = self.restored()
            self.assertEqual((replica.query(ROWS), digest(replica)), (rows, state))
            self.assertLess(self.fsm.wal_bytes(), 4 * 1024 * 1024)
