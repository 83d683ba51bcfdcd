"""The deadline race, alone and when the client goes away mid-request."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from graft.api import make_api_site
from graft.api.deadline import within
from graft.errors import Timeout
from tests.api.fakes import FakeBackend, Settings


class WithinTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.work: Deferred[str] = Deferred()
        self.answer = within(self.work, 2.0, self.clock, lambda: Timeout("late: retry"))

    def test_result_in_time(self) -> None:
        """Work finishing in time passes its result through and cancels the timer."""
        self.work.callback("done")
        self.assertEqual(self.successResultOf(self.answer), "done")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_failure_in_time(self) -> None:
        """Work failing in time passes its failure through."""
        self.work.errback(Failure(ValueError("x")))
        self.failureResultOf(self.answer, ValueError)

    def test_expiry_leaves_work_alone(self) -> None:
        """At the deadline the answer fails with the given error; the work is not cancelled
        and its late result, even a failure, is swallowed rather than logged as unhandled."""
        self.clock.advance(2.0)
        self.failureResultOf(self.answer, Timeout)
        self.assertNoResult(self.work)
        self.work.errback(Failure(ValueError("late")))
        self.assertEqual(self.flushLoggedErrors(ValueError), [])

    def test_cancel_stops_timer_only(self) -> None:
        """Cancelling the answer (client gone) stops the timer and leaves the work running."""
        self.answer.cancel()
        self.failureResultOf(self.answer, CancelledError)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertNoResult(self.work)
        self.work.callback("late")


class DisconnectTests(SynchronousTestCase):
    def test_client_gone_mid_command(self) -> None:
        """A client that disconnects while its command is pending leaves no timer behind and
        nothing logged; the command itself stays with the backend."""
        backend = FakeBackend()
        backend.hold_commands = True
        clock = Clock()
        site = make_api_site(backend, Settings(), reactor=clock)
        channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40001))
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(b"POST /command HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx")
        self.assertEqual(backend.submitted, [[b"x"]])
        self.assertNotEqual(clock.getDelayedCalls(), [])
        channel.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(clock.getDelayedCalls(), [])
        (held,) = backend.pending_commands
        held.callback(backend.results_for([b"x"]))
        self.assertEqual(transport.value(), b"")
