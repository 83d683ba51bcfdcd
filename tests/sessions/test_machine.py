"""The session layer in front of an FSM (graft.sessions.machine): numbered commands applied
once, refusals, and the table carried by snapshots (the container), restores and digests."""

from __future__ import annotations

import io
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from twisted.trial.unittest import SynchronousTestCase

from graft.fsm import CommandRejected, CorruptSnapshot, digest, stamped_apply
from graft.fsm.kv import KeyValueStateMachine
from graft.fsm.sqlite import SQLiteStateMachine
from graft.sessions import envelope
from graft.sessions.machine import (
    MAGIC,
    SessionedMachine,
    SnapshotContainerError,
    extract_fsm,
    with_sessions,
)
from graft.sessions.table import SessionSettings
from graft.stamp import Stamp
from tests.test_cli import run

S = 10**9


class Counter:
    """An FSM that counts what it applies (to see a command applied twice)."""

    content_type = "application/json"

    def __init__(self) -> None:
        self.applied: list[bytes] = []

    def apply(self, command: bytes, index: int) -> bytes:
        if command == b"refuse":
            raise CommandRejected("refused")
        self.applied.append(command)
        return b'{"n":%d}' % len(self.applied)

    def query(self, query: bytes) -> bytes:
        return b"%d" % len(self.applied)

    def snapshot(self, sink: BinaryIO) -> None:
        sink.write(json.dumps([c.decode() for c in self.applied]).encode())

    def begin_snapshot(self) -> Callable[[BinaryIO], None]:
        return self.snapshot

    def restore(self, source: BinaryIO) -> None:
        self.applied = [c.encode() for c in json.loads(source.read())]

    def close(self) -> None:
        pass


class Driver:
    """Applies session operations to a SessionedMachine as the driver does, entry by entry."""

    def __init__(self, machine: SessionedMachine) -> None:
        self.machine = machine
        self.index = 0
        self.now = 1000 * S

    def op(self, body: bytes, advance: int = 0):  # type: ignore[no-untyped-def]
        self.index += 1
        self.now += advance
        return self.machine.apply_operation(
            body,
            self.index,
            1,
            Stamp(self.now, self.index * 31),
            stamped_apply(self.machine.inner),
        )

    def register(self) -> str:
        return str(json.loads(self.op(envelope.encode_register()).output)["session"])

    def command(self, sid: str, n: int, command: bytes, acked: int = 0, advance: int = 0):  # type: ignore[no-untyped-def]
        return self.op(envelope.encode_command(sid, n, acked, command), advance)


class ApplyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.fsm = Counter()
        self.driver = Driver(SessionedMachine(self.fsm))

    def test_a_resent_command_is_applied_once(self) -> None:
        """The same (session, sequence) twice: the FSM sees it once; the second answer is the
        first's output, index and term, marked duplicate."""
        sid = self.driver.register()
        first = self.driver.command(sid, 1, b"add")
        again = self.driver.command(sid, 1, b"add")
        self.assertEqual(self.fsm.applied, [b"add"])
        self.assertEqual((again.output, again.index, again.term), (b'{"n":1}', first.index, 1))
        self.assertTrue(again.duplicate)
        self.assertFalse(first.duplicate)

    def test_a_rejection_is_replayed(self) -> None:
        sid = self.driver.register()
        first = self.driver.command(sid, 1, b"refuse")
        again = self.driver.command(sid, 1, b"refuse")
        self.assertEqual((first.error, first.refusal), ("refused", None))
        self.assertEqual((again.error, again.index, again.duplicate), ("refused", 2, True))

    def test_refusals(self) -> None:
        """Unknown session: session_expired; below the acked floor: sequence_forgotten; a
        malformed operation: bad_request. None of them reaches the FSM."""
        self.assertEqual(self.driver.command("7-x", 1, b"a").refusal, "session_expired")
        sid = self.driver.register()
        self.driver.command(sid, 1, b"a")
        self.driver.command(sid, 2, b"b", acked=2)
        forgotten = self.driver.command(sid, 1, b"a")
        self.assertEqual(forgotten.refusal, "sequence_forgotten")
        self.assertEqual(self.driver.op(b"\x09").refusal, "bad_request")
        self.assertEqual(self.fsm.applied, [b"a", b"b"])

    def test_expiry_follows_the_stamps(self) -> None:
        sid = self.driver.register()
        self.driver.command(sid, 1, b"a", advance=3599 * S)
        late = self.driver.command(sid, 2, b"b", advance=3600 * S + 1)
        self.assertEqual(late.refusal, "session_expired")
        self.assertEqual(self.fsm.applied, [b"a"])

    def test_settings_entry(self) -> None:
        settings = SessionSettings(idle_ns=10 * S, max_sessions=2, max_results=8)
        answer = self.driver.op(envelope.encode_settings(settings))
        self.assertEqual(
            json.loads(answer.output),
            {"idle_ms": 10_000, "max_sessions": 2, "max_results": 8, "sessions": 0},
        )
        self.assertEqual(self.driver.machine.table.settings, settings)
        bad = self.driver.op(envelope.encode_settings(SessionSettings(idle_ns=1)))
        self.assertEqual(bad.refusal, "bad_request")
        self.assertEqual(self.driver.machine.table.settings, settings)
        # Zero fields keep the current values.
        self.driver.op(envelope.encode_settings(SessionSettings(0, 0, 3)))
        self.assertEqual(
            self.driver.machine.table.settings, SessionSettings(10 * S, 2, max_results=3)
        )


class SnapshotTests(SynchronousTestCase):
    def sessioned(self) -> tuple[Driver, str]:
        driver = Driver(SessionedMachine(KeyValueStateMachine()))
        sid = driver.register()
        driver.command(sid, 1, b'{"op": "put", "key": "k", "value": "v"}')
        return driver, sid

    def test_a_restored_node_dedups_as_the_original(self) -> None:
        """Snapshot, restore into a fresh machine: the resent command is a duplicate there
        too, with the same answer, and both digests agree."""
        driver, sid = self.sessioned()
        image = io.BytesIO()
        driver.machine.begin_snapshot()(image)
        self.assertTrue(image.getvalue().startswith(MAGIC))
        restored = SessionedMachine(KeyValueStateMachine())
        restored.restore(io.BytesIO(image.getvalue()))
        self.assertEqual(digest(restored), digest(driver.machine))
        other = Driver(restored)
        other.index, other.now = driver.index, driver.now
        again = other.command(sid, 1, b'{"op": "put", "key": "k", "value": "v"}')
        original = driver.command(sid, 1, b'{"op": "put", "key": "k", "value": "v"}')
        self.assertEqual(again, original)
        self.assertTrue(again.duplicate)

    def test_without_sessions_the_snapshot_is_the_fsms_own(self) -> None:
        """No session yet: the snapshot and digest are the FSM's alone (as before sessions),
        and such a file (from an older Graft) restores with an empty table."""
        kv = KeyValueStateMachine()
        kv.apply(b'{"op": "put", "key": "k", "value": "v"}', 1)
        plain = io.BytesIO()
        kv.snapshot(plain)
        machine = SessionedMachine(kv)
        image = io.BytesIO()
        machine.begin_snapshot()(image)
        self.assertEqual(image.getvalue(), plain.getvalue())
        self.assertEqual(digest(machine), digest(kv))
        driver, _ = self.sessioned()
        driver.machine.restore(io.BytesIO(plain.getvalue()))
        self.assertEqual(len(driver.machine.table), 0)
        self.assertEqual(
            driver.machine.query(b'{"op": "get", "key": "k"}'),
            kv.query(b'{"op": "get", "key": "k"}'),
        )

    def test_the_digest_covers_the_table(self) -> None:
        a, _ = self.sessioned()
        b, sid = self.sessioned()
        self.assertEqual(digest(a.machine), digest(b.machine))
        b.command(sid, 2, b'{"op": "get", "key": "k"}')  # kv: no change to the FSM state
        self.assertNotEqual(digest(a.machine), digest(b.machine))

    def test_sqlite_inside_the_container_extracts_to_a_database(self) -> None:
        """The SQLite FSM's part of a container is a plain database (extract_fsm, through
        `graft snapshot extract`); the command refuses to overwrite a file or to read a
        damaged container, and leaves no partial file behind."""
        fsm = SQLiteStateMachine(data_dir=self.mktemp())
        self.addCleanup(fsm.close)
        driver = Driver(SessionedMachine(fsm))
        sid = driver.register()
        driver.command(sid, 1, b"CREATE TABLE t (x); INSERT INTO t VALUES (42)")
        base = Path(self.mktemp())
        base.mkdir()
        (base / "snap").write_bytes(_snapshot(driver.machine))
        extracted = run(["snapshot", "extract", str(base / "snap"), str(base / "db")])
        self.assertEqual(extracted.exit_code, 0, extracted.output)
        self.assertIn("wrote the state machine's snapshot", extracted.output)
        again = run(["snapshot", "extract", str(base / "snap"), str(base / "db")])
        self.assertEqual(again.exit_code, 1, again.output)
        self.assertIn("exists: name a new file", again.output)
        (base / "cut").write_bytes(_snapshot(driver.machine)[:20])
        damaged = run(["snapshot", "extract", str(base / "cut"), str(base / "db2")])
        self.assertEqual(damaged.exit_code, 1, damaged.output)
        self.assertIn("cannot extract", damaged.output)
        self.assertFalse((base / "db2").exists(), "no partial file is left")
        with sqlite3.connect(base / "db") as db:
            self.assertEqual(db.execute("SELECT x FROM t").fetchall(), [(42,)])
        db.close()
        restored = SQLiteStateMachine(data_dir=self.mktemp())
        self.addCleanup(restored.close)
        with_sessions(restored).restore(io.BytesIO(_snapshot(driver.machine)))
        self.assertEqual(restored.query(b"SELECT x FROM t"), b'{"columns":["x"],"rows":[[42]]}')

    def test_a_damaged_container_is_refused(self) -> None:
        driver, _ = self.sessioned()
        image = _snapshot(driver.machine)
        for data in (image[:20], image[:8] + b"\x07" + image[9:]):
            fresh = SessionedMachine(KeyValueStateMachine())
            self.assertRaises(SnapshotContainerError, fresh.restore, io.BytesIO(data))
        fresh = SessionedMachine(KeyValueStateMachine())
        self.assertRaises(CorruptSnapshot, fresh.restore, io.BytesIO(b"not a snapshot"))
        self.assertRaises(SnapshotContainerError, extract_fsm, io.BytesIO(image[:20]), io.BytesIO())


def _snapshot(machine: SessionedMachine) -> bytes:
    sink = io.BytesIO()
    machine.begin_snapshot()(sink)
    return sink.getvalue()
