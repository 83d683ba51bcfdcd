"""Ticks on the monotonic clock.

Elapsed time is measured on a monotonic clock (time.monotonic() in production), never on the
reactor's seconds(), which is the wall clock: an NTP step must neither stop the ticks (a
leader's lease would outlive the followers' stickiness) nor fire a burst of them (a follower's
stickiness would end early). Tick k is due when k tick periods of monotonic time have passed
since the start; the reactor's timers only say "look now".
"""

from __future__ import annotations

from collections.abc import Callable

from graft.driver.clock import DelayedCall, ReactorTime
from graft.driver.lifecycle import Lifecycle, Scheduler
from graft.driver.tick_waker import TickWaker
from graft.raft.node import RaftNode


class Ticks:
    def __init__(
        self,
        *,
        raft: RaftNode,
        clock: ReactorTime,
        monotonic: Callable[[], float],
        tick_seconds: float,
        election_seconds: float,
        lifecycle: Lifecycle,
        pipeline: Scheduler,
        waker: bool = False,
    ) -> None:
        self._raft = raft
        self._clock = clock
        self.now = monotonic
        self._tick_seconds = tick_seconds
        self._lifecycle = lifecycle
        self._pipeline = pipeline
        self._origin = monotonic()
        self._done = 0  # ticks due so far, as counted (not all run after a long stall)
        self.last_tick = self._origin  # when ticks last caught up, monotonic
        self._call: DelayedCall | None = None
        self._use_waker = waker
        self._waker: TickWaker | None = None
        # Past two election timeouts, more ticks change nothing.
        self._max_catch_up = 2 * max(1, round(election_seconds / tick_seconds)) + 2

    def start(self) -> None:
        self._origin = self.now()
        self._done = 0
        self.last_tick = self._origin
        self._schedule_tick()
        if self._use_waker:
            self._waker = TickWaker(self._clock, self._tick_seconds, self.overdue, self._on_timer)
            self._waker.start()

    def stop(self) -> None:
        if self._waker is not None:
            self._waker.stop()
            self._waker = None
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _due(self) -> int:
        # The epsilon keeps a timer that fires exactly on a boundary from missing it.
        return int((self.now() - self._origin) / self._tick_seconds + 1e-9)

    def overdue(self) -> bool:
        """A tick has been due for over half a period (the reactor's timer is late)."""
        next_due = self._origin + (self._done + 1) * self._tick_seconds
        return self.now() > next_due + self._tick_seconds / 2

    def catch_up(self) -> int:
        """Tick the core for every period that passed since the last catch-up; how many."""
        if self._lifecycle.stopping:
            return 0
        due = self._due()
        missed = due - self._done
        if missed <= 0:
            return 0
        self._done = due
        self.last_tick = self.now()
        for _ in range(min(missed, self._max_catch_up)):
            self._raft.tick()
        self._pipeline.want_early()  # the ticks may have made heartbeats that can leave early
        return missed

    def late(self, ticks: int) -> bool:
        """The ticks last caught up more than ``ticks`` periods ago."""
        return self.now() - self.last_tick > ticks * self._tick_seconds

    def _on_timer(self) -> None:
        self._call = None
        if self.catch_up():
            self._pipeline.schedule()
        self._schedule_tick()

    def _schedule_tick(self) -> None:
        if self._lifecycle.stopping:
            return
        if self._call is not None and self._call.active():
            self._call.cancel()
        next_due = self._origin + (self._done + 1) * self._tick_seconds
        # A wall clock stepped forward fires this early: nothing is due then, and it waits again.
        self._call = self._clock.callLater(max(0.0, next_due - self.now()), self._on_timer)
