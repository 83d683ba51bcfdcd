"""Modes of what a node writes: its data dir 0700, every file in it 0600, whatever the umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from graft.fsm.sqlite import SQLiteStateMachine
from graft.raft.types import Entry, HardState, Membership, SnapshotMeta
from graft.storage import DurableLog
from graft.storage.permissions import file_mode, set_private_umask, tighten_data_dir


def modes(directory: Path) -> dict[str, int]:
    return {p.name: file_mode(p) for p in sorted(directory.iterdir())}


class UmaskTestCase(SynchronousTestCase):
    def use_umask(self, mask: int) -> None:
        previous = os.umask(mask)
        self.addCleanup(os.umask, previous)


class DurableLogModesTests(UmaskTestCase):
    def test_log_files_are_private_under_a_loose_umask(self) -> None:
        """Under umask 022 (files 0644 by default) the data dir is created 0700 and the
        identity, hard state, every segment, the snapshot data and its manifest are 0600."""
        self.use_umask(0o022)
        data_dir = Path(self.mktemp()) / "n1"
        log = DurableLog.open(
            data_dir, node_id="n1", cluster="test", reactor=Clock(), threaded=False,
            segment_bytes=4096,
        )  # fmt: skip
        log.append_sync([Entry(index=i, term=1, data=b"x" * 900) for i in range(1, 20)])
        log.set_hard_state_sync(HardState(term=1, vote="n1", commit=19))
        meta = SnapshotMeta(index=10, term=1, membership=Membership(voters=frozenset({"n1"})))
        log.save_snapshot(meta, "kv", lambda sink: sink.write(b"state"))
        log.close()
        self.assertEqual(file_mode(data_dir), 0o700)
        found = modes(data_dir)
        self.assertIn("identity", found)
        self.assertIn("hardstate", found)
        self.assertTrue(any(name.endswith(".seg") for name in found), found)
        self.assertTrue(any(name.endswith(".manifest") for name in found), found)
        self.assertTrue(any(name.endswith(".data") for name in found), found)
        self.assertEqual({name: 0o600 for name in found}, found)


class TightenTests(UmaskTestCase):
    def test_loose_data_dir_and_files_are_tightened_and_reported(self) -> None:
        """A data dir of an older version (0755, files 0644) becomes 0700 with files 0600; each
        change is reported once, a second pass finds nothing to change."""
        data_dir = Path(self.mktemp())
        data_dir.mkdir()
        os.chmod(data_dir, 0o755)
        for name in ("log-00000000000000000001.seg", "fsm.sqlite3", "fsm.sqlite3-wal"):
            (data_dir / name).write_bytes(b"x")
            os.chmod(data_dir / name, 0o644)
        (data_dir / "readonly").write_bytes(b"x")
        os.chmod(data_dir / "readonly", 0o440)
        changes = tighten_data_dir(data_dir)
        self.assertEqual(len(changes), 5, changes)
        self.assertIn("was mode 0755", changes[0])
        self.assertIn("now 0700", changes[0])
        self.assertEqual(file_mode(data_dir), 0o700)
        self.assertEqual(
            modes(data_dir),
            {
                "fsm.sqlite3": 0o600,
                "fsm.sqlite3-wal": 0o600,
                "log-00000000000000000001.seg": 0o600,
                "readonly": 0o400,  # only the group's read bit went: never loosened
            },
        )
        self.assertEqual(tighten_data_dir(data_dir), [])

    def test_symlink_target_is_left_alone(self) -> None:
        """A symbolic link in the data dir is not followed: its target keeps its mode."""
        outside = Path(self.mktemp())
        outside.write_bytes(b"x")
        os.chmod(outside, 0o644)
        data_dir = Path(self.mktemp())
        data_dir.mkdir(mode=0o700)
        (data_dir / "link").symlink_to(outside.resolve())
        self.assertEqual(tighten_data_dir(data_dir), [])
        self.assertEqual(stat.S_IMODE(outside.stat().st_mode), 0o644)

    def test_missing_data_dir_is_no_change(self) -> None:
        self.assertEqual(tighten_data_dir(Path(self.mktemp())), [])


class SQLiteModesTests(UmaskTestCase):
    def test_database_and_its_wal_and_shm_are_private_under_the_node_umask(self) -> None:
        """With the umask a node process sets (set_private_umask), SQLite creates the database,
        its -wal and its -shm 0600."""
        previous = set_private_umask()
        self.addCleanup(os.umask, previous)
        data_dir = Path(self.mktemp())
        data_dir.mkdir(mode=0o700)
        fsm = SQLiteStateMachine(data_dir=data_dir)
        self.addCleanup(fsm.close)
        fsm.apply(b"CREATE TABLE t(x); INSERT INTO t VALUES (1);", 1)
        found = {n: m for n, m in modes(data_dir).items() if n.startswith("fsm.sqlite3")}
        self.assertIn("fsm.sqlite3-wal", found)
        self.assertIn("fsm.sqlite3-shm", found)
        self.assertEqual({name: 0o600 for name in found}, found)

    def test_database_made_under_a_loose_umask_is_tightened_at_start(self) -> None:
        """A database created under umask 022 (0644) is made 0600, -wal and -shm with it, by the
        pass a node makes at start."""
        self.use_umask(0o022)
        data_dir = Path(self.mktemp())
        data_dir.mkdir()
        fsm = SQLiteStateMachine(data_dir=data_dir)
        self.addCleanup(fsm.close)
        fsm.apply(b"CREATE TABLE t(x); INSERT INTO t VALUES (1);", 1)
        self.assertEqual(file_mode(data_dir / "fsm.sqlite3"), 0o644)
        tighten_data_dir(data_dir)
        fsm.apply(b"INSERT INTO t VALUES (2);", 2)
        found = {n: m for n, m in modes(data_dir).items() if n.startswith("fsm.sqlite3")}
        self.assertEqual({name: 0o600 for name in found}, found)
