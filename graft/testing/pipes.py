"""Reading a child process's output line by line, each line within a time limit: a child that
hangs fails the test instead of hanging it."""

from __future__ import annotations

import os
import select
import time
from typing import IO


class LineReader:
    """Lines from ``stream`` (a pipe), read from its file descriptor with a deadline per line.
    Read the rest with ``pending()`` plus whatever is read from the pipe afterwards."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._fd = stream.fileno()
        self._buffer = b""
        self._eof = False

    def readline(self, timeout: float) -> bytes:
        """The next line with its newline; at end of file what is left (b"" when nothing).
        Raises TimeoutError when no whole line arrives within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer and not self._eof:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"no line within {timeout:g} s; partial: {self._buffer[-200:]!r}"
                )
            readable, _, _ = select.select([self._fd], [], [], remaining)
            if readable:
                chunk = os.read(self._fd, 65536)
                self._buffer += chunk
                self._eof = not chunk
        line, newline, rest = self._buffer.partition(b"\n")
        self._buffer = rest
        return line + newline

    def pending(self) -> bytes:
        """What was read from the pipe but not returned as a line yet."""
        data, self._buffer = self._buffer, b""
        return data
