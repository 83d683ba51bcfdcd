"""The leader's stamp on commands (graft.stamp, graft.driver.stamps) in a running cluster: SQL
time and randomness agree on every replica, the leader stamps what a follower forwards, the
stamps never go back across a leader change, and a log written before stamps still applies."""

from __future__ import annotations

import json
import random
from functools import partial
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from graft.driver.stamps import Stamper
from graft.fsm import StateMachine, digest
from graft.fsm.kv import KeyValueStateMachine
from graft.fsm.sqlite import SQLiteStateMachine
from graft.raft.types import Entry, EntryKind, HardState, Membership
from graft.stamp import (
    SESSION_VERSION,
    STAMP_SIZE,
    Stamp,
    StampFormatError,
    decode_any,
    decode_stamped,
    encode_batch,
    encode_stamped,
    split_stamped,
)
from tests.support.driver import NODES, DriverCluster, MemoryDurable, Network

T0 = 1_733_400_000  # 2024-12-05 12:00:00 UTC
SCHEMA = (
    b"CREATE TABLE t (id INTEGER PRIMARY KEY, created TEXT DEFAULT CURRENT_TIMESTAMP, "
    b"at TEXT, r INTEGER, b BLOB)"
)
INSERT = b"INSERT INTO t (at, r, b) VALUES (datetime('now'), random(), randomblob(8))"
ROWS = b"SELECT id, created, at, r, hex(b) FROM t ORDER BY id"


class StampClusterTests(DriverCluster):
    def setUp(self) -> None:
        self.fsms: dict[str, SQLiteStateMachine] = {}
        # Each node's wall clock is the shared Clock plus its own offset (seconds).
        self.offsets = dict.fromkeys(NODES, 0.0)

    def start(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.network = Network(self.clock)
        self.storages = {}
        self.addCleanup(self._stop)
        members = Membership(voters=frozenset(NODES))
        for i, node in enumerate(NODES):
            self.add_node(
                node,
                members,
                seed=i,
                fsm=partial(self.sqlite, node),
                wall_ns=partial(self.wall_ns, node),
                seeds=partial(random.Random(100 + i).getrandbits, 64),
            )

    def sqlite(self, node: str) -> StateMachine:
        fsm = self.fsms[node] = SQLiteStateMachine(data_dir=self.mktemp())
        self.addCleanup(fsm.close)
        return fsm

    def wall_ns(self, node: str) -> int:
        return int((self.clock.seconds() + self.offsets[node]) * 1_000_000_000)

    def submit(self, node: str, *commands: bytes) -> int:
        results = self.result(self.network.nodes[node].submit(list(commands)))
        self.assertIsInstance(results, list, str(results))
        for result in results:
            self.assertIsNone(result.error)
        index: int = results[-1].index
        return index

    def rows(self, node: str) -> list[list[Any]]:
        rows: list[list[Any]] = json.loads(self.fsms[node].query(ROWS))["rows"]
        return rows

    def stamps(self, node: str) -> list[int]:
        storage = self.storages[node]
        entries = storage.entries(storage.first_index(), storage.last_index() + 1)
        return [decode_stamped(e.data)[0].time_ns for e in entries if e.kind is EntryKind.STAMPED]

    def test_sql_time_and_random_agree_on_every_replica(self) -> None:
        """CURRENT_TIMESTAMP defaults, datetime('now'), random() and randomblob() sent through
        a follower commit, and every replica holds the same values; the time is the leader's
        wall clock, not the follower's (it forwards its commands unstamped)."""
        self.start()
        leader = self.leader()
        follower = next(n for n in NODES if n != leader)
        self.offsets[follower] = -3600.0  # an hour behind: must not show
        self.submit(follower, SCHEMA)
        index = self.submit(follower, INSERT, INSERT)
        for node in NODES:
            self.wait_applied(node, index)
        rows = self.rows(leader)
        self.assertEqual(len(rows), 2)
        for node in NODES:
            self.assertEqual(self.rows(node), rows, node)
            self.assertEqual(digest(self.fsms[node]), digest(self.fsms[leader]), node)
        for _, created, at, r, blob in rows:
            self.assertTrue(created.startswith("2024-12-05 12:00:"), created)
            self.assertEqual(at, created)
            self.assertIsInstance(r, int)
            self.assertEqual(len(blob), 16)
        self.assertNotEqual(rows[0][3:], rows[1][3:])  # each entry has its own seed

    def test_stamps_never_go_back_across_a_leader_change(self) -> None:
        """A leader whose clock runs an hour ahead stamps its entries; the next leader, whose
        clock is right, stamps no earlier than the last stamp in its log."""
        self.start()
        first = self.leader()
        self.offsets[first] = 3600.0
        self.submit(first, SCHEMA)
        index = self.submit(first, INSERT)
        for node in NODES:
            self.wait_applied(node, index)
        ahead = self.stamps(first)[-1]
        self.network.isolate(first)
        others = [n for n in NODES if n != first]
        self.wait_until(
            lambda: any(self.network.nodes[n].is_leader() for n in others), "a new leader"
        )
        second = next(n for n in others if self.network.nodes[n].is_leader())
        index = self.submit(second, INSERT)
        third = next(n for n in others if n != second)
        self.wait_applied(third, index)
        stamps = self.stamps(second)
        self.assertEqual(stamps, sorted(stamps))
        self.assertEqual(stamps[-1], ahead)  # its own clock is an hour behind the floor
        self.assertEqual(self.rows(second)[-1][2], self.rows(second)[0][2])
        self.assertEqual(self.rows(third), self.rows(second))


class OldLogTests(DriverCluster):
    """A node whose log was written before stamps (NORMAL entries) applies it as then."""

    def start_one(self, entries: list[Entry]) -> SQLiteStateMachine:
        storage = MemoryDurable()
        storage.set_hard_state(HardState(term=1))
        storage.append(entries)
        fsm = SQLiteStateMachine(data_dir=self.mktemp())
        self.addCleanup(fsm.close)
        self.stopped: list[bool] = []
        self.clock = Clock()
        self.clock.advance(T0)
        self.network = Network(self.clock)
        self.storages = {}
        self.addCleanup(self._stop)
        self.add_node(
            "a",
            Membership(voters=frozenset({"a"})),
            fsm=lambda: fsm,
            storage=lambda: storage,
            stop_process=lambda: self.stopped.append(True),
        )
        return fsm

    def test_unstamped_entries_apply_as_before(self) -> None:
        """Old entries apply, with 'now' refused as it was when they were written; new
        commands on the same log are stamped and may use it."""
        fsm = self.start_one(
            [
                Entry(index=1, term=1, data=b"CREATE TABLE t (x)"),
                Entry(index=2, term=1, data=b"INSERT INTO t VALUES (datetime('now'))"),
                Entry(index=3, term=1, data=b"INSERT INTO t VALUES ('old')"),
            ]
        )
        self.wait_applied("a", 3)
        self.assertEqual(json.loads(fsm.query(b"SELECT x FROM t"))["rows"], [["old"]])
        self.submit_one(b"INSERT INTO t VALUES (datetime('now'))")
        rows = json.loads(fsm.query(b"SELECT x FROM t ORDER BY rowid"))["rows"]
        self.assertEqual(rows[0], ["old"])
        self.assertTrue(rows[1][0].startswith("2024-12-05 12:0"), rows)

    def submit_one(self, command: bytes) -> None:
        results = self.result(self.network.nodes["a"].submit([command]))
        self.assertIsNone(results[0].error)

    def test_a_newer_stamp_format_stops_the_node(self) -> None:
        """A stamped entry in a format this build does not read stops the node (rather than
        applying it some other way than the nodes that can read it)."""
        newer = b"\x03" + encode_stamped(Stamp(T0 * 10**9, 1), b"SELECT 1")[1:]
        fsm = self.start_one([Entry(index=1, term=1, kind=EntryKind.STAMPED, data=newer)])
        self.wait_until(lambda: self.stopped, "the node stops")
        self.assertEqual(len(self.flushLoggedErrors(StampFormatError)), 1)
        self.assertEqual(
            fsm.query(b"SELECT count(*) FROM sqlite_master"),
            b'{"columns":["count(*)"],"rows":[[0]]}',
        )


class StamperTests(DriverCluster):
    def test_floor_from_the_log_at_start(self) -> None:
        """A node learns the latest stamp from its log on disk, so as leader it never stamps
        earlier, even if its clock is behind."""
        storage = MemoryDurable()
        stamped = [encode_stamped(Stamp(t, 0), b"x") for t in (5, 9)]
        storage.append(
            [
                Entry(index=1, term=1, data=b"old"),
                Entry(index=2, term=1, kind=EntryKind.STAMPED, data=stamped[0]),
                Entry(index=3, term=1, kind=EntryKind.STAMPED, data=stamped[1]),
                Entry(index=4, term=2, kind=EntryKind.NOOP),
            ]
        )
        stamper = Stamper(wall_ns=lambda: 1, seed=lambda: 7)
        stamper.saw_log(storage)
        self.assertEqual(stamper.floor, 9)
        (data,) = stamper.stamp([b"cmd"])
        self.assertEqual(decode_stamped(data), (Stamp(9, 7), b"cmd"))
        self.assertEqual(len(data), STAMP_SIZE + 3)


class StampCodecTests(SynchronousTestCase):
    """graft.stamp's readers and the leader's batch encoder agree with encode_stamped."""

    def test_split_stamped_reads_both_formats(self) -> None:
        plain = encode_stamped(Stamp(11, 22), b"cmd")
        session = encode_stamped(Stamp(33, 44), b"op", SESSION_VERSION)
        self.assertEqual(split_stamped(plain), (11, 22, b"cmd", False))
        self.assertEqual(split_stamped(session), (33, 44, b"op", True))
        self.assertEqual(decode_any(plain), (Stamp(11, 22), b"cmd", False))
        self.assertEqual(decode_any(session), (Stamp(33, 44), b"op", True))

    def test_unreadable_stamps_are_refused_alike(self) -> None:
        newer = b"\x03" + encode_stamped(Stamp(1, 2), b"x")[1:]
        for data, said in ((b"\x01short", "fewer than its 17-byte stamp"), (newer, "version 3")):
            for read in (split_stamped, decode_any, decode_stamped):
                with (
                    self.subTest(data=data, read=read.__name__),
                    self.assertRaisesRegex(StampFormatError, said),
                ):
                    read(data)
        with self.assertRaisesRegex(StampFormatError, "version 2"):
            decode_stamped(encode_stamped(Stamp(1, 2), b"op", SESSION_VERSION))

    def test_encode_batch_is_encode_stamped_per_command(self) -> None:
        seeds = iter([5, 6, 7])
        batch = encode_batch(99, lambda: next(seeds), [b"a", b"", b"ccc"])
        expected = [encode_stamped(Stamp(99, s), c) for s, c in ((5, b"a"), (6, b""), (7, b"ccc"))]
        self.assertEqual(batch, expected)
        (session,) = encode_batch(1, lambda: 2, [b"op"], SESSION_VERSION)
        self.assertEqual(session, encode_stamped(Stamp(1, 2), b"op", SESSION_VERSION))


class _RecordingKV(KeyValueStateMachine):
    """The kv FSM (no apply_stamped), recording what the driver hands its apply."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[bytes, int]] = []

    def apply(self, command: bytes, index: int) -> bytes:
        self.calls.append((command, index))
        return super().apply(command, index)


class _RecordingStamped(_RecordingKV):
    """The same with apply_stamped: it is called instead of apply, with the entry's stamp."""

    def __init__(self) -> None:
        super().__init__()
        self.stamps: list[tuple[bytes, int, Stamp | None]] = []

    def apply_stamped(self, command: bytes, index: int, stamp: Stamp | None) -> bytes:
        self.stamps.append((command, index, stamp))
        return KeyValueStateMachine.apply(self, command, index)


class ApplyStampedEntriesTests(DriverCluster):
    """Each replica hands a stamped entry's command to the FSM: to ``apply`` without a Stamp
    when the FSM has no ``apply_stamped``, else to ``apply_stamped`` with the entry's stamp;
    either way the node's stamp floor follows the entries."""

    COMMANDS = [b'{"op":"put","key":"a","value":"1"}', b'{"op":"put","key":"b","value":"2"}']

    def run_commands(self, fsm: type[_RecordingKV]) -> dict[str, _RecordingKV]:
        fsms: dict[str, _RecordingKV] = {}

        def make(node: str) -> _RecordingKV:
            fsms[node] = fsm()
            return fsms[node]

        self.clock = Clock()
        self.network = Network(self.clock)
        self.storages = {}
        self.addCleanup(self._stop)
        members = Membership(voters=frozenset(NODES))
        for i, node in enumerate(NODES):
            self.add_node(node, members, seed=i, fsm=partial(make, node))
        leader = self.network.nodes[self.leader()]
        results = self.result(leader.submit(self.COMMANDS))
        self.assertEqual([r.error for r in results], [None, None])
        for node in NODES:
            self.wait_applied(node, results[-1].index)
        return fsms

    def logged(self, node: str) -> list[tuple[int, bytes]]:
        """(index, data) of each STAMPED entry in ``node``'s log."""
        storage = self.storages[node]
        entries = storage.entries(storage.first_index(), storage.last_index() + 1)
        return [(e.index, e.data) for e in entries if e.kind is EntryKind.STAMPED]

    def test_apply_gets_the_command_and_index(self) -> None:
        fsms = self.run_commands(_RecordingKV)
        for node in NODES:
            logged = self.logged(node)
            self.assertEqual([c for c, _ in fsms[node].calls], self.COMMANDS)
            self.assertEqual(fsms[node].calls, [(d[STAMP_SIZE:], i) for i, d in logged])
            applier = self.network.nodes[node]._parts.applier
            self.assertEqual(applier.stamp_floor_ns, decode_stamped(logged[-1][1])[0].time_ns)
            self.assertGreater(applier.stamp_floor_ns, 0)

    def test_apply_stamped_gets_the_entrys_stamp(self) -> None:
        fsms = self.run_commands(_RecordingStamped)
        for node in NODES:
            fsm = fsms[node]
            assert isinstance(fsm, _RecordingStamped)
            self.assertEqual(fsm.calls, [])  # apply_stamped instead
            expected = [(d[STAMP_SIZE:], i, decode_stamped(d)[0]) for i, d in self.logged(node)]
            self.assertEqual(fsm.stamps, expected)
            self.assertEqual(len(expected), 2)
