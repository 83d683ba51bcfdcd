"""Many timers on one reactor timer: the per-request deadlines of the write path.

A write on the leader used to arm three reactor timers, each set and cancelled within a few
milliseconds: the API's deadline for the command (graft.api.deadline), the proposal's waiter
(graft.waiters) and the HTTP connection's idle timeout (twisted.web's TimeoutMixin). Twisted
builds a ``DelayedCall`` for each, moves it into its heap on the next reactor turn with a
Python ``__lt__`` per comparison, and filters cancelled ones out later: about 6 % of the
leader's CPU at 64 connections. ``Deadlines`` keeps such timers in a heap of tuples (compared
in C) behind a single reactor ``DelayedCall`` armed for the earliest live one; cancelling one
only marks it. Timers still fire at their exact time, in time order (ties in the order set).

A timer here has what callers use of a ``DelayedCall``: ``active``, ``cancel`` and ``reset``
(TimeoutMixin's), ``getTime``, and the same errors for cancelling or resetting one that
already ran or was cancelled. Not for ``callLater(0, ...)`` work that must run on the next
reactor turn in order with other such calls: use the reactor for that.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.error import AlreadyCalled, AlreadyCancelled
from twisted.logger import Logger

_log = Logger()

# Cancelled or superseded heap slots are dropped all at once when they are at least this many
# and at least half the heap: memory stays within about twice the live timers.
_COMPACT_AT = 64


class Clock(Protocol):
    """The part of IReactorTime used here."""

    def seconds(self) -> float: ...

    def callLater(self, delay: float, f: Callable[..., Any], /, *args: Any) -> Any: ...


class Timer:
    """One pending call of a ``Deadlines``."""

    __slots__ = ("_args", "_func", "_kw", "_owner", "_slot", "called", "cancelled", "time")

    def __init__(
        self,
        owner: Deadlines,
        when: float,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kw: dict[str, Any],
    ) -> None:
        self._owner = owner
        self.time = when
        self._func = func
        self._args = args
        self._kw = kw
        self._slot = 0  # the sequence number of this timer's live heap slot
        self.cancelled = False
        self.called = False

    def getTime(self) -> float:
        return self.time

    def active(self) -> bool:
        return not (self.cancelled or self.called)

    def cancel(self) -> None:
        if self.cancelled:
            raise AlreadyCancelled
        if self.called:
            raise AlreadyCalled
        self.cancelled = True
        self._func = _nothing  # let go of what the call would have used
        self._args = ()
        self._kw = {}
        self._owner._cancelled(self)

    def reset(self, seconds_from_now: float) -> None:
        """Run ``seconds_from_now`` from now instead (TimeoutMixin's ``resetTimeout``)."""
        if self.cancelled:
            raise AlreadyCancelled
        if self.called:
            raise AlreadyCalled
        self._owner._reset(self, self._owner.seconds() + seconds_from_now)

    def __repr__(self) -> str:
        state = "cancelled" if self.cancelled else "called" if self.called else "pending"
        return f"<Timer at {self.time:.3f} {state} {self._func!r}>"


def _nothing(*args: Any, **kw: Any) -> None:
    return None


class Deadlines:
    """``callLater`` for timers that are mostly cancelled before they are due."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        # (time, sequence, timer): a slot is live if its sequence is the timer's _slot and the
        # timer is pending; a timer pushed later than its slot (reset) is pushed again then.
        self._heap: list[tuple[float, int, Timer]] = []
        self._sequence = itertools.count(1)
        self._dead = 0  # slots in the heap that are no longer live
        self._armed: Any = None  # the reactor's DelayedCall for the earliest slot
        self._armed_at = float("inf")
        self._firing = False

    def seconds(self) -> float:
        return self._clock.seconds()

    def callLater(self, delay: float, func: Callable[..., Any], /, *args: Any, **kw: Any) -> Timer:
        timer = Timer(self, self._clock.seconds() + max(delay, 0.0), func, args, kw)
        self._push(timer)
        return timer

    def __len__(self) -> int:
        """Timers still pending."""
        return len(self._heap) - self._dead

    def _push(self, timer: Timer) -> None:
        timer._slot = slot = next(self._sequence)
        heapq.heappush(self._heap, (timer.time, slot, timer))
        if timer.time < self._armed_at and not self._firing:
            self._arm(timer.time)

    def _cancelled(self, timer: Timer) -> None:
        self._dead += 1
        heap = self._heap
        # Usually the earliest timer is the one cancelled (answers come in about the order
        # asked): pop what is dead on top now, so the reactor is not woken for it later.
        while heap and not _live(heap[0]):
            heapq.heappop(heap)
            self._dead -= 1
        if not heap and not self._firing:
            self._disarm()  # nothing left to wait for: leave the reactor no timer
        if self._dead >= _COMPACT_AT and self._dead * 2 >= len(heap):
            self._heap = [slot for slot in heap if _live(slot)]
            heapq.heapify(self._heap)
            self._dead = 0

    def _reset(self, timer: Timer, when: float) -> None:
        if when >= timer.time:
            # Later: its slot stays, and is pushed again with the new time once it comes up.
            timer.time = when
            return
        timer.time = when
        self._dead += 1  # the old, later slot
        self._push(timer)

    def _arm(self, when: float) -> None:
        self._disarm()
        self._armed_at = when
        self._armed = self._clock.callLater(max(when - self._clock.seconds(), 0.0), self._fire)

    def _disarm(self) -> None:
        if self._armed is not None and self._armed.active():
            self._armed.cancel()
        self._armed = None
        self._armed_at = float("inf")

    def _fire(self) -> None:
        self._armed = None
        self._armed_at = float("inf")
        self._firing = True
        try:
            heap = self._heap
            while heap:
                when, slot, timer = heap[0]
                if not _live(heap[0]):
                    heapq.heappop(heap)
                    self._dead -= 1
                    continue
                if timer.time > when:  # reset to later: it waits in a new slot
                    heapq.heappop(heap)
                    timer._slot = slot = next(self._sequence)
                    heapq.heappush(heap, (timer.time, slot, timer))
                    continue
                if when > self._clock.seconds():
                    break
                heapq.heappop(heap)
                timer.called = True
                func, args, kw = timer._func, timer._args, timer._kw
                timer._func, timer._args, timer._kw = _nothing, (), {}
                try:
                    func(*args, **kw)
                except Exception:
                    _log.failure("while running the timed call {timer!r}", timer=timer)
                heap = self._heap  # a call may have cancelled timers and compacted the heap
        finally:
            self._firing = False
            if self._heap:
                self._arm(self._heap[0][0])


def _live(slot: tuple[float, int, Timer]) -> bool:
    timer = slot[2]
    return slot[1] == timer._slot and not (timer.cancelled or timer.called)
