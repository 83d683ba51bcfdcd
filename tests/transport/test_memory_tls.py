"""PeerTransport over a real TLS handshake, in memory (iosim + TLSMemoryBIOFactory)."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, ssl
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.test.iosim import IOPump, connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase

from graft.errors import NoLeader
from graft.raft.messages import AppendEntries, AppendEntriesResponse, Heartbeat
from graft.raft.types import Entry, EntryKind
from graft.transport import CallTimeout, PeerUnavailable, RemoteError
from graft.wire import PROTOCOL_VERSION, Command, Hello, encode_frame, encode_message_frame
from tests.transport.support import (
    FakeClusterConfig,
    Inbox,
    LogCapture,
    Peer,
    make_transport,
    shared_cluster,
)

_ADDRESS = IPv4Address("TCP", "127.0.0.1", 40000)
BACKOFF_MAX = 2.0  # graft.transport.Backoff().maximum


def _append(sender: str = "turing", to: str = "ritchie", count: int = 3) -> AppendEntries:
    entries = tuple(
        Entry(index=i, term=2, kind=EntryKind.NORMAL, data=b"x" * i) for i in range(1, count + 1)
    )
    return AppendEntries(
        term=2, sender=sender, to=to, prev_index=0, prev_term=0, entries=entries, commit=1
    )


class _Pair:
    """Two transports, each on its own memory reactor, and the pumps of their connections."""

    def __init__(self, pump_reactors: list[MemoryReactorClock]) -> None:
        self.reactors = pump_reactors
        self.pumps: list[IOPump] = []

    def flush(self) -> None:
        for _ in range(100):
            for reactor in self.reactors:
                reactor.advance(0)
            moved = [pump.pump(advanceClock=False) for pump in self.pumps]
            if not any(moved):
                for reactor in self.reactors:
                    reactor.advance(0)
                if not any(pump.pump(advanceClock=False) for pump in self.pumps):
                    return

    def connect(self, client_factory: Any, server_factory: Any) -> tuple[Any, Any]:
        client, server, pump = connectedServerAndClient(
            lambda: server_factory.buildProtocol(_ADDRESS),
            lambda: client_factory.buildProtocol(_ADDRESS),
            greet=False,
            clock=self.reactors[0],
        )
        self.pumps.append(pump)
        self.flush()
        return client, server


def _dial_factory(reactor: MemoryReactorClock, port: int) -> Any:
    """The factory of the latest dial to ``port`` recorded by the memory reactor."""
    for _host, dialled, factory, _timeout, _bind in reversed(reactor.tcpClients):
        if dialled == port:
            return factory
    raise AssertionError(f"no dial to port {port}")


def _server_factory(reactor: MemoryReactorClock) -> Any:
    return reactor.tcpServers[0][1]


class _Rogue(Protocol):
    """A client that speaks TLS but none of the checks: it writes whatever frames it is given."""

    def __init__(self, frames: list[bytes]) -> None:
        self.frames = frames
        self.received = b""
        self.lost: Failure | None = None

    def connectionMade(self) -> None:
        transport: Any = self.transport
        for frame in self.frames:
            transport.write(frame)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.lost = reason


class MemoryTLSTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.cfg = shared_cluster()
        # The same node names under a different CA: valid-looking certificates we must refuse.
        self.stranger = shared_cluster(key="stranger")
        self.log = LogCapture().install(self)
        self.turing_reactor = MemoryReactorClock()
        self.ritchie_reactor = MemoryReactorClock()
        self.turing_inbox = Inbox()
        self.ritchie_inbox = Inbox()
        self.turing_lost: list[str] = []
        self.ritchie_lost: list[str] = []
        self.turing = make_transport(
            self.cfg,
            "turing",
            self.turing_reactor,
            self.turing_inbox,
            on_peer_lost=self.turing_lost.append,
        )
        self.ritchie = make_transport(
            self.cfg,
            "ritchie",
            self.ritchie_reactor,
            self.ritchie_inbox,
            on_peer_lost=self.ritchie_lost.append,
        )
        self.turing.startService()
        self.ritchie.startService()
        self.pair = _Pair([self.turing_reactor, self.ritchie_reactor])

    def tearDown(self) -> None:
        stopped = [t.stopService() for t in (self.turing, self.ritchie) if t.running]
        self.pair.flush()
        for d in stopped:
            self.successResultOf(d)
        for reactor in (self.turing_reactor, self.ritchie_reactor):
            self.assertEqual(reactor.getDelayedCalls(), [], "timers left behind after stopService")

    def connect_turing_to_ritchie(self) -> None:
        self.pair.connect(
            _dial_factory(self.turing_reactor, 8881), _server_factory(self.ritchie_reactor)
        )

    def connect_rogue(self, options: Any, frames: list[bytes]) -> _Rogue:
        rogue = _Rogue(frames)
        wrapped: Any = Factory.forProtocol(lambda: rogue)
        clock: Any = self.ritchie_reactor
        factory = TLSMemoryBIOFactory(options, True, wrapped, clock=clock)
        self.pair.connect(factory, _server_factory(self.ritchie_reactor))
        return rogue

    def client_options(self, cfg: FakeClusterConfig, node_id: str | None) -> Any:
        """TLS client options trusting the real CA, presenting ``node_id``'s cert from ``cfg``."""
        ca = ssl.Certificate.loadPEM(self.cfg.tls_for("turing").ca.read_bytes())
        identity = None
        if node_id is not None:
            files = cfg.tls_for(node_id)
            identity = ssl.PrivateCertificate.loadPEM(
                files.cert.read_bytes() + files.key.read_bytes()
            )
        return ssl.optionsForClientTLS("127.0.0.1", trustRoot=ca, clientCertificate=identity)

    def hello(
        self, node_id: str, *, cluster: str = "test", version: int = PROTOCOL_VERSION
    ) -> bytes:
        return encode_frame(Hello(version=version, cluster=cluster, node_id=node_id))

    # -- the happy path ----------------------------------------------------------------------

    def test_message_round_trip(self) -> None:
        """After the handshake and hellos, a message sent by turing reaches ritchie intact."""
        self.connect_turing_to_ritchie()
        self.assertEqual(self.turing.connected_peers(), {"ritchie"})
        message = _append(count=50)
        self.turing.send_all([message])
        self.pair.flush()
        self.assertEqual(self.ritchie_inbox.messages, [message])
        self.assertEqual(self.turing.stats.messages_sent, 1)

    def test_messages_leave_within_the_reactor_turn_that_sent_them(self) -> None:
        """send_all() hands a Ready's messages to TLS and TCP before it returns, one TLS record
        per peer: the peer has them without the sender's reactor running again (Twisted's
        default TLS transport held every write for a callLater(0))."""
        self.connect_turing_to_ritchie()
        messages = [_append(count=3), _append(count=5)]
        self.turing.send_all(messages)
        for pump in self.pair.pumps:  # moves bytes; neither clock advances
            pump.pump(advanceClock=False)
        self.assertEqual(self.ritchie_inbox.messages, messages)
        self.assertEqual(self.turing.stats.messages_sent, 2)
        self.assertEqual(self.turing_reactor.getDelayedCalls(), [])

    def test_messages_both_directions(self) -> None:
        """Each side sends over its own outbound connection and receives on the inbound one."""
        self.connect_turing_to_ritchie()
        self.pair.connect(
            _dial_factory(self.ritchie_reactor, 8880), _server_factory(self.turing_reactor)
        )
        reply = AppendEntriesResponse(
            term=2, sender="ritchie", to="turing", success=True, match_index=3
        )
        self.turing.send_all([_append()])
        self.ritchie.send_all([reply])
        self.pair.flush()
        self.assertEqual(self.ritchie_inbox.messages, [_append()])
        self.assertEqual(self.turing_inbox.messages, [reply])

    def test_send_when_not_connected_is_dropped_and_counted(self) -> None:
        """A message to a peer without an authenticated connection is dropped and counted."""
        self.turing.send_all([_append(to="lovelace")])
        self.assertEqual(self.turing.stats.dropped_not_connected, 1)
        self.assertEqual(self.turing.stats.messages_sent, 0)

    def test_call_round_trip(self) -> None:
        """call() reaches ritchie's on_request with checked arguments and returns its answer."""
        self.connect_turing_to_ritchie()
        args = {"query": b"SELECT 1", "consistency": "strong", "min_index": None}
        d = self.turing.call("ritchie", "forward_query", args)
        self.pair.flush()
        self.assertEqual(self.successResultOf(d), {"output": b"ok", "applied_index": 7})
        self.assertEqual(self.ritchie_inbox.requests, [("turing", "forward_query", args)])

    def test_call_remote_error(self) -> None:
        """A handler raising RemoteError makes the caller's Deferred fail with that code."""

        def refuse(peer: str, command: str, args: dict[str, Any]) -> dict[str, Any]:
            raise RemoteError("not_leader", "ask lovelace")

        self.ritchie_inbox.handler = refuse
        self.connect_turing_to_ritchie()
        d = self.turing.call("ritchie", "forward_submit", {"commands": [b"a", b"b"]})
        self.pair.flush()
        error = self.failureResultOf(d, RemoteError).value
        self.assertEqual((error.code, error.message), ("not_leader", "ask lovelace"))

    def test_call_graft_error_keeps_its_code(self) -> None:
        """A handler failing with a graft.errors.GraftError answers with that error's code."""

        def no_leader(peer: str, command: str, args: dict[str, Any]) -> dict[str, Any]:
            raise NoLeader("no leader is known; retry")

        self.ritchie_inbox.handler = no_leader
        self.connect_turing_to_ritchie()
        d = self.turing.call("ritchie", "forward_submit", {"commands": []})
        self.pair.flush()
        error = self.failureResultOf(d, RemoteError).value
        self.assertEqual((error.code, error.message), ("no_leader", "no leader is known; retry"))

    def test_call_answer_over_the_frame_limit_says_it_was_carried_out(self) -> None:
        """An answer over the frame limit cannot be sent: the caller gets `answer_too_large`,
        which says the request was carried out (not `internal`, which reads as a failure),
        and the connection stays up."""

        def big(peer: str, command: str, args: dict[str, Any]) -> dict[str, Any]:
            return {"output": b"x" * 5000, "applied_index": 9}

        self.ritchie_inbox.handler = big
        self.connect_turing_to_ritchie()
        self.ritchie.max_frame_bytes = 1000
        args = {"query": b"q", "consistency": "strong", "min_index": None}
        d = self.turing.call("ritchie", "forward_query", args)
        self.pair.flush()
        error = self.failureResultOf(d, RemoteError).value
        self.assertEqual(error.code, "answer_too_large")
        self.assertIn("over the peer frame limit of 1000", error.message)
        self.assertIn("carried out", error.message)
        self.assertEqual(self.turing.connected_peers(), {"ritchie"})

    def test_call_handler_crash_is_internal_error(self) -> None:
        """An unexpected exception in a handler answers `internal` and is logged on the peer."""

        def crash(peer: str, command: str, args: dict[str, Any]) -> dict[str, Any]:
            raise ZeroDivisionError("boom")

        self.ritchie_inbox.handler = crash
        self.connect_turing_to_ritchie()
        d = self.turing.call("ritchie", "forward_submit", {"commands": []})
        self.pair.flush()
        self.assertEqual(self.failureResultOf(d, RemoteError).value.code, "internal")
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_call_unknown_command(self) -> None:
        """A command the peer has not registered is answered with `unknown_command`."""
        commands = self.turing.commands.copy()
        commands.register(Command(name="ping", arguments={}, response={}))
        self.turing.commands = commands
        self.connect_turing_to_ritchie()
        d = self.turing.call("ritchie", "ping", {})
        self.pair.flush()
        self.assertEqual(self.failureResultOf(d, RemoteError).value.code, "unknown_command")

    def test_call_timeout(self) -> None:
        """A call the peer never answers fails with CallTimeout after the timeout."""
        self.ritchie_inbox.handler = lambda peer, command, args: defer.Deferred()
        self.connect_turing_to_ritchie()
        d = self.turing.call("ritchie", "forward_submit", {"commands": [b"x"]}, timeout=2.0)
        self.pair.flush()
        self.assertNoResult(d)
        self.turing_reactor.advance(2.0)
        self.failureResultOf(d, CallTimeout)

    def test_call_not_connected(self) -> None:
        """call() to a peer without a connection fails at once with PeerUnavailable."""
        self.failureResultOf(
            self.turing.call("lovelace", "forward_submit", {"commands": []}), PeerUnavailable
        )

    def test_connection_loss_fails_pending_calls(self) -> None:
        """Calls waiting on a connection fail with PeerUnavailable when it closes."""
        self.ritchie_inbox.handler = lambda peer, command, args: defer.Deferred()
        self.connect_turing_to_ritchie()
        d = self.turing.call("ritchie", "forward_submit", {"commands": [b"x"]})
        self.pair.flush()
        self.ritchie.stopService()
        self.pair.flush()
        self.failureResultOf(d, PeerUnavailable)
        self.assertEqual(self.turing.connected_peers(), set())

    def test_closed_connection_reports_the_peer_lost(self) -> None:
        """Both ends of an authenticated connection that closes name the peer to on_peer_lost
        (a node's hint that the peer may have died); nothing is reported while stopping."""
        self.connect_turing_to_ritchie()
        self.assertEqual(self.turing.connected_peers(), {"ritchie"})
        self.turing._outbound["ritchie"].drop("test")
        self.pair.flush()
        self.assertEqual(self.turing_lost, ["ritchie"])
        self.assertEqual(self.ritchie_lost, ["turing"])
        self.connect_turing_to_ritchie()
        self.ritchie.stopService()
        self.pair.flush()
        self.assertEqual(self.turing_lost, ["ritchie", "ritchie"])
        self.assertEqual(self.ritchie_lost, ["turing"], "a stopping transport reports nothing")

    def test_refused_connection_reports_no_peer(self) -> None:
        """A connection that never authenticated names no peer, so it reports nothing."""
        rogue = self.connect_rogue(self.client_options(self.stranger, "turing"), [])
        self.assert_refused(rogue)
        self.assertEqual(self.ritchie_lost, [])

    # -- refusals ----------------------------------------------------------------------------

    def assert_refused(self, rogue: _Rogue, *fragments: str) -> None:
        self.pair.flush()
        self.assertIsNotNone(rogue.lost, "the refused connection is still open")
        self.assertEqual(self.ritchie_inbox.messages, [])
        text = self.log.text()
        for fragment in fragments:
            self.assertIn(fragment, text)

    def test_client_without_certificate_is_refused(self) -> None:
        """A client presenting no certificate fails the handshake and the server logs why."""
        rogue = self.connect_rogue(
            self.client_options(self.cfg, None),
            [self.hello("turing"), encode_message_frame(_append())],
        )
        self.assert_refused(
            rogue, "closed before it was authenticated", "did not return a certificate"
        )

    def test_client_with_certificate_of_another_ca_is_refused(self) -> None:
        """A certificate signed by another CA fails the handshake and the server logs why."""
        rogue = self.connect_rogue(
            self.client_options(self.stranger, "turing"),
            [self.hello("turing"), encode_message_frame(_append())],
        )
        self.assert_refused(
            rogue, "closed before it was authenticated", "certificate verify failed"
        )

    def test_client_claiming_another_node_is_refused(self) -> None:
        """A valid certificate of lovelace cannot be used to speak as turing."""
        rogue = self.connect_rogue(
            self.client_options(self.cfg, "lovelace"),
            [self.hello("turing"), encode_message_frame(_append())],
        )
        self.assert_refused(
            rogue, "refused hello from node 'turing'", "its certificate names ['lovelace']"
        )

    def test_wrong_cluster_is_refused(self) -> None:
        """A hello naming another cluster is refused and logged."""
        rogue = self.connect_rogue(
            self.client_options(self.cfg, "turing"), [self.hello("turing", cluster="prod")]
        )
        self.assert_refused(rogue, "cluster 'prod'")

    def test_unknown_protocol_version_is_refused(self) -> None:
        """A hello with a protocol version this node does not speak is refused and logged."""
        rogue = self.connect_rogue(
            self.client_options(self.cfg, "turing"), [self.hello("turing", version=99)]
        )
        self.assert_refused(rogue, "protocol version 99")

    def test_non_member_is_refused(self) -> None:
        """A node that is not in the membership is refused, even with a valid certificate."""
        self.ritchie.update_peers({k: v for k, v in self.cfg.peers.items() if k != "lovelace"})
        rogue = self.connect_rogue(
            self.client_options(self.cfg, "lovelace"), [self.hello("lovelace")]
        )
        self.assert_refused(rogue, "not a member of the cluster")

    def test_first_frame_must_be_hello(self) -> None:
        """A message before the hello is a protocol error that drops the connection."""
        rogue = self.connect_rogue(
            self.client_options(self.cfg, "turing"), [encode_message_frame(_append())]
        )
        self.assert_refused(rogue, "the first frame must be a hello")

    def test_server_answering_as_another_node_is_refused(self) -> None:
        """The dialler drops a server whose hello names a node other than the one it dialled."""
        lovelace = make_transport(self.cfg, "lovelace", self.ritchie_reactor, Inbox())
        lovelace.startService()
        self.addCleanup(lovelace.stopService)
        self.pair.connect(
            _dial_factory(self.turing_reactor, 8881), self.ritchie_reactor.tcpServers[-1][1]
        )
        self.assertEqual(self.turing.connected_peers(), set())
        self.assertIn("dialled 'ritchie' but it says it is 'lovelace'", self.log.text())

    def test_server_certificate_must_name_the_dialled_host(self) -> None:
        """The dialler checks the server certificate names the host it dialled (here
        `localhost`, which ritchie's certificate, for 127.0.0.1, does not name)."""
        peers = {**self.cfg.peers, "ritchie": Peer(host="localhost", p2p_port=8881)}
        reactor = MemoryReactorClock()
        self.pair.reactors.append(reactor)
        turing = make_transport(self.cfg, "turing", reactor, Inbox(), peers=peers)
        turing.startService()
        self.pair.connect(_dial_factory(reactor, 8881), _server_factory(self.ritchie_reactor))
        self.assertEqual(turing.connected_peers(), set())
        self.assertIn("cannot reach peer ritchie at localhost:8881: TLS refused", self.log.text())
        self.assertIn("VerificationError", self.log.text())
        stopped = turing.stopService()
        self.pair.flush()
        self.successResultOf(stopped)

    # -- malformed input ---------------------------------------------------------------------

    def test_malformed_frame_drops_the_connection(self) -> None:
        """Garbage after a valid hello drops the connection with a logged reason; the dialler
        then schedules a redial."""
        rogue = self.connect_rogue(
            self.client_options(self.cfg, "turing"),
            [
                self.hello("turing"),
                b"\x00\x00\x00\x03\xc1\xc1\xc1",
                encode_message_frame(_append()),
            ],
        )
        self.assert_refused(rogue, "protocol error: undecodable msgpack body")

    def test_oversized_frame_drops_the_connection(self) -> None:
        """A frame longer than max_frame_bytes drops the connection before it is buffered."""
        rogue = self.connect_rogue(
            self.client_options(self.cfg, "turing"),
            [self.hello("turing"), (1 << 30).to_bytes(4, "big")],
        )
        self.assert_refused(rogue, "exceeds the limit")

    def test_forged_sender_drops_the_connection(self) -> None:
        """A message whose sender is not the authenticated node drops the connection."""
        rogue = self.connect_rogue(
            self.client_options(self.cfg, "turing"),
            [self.hello("turing"), encode_message_frame(_append(sender="lovelace"))],
        )
        self.assert_refused(rogue, "from lovelace to ritchie on the connection of turing")

    def test_lost_outbound_connection_is_redialled(self) -> None:
        """When the outbound connection drops, the dialler dials again after a backoff delay."""
        self.connect_turing_to_ritchie()
        dials = len(self.turing_reactor.tcpClients)
        self.ritchie.stopService()
        self.pair.flush()
        self.assertEqual(self.turing.connected_peers(), set())
        self.turing_reactor.advance(BACKOFF_MAX)
        self.assertEqual(len(self.turing_reactor.tcpClients), dials + 1)
        self.assertEqual(self.turing_reactor.tcpClients[-1][:2], ("127.0.0.1", 8881))

    def test_hello_timeout_drops_silent_connection(self) -> None:
        """A client that completes TLS but never says hello is dropped after the hello timeout."""
        rogue = self.connect_rogue(self.client_options(self.cfg, "turing"), [])
        self.assertIsNone(rogue.lost)
        self.ritchie_reactor.advance(10)
        self.assert_refused(rogue, "no hello within 10 seconds")

    def test_message_over_frame_limit_is_not_sent(self) -> None:
        """A message larger than max_frame_bytes is counted and not written (the receiver would
        drop the connection for it)."""
        self.connect_turing_to_ritchie()
        self.turing.max_frame_bytes = 1000
        self.turing.send_all([_append(count=100)])
        self.pair.flush()
        self.assertEqual(self.turing.stats.dropped_too_large, 1)
        self.assertEqual(self.ritchie_inbox.messages, [])
        self.assertEqual(self.turing.connected_peers(), {"ritchie"})

    def test_update_peers_dials_new_and_drops_removed(self) -> None:
        """update_peers dials a newly added peer and closes connections of a removed one."""
        self.connect_turing_to_ritchie()
        dials = {port for _h, port, _f, _t, _b in self.turing_reactor.tcpClients}
        self.assertEqual(dials, {8881, 8882})
        bigger = {**self.cfg.peers, "hopper": Peer(host="127.0.0.1", p2p_port=8899)}
        self.turing.update_peers(bigger)
        self.assertEqual(self.turing_reactor.tcpClients[-1][:2], ("127.0.0.1", 8899))
        before = len(self.turing_reactor.tcpClients)
        self.turing.update_peers({k: v for k, v in bigger.items() if k != "ritchie"})
        self.pair.flush()
        self.assertEqual(self.turing.connected_peers(), set())
        self.assertIn("the peer left the membership", self.log.text())
        self.turing_reactor.advance(BACKOFF_MAX)
        redials = [port for _h, port, _f, _t, _b in self.turing_reactor.tcpClients[before:]]
        self.assertNotIn(8881, redials)

    def test_heartbeat_after_many_messages(self) -> None:
        """Many messages in one flush arrive in order (frames split across TLS records)."""
        self.connect_turing_to_ritchie()
        sent = [
            Heartbeat(term=1, sender="turing", to="ritchie", commit=i, seq=i) for i in range(500)
        ]
        for message in sent:
            self.turing.send_all([message])
        self.turing.send_all([_append(count=1000)])
        self.pair.flush()
        self.assertEqual(self.ritchie_inbox.messages, [*sent, _append(count=1000)])


class BackoffTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.cfg = shared_cluster(("turing", "ritchie"))

    def test_failed_dials_back_off_exponentially_up_to_the_cap(self) -> None:
        """Each failed dial waits longer (doubling, half of it jitter) up to the maximum."""
        reactor = MemoryReactorClock()
        transport = make_transport(self.cfg, "turing", reactor, Inbox())
        transport.startService()
        delays = []
        for _ in range(8):
            factory: Any = reactor.tcpClients[-1][2]
            factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
            call: Any
            (call,) = reactor.getDelayedCalls()
            delays.append(call.getTime() - reactor.seconds())
            reactor.advance(delays[-1])
        ceilings = [min(2.0, 0.05 * 2**i) for i in range(8)]
        for delay, ceiling in zip(delays, ceilings, strict=True):
            self.assertTrue(ceiling / 2 <= delay <= ceiling, (delay, ceiling))
        self.assertEqual(transport.stats.dial_failures, 8)
        self.successResultOf(transport.stopService())
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_stop_service_cancels_redial(self) -> None:
        """stopService cancels a scheduled redial and stops listening."""
        reactor = MemoryReactorClock()
        transport = make_transport(self.cfg, "turing", reactor, Inbox())
        transport.startService()
        dial: Any = reactor.tcpClients[-1][2]
        dial.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        self.assertEqual(len(reactor.getDelayedCalls()), 1)
        self.successResultOf(transport.stopService())
        self.assertEqual(reactor.getDelayedCalls(), [])
        self.assertIsNone(transport.port)
