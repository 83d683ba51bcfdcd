"""Deadlines: many timers behind one reactor timer, firing as the reactor's would."""

from __future__ import annotations

from typing import Any

from twisted.internet.error import AlreadyCalled, AlreadyCancelled
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from graft.deadlines import Deadlines


class DeadlinesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.deadlines = Deadlines(self.clock)
        self.fired: list[Any] = []

    def later(self, delay: float, name: str) -> Any:
        return self.deadlines.callLater(delay, self.fired.append, name)

    def test_fire_at_their_time_in_time_order(self) -> None:
        """Timers run at their exact time, earliest first, ties in the order set."""
        self.later(3.0, "c")
        self.later(1.0, "a")
        self.later(3.0, "d")
        self.later(2.0, "b")
        self.clock.advance(0.999)
        self.assertEqual(self.fired, [])
        self.clock.advance(0.001)
        self.assertEqual(self.fired, ["a"])
        self.clock.advance(1.0)
        self.assertEqual(self.fired, ["a", "b"])
        self.clock.advance(1.0)
        self.assertEqual(self.fired, ["a", "b", "c", "d"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_one_reactor_timer_for_many(self) -> None:
        """However many timers wait, the reactor holds one call, for the earliest."""
        for i in range(100):
            self.later(5.0 + i, str(i))
        self.later(1.0, "first")
        calls: list[Any] = list(self.clock.getDelayedCalls())
        self.assertEqual(len(calls), 1)
        self.assertEqual(calls[0].getTime(), 1.0)

    def test_cancelled_never_fire(self) -> None:
        """A cancelled timer does not run; the others still do, at their time."""
        a = self.later(1.0, "a")
        self.later(2.0, "b")
        c = self.later(3.0, "c")
        a.cancel()
        c.cancel()
        self.assertFalse(a.active())
        self.clock.advance(5.0)
        self.assertEqual(self.fired, ["b"])
        self.assertEqual(len(self.deadlines), 0)

    def test_cancelling_every_timer_leaves_no_reactor_call(self) -> None:
        timers = [self.later(1.0 + i, str(i)) for i in range(10)]
        for timer in timers:
            timer.cancel()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.deadlines), 0)

    def test_cancelled_slots_are_reclaimed(self) -> None:
        """Timers cancelled behind a long-lived one do not pile up in the heap."""
        self.later(1.0, "first")  # earlier than all of them: they never reach the top
        for i in range(10_000):
            self.later(5.0, str(i)).cancel()
        self.assertLess(len(self.deadlines._heap), 200)
        self.assertEqual(len(self.deadlines), 1)
        self.clock.advance(10.0)
        self.assertEqual(self.fired, ["first"])

    def test_cancel_and_reset_errors_match_delayed_calls(self) -> None:
        """As with a DelayedCall: cancelling twice or after the call raises (TimeoutMixin
        relies on these)."""
        a = self.later(1.0, "a")
        a.cancel()
        self.assertRaises(AlreadyCancelled, a.cancel)
        self.assertRaises(AlreadyCancelled, a.reset, 1.0)
        b = self.later(1.0, "b")
        self.clock.advance(1.0)
        self.assertFalse(b.active())
        self.assertRaises(AlreadyCalled, b.cancel)
        self.assertRaises(AlreadyCalled, b.reset, 1.0)

    def test_reset_later(self) -> None:
        """Reset to a later time, a timer runs then and not at its first time."""
        a = self.later(1.0, "a")
        self.clock.advance(0.5)
        a.reset(2.0)
        self.assertEqual(a.getTime(), 2.5)
        self.clock.advance(0.5)
        self.assertEqual(self.fired, [])
        self.clock.advance(1.5)
        self.assertEqual(self.fired, ["a"])

    def test_reset_earlier(self) -> None:
        """Reset to an earlier time, a timer runs then, once."""
        self.later(5.0, "b")
        a = self.later(10.0, "a")
        a.reset(1.0)
        self.clock.advance(1.0)
        self.assertEqual(self.fired, ["a"])
        self.clock.advance(20.0)
        self.assertEqual(self.fired, ["a", "b"])

    def test_reset_back_and_forth_fires_once_at_the_last_time(self) -> None:
        """Earlier, then later than at first: one call, at the last time, and the timer is
        counted once while it waits."""
        a = self.later(10.0, "a")
        a.reset(1.0)
        a.reset(20.0)
        self.assertEqual(len(self.deadlines), 1)
        self.clock.advance(10.0)
        self.assertEqual((self.fired, len(self.deadlines)), ([], 1))
        self.clock.advance(10.0)
        self.assertEqual((self.fired, len(self.deadlines)), (["a"], 0))

    def test_reset_timers_counted_once_across_reclaiming(self) -> None:
        """A timer reset earlier leaves its old slot behind; reclaiming the heap drops that
        slot too, so the count of waiting timers stays true."""
        self.later(0.5, "head")
        a = self.later(10.0, "a")
        a.reset(1.0)
        for i in range(200):
            self.later(5.0, str(i)).cancel()
        self.assertEqual(len(self.deadlines), 2)
        self.assertEqual(len(self.deadlines._heap), 2)

    def test_timers_set_by_a_timer(self) -> None:
        """A timer's call may set timers: one due now runs in the same pass, a later one
        at its time."""

        def chain() -> None:
            self.fired.append("chain")
            self.later(0, "now")
            self.later(1.0, "after")

        self.deadlines.callLater(1.0, chain)
        self.clock.advance(1.0)
        self.assertEqual(self.fired, ["chain", "now"])
        self.clock.advance(1.0)
        self.assertEqual(self.fired, ["chain", "now", "after"])

    def test_a_failing_call_is_logged_and_the_rest_run(self) -> None:
        def boom() -> None:
            raise ZeroDivisionError("boom")

        self.deadlines.callLater(1.0, boom)
        self.later(1.0, "after")
        self.clock.advance(1.0)
        self.assertEqual(self.fired, ["after"])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
