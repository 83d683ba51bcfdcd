"""Commands of an FSM that asks for a worker thread (``apply_in_thread``, as SQLite's does)
apply there, through graft.driver.fsm_work: while one runs the node keeps leading and
answering, later commands, reads and snapshots wait their turn in order, and an FSM that
raises in the thread still stops the node naming the entry."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from graft.config import ConfigError
from graft.driver.apply_thread import ApplyThread
from graft.driver.node import GraftNode
from graft.driver.pipeline import thread_segments
from graft.driver.port import Consistency
from graft.fsm.kv import KeyValueStateMachine
from graft.fsm.sqlite import SQLiteStateMachine
from graft.raft.types import Entry, EntryKind, Membership
from graft.sessions.machine import with_sessions
from graft.testing.kv import get, put
from tests.support.driver import NODES, TICK, DriverCluster, HeldThread
from tests.support.snapshot_cluster import SnapshotCluster

ELECTION = 10 * TICK  # the driver's default: ten ticks


class ThreadedKv(KeyValueStateMachine):
    """The kv FSM, asking for its commands to apply in a worker thread; it raises on
    ``b"poison"``, as an FSM with a bug would."""

    apply_in_thread = True

    def apply(self, command: bytes, index: int) -> bytes:
        if command == b"poison":
            raise RuntimeError("a bug in the FSM")
        return super().apply(command, index)


class ApplyThreadTests(SnapshotCluster):
    def setUp(self) -> None:
        self.threads = {n: HeldThread() for n in NODES}
        self.stopped = dict.fromkeys(NODES, 0)
        self.addCleanup(self._release_all)
        self.start_cluster()
        self.node = self.network.nodes[self.leader_id]

    def make_fsm(self, node_id: str) -> ThreadedKv:
        return ThreadedKv()

    def snapshot_settings(self) -> dict[str, Any]:
        return {"command_timeout": 60.0, "query_timeout": 60.0}

    def stop_process(self, node_id: str) -> Callable[[], None]:
        return partial(self._count_stop, node_id)

    def add_node(self, node_id: str, bootstrap: Membership, **options: Any) -> GraftNode:
        return super().add_node(node_id, bootstrap, run_apply=self.threads[node_id], **options)

    def _count_stop(self, node_id: str) -> None:
        self.stopped[node_id] += 1

    def _release_all(self) -> None:
        for thread in self.threads.values():
            while thread.held:
                thread.release()

    def submit(self, command: bytes) -> list[Any]:
        box: list[Any] = []
        self.node.submit([command]).addBoth(box.append)
        return box

    def test_the_node_keeps_leading_while_a_command_applies(self) -> None:
        """A command whose apply runs for ten election timeouts in every node's thread costs
        no election: the leader leads on in the same term, every node answers its status and
        knows the entry committed, none has applied it, and the client's answer comes when
        the leader's thread is done."""
        answer = self.submit(put("a", "1"))
        self.wait_until(lambda: all(t.held for t in self.threads.values()), "all nodes apply")
        term = self.node.status().term
        self.advance(10 * ELECTION)
        self.assertEqual(answer, [])
        self.assertTrue(self.node.is_leader())
        for node_id in NODES:
            status = self.network.nodes[node_id].status()
            self.assertEqual((status.term, status.leader), (term, self.leader_id), node_id)
            self.assertGreater(status.commit, status.applied, node_id)
        self.threads[self.leader_id].release()
        self.wait_until(lambda: answer, "the command is answered")
        [result] = answer[0]
        self.assertIsNone(result.error)
        self.assertEqual(self.node.status().applied, result.index)

    def test_later_commands_and_reads_wait_their_turn(self) -> None:
        """A second command goes to the thread only once the first is done, and a read of its
        key waits for both; each is answered in order, and the read sees the second."""
        first = self.submit(put("a", "1"))
        self.wait_until(lambda: self.threads[self.leader_id].held, "the first applies")
        second = self.submit(put("a", "2"))
        read: list[Any] = []
        self.advance(ELECTION)
        self.node.query(get("a"), Consistency.STRONG).addBoth(read.append)
        self.advance(ELECTION)
        thread = self.threads[self.leader_id]
        self.assertEqual((len(thread.held), first, second, read), (1, [], [], []))
        thread.release()
        self.wait_until(lambda: first, "the first is answered")
        self.assertEqual((second, read), ([], []))
        self.wait_until(lambda: thread.held, "the second applies")
        thread.release()
        self.wait_until(lambda: second and read, "the second and the read are answered")
        self.assertEqual(json.loads(read[0].output), {"value": "2"})

    def test_a_snapshot_waits_for_the_apply(self) -> None:
        """A snapshot asked for while a command applies is taken once the apply is done, and
        holds the command."""
        answer = self.submit(put("a", "1"))
        self.wait_until(lambda: self.threads[self.leader_id].held, "the command applies")
        taken: list[Any] = []
        self.node.take_snapshot().addBoth(taken.append)
        self.advance(ELECTION)
        self.assertEqual(taken, [])
        self.threads[self.leader_id].release()
        self.wait_until(lambda: taken and answer, "the snapshot is taken")
        self.assertIsInstance(taken[0], dict, str(taken[0]))
        self.assertGreaterEqual(taken[0]["index"], answer[0][0].index)

    def test_an_fsm_that_raises_in_the_thread_stops_the_node(self) -> None:
        """The FSM raising on a committed command in the thread stops every node that applies
        it, naming the entry, as on the reactor thread; nothing after it is applied."""
        self.submit(b"poison")
        after = self.submit(put("b", "1"))
        self.wait_until(lambda: all(t.held for t in self.threads.values()), "all nodes apply")
        applied = {n: self.network.nodes[n].status().applied for n in NODES}
        for thread in self.threads.values():
            thread.release()
        self.advance(ELECTION)
        self.assertEqual(self.stopped, dict.fromkeys(NODES, 1))
        self.assertEqual([t.held for t in self.threads.values()], [[], [], []])
        self.assertEqual({n: self.network.nodes[n].status().applied for n in NODES}, applied)
        self.assertEqual(after, [])
        logged = self.flushLoggedErrors(RuntimeError)
        self.assertEqual([str(f.value) for f in logged], ["a bug in the FSM"] * 3)


class ThreadSegmentTests(DriverCluster):
    def test_markers_apply_alone_and_runs_without_commands_stay(self) -> None:
        """A marker is cut out to apply alone on the reactor thread (its digest pins the FSM
        at its index); runs with a command go to the thread, runs without stay."""

        def entry(index: int, kind: EntryKind, data: bytes = b"") -> Entry:
            return Entry(index=index, term=1, kind=kind, data=data)

        noop, normal = EntryKind.NOOP, EntryKind.NORMAL
        entries = [
            entry(1, noop),
            entry(2, normal, b"x"),
            entry(3, noop, b"marker"),
            entry(4, noop),
            entry(5, normal, b"y"),
            entry(6, normal, b"z"),
        ]
        segments = [
            ([e.index for e in run], threaded) for run, threaded in thread_segments(entries)
        ]
        self.assertEqual(segments, [([1, 2], True), ([3], False), ([4, 5, 6], True)])
        self.assertEqual(
            [([e.index for e in run], t) for run, t in thread_segments(entries[3:4])],
            [([4], False)],
        )


class SqliteChoiceTests(SynchronousTestCase):
    def make(self, **options: Any) -> SQLiteStateMachine:
        data_dir = Path(self.mktemp())
        fsm = SQLiteStateMachine(data_dir=data_dir, base_dir=data_dir, **options)
        self.addCleanup(fsm.close)
        return fsm

    def test_sqlite_applies_in_the_thread_unless_told_not_to(self) -> None:
        """The SQLite FSM asks for the apply thread, through the session layer the driver
        sees; ``fsm.options.apply_in_thread: false`` keeps its commands on the reactor thread,
        and anything but a boolean stops the node at start."""
        self.assertTrue(with_sessions(self.make()).apply_in_thread)
        self.assertFalse(with_sessions(self.make(apply_in_thread=False)).apply_in_thread)
        for bad in ("false", 0, None):
            with self.assertRaises(ConfigError) as raised:
                self.make(apply_in_thread=bad)
            self.assertIn("fsm.options.apply_in_thread", str(raised.exception))


class _Reactor:
    """callFromThread as the thread calls it: kept for the test to run on its own thread."""

    def __init__(self) -> None:
        self.calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self.called = threading.Event()

    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:
        self.calls.append((f, args))
        self.called.set()

    def run_calls(self) -> None:
        self.called.wait(10)
        for f, args in self.calls:
            f(*args)


class ApplyRunnerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = _Reactor()
        self.runner = ApplyThread(self.reactor, wait=0.5)
        self.addCleanup(self.runner.stop)

    def test_a_quick_call_is_answered_at_once_from_the_thread(self) -> None:
        """A call done within the wait comes back already fired, having run on the apply
        thread, with nothing left for the reactor; one that raises comes back failed."""
        answer = self.successResultOf(self.runner(lambda: threading.current_thread().name))
        self.assertEqual(answer, "graft-apply")
        failure = self.failureResultOf(self.runner(lambda: 1 // 0), ZeroDivisionError)
        self.assertIn("division", str(failure.value))
        self.assertEqual(self.reactor.calls, [])

    def test_a_slow_call_is_left_to_the_thread_and_answered_through_the_reactor(self) -> None:
        """A call still running at the end of the wait returns an unfired Deferred at once (the
        reactor goes back to its loop); the thread fires it through callFromThread, and the
        calls after it run after it, in order."""
        runner = ApplyThread(self.reactor, wait=0.01)
        self.addCleanup(runner.stop)
        go = threading.Event()
        order: list[str] = []

        def slow() -> str:
            go.wait(10)
            order.append("slow")
            return "done"

        d = runner(slow)
        self.assertNoResult(d)
        go.set()
        self.reactor.run_calls()
        self.assertEqual(self.successResultOf(d), "done")
        self.assertEqual(self.successResultOf(runner(lambda: order.append("next"))), None)
        self.assertEqual(order, ["slow", "next"])
