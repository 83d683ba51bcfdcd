"""PeerTransport: the node's peer channel as a Twisted service.

It listens on the node's p2p port, keeps one outbound connection to every other member, sends
Raft messages over the outbound connection to their recipient, delivers messages arriving on
any authenticated connection to ``on_message``, and carries request/response calls both ways.
When an authenticated connection closes it tells ``on_peer_lost`` the peer's id: a closed
socket is the quickest sign that a peer's process died.

Inbound connections are capped (ConnectionLimits): in total, per remote address, and those that
have not yet completed their hello. A connection over a cap is closed as soon as it is accepted,
before TLS, and the first refusal of a run is logged.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.protocol import Factory, ServerFactory
from twisted.logger import Logger
from twisted.python.failure import Failure

from graft.addresses import listen_interface
from graft.raft.messages import Message
from graft.transport.dialer import Backoff, PeerDialer
from graft.transport.errors import PeerUnavailable
from graft.transport.protocol import PeerConnection
from graft.transport.reachability import Reachability
from graft.transport.reasons import dial_failure
from graft.transport.tls import PeerTLSFactory, TLSContexts, TLSPaths
from graft.wire import (
    COMMANDS,
    DEFAULT_MAX_FRAME_BYTES,
    MAX_HELLO_BYTES,
    PROTOCOL_VERSION,
    CommandRegistry,
    Hello,
    encode_frame,
)

log = Logger(namespace="graft.transport")

RequestHandler = Callable[[str, str, dict[str, Any]], defer.Deferred[dict[str, Any]]]


class PeerAddress(Protocol):
    """Where a peer listens; graft.config.PeerConfig provides it."""

    @property
    def host(self) -> str: ...
    @property
    def p2p_port(self) -> int: ...


@dataclass(slots=True)
class TransportStats:
    """Counters for metrics and tests."""

    messages_sent: int = 0
    messages_received: int = 0
    dropped_not_connected: int = 0
    dropped_too_large: int = 0
    dial_failures: int = 0
    connections_refused: int = 0  # inbound connections closed at once, over a ConnectionLimits cap


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionLimits:
    """Caps on inbound peer connections; graft.config.TransportConfig carries them from the file.

    A cluster needs one inbound connection per other member (two for a moment while one
    replaces another); the caps leave room for that many times over and bound what a stranger
    holding no certificate (unauthenticated) or a flood from one address can take.
    """

    max_connections: int = 256
    max_connections_per_address: int = 16
    max_unauthenticated: int = 32


@dataclass(slots=True)
class _InboundCounts:
    total: int = 0
    unauthenticated: int = 0
    by_host: dict[str, int] = field(default_factory=dict)
    refusing: set[str] = field(default_factory=set)  # why refusals were logged, until one admit


class _AcceptFactory(ServerFactory):
    def __init__(self, transport: PeerTransport) -> None:
        self.transport = transport

    def buildProtocol(self, addr: Any) -> PeerConnection:
        return PeerConnection(self.transport, expected_peer=None)


class _AdmitFactory(ServerFactory):
    """The listening port's factory: returns no protocol for a connection over a cap (the port
    then closes the socket at once, before any TLS work), else the TLS factory's."""

    noisy = False

    def __init__(self, transport: PeerTransport, inner: Factory) -> None:
        self.transport = transport
        self.inner = inner

    def doStart(self) -> None:
        self.inner.doStart()  # type: ignore[no-untyped-call]

    def doStop(self) -> None:
        self.inner.doStop()  # type: ignore[no-untyped-call]

    def logPrefix(self) -> str:  # the port's "... starting on PORT" names the TLS factory
        prefix = getattr(self.inner, "logPrefix", None)
        return str(prefix()) if prefix is not None else type(self.inner).__name__

    def buildProtocol(self, addr: Any) -> Any:
        if not self.transport.admit(str(getattr(addr, "host", addr))):
            return None
        return self.inner.buildProtocol(addr)


class PeerTransport(Service):
    """See the module docstring."""

    def __init__(
        self,
        *,
        reactor: Any,  # IReactorTCP + IReactorTime
        node_id: str,
        cluster: str,
        peers: Mapping[str, PeerAddress],
        tls: TLSPaths,
        on_message: Callable[[Message], None],
        on_request: RequestHandler,
        rng: random.Random,
        on_peer_lost: Callable[[str], None] | None = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        commands: CommandRegistry = COMMANDS,
        call_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        backoff: Backoff | None = None,
        listen_interface: str | None = None,
        settings: Mapping[str, str] | None = None,
        limits: ConnectionLimits | None = None,
    ) -> None:
        if node_id not in peers:
            raise ValueError(
                f"node {node_id!r} is not among the peers {sorted(peers)}; add it to `peers`"
            )
        self.reactor = reactor
        self.node_id = node_id
        self.cluster = cluster
        self.commands = commands
        self.max_frame_bytes = max_frame_bytes
        self.call_timeout = call_timeout
        self.stats = TransportStats()
        self._peers: dict[str, PeerAddress] = dict(peers)
        self._contexts = TLSContexts(tls)  # read here, so bad files fail early; reload_tls
        self._on_message = on_message
        self._on_request = on_request
        self._on_peer_lost = on_peer_lost
        self._rng = rng
        self._connect_timeout = connect_timeout
        self._backoff = backoff or Backoff()
        self._listen_interface = listen_interface
        self._port: Any = None
        self._dialers: dict[str, PeerDialer] = {}
        self._outbound: dict[str, PeerConnection] = {}
        self._connections: set[PeerConnection] = set()
        self._init_limits(settings, limits)
        # See admit_unlisted: whether a node not in the address book may connect, and the
        # connections of peers whose address is unknown, the only way to reach them.
        self._admit_unlisted = False
        self._unlisted_members: frozenset[str] = frozenset()
        self._unlisted: dict[str, PeerConnection] = {}
        self.reachability = Reachability()
        # Why the last dial of a peer failed, until a connection to it is authenticated.
        self._dial_errors: dict[str, str] = {}

    # -- service -----------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        me = self._peers[self.node_id]
        accept: Any = _AcceptFactory(self)  # zope interfaces are invisible to mypy
        factory: Any = PeerTLSFactory(self._contexts.server, False, accept, clock=self.reactor)
        self._port = self.reactor.listenTCP(
            me.p2p_port,
            _AdmitFactory(self, factory),
            interface=listen_interface(me.host, self._listen_interface),
        )
        for peer_id in self._peers:
            if peer_id != self.node_id:
                self._start_dialer(peer_id)

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        for dialer in self._dialers.values():
            dialer.stop()
        self._dialers.clear()
        waits: list[defer.Deferred[Any]] = []
        for connection in list(self._connections):
            waits.append(connection.closed)
            connection.abort()
        if self._port is not None:
            waits.append(defer.maybeDeferred(self._port.stopListening))
            self._port = None
        return defer.gatherResults(waits).addCallback(lambda _: None)

    @property
    def port(self) -> int | None:
        """The port actually listened on (useful when the configured port is 0)."""
        return None if self._port is None else int(self._port.getHost().port)

    # -- the API the node uses ---------------------------------------------------------------

    def send_all(self, messages: Sequence[Message]) -> None:
        """Send messages now (a Ready's, in order): the ones to the same peer leave together,
        as one write on its outbound connection."""
        by_peer: dict[str, list[Message]] = {}
        for message in messages:
            batch = by_peer.get(message.to)
            if batch is None:
                by_peer[message.to] = [message]
            else:
                batch.append(message)
        stats = self.stats
        for peer, batch in by_peer.items():
            connection = self._outbound.get(peer) or self._unlisted.get(peer)
            if connection is None or connection.closing:
                stats.dropped_not_connected += len(batch)
                continue
            stats.messages_sent += connection.send_messages(batch)

    def call(
        self,
        peer: str,
        command: str,
        args: dict[str, Any],
        *,
        timeout: float | None = None,
    ) -> defer.Deferred[dict[str, Any]]:
        connection = self._outbound.get(peer) or self._unlisted.get(peer)
        if connection is None or connection.closing:
            return defer.fail(PeerUnavailable(peer, "not connected; retry shortly"))
        return connection.ask(command, args, self.call_timeout if timeout is None else timeout)

    def connected_peers(self) -> set[str]:
        """Peers that send_all() and call() can reach now (an authenticated outbound connection)."""
        reachable = {peer for peer, c in self._outbound.items() if not c.closing}
        return reachable | {peer for peer, c in self._unlisted.items() if not c.closing}

    def dial_error(self, peer: str) -> str | None:
        """Why the last dial of ``peer`` failed ("connection refused"), while it has no
        authenticated outbound connection; None if no dial has failed since."""
        return self._dial_errors.get(peer)

    def update_peers(self, peers: Mapping[str, PeerAddress]) -> None:
        """Adopt a new membership: dial new peers, forget removed ones, re-dial moved ones."""
        old, self._peers = self._peers, dict(peers)
        for peer_id, address in old.items():
            moved = peer_id in self._peers and (
                (self._peers[peer_id].host, self._peers[peer_id].p2p_port)
                != (address.host, address.p2p_port)
            )
            if peer_id == self.node_id or (peer_id in self._peers and not moved):
                continue
            dialer = self._dialers.pop(peer_id, None)
            self.reachability.forget(peer_id)
            if dialer is not None:
                dialer.stop()
            for connection in list(self._connections):
                if peer_id in (connection.peer, connection.expected_peer):
                    connection.drop("the peer left the membership or moved")
        if self.running:
            for peer_id in self._peers:
                if peer_id != self.node_id and peer_id not in self._dialers:
                    self._start_dialer(peer_id)

    def admit_unlisted(self, admit: bool, members: Collection[str] = ()) -> None:
        """Whether nodes missing from the address book may connect (their certificate, signed
        by the cluster CA for that node id, and the cluster name are still checked): any node
        of the cluster (``admit``), else only ``members``, the members whose address is
        unknown.

        Only for a node that has not learned the membership yet (joining with a fresh data
        dir): it knows no member, so it must let the leader in to receive the log that names
        them. Until the log gives their addresses it answers them on the connections they
        opened. Turning it off drops the connections of everyone else not in the book."""
        self._admit_unlisted = admit
        self._unlisted_members = frozenset(members)
        if admit:
            return
        keep = self._unlisted_members
        self._unlisted = {p: c for p, c in self._unlisted.items() if p in keep}
        for connection in list(self._connections):
            peer = connection.peer
            if peer is not None and peer not in self._peers and peer not in keep:
                connection.drop("the peer is not in the membership this node learned")

    # -- ConnectionOwner ---------------------------------------------------------------------

    def is_member(self, node_id: str) -> bool:
        return node_id in self._peers or self._admit_unlisted or node_id in self._unlisted_members

    def connection_made(self, connection: PeerConnection) -> None:
        self._connections.add(connection)
        if not connection.outbound:
            counts = self._inbound
            counts.total += 1
            counts.unauthenticated += 1
            counts.by_host[connection.host] = counts.by_host.get(connection.host, 0) + 1

    def connection_authenticated(self, connection: PeerConnection) -> None:
        peer = connection.peer
        assert peer is not None
        if not connection.outbound:
            self._inbound.unauthenticated -= 1
        log.info("peer connection {connection} authenticated", connection=connection.describe())
        if connection.outbound:
            dialer = self._dialers.get(peer)
            if dialer is None:  # the peer was removed while we were connecting
                connection.drop("the peer is no longer a member")
                return
            dialer.authenticated()
            self.reachability.reached(peer, self._address_of(peer))
            self._dial_errors.pop(peer, None)
            previous = self._outbound.get(peer)
            self._outbound[peer] = connection
            if previous is not None and previous is not connection:
                previous.drop("replaced by a newer connection")
        else:
            dialer = self._dialers.get(peer)
            if dialer is not None and peer not in self._outbound:
                dialer.peer_is_back()
            if peer not in self._peers:  # admitted unlisted: reachable only this way
                self._unlisted[peer] = connection

    def connection_lost(self, connection: PeerConnection, reason: Failure) -> None:
        expected = connection.expected_peer
        if connection.peer is None and expected in self._dialers and self.running:
            # Our dial connected but was never accepted: TLS or the hello was refused.
            self.reachability.failed(expected, self._address_of(expected), reason)
        if connection in self._connections and not connection.outbound:
            self._count_inbound_lost(connection)
        self._connections.discard(connection)
        peer = connection.peer
        if peer is not None and self._outbound.get(peer) is connection:
            del self._outbound[peer]
        if peer is not None and self._unlisted.get(peer) is connection:
            del self._unlisted[peer]
        if peer is not None and self.running and self._on_peer_lost is not None:
            self._on_peer_lost(peer)

    def message_received(self, connection: PeerConnection, message: Message) -> None:
        self.stats.messages_received += 1
        self._on_message(message)

    def request_received(
        self, peer: str, command: str, args: dict[str, Any]
    ) -> defer.Deferred[dict[str, Any]]:
        return self._on_request(peer, command, args)

    def frame_too_large(self, connection: PeerConnection, size: int) -> None:
        self.stats.dropped_too_large += 1
        log.warn(
            "not sending a {size}-byte frame to {peer}: over the {limit}-byte frame limit",
            size=size,
            peer=connection.peer,
            limit=self.max_frame_bytes,
        )

    # -- limits and settings -----------------------------------------------------------------

    def _init_limits(
        self, settings: Mapping[str, str] | None, limits: ConnectionLimits | None
    ) -> None:
        self.settings: Mapping[str, str] = dict(settings or {})
        self.limits = limits or ConnectionLimits()
        self._inbound = _InboundCounts()
        self._said: set[Hashable] = set()
        hello = Hello(
            version=PROTOCOL_VERSION,
            cluster=self.cluster,
            node_id=self.node_id,
            settings=dict(self.settings),
        )
        size = len(encode_frame(hello)) - 4
        if size > MAX_HELLO_BYTES:  # peers would refuse it: fail at start, not at every dial
            raise ValueError(
                f"this node's hello takes {size} bytes, over the {MAX_HELLO_BYTES} a peer accepts"
                " (cluster name, node id or settings too long)"
            )

    def first_time(self, key: Hashable) -> bool:
        """True the first time ``key`` is seen: for log lines that are said once per peer and
        value. Bounded: a peer that changes its values endlessly only makes lines repeat."""
        if key in self._said:
            return False
        if len(self._said) >= 1024:
            self._said.clear()
        self._said.add(key)
        return True

    def admit(self, host: str) -> bool:
        """Whether to accept a new inbound connection from ``host`` (see ConnectionLimits)."""
        counts = self._inbound
        limits = self.limits
        if counts.unauthenticated >= limits.max_unauthenticated:
            why = (
                f"{counts.unauthenticated} connections have not completed their hello"
                f" (transport.max_unauthenticated is {limits.max_unauthenticated})"
            )
            key = "unauthenticated"
        elif counts.total >= limits.max_connections:
            why = (
                f"{counts.total} inbound connections are open"
                f" (transport.max_connections is {limits.max_connections})"
            )
            key = "total"
        elif counts.by_host.get(host, 0) >= limits.max_connections_per_address:
            why = (
                f"{counts.by_host[host]} connections from that address are open"
                f" (transport.max_connections_per_address is"
                f" {limits.max_connections_per_address})"
            )
            key = f"host {host}"
        else:
            counts.refusing.discard("unauthenticated")
            counts.refusing.discard("total")
            counts.refusing.discard(f"host {host}")
            return True
        self.stats.connections_refused += 1
        if key not in counts.refusing and len(counts.refusing) < 1024:
            counts.refusing.add(key)
            log.warn(
                "closing new peer connections from {host} at once: {why}; said once until one"
                " is accepted again",
                host=host,
                why=why,
            )
        return False

    def _count_inbound_lost(self, connection: PeerConnection) -> None:
        counts = self._inbound
        counts.total -= 1
        if connection.peer is None:
            counts.unauthenticated -= 1
        left = counts.by_host.get(connection.host, 0) - 1
        if left > 0:
            counts.by_host[connection.host] = left
        else:
            counts.by_host.pop(connection.host, None)

    def reload_tls(self, tls: TLSPaths) -> None:
        """Read the node's certificate, key and CA bundle again: connections made from now on
        (accepted or dialled) use them; open ones keep theirs until they reconnect. Raises
        TLSFilesError, keeping the current files, when one is missing or invalid."""
        self._contexts.reload(tls)

    # -- internals ---------------------------------------------------------------------------

    def _start_dialer(self, peer_id: str) -> None:
        address = self._peers[peer_id]
        dialer = PeerDialer(
            self,
            peer_id=peer_id,
            host=address.host,
            port=address.p2p_port,
            client_tls=self._contexts.client(address.host),
            rng=self._rng,
            backoff=self._backoff,
            connect_timeout=self._connect_timeout,
            on_failed=self._dial_failed,
        )
        self._dialers[peer_id] = dialer
        dialer.start()

    def _dial_failed(self, peer_id: str, reason: Failure) -> None:
        self.stats.dial_failures += 1
        self._dial_errors[peer_id] = dial_failure(reason.value or Exception())
        log.debug("dialling {peer} failed: {reason}", peer=peer_id, reason=reason.value)
        self.reachability.failed(peer_id, self._address_of(peer_id), reason)

    def _address_of(self, peer_id: str) -> str:
        address = self._peers.get(peer_id)
        return "an unknown address" if address is None else f"{address.host}:{address.p2p_port}"
