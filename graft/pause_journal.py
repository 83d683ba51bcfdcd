"""A journal of what stops a node's main thread, for finding where tail latency comes from.

Off unless the ``GRAFT_PAUSE_JOURNAL`` environment variable names a file (``{pid}`` in it is
replaced by the process id, so one setting serves every node of a local cluster). When on, the
node appends one JSON object per line:

- ``{"event": "gc", "gen": 2, "ms": 41.2, "cpu": 39.0, "collected": 0, "at": T}``: each
  cyclic-GC pass (gc.callbacks), its generation, how long it held the thread and the CPU time
  the thread used meanwhile (much less than ``ms``: the process was descheduled, not busy);
- ``{"event": "lag", "ms": 63.0, "cpu": 12.0, "at": T}``: a reactor turn late by more than
  ``LAG_MS`` (a timer due every ``TICK_MS`` ran that much later), with the main thread's CPU
  time since the previous tick (near ``ms``: busy; far below: descheduled or GIL-starved);
- events other modules ``note``: the kv snapshot's ``fork`` (how long os.fork() took), the
  kv map's resize, ...

``at`` is time.time() at the end of the event. The journal costs one perf_counter pair per GC
pass and a timer every ``TICK_MS``; it is a developer's tool (benchmarks/growth_timeline.py
reads it), not a metric.
"""

from __future__ import annotations

import gc
import json
import os
import time
from collections.abc import Callable
from typing import Any, TextIO

from twisted.internet.task import LoopingCall

__all__ = ["enable_from_environment", "note", "start"]

ENVIRONMENT = "GRAFT_PAUSE_JOURNAL"
TICK_MS = 5.0
LAG_MS = 15.0

_out: TextIO | None = None


def note(event: str, **fields: Any) -> None:
    """Append one event to the journal; nothing when it is off."""
    if _out is None:
        return
    record = {"event": event, "at": round(time.time(), 4), **fields}
    _out.write(json.dumps(record) + "\n")


def enable_from_environment() -> bool:
    """Open the journal the environment names, if any, and start recording on the global
    reactor (call on the reactor thread, once); True when it is on."""
    path = os.environ.get(ENVIRONMENT)
    if not path or _out is not None:
        return False
    from twisted.internet import reactor

    start(path.replace("{pid}", str(os.getpid())), reactor)
    return True


def start(path: str, clock: Any) -> Callable[[], None]:
    """Record into ``path`` (appended), the reactor's lateness measured on ``clock`` (the
    reactor, or task.Clock in tests); returns the function that stops recording and closes
    the file (calling it again does nothing)."""
    global _out
    _out = open(path, "a", buffering=1)  # noqa: SIM115 (closed by the stop function)
    note("start", pid=os.getpid())
    gc.callbacks.append(_on_gc)
    watch = _watch_reactor(clock)

    def stop() -> None:
        global _out
        if not watch.running:
            return
        watch.stop()
        gc.callbacks.remove(_on_gc)
        if _out is not None:
            _out.close()
            _out = None

    return stop


_gc_started = (0.0, 0.0)


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    global _gc_started
    if phase == "start":
        _gc_started = (time.perf_counter(), time.thread_time())
        return
    ms = (time.perf_counter() - _gc_started[0]) * 1000
    cpu = (time.thread_time() - _gc_started[1]) * 1000
    note(
        "gc",
        gen=info["generation"],
        ms=round(ms, 2),
        cpu=round(cpu, 2),
        collected=info["collected"],
    )


def _watch_reactor(clock: Any) -> LoopingCall:
    last = [time.perf_counter(), time.thread_time()]

    def tick() -> None:
        now, cpu = time.perf_counter(), time.thread_time()
        late = (now - last[0]) * 1000 - TICK_MS
        used = (cpu - last[1]) * 1000
        last[:] = [now, cpu]
        if late > LAG_MS:
            note("lag", ms=round(late, 1), cpu=round(used, 1))

    call = LoopingCall(tick)
    call.clock = clock
    call.start(TICK_MS / 1000, now=False)
    return call
