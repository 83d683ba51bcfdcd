"""The API's HTTP/1.1 connections: the hot routes parsed here, everything else by twisted.web.

twisted.web's channel and Request (a line receiver, a Headers object with name canonicalising
in and out, a Request of some forty attributes, producers and Deferreds around every
response) were about two thirds of the instructions a leader spends on one write
(docs/benchmarks.md, "The leader at c=64"). A ``FastChannel`` parses the requests that make up
the load itself, in a strict subset of HTTP/1.1 (docs/architecture.md, "The API"):

    request line  POST|GET, an origin-form target of printable ASCII, HTTP/1.1, on a hot
                  route (graft.api.root: /command, /commands, /query)
    headers       token names, values without NUL/CR/LF, at most MAX_HEADERS, head at most
                  MAX_HEAD_BYTES
    body          none, or one Content-Length of at most api.max_body_bytes; no
                  Transfer-Encoding, no Expect

The first request of a connection that falls outside that subset (any other route, a chunked
or oversized body, HTTP/1.0, a malformed line) hands the connection, with every byte not yet
served, to the twisted.web channel the Site builds (graft.api.limits.ApiChannel), which serves
it and the rest of the connection as before: its answers, its 400s and 413s. So the fast path
never has to be right about an unusual request; it only has to recognise a usual one.

Limits kept here as there: one request is served at a time (pipelined bytes wait, and reading
stops past PIPELINED_BYTES), the request deadline (a request must arrive whole within
api.limits.request_deadline_ms of its first byte: 408), the idle timeout (the Site's
``timeOut``; checked once per period, so an idle connection closes after one to two periods),
the open-connection count, and TCP back-pressure when the client does not read its answers.
"""

# twisted.web is untyped; its calls are checked by the tests.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer, ITCPTransport
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource
from twisted.web.server import version

from graft import devtrace
from graft.api.fast_request import FastRequest
from graft.api.http_date import DateCache
from graft.api.limits import ApiSite, cancel_pending, too_slow_answer
from graft.api.responses import write_error
from graft.api.root import ApiRoot, DirectHandler
from graft.errors import Internal
from graft.socket_flush import flush_now

_log = Logger()

# twisted.web's own bounds (HTTPChannel.totalHeadersSize, maxHeaders): a head past them is
# handed over, and twisted.web answers it 400 as it always has.
MAX_HEAD_BYTES = 16384
MAX_HEADERS = 500
# Bytes of later requests held while one is served before reading stops (TCP back-pressure).
PIPELINED_BYTES = 65536
# How long a connection closed for a timeout may take to let go before it is aborted.
ABORT_AFTER_S = 15.0

_REQUEST_LINE = re.compile(rb"(POST|GET) (/[!-~]*) HTTP/1\.1").fullmatch
_HEADER_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([^\x00\r\n]*?)[ \t]*").fullmatch
_HEAD_END = b"\r\n\r\n"

_DATES = DateCache()
_SERVER = b"Server: " + version + b"\r\n"


class _Fixed:
    """The header lines every answer starts with, rebuilt when the Date's second changes."""

    date = b""
    lines = b""

    @classmethod
    def now(cls) -> bytes:
        date = _DATES.now()
        if date is not cls.date:
            cls.date = date
            cls.lines = _SERVER + b"Date: " + date + b"\r\n"
        return cls.lines


# What _parse answers when it is not a request to serve.
_WAIT = 0  # the request has not arrived whole
_HAND_OVER = 1  # not a request this channel serves: twisted.web's channel takes the connection


class FastChannel(Protocol):
    """One API connection (see the module's docstring)."""

    def __init__(self, site: FastApiSite, routes: Mapping[tuple[bytes, bytes], DirectHandler]):
        self._site = site
        self._routes = routes
        self._call_later: Any = site.reactor.callLater
        # Bytes not yet served: the read itself while it is all there is, a bytearray once
        # reads pile up (appending to bytes would copy the whole buffer on every read).
        self._buffer: bytes | bytearray = b""
        self._searched = 0  # how far the buffer holds no end of head
        self._needed = 0  # the buffer length that completes the request whose head is parsed
        self._request: FastRequest | None = None  # the one being served
        self._delegate: Any = None  # twisted.web's channel, once it has the connection
        self._serving = False
        self._closing = False
        self._write_blocked = False  # the transport's buffer is full: serve nothing more
        self._reading_paused = False
        self._active = False  # bytes arrived since the idle check last looked
        self._idle: Any = None
        self._deadline: Any = None
        self._abort: Any = None  # aborts a connection closed for a timeout that hangs on
        self._counted = False
        self._network: Any = None

    # -- the connection ----------------------------------------------------------------------

    def connectionMade(self) -> None:
        self._site.open_connections += 1
        self._counted = True
        transport: Any = self.transport
        if ITCPTransport.providedBy(transport):
            transport.setTcpNoDelay(True)
        # What stops and restarts reading: the transport, when it can (twisted.web's channel
        # asks the same way; an in-memory or wrapped transport may not be a push producer).
        self._network = IPushProducer(transport, None)
        transport.registerProducer(self, True)
        if self._site.timeOut:
            self._idle = self._call_later(self._site.timeOut, self._idle_check)

    def dataReceived(self, data: bytes) -> None:
        if self._delegate is not None:
            self._delegate.dataReceived(data)
            return
        if devtrace.ON:
            devtrace.mark("api.data")
        if self._closing:
            return  # after an answer that closes, the client's further bytes are not read
        self._active = True
        if not self._buffer:
            self._buffer = data
        else:
            if isinstance(self._buffer, bytes):
                self._buffer = bytearray(self._buffer)
            self._buffer += data
            if len(self._buffer) < self._needed:
                return  # the body is still arriving: nothing to parse yet
        if self._request is None and not self._write_blocked:
            self._serve()
        else:
            self._update_reading()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._stop_deadline()
        cancel_pending(self._idle)
        cancel_pending(self._abort)
        self._idle = self._abort = None
        if self._counted:
            self._counted = False
            self._site.open_connections -= 1
        request, self._request = self._request, None
        if request is not None:
            request.done(reason if reason is not None else Failure(ConnectionDone()))
        if self._delegate is not None:
            self._delegate.connectionLost(reason)

    # IPushProducer: the transport says when its buffer is full and when it drained.
    def pauseProducing(self) -> None:
        self._write_blocked = True
        self._update_reading()

    def resumeProducing(self) -> None:
        self._write_blocked = False
        if self._request is None and self._buffer:
            self._serve()
        else:
            self._update_reading()

    def stopProducing(self) -> None:
        pass  # connectionLost follows

    # -- requests ----------------------------------------------------------------------------

    def _serve(self) -> None:
        """Serve the buffered requests, one at a time, until one is in flight or incomplete."""
        if self._serving:
            return  # an answer given at once, inside the loop below: the loop goes on
        self._serving = True
        try:
            while (
                self._request is None
                and self._buffer
                and not self._write_blocked
                and not self._closing
                and self._delegate is None
            ):
                parsed = self._parse()
                if parsed is _WAIT:
                    self._arm_deadline()
                    break
                if parsed is _HAND_OVER:
                    self._hand_over()
                    return
                self._stop_deadline()
                request, handler = parsed
                self._start(request, handler)
        finally:
            self._serving = False
        if self._delegate is None:
            self._update_reading()

    def _parse(self) -> Any:
        """The next request and its handler, _WAIT or _HAND_OVER."""
        buffer = self._buffer
        if len(buffer) < self._needed:
            return _WAIT
        end = buffer.find(_HEAD_END, max(0, self._searched - 3), MAX_HEAD_BYTES + 4)
        if end < 0:
            if len(buffer) > MAX_HEAD_BYTES:
                return _HAND_OVER
            self._searched = len(buffer)
            return _WAIT
        lines = bytes(buffer[:end]).split(b"\r\n")
        first = _REQUEST_LINE(lines[0])
        if first is None or len(lines) > MAX_HEADERS + 1:
            return _HAND_OVER
        method, uri = first.groups()
        path = uri.partition(b"?")[0]
        handler = self._routes.get((method, path))
        if handler is None:
            return _HAND_OVER
        headers: dict[bytes, list[bytes]] = {}
        for line in lines[1:]:
            header = _HEADER_LINE(line)
            if header is None:
                return _HAND_OVER
            name = header[1].lower()
            values = headers.get(name)
            if values is None:
                headers[name] = [header[2]]
            else:
                values.append(header[2])
        if b"transfer-encoding" in headers or b"expect" in headers:
            return _HAND_OVER
        declared = headers.get(b"content-length")
        if declared is None:
            length = 0
        else:
            if len(declared) != 1 or not declared[0].isdigit() or len(declared[0]) > 15:
                return _HAND_OVER
            length = int(declared[0])
            if length > self._site.max_body_bytes:
                return _HAND_OVER
        start = end + 4
        total = start + length
        if len(buffer) < total:
            self._needed = total
            return _WAIT
        body = buffer[start:total]
        rest = buffer[total:]
        self._buffer = rest if rest else b""
        self._searched = self._needed = 0
        request = FastRequest(method, uri, path, headers, bytes(body))
        connection = headers.get(b"connection")
        request.closes = connection is not None and _says_close(connection)
        return request, handler

    def _start(self, request: FastRequest, handler: DirectHandler) -> None:
        self._request = request
        if devtrace.ON:
            devtrace.mark("api.render")
        try:
            answer = handler(request)  # type: ignore[arg-type]  # the part of Request it uses
        except Exception:
            answer = fail()
        if not (answer.called and not answer.paused):
            # Answered later: if the client leaves first, stop waiting (its deadline's timer
            # stops; the backend's work, a proposal say, goes on).
            request.add_done_hook(lambda reason: _cancel_if_lost(reason, answer))
        answer.addCallbacks(
            self._answer, self._broken, callbackArgs=(request,), errbackArgs=(request,)
        )

    def _answer(self, body: Any, request: FastRequest) -> None:
        if request is not self._request:
            return  # the connection was lost meanwhile
        if not isinstance(body, bytes):
            self._broken(Failure(TypeError(f"a hot route answered {type(body)!r}")), request)
            return
        closing = request.closes
        transport: Any = self.transport
        head = request.response_head(_Fixed.now(), len(body), closing)
        if len(body) < 65536:
            transport.write(head + body)
        else:
            transport.writeSequence((head, body))
        flush_now(transport)
        self._request = None
        request.done(None)
        if devtrace.ON:
            devtrace.mark("api.written")
        if closing:
            self._closing = True
            transport.loseConnection()
            return
        if self._buffer:
            self._serve()
        else:
            self._update_reading()

    def _broken(self, failure: Failure, request: FastRequest) -> None:
        if failure.check(CancelledError) or request is not self._request:
            return  # the client left; nobody to answer
        _log.failure(
            "API request {method} {uri} failed", failure, method=request.method, uri=request.uri
        )
        request.clear_headers()
        error = Internal("internal error on this node: the cause is in its log")
        body = write_error(request, error)  # type: ignore[arg-type]  # the part it uses
        self._answer(body, request)

    # -- handing over ------------------------------------------------------------------------

    def _hand_over(self) -> None:
        """twisted.web's channel takes the connection and every byte not yet served."""
        self._stop_deadline()
        cancel_pending(self._idle)
        self._idle = None
        transport: Any = self.transport
        transport.unregisterProducer()
        if self._reading_paused:
            self._reading_paused = False
            self._network.resumeProducing()
        channel = self._site.twisted_channel()
        self._delegate = channel
        channel.makeConnection(transport)
        data, self._buffer = bytes(self._buffer), b""
        channel.dataReceived(data)

    # -- flow and time -----------------------------------------------------------------------

    def _update_reading(self) -> None:
        """Read from the client unless its answers are not being taken or it has sent too far
        ahead of the request being served."""
        pause = self._write_blocked or (
            self._request is not None and len(self._buffer) > PIPELINED_BYTES
        )
        if pause != self._reading_paused and not self._closing and self._network is not None:
            self._reading_paused = pause
            if pause:
                self._network.pauseProducing()
            else:
                self._network.resumeProducing()

    def _arm_deadline(self) -> None:
        """The request has started arriving and is not whole: it has the request deadline from
        now (this read) to arrive. Most requests arrive in one read and set no timer."""
        seconds = self._site.request_deadline_s
        if self._deadline is None and seconds:
            self._deadline = self._call_later(seconds, self._too_slow, seconds)

    def _stop_deadline(self) -> None:
        cancel_pending(self._deadline)
        self._deadline = None

    def _too_slow(self, seconds: float) -> None:
        self._deadline = None
        self._close(too_slow_answer(seconds))

    def _idle_check(self) -> None:
        """Close a connection that has had no request for a whole idle period."""
        self._idle = None
        if self._active or self._request is not None:
            self._active = False
            self._idle = self._call_later(self._site.timeOut, self._idle_check)
            return
        self._close(b"")

    def _close(self, last_words: bytes) -> None:
        self._closing = True
        transport: Any = self.transport
        if last_words:
            transport.write(last_words)
        transport.loseConnection()
        self._abort = self._call_later(ABORT_AFTER_S, transport.abortConnection)


def _says_close(values: list[bytes]) -> bool:
    """Whether the request closes the connection, decided as twisted.web's channel decides it
    (the first Connection header, split at spaces), so that a connection behaves the same
    whichever channel serves it."""
    return b"close" in [token.lower() for token in values[0].split(b" ")]


def _cancel_if_lost(reason: Failure | None, answer: Deferred[Any]) -> None:
    if reason is not None:
        answer.cancel()


class FastApiSite(ApiSite):
    """An ApiSite whose connections start as FastChannels over its resource's hot routes."""

    def __init__(self, resource: IResource, **settings: Any) -> None:
        super().__init__(resource, **settings)
        self._routes = resource.routes if isinstance(resource, ApiRoot) else {}

    def buildProtocol(self, addr: Any) -> Any:
        refused = self.refusal()
        if refused is not None:
            return refused
        if not self._routes:
            return super().buildProtocol(addr)
        channel = FastChannel(self, self._routes)
        channel.factory = self
        return channel

    def twisted_channel(self) -> Any:
        """The twisted.web channel a FastChannel hands its connection to (counted already)."""
        channel = self.channel_for(None)
        channel.counts_itself = False
        return channel
