"""The driver's two clocks: the reactor's time (timers, deadlines) and a monotonic source
(ticks, the leader's lease), kept apart so a wall-clock step cannot move a tick."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

# Seconds on a clock that never steps (time.monotonic in production).
Monotonic = Callable[[], float]


class DelayedCall(Protocol):
    """twisted.internet.interfaces.DelayedCall, the part the driver uses."""

    def active(self) -> bool: ...

    def cancel(self) -> None: ...


class ReactorTime(Protocol):
    """twisted.internet.interfaces.ReactorTime as mypy can check it (it cannot check a
    class against a zope interface): the reactor in production, task.Clock in tests."""

    def seconds(self) -> float: ...

    def callLater(
        self, delay: float, callable: Callable[..., Any], /, *args: Any, **kw: Any
    ) -> DelayedCall: ...
