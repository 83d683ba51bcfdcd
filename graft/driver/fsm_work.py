# mypy: disable-error-code="no-untyped-call"
"""Work that holds the FSM off the reactor thread: restoring it from a snapshot the leader
sent, and applying commands for an FSM that asks for it (``apply_in_thread``).

Such work takes seconds at times: a restore of a large state (a kv map of 500k keys, a SQLite
file of 1 GB), or a SQL command looping over large values (its work budget counts SQLite's VM
steps, not the bytes each step handles). It runs in a worker thread while the reactor keeps
serving: heartbeats are answered, votes cast, appends persisted and acknowledged, /status and
/metrics answer. The FSM itself is touched by one thing at a time, so while such work runs or
waits:

- other work on the FSM waits its turn, in order: applies on the reactor thread (``after``), a
  snapshot's pin and a delta's finish (``turn``), the node's stop (``idle``);
- reads wait until the applied index reaches what they need, which it does only once the work
  before it is done (during a restore, at least the snapshot's: ``restoring_to``, see
  graft.driver.reads).

Work runs one at a time, in the order queued. A restore that fails leaves the FSM in no known
state: the node stops (Lifecycle.fatal), as it did when the restore ran on the reactor thread;
storage already holds the snapshot, so a restart restores it again. An FSM that raises on a
command stops the node as on the reactor thread (graft.driver.apply).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from graft.driver.lifecycle import Lifecycle
from graft.errors import shutting_down

T = TypeVar("T")

RESTORE_ADVICE = (
    "Storage already holds the snapshot: fix the cause (disk, a corrupt snapshot from the "
    "leader, an FSM bug) and restart the node; it restores the snapshot again at start, or "
    "wipe its data directory and let it rejoin from the leader (docs/operations.md)."
)


class FsmWork:
    """See the module docstring. Used on the reactor thread only; the ``blocking`` parts of
    work run through ``run_in_thread``."""

    def __init__(
        self,
        *,
        lifecycle: Lifecycle,
        run_in_thread: Callable[..., Deferred[Any]],
        run_apply: Callable[..., Deferred[Any]] | None = None,
    ) -> None:
        self._lifecycle = lifecycle
        self._run_in_thread = run_in_thread
        self._run_apply = run_apply or run_in_thread
        # Work waiting its turn, oldest first, with where it runs: "thread" (a function that
        # starts the work and returns its Deferred, which the queue waits for), "reactor" (run
        # and done), or "turn" (fires a ``turn()`` waiter).
        self._queue: deque[tuple[Callable[[], Deferred[None] | None], str]] = deque()
        self._running = False  # work is in its thread
        self._restores = 0  # restores queued or running
        self._idle: list[Deferred[None]] = []
        # The highest snapshot index a restore was queued for: until it is restored the
        # applied index stays below it, so a read that waits for it waits for the restore.
        self.restoring_to = 0

    @property
    def busy(self) -> bool:
        """Work runs or waits: the FSM is not to be touched now but through ``after``."""
        return self._running or bool(self._queue)

    def after(self, work: Callable[[], object]) -> None:
        """Run ``work`` (it touches the FSM on the reactor thread) now, or, while other work
        runs or waits, after it, in the order given."""
        if not self.busy:
            work()
            return

        def run() -> None:
            work()

        self._queue.append((run, "reactor"))

    def turn(self) -> Deferred[None]:
        """Fires once the work queued before this call is done and before any queued after
        it starts: until its callbacks return, the FSM is the caller's, on the reactor thread
        (a snapshot's pin, a delta's finish). Under steady load the queue never empties, so
        this, not ``idle``, is how such work gets its turn. Fails with a 503 ``no_leader``
        (shutting down) if the node stops first: a stopping node's FSM is not to be touched."""
        if not self.busy:
            return succeed(None)
        d: Deferred[None] = Deferred()

        def fire() -> None:
            if self._lifecycle.stopping:
                d.errback(shutting_down())
            else:
                d.callback(None)

        self._queue.append((fire, "turn"))
        return d

    @property
    def restoring(self) -> bool:
        """A restore runs or waits (what a read that times out is told)."""
        return self._restores > 0

    def restore(
        self, index: int, blocking: Callable[[], object], done: Callable[[], object], what: str
    ) -> None:
        """Queue a restore of snapshot ``index``: ``blocking`` runs in a thread, then ``done``
        on the reactor thread; if either raises, the node stops while ``what``."""
        self.restoring_to = max(self.restoring_to, index)
        self._restores += 1

        def restored(_: object) -> None:
            self._restores -= 1
            done()

        self._in_thread(self._run_in_thread, blocking, restored, what, RESTORE_ADVICE)

    def apply(
        self, blocking: Callable[[], T], done: Callable[[T], object], what: str, advice: str
    ) -> None:
        """Queue an apply of commands: ``blocking`` runs in the apply thread, then ``done``
        with its result on the reactor thread; if either raises, the node stops while
        ``what``, with ``advice``."""
        self._in_thread(self._run_apply, blocking, done, what, advice)

    def _in_thread(
        self,
        run: Callable[..., Deferred[Any]],
        blocking: Callable[[], T],
        done: Callable[[T], object],
        what: str,
        advice: str,
    ) -> None:
        def start() -> Deferred[None]:
            d: Deferred[Any] = run(blocking)
            d.addCallback(done)
            d.addErrback(self._failed, what, advice)
            return d

        self._queue.append((start, "thread"))
        if not self._running:
            self._drain()

    def idle(self) -> Deferred[None]:
        """Fires once no work runs or waits (the node's stop waits for it before it closes the
        FSM: work in its thread cannot be interrupted)."""
        if not self.busy:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        return d

    def close(self) -> None:
        """After ``idle``, at the node's stop: end the apply thread, if it has one to end."""
        stop = getattr(self._run_apply, "stop", None)
        if stop is not None:
            stop()

    def _drain(self) -> None:
        while self._queue:
            work, where = self._queue.popleft()
            if self._lifecycle.stopping and where != "turn":
                # Nothing more is applied or restored (storage holds any snapshot not restored
                # yet, and the log the entries); ``turn`` waiters are told.
                continue
            d = work()
            if d is not None:
                self._running = True
                d.addBoth(self._finished)
                return
        self._notify_idle()

    def _finished(self, _: object) -> None:
        self._running = False
        self._drain()

    def _failed(self, failure: Failure, what: str, advice: str) -> None:
        # The FSM is in no known state: the node stops, and the queue runs nothing more on it.
        self._lifecycle.fatal(failure, what, advice)

    def _notify_idle(self) -> None:
        waiting, self._idle = self._idle, []
        for d in waiting:
            d.callback(None)
