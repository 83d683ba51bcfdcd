"""Stamps along one write's path, for the developer's tracer ``benchmarks/trace_write.py``.

Off unless the environment variable ``GRAFT_TRACE`` names a directory when the process starts.
Call sites read ``if devtrace.ON: devtrace.mark(stage, index)``, so when it is off a stamp costs
one attribute read and a branch. When on, each stamp appends ``(time.monotonic_ns(), stage,
index, thread CPU ns)`` to an in-memory list (any thread may stamp: ``list.append`` is atomic),
written out to ``$GRAFT_TRACE/<pid>.trace`` every ``_FLUSH_EVERY`` stamps, when the reactor
shuts down and when the process exits.

CLOCK_MONOTONIC is one clock for every process of the machine, so the stamps of a leader and
its followers fall on one time line. ``index`` is the Raft log index the stage concerns (-1:
none known there, e.g. the HTTP request before it is proposed). The stamping thread's CPU time
(CLOCK_THREAD_CPUTIME_ID) says how much of a step between two stamps of one thread was work,
and how much waiting (for a core, the GIL, a wake-up), which holds on a loaded machine.

``watch_reactor`` also stamps each reactor iteration (stage ``turn``), so a trace counts the
reactor turns between two stages.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from pathlib import Path
from typing import Any

_DIR = os.environ.get("GRAFT_TRACE", "")
ON = bool(_DIR)

_FLUSH_EVERY = 50_000
_events: list[tuple[int, str, int, int]] = []
_lock = threading.Lock()  # for flushing only; stamps append without it


def mark(stage: str, index: int = -1) -> None:
    _events.append((time.monotonic_ns(), stage, index, time.thread_time_ns()))
    if len(_events) >= _FLUSH_EVERY:
        flush()


def flush() -> None:
    """Append the stamps so far to this process's trace file."""
    if not ON:
        return
    with _lock:
        taken = _events[:]
        del _events[: len(taken)]
        if not taken:
            return
        path = Path(_DIR) / f"{os.getpid()}.trace"
        with path.open("a", encoding="ascii") as out:
            out.writelines(f"{ns} {stage} {index} {cpu}\n" for ns, stage, index, cpu in taken)


def watch_reactor(reactor: Any) -> None:
    """Stamp ``turn`` at the start of every reactor iteration (when tracing is on)."""
    if not ON:
        return
    run_until_current = reactor.runUntilCurrent

    def traced() -> None:
        mark("turn")
        run_until_current()

    reactor.runUntilCurrent = traced
    # A node stopped by SIGTERM dies of the signal again after the reactor stops (Twisted's
    # runner re-raises it), so atexit would not run: write the stamps out at shutdown.
    reactor.addSystemEventTrigger("after", "shutdown", flush)


if ON:
    Path(_DIR).mkdir(parents=True, exist_ok=True)
    atexit.register(flush)
