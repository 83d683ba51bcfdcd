"""Connection limits of the API's Site: a cap on open connections and a deadline for a request
to arrive whole (slowloris). Issue 14, item 5. Driven in memory on a Clock."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer, protocol, task
from twisted.internet import reactor as global_reactor
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from graft.api import make_api_site
from graft.config import ApiLimits
from tests.api.fakes import FakeBackend, Settings
from tests.api.test_body_limit import split_response

PEER = IPv4Address("TCP", "127.0.0.1", 40000)
GET_HEALTH = b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n"


class _Connections(SynchronousTestCase):
    limits = ApiLimits()

    def setUp(self) -> None:
        self.clock = Clock()
        self.backend = FakeBackend()
        self.site: Any = make_api_site(
            self.backend, Settings(limits=self.limits), reactor=self.clock
        )
        self.open: list[tuple[Any, StringTransport]] = []
        self.addCleanup(self.close_all)

    def connect(self) -> tuple[Any, StringTransport]:
        channel = self.site.buildProtocol(PEER)
        transport = StringTransport()
        channel.makeConnection(transport)
        self.open.append((channel, transport))
        return channel, transport

    def close(self, channel: Any) -> None:
        for pair in self.open:
            if pair[0] is channel:
                self.open.remove(pair)
                channel.connectionLost(None)
                return

    def close_all(self) -> None:
        for channel, _ in list(self.open):
            self.close(channel)


class ConnectionCapTests(_Connections):
    limits = ApiLimits(max_connections=2)

    def test_over_the_cap_is_503_and_closed(self) -> None:
        """With max_connections open, one more is answered 503 overloaded with Retry-After and
        closed at once; when one closes, a new connection is served again. (There was no cap.)"""
        for _ in range(2):
            channel, transport = self.connect()
            channel.dataReceived(GET_HEALTH)
            self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 "))
        _, refused = self.connect()
        status, headers, body = split_response(refused.value())
        self.assertEqual(status, 503)
        self.assertEqual(headers["retry-after"], "1")
        self.assertEqual(headers["connection"], "close")
        self.assertEqual(json.loads(body)["error"]["code"], "overloaded")
        self.assertIn("api.limits.max_connections", json.loads(body)["error"]["message"])
        self.assertTrue(refused.disconnecting)
        self.assertEqual(self.site.open_connections, 2)
        self.close(self.open[0][0])
        self.assertEqual(self.site.open_connections, 1)
        channel, transport = self.connect()
        channel.dataReceived(GET_HEALTH)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 "))


class RequestDeadlineTests(_Connections):
    limits = ApiLimits(request_deadline_ms=10_000)

    def assertTimedOut(self, transport: StringTransport) -> None:
        status, headers, body = split_response(transport.value())
        self.assertEqual(status, 408)
        self.assertEqual(headers["connection"], "close")
        self.assertEqual(json.loads(body)["error"]["code"], "request_timeout")
        self.assertTrue(transport.disconnecting)

    def test_slow_headers(self) -> None:
        """A header byte every 5 s kept twisted.web's idle timeout (60 s) from ever firing;
        now the request must be whole within the deadline from its first byte: 408, closed."""
        channel, transport = self.connect()
        channel.dataReceived(b"POST /command HTTP/1.1\r\n")
        for _ in range(19):
            self.clock.advance(0.5)
            channel.dataReceived(b"X")
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.5)  # 10 s since the first byte
        self.assertTimedOut(transport)
        self.assertEqual(self.backend.submitted, [])

    def test_slow_body(self) -> None:
        """Headers in time but the body trickling: 408 at the deadline, nothing submitted."""
        channel, transport = self.connect()
        channel.dataReceived(b"POST /command HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n")
        for _ in range(9):
            self.clock.advance(1.0)
            channel.dataReceived(b"x")
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1.0)
        self.assertTimedOut(transport)
        self.assertEqual(self.backend.submitted, [])

    def test_keep_alive_wait_is_not_counted(self) -> None:
        """Requests that arrive whole are answered; waiting between them on a keep-alive
        connection does not count, and each request gets its own deadline."""
        channel, transport = self.connect()
        for _ in range(3):
            channel.dataReceived(GET_HEALTH)
            self.clock.advance(30.0)  # idle between requests, under the 60 s idle timeout
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 "), 3)
        self.assertFalse(transport.disconnecting)
        channel.dataReceived(b"GET /health HTTP/1.1\r\n")
        self.clock.advance(10.0)
        self.assertTrue(transport.disconnecting)
        self.assertIn(b"HTTP/1.1 408 ", transport.value())

    def test_held_request_is_not_timed_out(self) -> None:
        """A request that arrived whole and waits for the backend (a command committing) is
        not cut by the deadline, which only covers receiving: past it, the command's own
        timeout (5 s) answers 504 and the connection stays open."""
        self.backend.hold_commands = True
        channel, transport = self.connect()
        channel.dataReceived(b"POST /command HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx")
        for _ in range(12):
            self.clock.advance(1.0)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 504 "), transport.value())
        self.assertFalse(transport.disconnecting)


class DeadlineTimerTests(_Connections):
    def deadline_timers(self) -> list[Any]:
        """Every delayed call ever made for a request deadline (active or not)."""
        return [call for name, call in self.made if name == "_too_slow"]

    def setUp(self) -> None:
        super().setUp()
        self.made: list[tuple[str, Any]] = []  # (function name, call): a cancel drops func
        call_later = self.clock.callLater

        def recording(delay: float, f: Any, *args: Any, **kwargs: Any) -> Any:
            call = call_later(delay, f, *args, **kwargs)
            self.made.append((getattr(f, "__name__", ""), call))
            return call

        self.clock.callLater = recording  # type: ignore[method-assign,assignment]

    def test_request_arriving_whole_sets_no_timer(self) -> None:
        """Requests whose bytes come in one read are answered without a deadline timer ever
        being set; one that is still arriving after its first read gets one at once."""
        channel, transport = self.connect()
        for _ in range(3):
            channel.dataReceived(GET_HEALTH)
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 "), 3)
        self.assertEqual(self.deadline_timers(), [])
        channel.dataReceived(GET_HEALTH[:10])
        (timer,) = self.deadline_timers()
        self.assertTrue(timer.active())
        channel.dataReceived(GET_HEALTH[10:])
        self.assertFalse(timer.active())
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 "), 4)


class _CountingTransport(StringTransport):
    """Counts how often the channel asks for the connection's addresses."""

    peer_calls = 0
    host_calls = 0

    def getPeer(self) -> Any:
        self.peer_calls += 1
        return super().getPeer()

    def getHost(self) -> Any:
        self.host_calls += 1
        return super().getHost()


class AddressTests(_Connections):
    def test_addresses_are_asked_once_per_connection(self) -> None:
        """Every request twisted.web serves learns the client's and the local address, but its
        channel asks the transport once per connection (the answers cannot change while it is
        open). The hot routes' FastChannel asks for neither."""
        channel = self.site.channel_for(PEER)
        transport = _CountingTransport(peerAddress=PEER)
        channel.makeConnection(transport)
        self.open.append((channel, transport))
        for _ in range(3):
            channel.dataReceived(GET_HEALTH)
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 "), 3)
        self.assertEqual(channel.getPeer(), PEER)
        self.assertEqual((transport.peer_calls, transport.host_calls), (1, 1))


class _Client(protocol.Protocol):
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


class SocketTests(TestCase):
    """The same limits over real loopback sockets (the Site's wiring, not only its logic)."""

    def listen(self, limits: ApiLimits) -> tuple[Any, int]:
        reactor: Any = global_reactor
        site = make_api_site(FakeBackend(), Settings(limits=limits), reactor=reactor)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return site, port.getHost().port

    def connect(self, port: int, request: bytes) -> defer.Deferred[_Client]:
        client = _Client(request)
        creator = protocol.ClientCreator(global_reactor, lambda: client)
        connected: defer.Deferred[Any] = creator.connectTCP("127.0.0.1", port)
        return connected.addCallback(lambda _: client)

    @defer.inlineCallbacks
    def test_partial_request_is_closed_with_408(self) -> Any:
        _, port = self.listen(ApiLimits(request_deadline_ms=50))
        client = yield self.connect(port, b"POST /command HTTP/1.1\r\nHost: a\r\n")
        raw = yield client.closed
        self.assertTrue(raw.startswith(b"HTTP/1.1 408 "), raw)

    @defer.inlineCallbacks
    def test_connection_over_the_cap_gets_503(self) -> Any:
        site, port = self.listen(ApiLimits(max_connections=1))
        holder = yield self.connect(port, b"")
        while site.open_connections < 1:  # the server side has accepted it
            yield task.deferLater(global_reactor, 0.01, lambda: None)
        refused = yield self.connect(port, b"")
        raw = yield refused.closed
        self.assertTrue(raw.startswith(b"HTTP/1.1 503 "), raw)
        holder.transport.loseConnection()
        yield holder.closed
