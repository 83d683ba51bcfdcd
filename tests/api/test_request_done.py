"""Done hooks: called once when a response is finished or its connection lost, on the API's
requests without Deferreds and on any other Request through notifyFinish."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyChannel

from graft.api import make_api_site
from graft.api.limits import BoundedRequest
from graft.api.request_done import when_done
from tests.api.fakes import FakeBackend, Settings

COMMAND = b"POST /command HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx"


class DoneHookTests(SynchronousTestCase):
    def request(self, cls: type[Request] = BoundedRequest) -> Any:
        request = cls(DummyChannel())
        self.seen: list[Any] = []
        when_done(request, self.seen.append)
        return request

    def test_finished(self) -> None:
        """Once the response is finished: the hook gets None, once."""
        for cls in (BoundedRequest, Request):
            request = self.request(cls)
            request.finish()
            self.assertEqual(self.seen, [None], cls)
            request.connectionLost(Failure(ConnectionLost()))
            self.assertEqual(self.seen, [None], cls)

    def test_connection_lost(self) -> None:
        """If the connection goes first: the hook gets the reason, once."""
        for cls in (BoundedRequest, Request):
            request = self.request(cls)
            request.connectionLost(Failure(ConnectionLost()))
            (reason,) = self.seen
            self.assertIsInstance(reason, Failure, cls)
            self.assertTrue(reason.check(ConnectionLost), cls)

    def test_hooks_in_order_and_a_failing_one_is_logged(self) -> None:
        request = self.request()
        calls: list[str] = []

        def broken(_: object) -> None:
            calls.append("broken")
            raise ZeroDivisionError

        when_done(request, broken)
        when_done(request, lambda _: calls.append("last"))
        request.finish()
        self.assertEqual((self.seen, calls), ([None], ["broken", "last"]))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_site_requests_use_no_notify_finish(self) -> None:
        """The API's own Site answers and counts a command through done hooks: no Deferred
        from notifyFinish is made for it."""
        backend = FakeBackend()
        backend.hold_commands = True  # answered later: the hot route waits, as on a leader
        site = make_api_site(backend, Settings(), reactor=Clock())
        made: list[Any] = []
        original = BoundedRequest.notifyFinish

        def counting(request: Any) -> Any:
            made.append(request)
            return original(request)

        self.patch(BoundedRequest, "notifyFinish", counting)
        channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40001))
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(COMMAND)
        (held,) = backend.pending_commands
        held.callback(backend.results_for([b"x"]))
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 "))
        self.assertEqual(made, [])
        counted = [
            sample.value
            for family in backend.metrics.collect()
            for sample in family.samples
            if sample.name == "graft_http_requests_total"
        ]
        self.assertEqual(counted, [1.0])  # and the request was counted, once
