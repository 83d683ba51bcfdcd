"""The queue of work that holds the FSM (graft.driver.fsm_work), with its threads played by the
test: work runs one at a time in the order queued, a ``turn`` waiter gets its turn even when
the queue never empties, and a stopping node runs nothing more on the FSM."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from graft.driver.fsm_work import FsmWork
from graft.driver.lifecycle import Lifecycle
from graft.errors import NoLeader


class Threads:
    """Work handed to a thread waits until ``finish`` runs the oldest one."""

    def __init__(self) -> None:
        self.held: list[tuple[Deferred[Any], Callable[[], Any]]] = []

    def __call__(self, f: Callable[[], Any]) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.held.append((d, f))
        return d

    def finish(self) -> None:
        d, f = self.held.pop(0)
        try:
            result = f()
        except Exception:
            d.errback(Failure())
        else:
            d.callback(result)


class FsmWorkTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.stops = 0
        self.lifecycle = Lifecycle(self._stop)
        self.threads = Threads()
        self.work = FsmWork(lifecycle=self.lifecycle, run_in_thread=self.threads)
        self.done: list[str] = []

    def _stop(self) -> None:
        self.stops += 1

    def apply(self, name: str) -> None:
        self.work.apply(lambda: name, self.done.append, f"applying {name}", "advice")

    def test_a_turn_comes_in_order_while_the_queue_never_empties(self) -> None:
        """Under steady load a new apply is queued while each one runs, so the queue is never
        empty and ``idle`` never fires; a ``turn`` waiter fires after the work queued before
        it and before the work queued after it."""
        self.apply("a")
        self.apply("b")
        turns: list[str] = []
        self.work.turn().addCallback(lambda _: turns.append(f"turn after {self.done}"))
        idle: list[object] = []
        self.work.idle().addCallback(idle.append)
        self.apply("c")
        for name in "defg":
            self.threads.finish()
            self.apply(name)
        self.assertEqual(turns, ["turn after ['a', 'b']"])
        self.assertEqual(self.done, ["a", "b", "c", "d"])
        self.assertEqual(idle, [])
        self.assertTrue(self.work.busy)

    def test_work_on_the_reactor_waits_for_the_thread(self) -> None:
        """``after`` runs at once on an idle FSM, else in its place in the queue."""
        self.work.after(lambda: self.done.append("now"))
        self.apply("a")
        self.work.after(lambda: self.done.append("after a"))
        self.assertEqual(self.done, ["now"])
        self.threads.finish()
        self.assertEqual(self.done, ["now", "a", "after a"])
        self.assertFalse(self.work.busy)

    def test_a_stopping_node_runs_nothing_more_and_tells_the_turns(self) -> None:
        """Once the node stops, queued applies and reactor work are dropped and ``turn``
        waiters fail with 503 (shutting down); ``idle`` fires when the running work ends."""
        self.apply("a")
        self.apply("b")
        self.work.after(lambda: self.done.append("reactor"))
        turn: list[object] = []
        self.work.turn().addBoth(turn.append)
        idle: list[object] = []
        self.work.idle().addCallback(idle.append)
        self.lifecycle.stopping = True
        self.threads.finish()
        self.assertEqual(self.done, ["a"])
        self.assertEqual(self.threads.held, [])
        [failure] = turn
        assert isinstance(failure, Failure)
        self.assertIsInstance(failure.value, NoLeader)
        self.assertEqual(idle, [None])

    def test_work_that_raises_stops_the_node(self) -> None:
        """An exception in the thread (a bug) stops the node, and the queue runs nothing more
        on the FSM."""

        def broken() -> str:
            raise RuntimeError("bug")

        self.work.apply(broken, self.done.append, "applying entries 5-6", "advice")
        self.apply("b")
        self.threads.finish()
        self.assertEqual((self.stops, self.done, self.threads.held), (1, [], []))
        self.assertTrue(self.lifecycle.stopping)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
