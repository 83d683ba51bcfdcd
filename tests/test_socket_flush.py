"""graft.socket_flush: what a TCP transport buffered reaches the kernel at once."""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.protocol import Protocol
from twisted.internet.tcp import Connection
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from graft.socket_flush import flush_now


class FlushNowTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.ours, self.theirs = socket.socketpair()
        self.addCleanup(self.ours.close)
        self.addCleanup(self.theirs.close)
        self.theirs.setblocking(False)
        self.reactor = MemoryReactor()  # records addWriter/removeWriter; never polls
        protocol: Any = Protocol()  # zope interfaces are invisible to mypy
        reactor: Any = self.reactor
        self.transport = Connection(self.ours, protocol, reactor)
        self.transport.connected = True  # as tcp.Server and tcp.Client set it once connected

    def received(self) -> bytes:
        try:
            return self.theirs.recv(65536)
        except BlockingIOError:
            return b""

    def test_buffered_write_is_sent_without_the_reactor(self) -> None:
        """A write only buffers until the reactor polls; flush_now sends it at once and leaves
        the transport no longer registered for write."""
        self.transport.write(b"append entries")
        self.assertEqual(self.received(), b"", "Twisted sent before the reactor polled")
        self.assertIn(self.transport, self.reactor.getWriters())
        flush_now(self.transport)
        self.assertEqual(self.received(), b"append entries")
        self.assertNotIn(self.transport, self.reactor.getWriters())

    def test_closing_transport_is_left_to_the_reactor(self) -> None:
        """A transport that is closing keeps its buffered bytes for the reactor, which sends
        them and then closes."""
        self.transport.write(b"goodbye")
        self.transport.loseConnection()
        flush_now(self.transport)
        self.assertEqual(self.received(), b"")
        self.assertIn(self.transport, self.reactor.getWriters())

    def test_transport_without_do_write_is_ignored(self) -> None:
        """Transports that are not file descriptors (TLS on TCP, test transports) are left
        alone."""
        flush_now(object())
