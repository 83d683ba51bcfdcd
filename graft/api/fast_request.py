"""The request a FastChannel hands to a hot route's handler (graft.api.fast_channel).

It offers the part of twisted.web's ``Request`` that the hot handlers and ``served`` use
(method, path, uri, headers in and out, the body, the status, done hooks) and nothing else,
so a request costs a few attribute stores instead of twisted.web's Request and Headers
objects. The channel writes the answer: ``response_head`` builds the status line and headers.
"""

from __future__ import annotations

import io

from twisted.python.failure import Failure
from twisted.web.http import RESPONSES

from graft.api.request_done import DoneHook, run_done_hooks

_SPACE_FOR_CONTROL = bytes.maketrans(b"\r\n\x00", b"   ")


class RawHeaders:
    """The request's headers by lower-cased name, each with its values in arrival order."""

    __slots__ = ("_values",)

    def __init__(self, values: dict[bytes, list[bytes]]) -> None:
        self._values = values

    def getRawHeaders(self, name: bytes, default: list[bytes] | None = None) -> list[bytes] | None:
        return self._values.get(name.lower(), default)

    def hasHeader(self, name: bytes) -> bool:
        return name.lower() in self._values


class FastRequest:
    """One request on a hot route: what the handler reads, and the answer's status and
    headers that it sets."""

    __slots__ = (
        "_disconnected",
        "_headers_out",
        "_hooks",
        "closes",
        "code",
        "code_message",
        "content",
        "method",
        "path",
        "requestHeaders",
        "uri",
    )

    def __init__(
        self, method: bytes, uri: bytes, path: bytes, headers: dict[bytes, list[bytes]], body: bytes
    ) -> None:
        self.method = method
        self.uri = uri
        self.path = path
        self.content = io.BytesIO(body)
        self.requestHeaders = RawHeaders(headers)
        self.code = 200
        self.code_message: bytes | None = None
        self._headers_out: dict[bytes, bytes] = {}
        self._hooks: list[DoneHook] | None = None
        self._disconnected = False
        self.closes = False  # the client asked to close the connection after this answer

    def getHeader(self, name: bytes) -> bytes | None:
        """The last value of the header ``name`` (any case), as twisted.web answers."""
        values = self.requestHeaders._values.get(name.lower())
        return values[-1] if values else None

    def setHeader(self, name: bytes, value: bytes) -> None:
        self._headers_out[name] = value

    def clear_headers(self) -> None:
        """Forget the headers set so far (an answer replaced by an error)."""
        self._headers_out.clear()

    def setResponseCode(self, code: int, message: bytes | None = None) -> None:
        self.code = code
        self.code_message = message

    def add_done_hook(self, hook: DoneHook) -> None:
        if self._hooks is None:
            self._hooks = [hook]
        else:
            self._hooks.append(hook)

    def done(self, outcome: Failure | None) -> None:
        """Call the done hooks once: None when the answer was written, else the reason the
        connection was lost first."""
        if outcome is not None:
            self._disconnected = True
        hooks, self._hooks = self._hooks, None
        run_done_hooks(hooks, outcome)

    def response_head(self, fixed: bytes, body_length: int, closing: bool) -> bytes:
        """The status line and headers: those set by the handler, ``fixed`` (complete header
        lines the channel adds to every answer), the body's length and, when the channel
        closes after this answer, ``Connection: close``. A header value cannot end the head
        early: CR, LF and NUL in it become spaces."""
        message = self.code_message or RESPONSES.get(self.code, b"Unknown Status")
        parts = [b"HTTP/1.1 %d %s\r\n" % (self.code, message), fixed]
        headers = self._headers_out
        headers[b"Content-Length"] = b"%d" % body_length
        for name, value in headers.items():
            if b"\r" in value or b"\n" in value or b"\x00" in value:
                value = value.translate(_SPACE_FOR_CONTROL)
            parts.append(name + b": " + value + b"\r\n")
        if closing:
            parts.append(b"Connection: close\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)
