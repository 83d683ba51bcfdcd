"""TickWaker: a thread that wakes the reactor for overdue ticks on the monotonic clock."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from twisted.trial import unittest

from graft.driver.tick_waker import TickWaker


class QueueReactor:
    """callFromThread records the call; the test runs it, as the reactor thread would."""

    def __init__(self) -> None:
        self.calls: list[Callable[[], Any]] = []
        self.queued = threading.Event()

    def callFromThread(self, f: Callable[[], Any]) -> None:
        self.calls.append(f)
        self.queued.set()


class TickWakerTests(unittest.SynchronousTestCase):
    def test_wakes_only_when_overdue_and_once_at_a_time(self) -> None:
        """Nothing is queued while ticks are on time; once they are overdue one wake-up is
        queued, and no other until the reactor has run it."""
        reactor = QueueReactor()
        overdue = threading.Event()
        woken: list[int] = []
        waker = TickWaker(reactor, 0.001, overdue.is_set, lambda: woken.append(1))
        waker.start()
        self.addCleanup(waker.stop)
        self.assertFalse(reactor.queued.wait(0.05))
        overdue.set()
        self.assertTrue(reactor.queued.wait(10))
        threading.Event().wait(0.05)  # time for the thread to (wrongly) queue another
        self.assertEqual(len(reactor.calls), 1)
        reactor.calls.pop()()
        self.assertEqual(woken, [1])

    def test_stopped_waker_does_not_wake(self) -> None:
        """A wake-up queued before stop() does nothing when it runs."""
        reactor = QueueReactor()
        woken: list[int] = []
        waker = TickWaker(reactor, 0.001, lambda: True, lambda: woken.append(1))
        waker.start()
        self.assertTrue(reactor.queued.wait(10))
        waker.stop()
        reactor.calls[0]()
        self.assertEqual(woken, [])
