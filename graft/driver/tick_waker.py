"""Wake the reactor for ticks on the monotonic clock, whatever the wall clock does.

Twisted's reactor times its delayed calls with ``reactor.seconds()``, which is ``time.time()``:
after the wall clock steps back 2 s (an NTP step) every pending ``callLater`` fires 2 s late. The
driver counts its ticks on ``time.monotonic()`` and catches up at every timer and message, but a
leader whose timer is held back that way would send no heartbeats until it fires. This daemon
thread sleeps on the monotonic clock (``time.sleep`` does) and, when the driver's ticks are
overdue, asks the reactor (``callFromThread`` wakes it at once) to catch up.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


class TickWaker:
    def __init__(
        self,
        reactor: Any,
        period: float,
        overdue: Callable[[], bool],
        wake: Callable[[], None],
    ) -> None:
        self._reactor = reactor
        self._period = period
        self._overdue = overdue
        self._wake = wake
        self._stopped = threading.Event()
        self._pending = False  # a wake-up queued on the reactor and not yet run
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="graft-tick-waker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def _run(self) -> None:
        while not self._stopped.is_set():
            time.sleep(self._period)
            # Reads a float the reactor thread writes: a stale value only delays a wake-up.
            if not self._pending and not self._stopped.is_set() and self._overdue():
                self._pending = True
                try:
                    self._reactor.callFromThread(self._fire)
                except Exception:  # the reactor is shutting down
                    return

    def _fire(self) -> None:
        self._pending = False
        if not self._stopped.is_set():
            self._wake()
