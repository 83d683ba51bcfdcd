# mypy: disable-error-code="no-untyped-call"
"""Restoring the FSM from a snapshot the leader sent, off the reactor thread.

A restore takes seconds on a large state (a kv map of 500k keys, a SQLite file of 1 GB). It
runs in a worker thread while the reactor keeps serving: heartbeats are answered, appends above
the snapshot are persisted and acknowledged, /status and /metrics answer. The FSM itself is
touched by one thing at a time, so while a restore runs or waits:

- committed entries are not applied: their applies queue behind it, in order (``after``);
- reads wait until the applied index reaches the snapshot's (``restoring_to``, see
  graft.driver.reads), which it does only once the restore is done.

Restores run one at a time, in the order the snapshots were installed in storage. A restore
that fails leaves the FSM in no known state: the node stops (Lifecycle.fatal), as it did when
the restore ran on the reactor thread; storage already holds the snapshot, so a restart
restores it again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from graft.driver.lifecycle import Lifecycle

RESTORE_ADVICE = (
    "Storage already holds the snapshot: fix the cause (disk, a corrupt snapshot from the "
    "leader, an FSM bug) and restart the node; it restores the snapshot again at start, or "
    "wipe its data directory and let it rejoin from the leader (docs/operations.md)."
)


class FsmRestores:
    """See the module docstring. Used on the reactor thread only; ``blocking`` restores run
    through ``run_in_thread``."""

    def __init__(
        self, *, lifecycle: Lifecycle, run_in_thread: Callable[..., Deferred[Any]]
    ) -> None:
        self._lifecycle = lifecycle
        self._run_in_thread = run_in_thread
        # Work waiting for the restore under way, oldest first: a function that returns a
        # Deferred is a restore (the queue waits for it), any other is run and done.
        self._queue: deque[Callable[[], Deferred[None] | None]] = deque()
        self._running = False  # a restore is in its thread
        self._idle: list[Deferred[None]] = []
        # The highest snapshot index a restore was queued for: until it is restored the
        # applied index stays below it, so a read that waits for it waits for the restore.
        self.restoring_to = 0

    @property
    def busy(self) -> bool:
        """A restore runs or waits: the FSM is not to be touched now."""
        return self._running or bool(self._queue)

    def after(self, work: Callable[[], object]) -> None:
        """Run ``work`` (it touches the FSM on the reactor thread) now, or, while restores run
        or wait, after them, in the order given."""
        if not self.busy:
            work()
            return

        def run() -> None:
            work()

        self._queue.append(run)

    def restore(
        self, index: int, blocking: Callable[[], object], done: Callable[[], object], what: str
    ) -> None:
        """Queue a restore of snapshot ``index``: ``blocking`` runs in a thread, then ``done``
        on the reactor thread; if either raises, the node stops while ``what``."""
        self.restoring_to = max(self.restoring_to, index)

        def start() -> Deferred[None]:
            d: Deferred[Any] = self._run_in_thread(blocking)
            d.addCallback(lambda _: done())
            d.addErrback(self._failed, what)
            return d

        self._queue.append(start)
        if not self._running:
            self._drain()

    def idle(self) -> Deferred[None]:
        """Fires once no restore runs or waits (the node's stop waits for it before it closes
        the FSM: a restore in its thread cannot be interrupted)."""
        if not self.busy:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        return d

    def _drain(self) -> None:
        while self._queue:
            if self._lifecycle.stopping:
                # Nothing more is applied; storage holds any snapshot not restored yet.
                self._queue.clear()
                break
            d = self._queue.popleft()()
            if d is not None:
                self._running = True
                d.addBoth(self._finished)
                return
        self._notify_idle()

    def _finished(self, _: object) -> None:
        self._running = False
        self._drain()

    def _failed(self, failure: Failure, what: str) -> None:
        self._queue.clear()  # the FSM is in no known state: apply nothing more to it
        self._lifecycle.fatal(failure, what, RESTORE_ADVICE)

    def _notify_idle(self) -> None:
        waiting, self._idle = self._idle, []
        for d in waiting:
            d.callback(None)
