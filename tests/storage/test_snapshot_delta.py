"""The snapshot store's delta mode: SQLite WAL deltas folded into the full copy, crash-safe.

The deltas are real SQLite WAL files, made here with the sqlite3 module; the store runs on
the in-memory file system of tests.storage.faultfs, which can cut the power at any write
point and keep either only what was fsynced or everything written so far.
"""

from __future__ import annotations

import dataclasses
import io
import sqlite3
import tempfile
import threading
import zlib
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from graft.raft.types import SnapshotMeta
from graft.storage import DeltaRefused, SnapshotBusy, check_data_dir
from graft.storage.block_crc import BLOCK_BYTES, BlockSums
from graft.storage.snapshots import SnapshotInfo, SnapshotStore
from graft.storage.sqlite_wal import compact_wal, fold_wal
from tests.storage.faultfs import Crash, FaultyFileSystem

DIR = Path("/data/n1")
Rows = list[tuple[Any, ...]]


def rows_of(image: bytes) -> Rows:
    """The rows of table t in a database image, after SQLite checked the whole file."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "image.sqlite3"
        path.write_bytes(image)
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            check = conn.execute("PRAGMA integrity_check").fetchone()[0]
            assert check == "ok", check
            return conn.execute("SELECT * FROM t ORDER BY id").fetchall()
        finally:
            conn.close()


def history(rounds: int, *, spill: bool = False) -> tuple[bytes, list[bytes], list[Rows]]:
    """A database image, then the WAL written by each of ``rounds`` rounds of changes (the
    WAL reset after each, as the SQLite FSM does), and the rows after each round. With
    ``spill`` each round ends with a large transaction rolled back after SQLite spilled some
    of its pages into the WAL: uncommitted frames that a fold must leave out."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "db.sqlite3"
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
        conn.execute(
            "INSERT INTO t(v) WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s "
            "WHERE i < 300) SELECT randomblob(300) FROM s"
        )
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        base = path.read_bytes()
        deltas: list[bytes] = []
        states: list[Rows] = []
        for r in range(rounds):
            conn.execute(f"UPDATE t SET v = randomblob(200) WHERE id % 5 = {r}")
            conn.execute(f"DELETE FROM t WHERE id % 11 = {r}")
            conn.execute(
                "INSERT INTO t(v) WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 "
                "FROM s WHERE i < 200) SELECT randomblob(400) FROM s"
            )
            if spill:
                conn.execute("PRAGMA cache_size=2")
                conn.execute("BEGIN")
                conn.execute("UPDATE t SET v = randomblob(500)")
                conn.execute("ROLLBACK")
                conn.execute("PRAGMA cache_size=-2000")
            deltas.append(path.with_name(path.name + "-wal").read_bytes())
            states.append(conn.execute("SELECT * FROM t ORDER BY id").fetchall())
            busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            assert busy == 0
        conn.close()
        return base, deltas, states


def writer(data: bytes) -> Any:
    return lambda sink: sink.write(data)


def meta(index: int) -> SnapshotMeta:
    return SnapshotMeta(index=index, term=1)


def snapshot_files(files: FaultyFileSystem) -> list[str]:
    return sorted(n for n in files.listdir(DIR) if n.startswith("snap-"))


class DeltaModeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.base, self.deltas, self.states = history(3)
        self.files = FaultyFileSystem()
        self.files.makedirs(DIR)
        self.store = SnapshotStore(self.files, DIR)
        self.store.load()
        self.store.save(meta(10), "sqlite", writer(self.base), chain="c10")

    def image(self, store: SnapshotStore, info: SnapshotInfo) -> bytes:
        with store.open(info) as source:
            return source.read()

    def test_deltas_fold_into_the_full_copy(self) -> None:
        """Each delta saved over the latest snapshot leaves one whole snapshot (data and
        manifest only) whose image holds the rows after that round, also after a reload."""
        chain = "c10"
        for i, (delta, rows) in enumerate(zip(self.deltas, self.states, strict=True)):
            index = 20 + 10 * i
            info = self.store.save_delta(
                meta(index), "sqlite", writer(delta), base_chain=chain, chain=f"c{index}"
            )
            chain = f"c{index}"
            self.assertIsNone(info.pending)
            self.assertEqual(info.chain, chain)
            self.assertEqual(rows_of(self.image(self.store, info)), rows)
            self.assertEqual(len(snapshot_files(self.files)), 2)
        reloaded = SnapshotStore(self.files, DIR)
        latest = reloaded.load()
        assert latest is not None
        self.assertEqual((latest.meta.index, latest.chain), (40, "c40"))
        self.assertEqual(rows_of(self.image(reloaded, latest)), self.states[-1])

    def test_uncommitted_frames_are_left_out(self) -> None:
        """Frames a rolled-back transaction spilled into the WAL after its last commit are not
        folded: the image holds the committed rows only."""
        base, deltas, states = history(2, spill=True)
        files = FaultyFileSystem()
        files.makedirs(DIR)
        store = SnapshotStore(files, DIR)
        store.load()
        store.save(meta(1), "sqlite", writer(base), chain="a")
        store.save_delta(meta(2), "sqlite", writer(deltas[0]), base_chain="a", chain="b")
        info = store.save_delta(meta(3), "sqlite", writer(deltas[1]), base_chain="b", chain="c")
        self.assertEqual(rows_of(self.image(store, info)), states[1])

    def test_refused_over_another_base(self) -> None:
        """A delta that names another snapshot than the latest as its base is refused and
        nothing is written: after a snapshot without a token (one the leader sent), and for
        a token that is not the latest's."""
        before = snapshot_files(self.files)
        with self.assertRaises(DeltaRefused):
            self.store.save_delta(
                meta(20), "sqlite", writer(self.deltas[0]), base_chain="other", chain="x"
            )
        self.assertEqual(snapshot_files(self.files), before)
        self.store.install(meta(15), "sqlite", self._received())
        with self.assertRaises(DeltaRefused):
            self.store.save_delta(
                meta(20), "sqlite", writer(self.deltas[0]), base_chain="c10", chain="x"
            )

    def _received(self) -> Path:
        # install() reads the received file through the store's file system.
        path = DIR / "incoming"
        handle = self.files.create(path)
        handle.write(self.base)
        handle.close()
        return path

    def test_malformed_delta_refused(self) -> None:
        """Bytes that are not an SQLite WAL are refused before the manifest names them: the
        latest snapshot stays the base and the delta file is gone."""
        before = snapshot_files(self.files)
        with self.assertRaises(DeltaRefused):
            self.store.save_delta(
                meta(20), "sqlite", writer(b"not a WAL" * 10), base_chain="c10", chain="x"
            )
        self.assertEqual(snapshot_files(self.files), before)
        info = SnapshotStore(self.files, DIR).load()
        assert info is not None
        self.assertEqual(info.meta.index, 10)

    def test_a_crash_at_any_point_leaves_a_whole_snapshot(self) -> None:
        """A power cut at every write point of a delta save (delta written but not folded,
        manifest not yet written, fold half done, manifest not yet rewritten) leaves, after
        a restart, either the base or the new snapshot, each with its exact rows, and no
        leftovers; with only the fsynced bytes kept or with everything written kept."""
        k = 1
        outcomes: set[int] = set()
        while True:
            files = self.files.copy()
            files.makedirs(DIR)
            store = SnapshotStore(files, DIR)
            store.load()
            files.crash_at = files.points + k
            try:
                store.save_delta(
                    meta(20), "sqlite", writer(self.deltas[0]), base_chain="c10", chain="c20"
                )
            except Crash:
                pass
            else:
                break
            for survivor in (files.after_crash(), files.after_crash(names_too=True), files.copy()):
                found = SnapshotStore(survivor, DIR)
                info = found.load()
                assert info is not None
                outcomes.add(info.meta.index)
                expected = self.states[0] if info.meta.index == 20 else rows_of(self.base)
                self.assertEqual(rows_of(self.image(found, info)), expected, (k, info))
                self.assertEqual(len(snapshot_files(survivor)), 2, snapshot_files(survivor))
            k += 1
        self.assertGreater(k, 10)
        self.assertEqual(outcomes, {10, 20})

    def test_read_only_load_assembles_a_pending_snapshot(self) -> None:
        """After a crash between the pending manifest and the end of the fold, a read-only
        load (``graft check``, log dumps) reports the new snapshot, changes no file, and
        ``open`` assembles its image from the base and the delta; check_data_dir says the
        fold is left for the next start."""
        for step in ("manifest-written", "base-moved"):
            files = self.files.copy()
            files.makedirs(DIR)
            store = SnapshotStore(files, DIR)
            store.load()

            def crash(name: str, step: str = step) -> None:
                if name == step:
                    raise Crash(name)

            store.step = crash
            with self.assertRaises(Crash):
                store.save_delta(
                    meta(20), "sqlite", writer(self.deltas[0]), base_chain="c10", chain="c20"
                )
            listing = snapshot_files(files)
            report = check_data_dir(DIR, files=files)
            self.assertTrue(report.ok, report.lines)
            self.assertIn("fold the snapshot's delta", "\n".join(report.lines))
            looker = SnapshotStore(files, DIR)
            info = looker.load(clean=False)
            assert info is not None and info.pending is not None
            self.assertEqual(rows_of(self.image(looker, info)), self.states[0])
            self.assertEqual(snapshot_files(files), listing)

    def test_a_fold_waits_for_readers(self) -> None:
        """While a reader holds the full copy open (a snapshot being sent), a delta is not
        folded into it: the save waits, and past its wait drops the delta (DeltaRefused) with
        the base unchanged; once the reader closes, the next delta folds."""
        info = self.store.load()
        assert info is not None
        reader = self.store.open_image(info)
        with self.assertRaises(DeltaRefused):
            self.store.save_delta(
                meta(20),
                "sqlite",
                writer(self.deltas[0]),
                base_chain="c10",
                chain="c20",
                wait=0.05,
            )
        self.assertEqual(reader.read(), self.base)
        reader.close()
        done = self.store.save_delta(
            meta(20), "sqlite", writer(self.deltas[0]), base_chain="c10", chain="c20"
        )
        self.assertEqual(rows_of(self.image(self.store, done)), self.states[0])

    def test_a_waiting_fold_goes_ahead_when_the_reader_closes(self) -> None:
        """A save waiting for a reader folds as soon as that reader closes its file."""
        info = self.store.load()
        assert info is not None
        reader = self.store.open_image(info)
        result: list[object] = []

        def save() -> None:
            result.append(
                self.store.save_delta(
                    meta(20), "sqlite", writer(self.deltas[0]), base_chain="c10", chain="c20"
                )
            )

        thread = threading.Thread(target=save)
        thread.start()
        thread.join(0.1)
        self.assertTrue(thread.is_alive())
        reader.close()
        thread.join(30)
        self.assertEqual(len(result), 1)

    def test_no_reader_opens_the_file_during_a_fold(self) -> None:
        """From the delta's arrival to the end of the fold, opening the snapshot's file raises
        SnapshotBusy."""
        refused: list[str] = []
        base = self.store.load()
        assert base is not None

        def try_open(name: str) -> None:
            try:
                self.store.open_image(base).close()
            except SnapshotBusy:
                refused.append(name)

        self.store.step = try_open
        self.store.save_delta(
            meta(20), "sqlite", writer(self.deltas[0]), base_chain="c10", chain="c20"
        )
        self.assertEqual(
            sorted(set(refused)),
            ["base-moved", "delta-written", "fold-page", "folded", "manifest-written"],
        )


class FoldTests(SynchronousTestCase):
    def test_folding_again_gives_the_same_bytes(self) -> None:
        """Folding a delta over a file a fold already changed, half (cut after 3 pages) or
        whole, gives the bytes of one fold: what makes redoing a fold after a crash safe."""
        base, deltas, _states = history(1)
        files = FaultyFileSystem()
        files.makedirs(DIR)

        def fold(path: Path, *, stop_after: int | None = None) -> None:
            def page(n: int) -> None:
                if n == stop_after:
                    raise Crash("cut")

            target = files.open_update(path)
            try:
                fold_wal(io.BytesIO(deltas[0]), target, on_page=page)
            finally:
                target.close()

        for name in ("once", "half", "twice"):
            handle = files.create(DIR / name)
            handle.write(base)
            handle.close()
        fold(DIR / "once")
        with self.assertRaises(Crash):
            fold(DIR / "half", stop_after=3)
        fold(DIR / "half")
        fold(DIR / "twice")
        fold(DIR / "twice")
        once = files.read_bytes(DIR / "once")
        self.assertNotEqual(once, base)
        self.assertEqual(files.read_bytes(DIR / "half"), once)
        self.assertEqual(files.read_bytes(DIR / "twice"), once)

    def test_a_compacted_delta_folds_to_the_same_bytes(self) -> None:
        """A delta compacted to the newest image of each committed page (what the SQLite FSM
        hands the store) is smaller than the WAL and folds to the same bytes, also for a WAL
        with uncommitted frames after its last commit."""
        base, deltas, _states = history(1, spill=True)
        files = FaultyFileSystem()
        files.makedirs(DIR)
        compacted = io.BytesIO()
        self.assertGreater(compact_wal(io.BytesIO(deltas[0]), compacted), 0)
        self.assertLess(len(compacted.getvalue()), len(deltas[0]))
        for name, delta in (("raw", deltas[0]), ("compacted", compacted.getvalue())):
            handle = files.create(DIR / name)
            handle.write(base)
            handle.close()
            target = files.open_update(DIR / name)
            fold_wal(io.BytesIO(delta), target)
            target.close()
        self.assertEqual(files.read_bytes(DIR / "raw"), files.read_bytes(DIR / "compacted"))


def large_history() -> tuple[bytes, bytes, Rows]:
    """A database of many 256 KiB blocks, and the WAL of one row changed in its middle."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "db.sqlite3"
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
        conn.execute(
            "INSERT INTO t(v) WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s "
            "WHERE i < 10000) SELECT randomblob(300) FROM s"
        )
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        base = path.read_bytes()
        conn.execute("UPDATE t SET v = randomblob(300) WHERE id = 5000")
        delta = path.with_name(path.name + "-wal").read_bytes()
        rows = conn.execute("SELECT * FROM t ORDER BY id").fetchall()
        conn.close()
        return base, delta, rows


class BlockChecksumTests(SynchronousTestCase):
    """The manifest's CRC32 per block (graft.storage.block_crc): a fold re-reads only the
    blocks it wrote, and the whole file's CRC32 stays right."""

    def setUp(self) -> None:
        self.base, self.delta, self.rows = large_history()
        self.files = FaultyFileSystem()
        self.files.makedirs(DIR)
        self.store = SnapshotStore(self.files, DIR)
        self.store.load()
        self.store.save(meta(10), "sqlite", writer(self.base), chain="c10")
        self.read = 0
        open_update = self.files.open_update

        def counting(path: Path) -> Any:
            target = open_update(path)
            pread = target.pread

            def counted(size: int, offset: int) -> bytes:
                data = pread(size, offset)
                self.read += len(data)
                return bytes(data)

            target.pread = counted  # type: ignore[method-assign]
            return target

        self.files.open_update = counting  # type: ignore[method-assign]

    def folded(self) -> tuple[SnapshotInfo, bytes]:
        info = self.store.save_delta(
            meta(20), "sqlite", writer(self.delta), base_chain="c10", chain="c20"
        )
        with self.store.open(info) as source:  # checks the manifest's CRC32
            image = source.read()
        return info, image

    def test_a_fold_reads_only_the_blocks_it_wrote(self) -> None:
        """One row changed in a database of 10+ blocks: the fold reads a few blocks of the
        full copy, not the whole file, and the manifest's CRC32s are the file's."""
        self.assertGreater(len(self.base), 10 * BLOCK_BYTES)
        self.patch(SnapshotStore, "_checksum", lambda *a: self.fail("read the whole file"))
        info, image = self.folded()
        self.assertEqual(rows_of(image), self.rows)
        self.assertEqual(info.crc32, zlib.crc32(image))
        self.assertEqual(info.blocks, BlockSums.of(image))
        self.assertLessEqual(self.read, 3 * BLOCK_BYTES + 100)
        reloaded = SnapshotStore(self.files, DIR).load()
        assert reloaded is not None
        self.assertEqual(reloaded.blocks, info.blocks)

    def test_a_base_without_block_checksums_is_read_whole(self) -> None:
        """A base whose manifest has no block CRC32s (written before them): the fold reads
        the whole file once, and the new manifest has them."""
        latest = self.store._latest
        assert latest is not None
        self.store._latest = dataclasses.replace(latest, blocks=None)
        info, image = self.folded()
        self.assertEqual(info.crc32, zlib.crc32(image))
        self.assertEqual(info.blocks, BlockSums.of(image))
