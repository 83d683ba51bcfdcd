"""The request body limit, enforced while the body arrives.

twisted.web buffers a whole body before the resource sees it, so the limit lives in the
Request the Site builds: ``gotLength`` refuses a declared Content-Length over the limit before
one body byte is read, and ``handleContentChunk`` counts the bytes of a chunked body and stops
at the first one past the limit. Either way the client gets 413 ``payload_too_large`` and the
connection is closed (the rest of the body is never read); the resource is never called.
"""

# twisted.web is untyped; its calls are checked by the tests.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

from typing import Any

from twisted.web.http import HTTPChannel
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

from graft.api.responses import error_document, json_bytes
from graft.errors import PayloadTooLarge


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the request body is over the limit of {limit} bytes: send less (split a batch) or "
        "raise api.max_body_bytes"
    )


class BoundedRequest(Request):
    """A Request that refuses a body longer than its Site's ``max_body_bytes``."""

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
        super().requestReceived(command, path, version)

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


class ApiChannel(HTTPChannel):
    """HTTP/1.1 only (the API never negotiates HTTP/2, so twisted.web's protocol-choosing
    wrapper would only add a call per read), with the local address asked of the kernel once
    per connection instead of once per request."""

    _host: Any = None

    def getHost(self) -> Any:
        if self._host is None:
            self._host = super().getHost()
        return self._host


class ApiSite(Site):
    """A Site whose requests enforce ``max_body_bytes`` and whose bodies stay raw bytes."""

    requestFactory = BoundedRequest
    protocol = ApiChannel  # type: ignore[assignment]  # any IProtocol factory will do

    def __init__(self, resource: IResource, *, max_body_bytes: int, reactor: Any) -> None:
        # Bodies are commands and queries, never forms: a "multipart/form-data" or URL-encoded
        # Content-Type (curl -F, or --data without -H) must not make Twisted parse them.
        super().__init__(resource, reactor=reactor, parsePOSTFormSubmission=False)
        self.max_body_bytes = max_body_bytes

    def log(self, request: Any) -> None:
        """No access log line per request: at command rates it costs more than it tells, and
        graft_http_requests_total counts requests by route, method and status."""
