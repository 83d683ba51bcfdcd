"""The adaptive inline fsync: when a node writes its log on the reactor thread.

Handing a write to the writer thread and its answer back costs two thread switches and a
reactor wake-up (``callFromThread``), about as much as a fast disk's fsync; at one client that
is most of the difference to a node that writes in place. So a node writes on the reactor
thread, blocking it for the fsync, when all of these hold (``choose_inline``, pure):

- inline fsync is enabled (``storage.inline_fsync``; off by default: on the benchmark
  machine it did not lower the c=1 latency, docs/benchmarks.md "Latency");
- the node does not lead: a leader whose reactor waits on a stalling disk sends no
  heartbeats and costs the cluster an election, a follower's costs nothing (the leader and the
  other followers carry on, and pre-vote keeps it from disrupting them when it wakes). At one
  client the leader's own fsync is not what the client waits for anyway: it runs while the
  entries travel to the followers and back;
- the last ``WINDOW`` (100) fsyncs are known, and their p99 is under ``MAX_P99`` (2 ms): the
  reactor is never held long by a disk that has been fast;
- none of them took ``STALL`` (50 ms) or more, and no such stall happened in the last
  ``HOLD_OFF`` (300 s): after one slow fsync the node stays on the writer thread for five
  minutes, so a stalling disk blocks the reactor once, not once per recovery;
- the write is small (``MAX_BYTES``, 64 KiB of records): a large one is a loaded node's
  group commit, which the writer thread overlaps with the reactor's work;
- nothing is queued for the writer thread or waiting to be reported (writes complete in
  order).

Otherwise the write goes to the writer thread as before. Every fsync, inline or threaded, is
timed into the window, so the rule follows the disk both ways. ``InlineFsync`` keeps that
window and the counts ``/metrics`` shows (graft_log_writes_total by path, the current mode,
mode switches and stalls).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

WINDOW = 100
MAX_P99 = 0.002
STALL = 0.05
HOLD_OFF = 300.0
MAX_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class InlineFsyncRule:
    """The thresholds of ``choose_inline`` (the module docstring says what each is for)."""

    enabled: bool = True
    window: int = WINDOW
    max_p99: float = MAX_P99
    stall: float = STALL
    hold_off: float = HOLD_OFF
    max_bytes: int = MAX_BYTES


def p99(samples: Sequence[float]) -> float:
    """The nearest-rank 99th percentile (of 100 samples, the second largest)."""
    if not samples:
        return math.inf
    ordered = sorted(samples)
    return ordered[max(math.ceil(0.99 * len(ordered)) - 1, 0)]


def inline_allowed(
    rule: InlineFsyncRule, recent: Sequence[float], now: float, last_stall: float | None
) -> bool:
    """Whether the disk has been fast enough to fsync on the reactor thread (the mode)."""
    if not rule.enabled or len(recent) < rule.window:
        return False
    if last_stall is not None and now - last_stall < rule.hold_off:
        return False
    return max(recent) < rule.stall and p99(recent) < rule.max_p99


def choose_inline(
    rule: InlineFsyncRule,
    recent: Sequence[float],
    *,
    now: float,
    last_stall: float | None,
    size: int,
    writer_idle: bool,
    leading: bool,
) -> bool:
    """True: write this one on the reactor thread; False: hand it to the writer thread."""
    return (
        not leading
        and writer_idle
        and size <= rule.max_bytes
        and inline_allowed(rule, recent, now, last_stall)
    )


class InlineFsync:
    """The recent fsync times and what was decided, for one log.

    ``observe`` runs on whichever thread fsynced; the rest on the reactor thread. The mode
    (``inline``, as /metrics shows it) is the disk's verdict; a leader's writes are threaded
    whatever it says."""

    def __init__(self, rule: InlineFsyncRule, clock: Callable[[], float] = time.monotonic) -> None:
        self.rule = rule
        self._clock = clock
        self._lock = threading.Lock()
        self._recent: deque[float] = deque(maxlen=rule.window)
        self._last_stall: float | None = None
        self.leading = False  # set by the driver when this node's role changes
        self.inline = False  # the mode at the last decision
        self.inline_writes = 0
        self.threaded_writes = 0
        self.switches = 0
        self.stalls = 0

    def observe(self, seconds: float) -> None:
        with self._lock:
            self._recent.append(seconds)
            if seconds >= self.rule.stall:
                self._last_stall = self._clock()
                self.stalls += 1

    def choose(self, size: int, *, writer_idle: bool) -> bool:
        """Decide one write (and count it on its path)."""
        with self._lock:
            recent = tuple(self._recent)
            last_stall = self._last_stall
        now = self._clock()
        mode = inline_allowed(self.rule, recent, now, last_stall)
        if mode != self.inline:
            self.inline = mode
            self.switches += 1
        chosen = mode and choose_inline(
            self.rule,
            recent,
            now=now,
            last_stall=last_stall,
            size=size,
            writer_idle=writer_idle,
            leading=self.leading,
        )
        if chosen:
            self.inline_writes += 1
        else:
            self.threaded_writes += 1
        return chosen
