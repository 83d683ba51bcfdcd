"""The HTTP ``Date`` header, formatted once per second instead of once per response."""

# twisted.web is untyped; its calls are checked by the tests.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import time
from collections.abc import Callable

from twisted.web.http import datetimeToString

__all__ = ["DateCache"]


class DateCache:
    """``Date`` header values (RFC 9110's IMF-fixdate, which has whole seconds), each formatted
    once: twisted.web formats one per response (gmtime and a format string), which was a
    quarter of the time a node spent receiving a command, request line to handler."""

    __slots__ = ("_clock", "_second", "_value")

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._second = -1
        self._value = b""

    def now(self) -> bytes:
        second = int(self._clock())
        if second != self._second:
            self._value = datetimeToString(second)
            self._second = second
        return self._value
