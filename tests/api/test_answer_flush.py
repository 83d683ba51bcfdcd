"""An answer that waited for the cluster leaves on the socket at once, not after the next poll.

The Site is driven over a real TCP connection on 127.0.0.1 whose Twisted transport sits on a
memory reactor that never polls: whatever reaches the other end got there without a reactor
iteration.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.tcp import Connection
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from graft.api import make_api_site
from tests.api.fakes import FakeBackend, Settings

_ADDRESS = IPv4Address("TCP", "127.0.0.1", 40000)


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    """Two connected TCP sockets on 127.0.0.1 (the channel sets TCP options)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return server, client


class _SocketPairTransport(Connection):
    """A TCP transport over one end of a socket pair (the addresses are made up)."""

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 8080)

    def getPeer(self) -> IPv4Address:
        return _ADDRESS


class AnswerFlushTests(SynchronousTestCase):
    def setUp(self) -> None:
        ours, self.client = _tcp_pair()
        self.addCleanup(ours.close)
        self.addCleanup(self.client.close)
        self.backend = FakeBackend()
        self.backend.hold_commands = True
        reactor: Any = MemoryReactorClock()
        site = make_api_site(self.backend, Settings(), reactor=reactor)
        self.channel: Any = site.buildProtocol(_ADDRESS)
        self.transport = _SocketPairTransport(ours, self.channel, reactor)
        self.transport.connected = True  # as tcp.Server sets it once accepted
        self.channel.makeConnection(self.transport)
        self.addCleanup(self.channel.connectionLost, None)

    def received(self, wait: bool = False) -> bytes:
        # Waiting cannot make a test pass that should fail: the memory reactor never polls,
        # so only flush_now can have sent anything. It only absorbs the kernel's loopback.
        self.client.settimeout(5.0 if wait else 0.0)
        try:
            return self.client.recv(65536)
        except (BlockingIOError, TimeoutError):
            return b""

    def test_committed_command_is_answered_without_a_reactor_iteration(self) -> None:
        """Once the command's Deferred fires (its entry applied), the whole response is in the
        client's socket before the reactor runs again."""
        self.channel.dataReceived(
            b"POST /command HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}"
        )
        self.assertEqual(self.received(), b"")
        (pending,) = self.backend.pending_commands
        pending.callback(self.backend.results_for([b"{}"]))
        response = self.received(wait=True)
        self.assertTrue(response.startswith(b"HTTP/1.1 200 "), response)
