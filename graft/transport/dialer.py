"""One long-lived outbound connection to one peer, re-dialled with capped backoff and jitter."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.protocol import ClientFactory
from twisted.python.failure import Failure

from graft.transport.protocol import ConnectionOwner, PeerConnection
from graft.transport.tls import PeerTLSFactory


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """Delay before redial number ``attempt`` (0-based): doubles from ``initial`` up to
    ``maximum``, and half of it is random so that restarted nodes do not dial in lockstep."""

    initial: float = 0.05
    maximum: float = 2.0
    multiplier: float = 2.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        ceiling = min(self.maximum, self.initial * self.multiplier ** min(attempt, 64))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


class _DialFactory(ClientFactory):
    noisy = False  # one factory per dial attempt: "Starting factory" lines would flood the log

    def __init__(self, dialer: PeerDialer) -> None:
        self.dialer = dialer

    def buildProtocol(self, addr: Any) -> PeerConnection:
        return self.dialer.build_connection()

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.dialer.dial_failed(reason)


class PeerDialer:
    """Keeps one outbound connection to ``peer_id`` open while started.

    A lost connection, a failed dial, or a refused hello all lead to a redial after
    ``backoff.delay(attempt)``; the attempt count resets once a connection is authenticated.
    """

    def __init__(
        self,
        owner: ConnectionOwner,
        *,
        peer_id: str,
        host: str,
        port: int,
        client_tls: Any,  # IOpenSSLClientConnectionCreator
        rng: random.Random,
        backoff: Backoff,
        connect_timeout: float,
        on_failed: Callable[[str, Failure], None],
    ) -> None:
        self.owner = owner
        self.peer_id = peer_id
        self.host = host
        self.port = port
        self._client_tls = client_tls
        self._rng = rng
        self._backoff = backoff
        self._connect_timeout = connect_timeout
        self._on_failed = on_failed
        self.attempt = 0
        self._stopped = True
        self._connector: Any = None
        self._retry: Any = None  # IDelayedCall of the next dial

    def start(self) -> None:
        self._stopped = False
        self._dial()

    def stop(self) -> None:
        """Stop dialling; an established connection is closed by its owner, not here."""
        self._stopped = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        connector, self._connector = self._connector, None
        if connector is not None and getattr(connector, "state", None) == "connecting":
            connector.stopConnecting()

    @property
    def waiting(self) -> bool:
        """Whether a redial is scheduled (for tests and status)."""
        return self._retry is not None

    def build_connection(self) -> PeerConnection:
        return PeerConnection(self.owner, expected_peer=self.peer_id, on_lost=self._connection_lost)

    def authenticated(self) -> None:
        self.attempt = 0

    def peer_is_back(self) -> None:
        """The peer just reached us: if we are waiting out a backoff, dial now instead.

        A restarted node would otherwise wait up to the maximum backoff to hear from the
        leader, longer than its election timeout.
        """
        if self._retry is not None and self._retry.active() and not self._stopped:
            self._retry.cancel()
            self._retry = None
            self.attempt = 0
            self._dial()

    def dial_failed(self, reason: Failure) -> None:
        self._connector = None
        if not self._stopped:
            self._on_failed(self.peer_id, reason)
            self._schedule()

    def _connection_lost(self) -> None:
        self._connector = None
        self._schedule()

    def _dial(self) -> None:
        self._retry = None
        if self._stopped:
            return
        dial: Any = _DialFactory(self)  # zope interfaces are invisible to mypy
        factory = PeerTLSFactory(self._client_tls, True, dial, clock=self.owner.reactor)
        self._connector = self.owner.reactor.connectTCP(
            self.host, self.port, factory, timeout=self._connect_timeout
        )

    def _schedule(self) -> None:
        if self._stopped or self._retry is not None:
            return
        delay = self._backoff.delay(self.attempt, self._rng)
        self.attempt += 1
        self._retry = self.owner.reactor.callLater(delay, self._dial)
