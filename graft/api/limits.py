"""The request body limit, enforced while the body arrives; connection and slow-client limits.

twisted.web buffers a whole body before the resource sees it, so the limit lives in the
Request the Site builds: ``gotLength`` refuses a declared Content-Length over the limit before
one body byte is read, and ``handleContentChunk`` counts the bytes of a chunked body and stops
at the first one past the limit. Either way the client gets 413 ``payload_too_large`` and the
connection is closed (the rest of the body is never read); the resource is never called.

Connections (ApiSite, ApiChannel): at most ``max_connections`` are open at once; one more is
answered 503 ``overloaded`` (Retry-After) and closed without reading it. And each request must
arrive whole, request line to last body byte, within ``request_deadline_s`` of its first byte:
twisted.web's own idle timeout restarts at every byte, so a client sending one header byte a
minute (slowloris) held its connection forever. Past the deadline: 408 and the connection
closed. The time a keep-alive connection waits between requests is not counted (the idle
timeout governs it).
"""

# twisted.web is untyped; its calls are checked by the tests.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes

from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web import resource
from twisted.web.http import HTTPChannel
from twisted.web.resource import IResource
from twisted.web.server import Site, version

from graft import devtrace
from graft.api.http_date import DateCache
from graft.api.request_done import DoneHooks
from graft.api.responses import error_document, json_bytes
from graft.errors import GraftError, Overloaded, PayloadTooLarge


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the request body is over the limit of {limit} bytes: send less (split a batch) or "
        "raise api.max_body_bytes"
    )


def origin_form(target: bytes) -> bytes:
    """The path and query of a request target in absolute form (``http://host:port/db/x?q``,
    which HTTP/1.1 servers must accept and pyrqlite sends when it follows a redirect);
    any other target as it is. The host part is not used: the request came to this node."""
    scheme, separator, rest = target.partition(b"://")
    if not separator or scheme.lower() not in (b"http", b"https"):
        return target
    slash = rest.find(b"/")
    question = rest.find(b"?")
    if slash == -1 or (question != -1 and question < slash):
        return b"/" + rest[question:] if question != -1 else b"/"
    return rest[slash:]


_DATES = DateCache()


class BoundedRequest(DoneHooks):
    """A Request that refuses a body longer than its Site's ``max_body_bytes``, takes its
    ``Date`` header from a per-second cache (``process``) and calls its done hooks without
    Deferreds (graft.api.request_done)."""

    _received = 0
    _refused = False

    def _limit(self) -> int | None:
        site = getattr(self.channel, "site", None)
        limit = getattr(site, "max_body_bytes", None)
        return limit if isinstance(limit, int) else None

    def gotLength(self, length: int | None) -> None:
        limit = self._limit()
        if limit is not None and length is not None and length > limit:
            # No 100 Continue: the client must not start sending what will be refused.
            self.requestHeaders.removeHeader(b"Expect")
            self._refuse(limit)
            # A throwaway buffer so the channel's bookkeeping keeps working until it closes.
            super().gotLength(0)
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self._received += len(data)
        limit = self._limit()
        if limit is not None and self._received > limit:
            self._refuse(limit)
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._refused:
            return  # answered already; the resource must not see a truncated body
        super().requestReceived(command, origin_form(path), version)

    def process(self) -> None:
        """twisted.web's ``Request.process`` step for step (default headers, the paths, the
        resource, its encoder, render), except that the ``Date`` value comes from a cache
        that formats it once a second rather than once a request."""
        channel: Any = self.channel
        self.site = channel.site
        self.setHeader(b"Server", version)
        self.setHeader(b"Date", _DATES.now())
        self.prepath = []
        self.postpath = [unquote_to_bytes(p) for p in self.path[1:].split(b"/")]
        if self.path == b"*":
            self._handleStar()
            return
        try:
            found = self.site.getResourceFor(self)
            if resource._IEncodingResource.providedBy(found):
                encoder = found.getEncoder(self)
                if encoder is not None:
                    self._encoder = encoder
            self.render(found)
        except BaseException:
            self.processingFailed(Failure())

    def _refuse(self, limit: int) -> None:
        """Answer 413 straight on the transport (the request line and headers are all the
        Request knows so far, so the normal response path is not usable) and close."""
        self._refused = True
        body = json_bytes(error_document(too_large(limit)))
        head = (
            b"HTTP/1.1 413 Payload Too Large\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode("ascii") + b"\r\n"
            b"Connection: close\r\n\r\n"
        )
        channel: Any = self.channel
        channel.persistent = False
        channel.transport.write(head + body)
        channel.loseConnection()


class RequestTimeout(GraftError):
    code = "request_timeout"
    status = 408


def too_slow_answer(seconds: float) -> bytes:
    """The whole 408 answer to a request that did not arrive within ``seconds``."""
    error = RequestTimeout(
        f"the request did not arrive whole within {seconds:g} s of its first byte "
        "(api.limits.request_deadline_ms): send it at once"
    )
    return raw_answer(b"408 Request Timeout", error)


def cancel_pending(call: Any) -> None:
    """Cancel a reactor call unless it is None, ran or was cancelled already."""
    if call is not None and call.active():
        call.cancel()


def raw_answer(status_line: bytes, error: GraftError, extra: bytes = b"") -> bytes:
    """A whole HTTP answer that closes the connection, for when no Request can write one."""
    body = json_bytes(error_document(error))
    return (
        b"HTTP/1.1 " + status_line + b"\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode("ascii") + b"\r\n" + extra + b""
        b"Connection: close\r\n\r\n" + body
    )


class _Refusal(Protocol):
    """A connection over max_connections: answered 503 at once and closed, nothing read."""

    def __init__(self, limit: int) -> None:
        self._limit = limit

    def connectionMade(self) -> None:
        error = Overloaded(
            f"this node already has {self._limit} open API connections, its limit "
            "(api.limits.max_connections): retry shortly, or reuse a connection"
        )
        transport: Any = self.transport
        transport.write(raw_answer(b"503 Service Unavailable", error, b"Retry-After: 1\r\n"))
        transport.loseConnection()


class ApiChannel(HTTPChannel):
    """HTTP/1.1 only (the API never negotiates HTTP/2, so twisted.web's protocol-choosing
    wrapper would only add a call per read), with the local and remote addresses built once
    per connection instead of once per request. It counts itself in its Site's open
    connections and holds each request to the Site's request deadline."""

    _host: Any = None
    _peer: Any = None
    _deadline: Any = None  # the pending call that ends a request too slow to arrive
    _receiving = False  # a request's first bytes came and its last ones have not
    _counted = False
    # False when a FastChannel hands its connection over: it counted the connection already.
    counts_itself = True

    def connectionMade(self) -> None:
        site = getattr(self, "site", None)
        if isinstance(site, ApiSite) and self.counts_itself:
            site.open_connections += 1
            self._counted = True
        super().connectionMade()

    def dataReceived(self, data: bytes) -> None:
        if devtrace.ON:
            devtrace.mark("api.data")
        # A request starts with its first byte; bytes that arrive while one is being handled
        # are buffered and fed here again once it is done, starting the next one's clock.
        if not self._receiving and data and not self._handlingRequest:
            self._receiving = True
        super().dataReceived(data)
        self._arm_deadline()

    def _arm_deadline(self) -> None:
        """Start the request's deadline if it is still arriving once this read is parsed: most
        requests arrive whole in one read, and a timer set and cancelled within the same call
        cost every request a delayed call. The clock still starts at the request's first
        read (these bytes were parsed at once, in the same reactor turn)."""
        if self._receiving and self._deadline is None:
            seconds = getattr(getattr(self, "site", None), "request_deadline_s", None)
            if seconds:
                call_later: Any = self.callLater
                self._deadline = call_later(seconds, self._too_slow, seconds)

    def allContentReceived(self) -> None:
        self._receiving = False
        self._stop_deadline()
        super().allContentReceived()

    def connectionLost(self, reason: Any = None) -> None:
        self._receiving = False
        self._stop_deadline()
        if self._counted:
            self._counted = False
            site: Any = getattr(self, "site", None)
            site.open_connections -= 1
        super().connectionLost(reason)

    def _stop_deadline(self) -> None:
        cancel_pending(self._deadline)
        self._deadline = None

    def _too_slow(self, seconds: float) -> None:
        """The request did not arrive whole in time: 408 and close (no request of this
        connection is being answered, so the transport is free to write on)."""
        self._deadline = None
        self._receiving = False
        self.persistent = False
        transport: Any = self.transport
        transport.write(too_slow_answer(seconds))
        self.timeoutConnection()  # closes, and aborts if the client does not let go

    def getHost(self) -> Any:
        if self._host is None:
            self._host = super().getHost()
        return self._host

    def getPeer(self) -> Any:
        # Every Request asks (Request.__init__); TCP builds a new address object each time.
        if self._peer is None:
            self._peer = super().getPeer()
        return self._peer


class ApiSite(Site):
    """A Site whose requests enforce ``max_body_bytes`` and whose bodies stay raw bytes."""

    requestFactory = BoundedRequest
    protocol = ApiChannel  # type: ignore[assignment]  # any IProtocol factory will do

    def __init__(
        self,
        resource: IResource,
        *,
        max_body_bytes: int,
        reactor: Any,
        max_connections: int | None = None,
        request_deadline_s: float | None = None,
    ) -> None:
        # Bodies are commands and queries, never forms: a "multipart/form-data" or URL-encoded
        # Content-Type (curl -F, or --data without -H) must not make Twisted parse them.
        super().__init__(resource, reactor=reactor, parsePOSTFormSubmission=False)
        self.max_body_bytes = max_body_bytes
        self.max_connections = max_connections
        self.request_deadline_s = request_deadline_s
        self.open_connections = 0

    def buildProtocol(self, addr: Any) -> Any:
        refused = self.refusal()
        return refused if refused is not None else self.channel_for(addr)

    def refusal(self) -> Protocol | None:
        """The protocol that refuses one connection more than max_connections, else None."""
        if self.max_connections is not None and self.open_connections >= self.max_connections:
            refusal = _Refusal(self.max_connections)
            refusal.factory = self
            return refusal
        return None

    def channel_for(self, addr: Any) -> Any:
        """A twisted.web channel (ApiChannel) serving this Site's resource."""
        return super().buildProtocol(addr)

    def log(self, request: Any) -> None:
        """No access log line per request: at command rates it costs more than it tells, and
        graft_http_requests_total counts requests by route, method and status."""
