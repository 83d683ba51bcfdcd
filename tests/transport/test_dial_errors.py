"""The transport keeps why its last dial of a peer failed, in an operator's words, until a
connection to it is authenticated: `graft members add` quotes it ("connection refused")."""

from __future__ import annotations

from typing import Any

from twisted.internet import error
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from graft.transport.reasons import dial_failure
from tests.transport.support import Inbox, make_transport, shared_cluster


class DialFailureTests(SynchronousTestCase):
    def test_causes_in_plain_words(self) -> None:
        """Refused, timed out, unresolvable and unroutable dials have short names; anything
        else its own text, or its type when it has none."""
        self.assertEqual(dial_failure(error.ConnectionRefusedError()), "connection refused")
        self.assertEqual(dial_failure(error.TCPTimedOutError()), "connection timed out")
        self.assertEqual(dial_failure(error.TimeoutError()), "connection timed out")
        self.assertEqual(dial_failure(error.DNSLookupError()), "its host name does not resolve")
        self.assertEqual(dial_failure(ValueError("odd  thing\n")), "odd thing")
        self.assertEqual(dial_failure(RuntimeError()), "RuntimeError")

    def test_transport_keeps_the_last_dial_error(self) -> None:
        """A failed dial's cause is kept per peer; a peer never dialled has none."""
        cfg = shared_cluster(("turing", "ritchie"))
        reactor = MemoryReactorClock()
        transport = make_transport(cfg, "turing", reactor, Inbox())
        transport.startService()
        self.assertIsNone(transport.dial_error("ritchie"))
        factory: Any = reactor.tcpClients[-1][2]
        factory.clientConnectionFailed(None, Failure(error.ConnectionRefusedError()))
        self.assertEqual(transport.dial_error("ritchie"), "connection refused")
        self.assertIsNone(transport.dial_error("lovelace"))
        self.successResultOf(transport.stopService())
