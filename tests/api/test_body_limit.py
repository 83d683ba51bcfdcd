"""The request body limit: 413 payload_too_large before the body is read whole.

The Site is driven in memory through its HTTP channel on a StringTransport (so the test sees
exactly what is written and when the connection is dropped), plus one chunked upload over a
real socket on 127.0.0.1.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet import reactor as global_reactor
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from graft.api import make_api_site
from tests.api.fakes import ApiTestCase, FakeBackend, Settings

LIMIT = 64


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body


class StubTreqLimitTests(ApiTestCase):
    def test_declared_length_over_limit(self) -> None:
        """Served by another Site (StubTreq's), the resource itself refuses an oversized body
        with 413 payload_too_large and submits nothing."""
        self.serve(Settings(max_body_bytes=LIMIT))
        for path in ("/command", "/commands", "/query"):
            answer = self.call("POST", path, data=b"x" * (LIMIT + 1))
            self.assertError(answer, 413, "payload_too_large")
        self.assertEqual((self.backend.submitted, self.backend.queries), ([], []))

    def test_body_at_limit(self) -> None:
        """A body of exactly max_body_bytes is accepted."""
        self.serve(Settings(max_body_bytes=LIMIT))
        self.assertEqual(self.call("POST", "/command", data=b"x" * LIMIT).status, 200)


class SiteChannelTests(SynchronousTestCase):
    """The real Site (its BoundedRequest), fed bytes directly."""

    def setUp(self) -> None:
        self.backend = FakeBackend()
        site = make_api_site(self.backend, Settings(max_body_bytes=LIMIT), reactor=Clock())
        self.channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        self.transport = StringTransport()
        self.channel.makeConnection(self.transport)

    def tearDown(self) -> None:
        self.channel.connectionLost(None)

    def assertRefused(self) -> None:
        status, headers, body = split_response(self.transport.value())
        self.assertEqual(status, 413)
        self.assertEqual(headers["content-type"], "application/json")
        self.assertEqual(headers["connection"], "close")
        self.assertEqual(json.loads(body)["error"]["code"], "payload_too_large")
        self.assertTrue(self.transport.disconnecting)

    def test_content_length_refused_before_body(self) -> None:
        """A Content-Length over the limit is answered 413 and the connection closed as soon
        as the headers end, before any body byte arrives; the backend is never called, even
        when the body then arrives."""
        self.channel.dataReceived(
            b"POST /command HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n"
        )
        self.assertRefused()
        answered = self.transport.value()
        self.channel.dataReceived(b"x" * 1000000)
        self.assertEqual(self.transport.value(), answered)
        self.assertEqual(self.backend.submitted, [])

    def test_no_continue_for_refused_body(self) -> None:
        """With Expect: 100-continue an oversized body gets 413 and no 100 Continue."""
        self.channel.dataReceived(
            b"POST /command HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
            b"Content-Length: 65\r\n\r\n"
        )
        self.assertRefused()
        self.assertNotIn(b"100 Continue", self.transport.value())

    def test_chunked_body_refused_when_it_passes_the_limit(self) -> None:
        """A chunked body is counted as it arrives: within the limit nothing is answered yet;
        the chunk that passes it gets 413 and the connection closed; the rest is never handed
        to the API."""
        self.channel.dataReceived(
            b"POST /command HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        self.channel.dataReceived(chunk(b"a" * 40))
        self.assertEqual(self.transport.value(), b"")
        self.channel.dataReceived(chunk(b"b" * 40))
        self.assertRefused()
        answered = self.transport.value()
        self.channel.dataReceived(chunk(b"c" * 40) + b"0\r\n\r\n")
        self.assertEqual(self.transport.value(), answered)
        self.assertEqual(self.backend.submitted, [])

    def test_chunked_body_within_limit(self) -> None:
        """A chunked body within the limit is served whole."""
        self.channel.dataReceived(
            b"POST /command HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            + chunk(b"a" * 32)
            + chunk(b"b" * 32)
            + b"0\r\n\r\n"
        )
        status, _, _ = split_response(self.transport.value())
        self.assertEqual(status, 200)
        self.assertEqual(self.backend.submitted, [[b"a" * 32 + b"b" * 32]])
        self.assertFalse(self.transport.disconnecting)

    def test_form_content_types_stay_raw(self) -> None:
        """A body labelled multipart/form-data (not valid multipart) is still handed to the
        API as the raw command, not parsed (and refused) as a form."""
        body = b"INSERT INTO t VALUES ('a&b=c');"
        self.channel.dataReceived(
            b"POST /command HTTP/1.1\r\nHost: a\r\n"
            b"Content-Type: multipart/form-data; boundary=zz\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        status, _, _ = split_response(self.transport.value())
        self.assertEqual(status, 200)
        self.assertEqual(self.backend.submitted, [[body]])

    def test_fsm_error_reason_phrase(self) -> None:
        """422 goes out with its reason phrase, not Twisted's "Unknown Status"."""
        self.backend.rejected.add(b"x")
        self.channel.dataReceived(
            b"POST /command HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx"
        )
        self.assertTrue(
            self.transport.value().startswith(b"HTTP/1.1 422 Unprocessable Content\r\n")
        )

    def test_site_hides_tracebacks(self) -> None:
        """The Site never renders tracebacks."""
        site = make_api_site(self.backend, Settings(), reactor=Clock())
        self.assertFalse(site.displayTracebacks)


class _RawClient(protocol.Protocol):
    def __init__(self, request: bytes) -> None:
        self.request = request
        self.received = b""
        self.closed: defer.Deferred[bytes] = defer.Deferred()

    def connectionMade(self) -> None:
        transport: Any = self.transport
        transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: object = None) -> None:
        self.closed.callback(self.received)


class SocketLimitTests(TestCase):
    @defer.inlineCallbacks
    def test_chunked_upload_over_loopback(self):
        """Over a real loopback socket, a chunked body past the limit gets 413 and the server
        closes the connection."""
        reactor: Any = global_reactor
        backend = FakeBackend()
        site = make_api_site(backend, Settings(max_body_bytes=LIMIT), reactor=reactor)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        upload = (
            b"POST /command/ HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            + chunk(b"a" * 50)
            + chunk(b"b" * 50)
        )
        client = _RawClient(upload)
        yield protocol.ClientCreator(reactor, lambda: client).connectTCP(
            "127.0.0.1", port.getHost().port
        )
        raw = yield client.closed
        status, _, body = split_response(raw)
        self.assertEqual(status, 413)
        self.assertEqual(json.loads(body)["error"]["code"], "payload_too_large")
        self.assertEqual(backend.submitted, [])
