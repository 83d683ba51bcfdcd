"""The hot routes' own HTTP/1.1 parsing (graft.api.fast_channel): what it serves, what it hands
to twisted.web, and that a connection answers alike either way.

Driven in memory: the API's Site on a Clock, its protocol on a StringTransport.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from graft.api import fast_channel, make_api_resource, make_api_site
from graft.api.fast_channel import PIPELINED_BYTES, FastChannel
from graft.api.fast_request import FastRequest
from graft.api.limits import ApiSite
from graft.config import ApiLimits
from tests.api.fakes import READER, WRITER, FakeBackend, Settings, tokens

PEER = IPv4Address("TCP", "127.0.0.1", 40000)
LIMIT = 64


def post(path: bytes, body: bytes, *headers: bytes) -> bytes:
    lines = [b"POST " + path + b" HTTP/1.1", b"Host: a", b"Content-Length: %d" % len(body)]
    return b"\r\n".join([*lines, *headers]) + b"\r\n\r\n" + body


def responses(raw: bytes) -> list[tuple[int, dict[bytes, bytes], bytes]]:
    """The answers in a connection's output: status, headers (lower-case names), body."""
    found = []
    while raw:
        head, separator, rest = raw.partition(b"\r\n\r\n")
        if not separator:
            raise AssertionError(f"an incomplete answer: {raw!r}")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get(b"content-length", b"0")) if status != 100 else 0
        found.append((status, headers, rest[:length]))
        raw = rest[length:]
    return found


class _Site(SynchronousTestCase):
    limits = ApiLimits()

    def setUp(self) -> None:
        self.clock = Clock()
        self.backend = FakeBackend()
        site: Any = make_api_site(
            self.backend,
            Settings(max_body_bytes=LIMIT, limits=self.limits),
            reactor=self.clock,
        )
        self.site = site
        self.handed_over = 0
        original = self.site.twisted_channel

        def counting() -> Any:
            self.handed_over += 1
            return original()

        self.site.twisted_channel = counting
        self.channels: list[Any] = []
        self.addCleanup(self._close_all)

    def connect(self) -> tuple[Any, StringTransport]:
        channel = self.site.buildProtocol(PEER)
        transport = StringTransport()
        channel.makeConnection(transport)
        self.channels.append(channel)
        return channel, transport

    def _close_all(self) -> None:
        for channel in self.channels:
            channel.connectionLost(None)


class ServedHereTests(_Site):
    def test_command_is_served_without_twisted_web(self) -> None:
        """A plain POST /command is answered by the FastChannel itself: status, the headers
        the handler set, Date, Content-Length, the FSM's output; twisted.web's channel is
        never built."""
        channel, transport = self.connect()
        self.assertIsInstance(channel, FastChannel)
        channel.dataReceived(post(b"/command", b'{"op":"x"}'))
        ((status, headers, body),) = responses(transport.value())
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body), {"applied": '{"op":"x"}'})
        self.assertEqual(headers[b"content-type"], b"application/json")
        self.assertEqual(headers[b"graft-index"], b"10")
        self.assertIn(b"date", headers)
        self.assertEqual(self.backend.submitted, [[b'{"op":"x"}']])
        self.assertEqual(self.handed_over, 0)
        self.assertFalse(transport.disconnecting)

    def test_pipelined_requests_are_answered_in_order(self) -> None:
        """Two requests in one read, the first answered later: the second waits for it and
        the answers leave in the order the requests came."""
        self.backend.hold_commands = True
        channel, transport = self.connect()
        channel.dataReceived(post(b"/command", b"one") + post(b"/query?q=two", b""))
        self.assertEqual(transport.value(), b"")
        self.assertEqual(self.backend.queries, [])  # not started while /command is served
        self.backend.pending_commands[0].callback(self.backend.results_for([b"one"]))
        answers = responses(transport.value())
        self.assertEqual([a[0] for a in answers], [200, 200])
        self.assertEqual(json.loads(answers[0][2]), {"applied": "one"})
        self.assertEqual(self.backend.queries[0].query, b"two")
        self.assertEqual(self.handed_over, 0)

    def test_request_in_pieces(self) -> None:
        """A request split anywhere, even inside the head's end, is served once it is whole."""
        whole = post(b"/command", b"abcdef")
        for cut in (1, whole.index(b"\r\n\r\n") + 2, len(whole) - 1):
            channel, transport = self.connect()
            channel.dataReceived(whole[:cut])
            self.assertEqual(transport.value(), b"")
            channel.dataReceived(whole[cut:])
            self.assertEqual(responses(transport.value())[0][0], 200)
        self.assertEqual(self.handed_over, 0)

    def test_a_request_a_byte_at_a_time_is_parsed_once(self) -> None:
        """Byte-sized reads cost a constant each: the head is looked for in the new bytes only
        and parsed once whole, the body only counted until complete (re-parsing on every read
        made a slow client's request quadratic in its size)."""
        parsed = []
        real = fast_channel._REQUEST_LINE

        def counting(line: bytes) -> Any:
            parsed.append(line)
            return real(line)

        self.patch(fast_channel, "_REQUEST_LINE", counting)
        channel, transport = self.connect()
        whole = post(b"/command", b"b" * LIMIT)
        for i in range(len(whole)):
            channel.dataReceived(whole[i : i + 1])
        self.assertEqual(responses(transport.value())[0][0], 200)
        self.assertEqual(len(parsed), 2)  # when the head ended, and when the body did

    def test_connection_close(self) -> None:
        """``Connection: close``: the answer says so, the connection closes after it and the
        bytes after that request are not served."""
        channel, transport = self.connect()
        channel.dataReceived(
            post(b"/command", b"a", b"Connection: keep-alive, Close") + post(b"/command", b"b")
        )
        ((status, headers, _),) = responses(transport.value())
        self.assertEqual((status, headers[b"connection"]), (200, b"close"))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.backend.submitted, [[b"a"]])

    def test_client_that_leaves_cancels_the_wait(self) -> None:
        """The client leaves while its command is pending: nothing is written and the API's
        wait on the backend is cancelled (its deadline timer goes)."""
        self.backend.hold_commands = True
        channel, transport = self.connect()
        channel.dataReceived(post(b"/command", b"a"))
        self.assertTrue(self.clock.getDelayedCalls())  # the command's deadline
        channel.connectionLost(None)
        self.channels.remove(channel)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.backend.pending_commands[0].callback(self.backend.results_for([b"a"]))
        self.assertEqual(transport.value(), b"")

    def test_a_client_that_does_not_read_stops_being_read(self) -> None:
        """When the transport's buffer is full (pauseProducing) reading stops and nothing more
        is served; when it drains, the waiting requests are served."""
        channel, transport = self.connect()
        channel.pauseProducing()
        self.assertEqual(transport.producerState, "paused")
        channel.dataReceived(post(b"/command", b"a"))
        self.assertEqual(transport.value(), b"")
        channel.resumeProducing()
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(responses(transport.value())[0][0], 200)

    def test_reading_stops_while_too_much_waits(self) -> None:
        """Bytes that arrive while a request is served are held; past PIPELINED_BYTES the
        channel stops reading until the request is answered."""
        self.backend.hold_commands = True
        channel, transport = self.connect()
        channel.dataReceived(post(b"/command", b"a"))
        channel.dataReceived(b"x" * (PIPELINED_BYTES + 1))
        self.assertEqual(transport.producerState, "paused")
        self.backend.pending_commands[0].callback(self.backend.results_for([b"a"]))
        self.assertEqual(transport.producerState, "producing")

    def test_slow_request_is_408(self) -> None:
        """A request that does not arrive whole within the request deadline is answered 408
        request_timeout and closed."""
        channel, transport = self.connect()
        channel.dataReceived(b"POST /command HTTP/1.1\r\nContent-Length: 5\r\n\r\nab")
        self.clock.advance(ApiLimits().request_deadline_ms / 1000)
        ((status, _, body),) = responses(transport.value())
        self.assertEqual(status, 408)
        self.assertEqual(json.loads(body)["error"]["code"], "request_timeout")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.backend.submitted, [])

    def test_idle_connection_closes(self) -> None:
        """A connection with no request for the Site's timeOut (one to two periods) closes;
        one that keeps sending does not."""
        self.site.timeOut = 10
        busy, busy_transport = self.connect()
        _, idle_transport = self.connect()
        for _ in range(3):
            busy.dataReceived(post(b"/command", b"a"))
            self.clock.advance(6)
        self.assertFalse(busy_transport.disconnecting)
        self.assertTrue(idle_transport.disconnecting)

    def test_open_connections_counted_once(self) -> None:
        """A connection handed over to twisted.web is still one open connection."""
        channel, _ = self.connect()
        channel.dataReceived(b"GET /health HTTP/1.1\r\n\r\n")
        self.assertEqual((self.handed_over, self.site.open_connections), (1, 1))
        channel.connectionLost(None)
        self.channels.remove(channel)
        self.assertEqual(self.site.open_connections, 0)


class HandedOverTests(_Site):
    def answer_to(self, raw: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
        channel, transport = self.connect()
        channel.dataReceived(raw)
        self.assertEqual(self.handed_over, 1, raw)
        return responses(transport.value())[-1]

    def test_other_routes(self) -> None:
        self.assertEqual(self.answer_to(b"GET /health HTTP/1.1\r\n\r\n")[0], 200)

    def test_chunked_body(self) -> None:
        raw = b"POST /command HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        status, _, body = self.answer_to(raw)
        self.assertEqual((status, json.loads(body)), (200, {"applied": "abc"}))

    def test_body_over_the_limit(self) -> None:
        status, _, body = self.answer_to(post(b"/command", b"x" * (LIMIT + 1)))
        self.assertEqual((status, json.loads(body)["error"]["code"]), (413, "payload_too_large"))
        self.assertEqual(self.backend.submitted, [])

    def test_http_1_0(self) -> None:
        raw = b"POST /command HTTP/1.0\r\nContent-Length: 1\r\n\r\na"
        self.assertEqual(self.answer_to(raw)[0], 200)

    def test_malformed_header_is_400(self) -> None:
        self.assertEqual(self.answer_to(post(b"/command", b"a", b"No colon here"))[0], 400)
        self.assertEqual(self.backend.submitted, [])

    def test_two_lengths_are_400(self) -> None:
        self.assertEqual(self.answer_to(post(b"/command", b"a", b"Content-Length: 1"))[0], 400)

    def test_absolute_target(self) -> None:
        raw = b"POST http://a:1/command HTTP/1.1\r\nContent-Length: 1\r\n\r\na"
        self.assertEqual(self.answer_to(raw)[0], 200)

    def test_expect_continue(self) -> None:
        channel, transport = self.connect()
        channel.dataReceived(post(b"/command", b"a", b"Expect: 100-continue"))
        self.assertEqual([r[0] for r in responses(transport.value())], [100, 200])

    def test_head_over_the_limit_is_dropped(self) -> None:
        """A head past MAX_HEAD_BYTES goes to twisted.web, which drops the connection."""
        channel, transport = self.connect()
        channel.dataReceived(b"POST /command HTTP/1.1\r\nX: " + b"y" * 17000)
        self.assertEqual(self.handed_over, 1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.backend.submitted, [])

    def test_later_request_on_another_route(self) -> None:
        """A hot request first, then another route: the second hands the connection over,
        and both are answered in order."""
        channel, transport = self.connect()
        channel.dataReceived(post(b"/command", b"a") + b"GET /health HTTP/1.1\r\n\r\n")
        self.assertEqual([r[0] for r in responses(transport.value())], [200, 200])
        self.assertEqual(self.handed_over, 1)


class ResponseHeadTests(SynchronousTestCase):
    def test_control_characters_in_a_value_cannot_split_the_head(self) -> None:
        request = FastRequest(b"GET", b"/query", b"/query", {}, b"")
        request.setHeader(b"Location", b"http://a/\r\nSet-Cookie: x=1\x00")
        head = request.response_head(b"", 0, False)
        self.assertEqual(head.count(b"\r\n"), 4)  # status, Location, Content-Length, end
        self.assertIn(b"Location: http://a/  Set-Cookie: x=1 \r\n", head)


# Requests built from parts that are usual, unusual and wrong, for the comparison below.
_METHODS = st.sampled_from([b"GET", b"POST", b"POST", b"POST", b"PUT"])
_TARGETS = st.sampled_from(
    [
        b"/command",
        b"/command/",
        b"/commands",
        b"/query",
        b"/query?q=abc",
        b"/query?consistency=weak&q=x",
        b"/query?timeout=zz",
        b"/command?redirect=true",
        b"/status",
        b"/nope",
        b"http://h:1/command",
        b"/command?base64=true",
    ]
)
_VERSIONS = st.sampled_from([b"HTTP/1.1"] * 6 + [b"HTTP/1.0", b"HTTP/2.0", b"http/1.1"])
_BODIES = st.sampled_from([b"", b"abc", b'["a","b"]', b"[]", b"YWJj", b"x" * (LIMIT + 1)])
_FRAMING = st.sampled_from(["length"] * 6 + ["none", "chunked", "twice", "bad", "plus"])
_EXTRA = st.lists(
    st.sampled_from(
        [
            b"Connection: close",
            b"Connection: keep-alive",
            b"Expect: 100-continue",
            b"X-Thing: value\t",
            b"X-Empty:",
            b"No colon",
            b" folded-continuation",
            b"Bad Name: x",
            b"Authorization: Bearer nope",
            b"Authorization: Bearer " + READER.encode(),
            b"Authorization: Bearer " + WRITER.encode(),
            b"Origin: http://elsewhere.example",
            b"Sec-Fetch-Site: cross-site",
            b"Graft-Session: s1",
            b"Graft-Session: s1",
            b"Graft-Sequence: 1",
            b"X-Ctl: a\x00b",
        ]
    ),
    max_size=2,
)


@st.composite
def _requests(draw: Any) -> bytes:
    method, target, version = draw(_METHODS), draw(_TARGETS), draw(_VERSIONS)
    body, framing, extra = draw(_BODIES), draw(_FRAMING), draw(_EXTRA)
    headers = [b"Host: a", *extra]
    if framing == "length":
        headers.append(b"Content-Length: %d" % len(body))
    elif framing == "twice":
        headers += [b"Content-Length: %d" % len(body)] * 2
    elif framing == "bad":
        headers.append(b"Content-Length: x%d" % len(body))
    elif framing == "plus":
        headers.append(b"Content-Length: +%d" % len(body))
    elif framing == "chunked":
        headers.append(b"Transfer-Encoding: chunked")
        body = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
    head = b"\r\n".join([method + b" " + target + b" " + version, *headers])
    request: bytes = head + b"\r\n\r\n" + body
    return request


def _serve(site: Any, pieces: list[bytes], clock: Clock) -> tuple[list[Any], bool]:
    channel = site.buildProtocol(PEER)
    transport = StringTransport()
    channel.makeConnection(transport)
    for piece in pieces:
        if transport.disconnecting:
            break
        channel.dataReceived(piece)
    clock.advance(0)
    answers = [
        (status, body, headers.get(b"content-type"), headers.get(b"connection"))
        for status, headers, body in responses(transport.value())
    ]
    closed = transport.disconnecting
    channel.connectionLost(None)
    return answers, closed


class SameAnswersTests(SynchronousTestCase):
    @settings(max_examples=1500, deadline=None)
    @given(
        st.lists(_requests(), min_size=1, max_size=3),
        st.lists(st.integers(0, 400)),
        st.booleans(),
    )
    def test_fast_channel_answers_as_twisted_web(
        self, requests: list[bytes], cuts: list[int], with_tokens: bool
    ) -> None:
        """For any sequence of requests on one connection, cut into reads anywhere, the
        API's Site answers as a Site of twisted.web's channel alone over the same resource:
        the same statuses, bodies, content types and Connection headers, and it closes the
        connection in the same cases; with API tokens set or not."""
        raw = b"".join(requests)
        points = sorted({min(c, len(raw)) for c in cuts})
        pieces = [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]
        pieces = [p for p in pieces if p]
        outcomes = []
        for fast in (True, False):
            clock = Clock()
            backend = FakeBackend()
            roles = tokens(read=READER, write=WRITER) if with_tokens else {}
            api = Settings(max_body_bytes=LIMIT, tokens=roles)
            if fast:
                site: Any = make_api_site(backend, api, reactor=clock)
            else:
                resource = make_api_resource(backend, api, reactor=clock)
                site = ApiSite(resource, max_body_bytes=LIMIT, reactor=clock)
            outcomes.append((_serve(site, pieces, clock), backend.submitted, backend.queries))
        self.assertEqual(outcomes[0], outcomes[1], raw)
