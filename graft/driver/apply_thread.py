# mypy: disable-error-code="no-untyped-call"
"""The apply thread: where an ``apply_in_thread`` FSM's commands run (graft.driver.fsm_work).

Handing each batch to a thread and its answer back through the reactor's waker costs two
wake-ups, and while the reactor runs Python the thread waits for the GIL at every callback
SQLite makes into Python (the authorizer, the progress handler, the replaced functions): under
load that cost SQLite writes 10-20 %. So the reactor waits for the batch, with the GIL
released, for up to ``WAIT_S``: a batch that finishes by then (nearly all of them) is answered
in the same reactor turn, as if applied there, and the thread had the GIL to itself. Only a
batch that runs longer is left to the thread; the reactor goes back to its loop (heartbeats,
votes, /status) and hears of the result through ``callFromThread``. So the reactor is held at
most ``WAIT_S`` per batch, however long a command runs.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure

# Longest the reactor waits for a batch before leaving it to the thread: well under a heartbeat
# interval, and above what a batch of ordinary commands takes.
WAIT_S = 0.005


class FromThreads(Protocol):
    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None: ...


class _Job:
    __slots__ = ("done", "f", "failure", "left", "lock", "result", "waiter")

    def __init__(self, f: Callable[[], Any]) -> None:
        self.f = f
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.left = False  # the reactor stopped waiting: the thread answers through the reactor
        self.result: Any = None
        self.failure: Failure | None = None
        self.waiter: Deferred[Any] | None = None


class ApplyThread:
    """One daemon thread running the calls handed to it, in order; see the module docstring.
    Called on the reactor thread only; ``stop`` ends the thread after the calls queued."""

    def __init__(self, reactor: FromThreads, wait: float = WAIT_S) -> None:
        self._reactor = reactor
        self._wait = wait
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def __call__(self, f: Callable[[], Any]) -> Deferred[Any]:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="graft-apply", daemon=True)
            self._thread.start()
        job = _Job(f)
        self._jobs.put(job)
        if job.done.wait(self._wait):
            return _outcome(job)
        with job.lock:
            if job.done.is_set():  # finished between the wait and the lock
                return _outcome(job)
            job.left = True
            job.waiter = Deferred()
            return job.waiter

    def stop(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            self._thread = None

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                job.result = job.f()
            except BaseException:
                job.failure = Failure()
            with job.lock:
                job.done.set()
                if job.left:
                    self._reactor.callFromThread(_fire, job)


def _outcome(job: _Job) -> Deferred[Any]:
    return fail(job.failure) if job.failure is not None else succeed(job.result)


def _fire(job: _Job) -> None:
    assert job.waiter is not None
    if job.failure is not None:
        job.waiter.errback(job.failure)
    else:
        job.waiter.callback(job.result)
