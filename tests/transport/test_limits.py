"""Peer plane limits over real TLS in memory: connection caps, bombs, the settings comparison."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from twisted.internet import ssl
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test.iosim import FakeTransport, IOPump, connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase

from graft.agreement import cluster_settings, compare_settings
from graft.config import load_config
from graft.fsm.limits import KV_MAX_CONTAINERS, SQLITE_VM_STEP_BUDGET
from graft.raft.messages import Heartbeat
from graft.service import connection_limits
from graft.transport import ConnectionLimits, PeerTransport
from graft.wire import PROTOCOL_VERSION, Hello, encode_frame, encode_message_frame
from tests.transport.support import Inbox, LogCapture, make_transport, shared_cluster
from tests.transport.test_memory_tls import _dial_factory, _Rogue

SQLITE = "graft.fsm.sqlite:SQLiteStateMachine"


class _Net:
    """Memory reactors and the pumps of the connections made between them; connections are
    accepted through the listening factory, so its admission checks apply."""

    def __init__(self, *reactors: MemoryReactorClock) -> None:
        self.reactors = list(reactors)
        self.pumps: list[IOPump] = []

    def flush(self) -> None:
        for _ in range(100):
            for reactor in self.reactors:
                reactor.advance(0)
            if not any([pump.pump(advanceClock=False) for pump in self.pumps]):
                return

    def connect(self, client_factory: Any, server: MemoryReactorClock, host: str) -> bool:
        """Connect from ``host``; False if the server closed the connection at accept."""
        address = IPv4Address("TCP", host, 40000 + len(self.pumps))
        listening: Any = server.tcpServers[0][1]
        server_protocol = listening.buildProtocol(address)
        if server_protocol is None:
            return False

        def server_transport(protocol: Any) -> Any:
            return FakeTransport(protocol, True, peerAddress=address)

        _client, _server, pump = connectedServerAndClient(
            lambda: server_protocol,
            lambda: client_factory.buildProtocol(address),
            serverTransportFactory=server_transport,
            greet=False,
            clock=self.reactors[0],
        )
        self.pumps.append(pump)
        self.flush()
        return True


class _Case(SynchronousTestCase):
    def setUp(self) -> None:
        self.cfg = shared_cluster()
        self.log = LogCapture().install(self)
        self.transports: list[PeerTransport] = []
        self.net = _Net()

    def start(self, node_id: str, **kwargs: Any) -> tuple[PeerTransport, MemoryReactorClock]:
        reactor = MemoryReactorClock()
        self.net.reactors.append(reactor)
        transport = make_transport(self.cfg, node_id, reactor, Inbox(), **kwargs)
        transport.startService()
        self.transports.append(transport)
        return transport, reactor

    def tearDown(self) -> None:
        stopped = [t.stopService() for t in self.transports if t.running]
        self.net.flush()
        for d in stopped:
            self.successResultOf(d)

    def rogue_factory(self, node_id: str, frames: list[bytes]) -> tuple[_Rogue, Any]:
        """A TLS client with ``node_id``'s valid certificate that writes ``frames``."""
        files = self.cfg.tls_for(node_id)
        ca = ssl.Certificate.loadPEM(files.ca.read_bytes())
        identity = ssl.PrivateCertificate.loadPEM(files.cert.read_bytes() + files.key.read_bytes())
        options = ssl.optionsForClientTLS("127.0.0.1", trustRoot=ca, clientCertificate=identity)
        rogue = _Rogue(frames)
        wrapped: Any = Factory.forProtocol(lambda: rogue)
        clock: Any = self.net.reactors[0]
        return rogue, TLSMemoryBIOFactory(options, True, wrapped, clock=clock)

    def hello(self, node_id: str, settings: dict[str, str] | None = None) -> bytes:
        hello = Hello(version=PROTOCOL_VERSION, cluster="test", node_id=node_id, settings=settings)
        return encode_frame(hello)


class ConnectionCapTests(_Case):
    def test_unauthenticated_connections_are_capped(self) -> None:
        """Past max_unauthenticated connections that have not said hello, a new one is closed
        at accept; once they are gone (hello timeout), connections are accepted again."""
        ritchie, reactor = self.start(
            "ritchie", limits=ConnectionLimits(max_unauthenticated=2, max_connections=100)
        )
        rogues = []
        for i in range(2):
            rogue, factory = self.rogue_factory("turing", [])
            self.assertTrue(self.net.connect(factory, reactor, f"10.0.0.{i}"))
            rogues.append(rogue)
        _, factory = self.rogue_factory("turing", [])
        self.assertFalse(self.net.connect(factory, reactor, "10.0.0.9"))
        self.assertFalse(self.net.connect(factory, reactor, "10.0.0.9"))
        self.assertEqual(ritchie.stats.connections_refused, 2)
        self.assertEqual(self.log.text().count("have not completed their hello"), 1)
        reactor.advance(10)  # the hello timeout drops both
        self.net.flush()
        self.assertTrue(all(rogue.lost is not None for rogue in rogues))
        self.assertTrue(self.net.connect(factory, reactor, "10.0.0.9"))

    def test_connections_per_address_and_in_total_are_capped(self) -> None:
        """Authenticated or not, inbound connections from one address are capped, and so are
        all inbound connections."""
        ritchie, reactor = self.start(
            "ritchie",
            limits=ConnectionLimits(
                max_connections=3, max_connections_per_address=2, max_unauthenticated=10
            ),
        )
        for _ in range(2):
            _, factory = self.rogue_factory("turing", [self.hello("turing")])
            self.assertTrue(self.net.connect(factory, reactor, "10.0.0.1"))
        _, factory = self.rogue_factory("turing", [self.hello("turing")])
        self.assertFalse(self.net.connect(factory, reactor, "10.0.0.1"))
        self.assertIn("2 connections from that address", self.log.text())
        self.assertTrue(self.net.connect(factory, reactor, "10.0.0.2"))
        self.assertFalse(self.net.connect(factory, reactor, "10.0.0.3"))
        self.assertIn("3 inbound connections are open", self.log.text())
        self.assertEqual(ritchie.stats.connections_refused, 2)

    def test_closed_connections_free_their_place(self) -> None:
        """The counts follow connections closing, authenticated or not."""
        ritchie, reactor = self.start(
            "ritchie", limits=ConnectionLimits(max_connections=1, max_unauthenticated=1)
        )
        # Authenticated then dropped; dropped by a protocol error; dropped before its hello.
        for frames in ([self.hello("turing")], [b"\x00\x00\x00\x01\xc0"], []):
            rogue, factory = self.rogue_factory("turing", frames)
            self.assertTrue(self.net.connect(factory, reactor, "10.0.0.1"))
            if rogue.lost is None:
                self.assertFalse(self.net.connect(factory, reactor, "10.0.0.1"))
            for connection in list(ritchie._connections):
                connection.drop("test")
            self.net.flush()
            self.assertEqual(ritchie._inbound.total, 0)
            self.assertEqual(ritchie._inbound.unauthenticated, 0)
            self.assertEqual(ritchie._inbound.by_host, {})


class BombTests(_Case):
    def test_pre_hello_bomb_drops_the_connection_unread(self) -> None:
        """A client with a valid certificate whose first frame is 1 MiB of empty arrays is
        dropped from the frame's first bytes; the node is unaffected."""
        ritchie, reactor = self.start("ritchie")
        body = b"\xdd" + (1 << 20).to_bytes(4, "big") + b"\x90" * (1 << 20)
        rogue, factory = self.rogue_factory("turing", [len(body).to_bytes(4, "big") + body])
        self.net.connect(factory, reactor, "127.0.0.1")
        self.assertIsNotNone(rogue.lost)
        self.assertIn("a first frame of 1048581 bytes", self.log.text())
        self.assertEqual(ritchie._inbound.total, 0)

    def test_nesting_bomb_after_hello_drops_the_connection(self) -> None:
        """After a valid hello, an answer nested 1000 deep is a protocol error that drops the
        connection (it was a RecursionError out of dataReceived)."""
        self.start("ritchie")
        body = b"\x93\xa7_answer\x01\x81\xa1a" + b"\x91" * 999 + b"\x90"
        frame = len(body).to_bytes(4, "big") + body
        heartbeat = Heartbeat(term=1, sender="turing", to="ritchie", commit=0, seq=1)
        rogue, factory = self.rogue_factory(
            "turing", [self.hello("turing"), frame, encode_message_frame(heartbeat)]
        )
        self.net.connect(factory, self.net.reactors[0], "127.0.0.1")
        self.assertIsNotNone(rogue.lost)
        self.assertIn("protocol error: nesting deeper than", self.log.text())
        self.assertEqual(self.flushLoggedErrors(RecursionError), [])


class SettingsTests(_Case):
    def connect(self, turing: PeerTransport, turing_reactor: Any, reactor: Any) -> None:
        self.net.connect(_dial_factory(turing_reactor, 8881), reactor, "127.0.0.1")

    def test_fsm_mismatch_is_refused_and_said_once(self) -> None:
        """Nodes with different FSM factories refuse each other, both logging both values once,
        however often the dialler retries."""
        turing, turing_reactor = self.start("turing", settings={"fsm.factory": "a.b:C"})
        _ritchie, reactor = self.start("ritchie", settings={"fsm.factory": SQLITE})
        for _ in range(3):
            self.connect(turing, turing_reactor, reactor)
            self.assertEqual(turing.connected_peers(), set())
        text = self.log.text()
        self.assertEqual(
            text.count(f"fsm.factory is 'a.b:C' on this node but '{SQLITE}' on ritchie"), 1
        )
        self.assertEqual(
            text.count(f"fsm.factory is '{SQLITE}' on this node but 'a.b:C' on turing"), 1
        )
        self.assertNotIn("closed before it was authenticated", text)

    def test_sqlite_build_mismatch_is_refused_with_the_sqlite_fsm(self) -> None:
        """With the SQLite FSM on both, a different SQLite version refuses the connection."""
        mine = {"fsm.factory": SQLITE, "sqlite.version": "3.40.1", "sqlite.compile_options": "A"}
        theirs = {**mine, "sqlite.version": "3.45.0"}
        turing, turing_reactor = self.start("turing", settings=mine)
        _, reactor = self.start("ritchie", settings=theirs)
        self.connect(turing, turing_reactor, reactor)
        self.assertEqual(turing.connected_peers(), set())
        self.assertIn(
            "sqlite.version is '3.40.1' on this node but '3.45.0' on ritchie", self.log.text()
        )

    def test_sqlite_build_ignored_with_another_fsm(self) -> None:
        """SQLite's build decides nothing for another FSM: no refusal, no warning."""
        kv = "graft.fsm.kv:KeyValueStateMachine"
        turing, turing_reactor = self.start(
            "turing", settings={"fsm.factory": kv, "sqlite.version": "1"}
        )
        _, reactor = self.start("ritchie", settings={"fsm.factory": kv, "sqlite.version": "2"})
        self.connect(turing, turing_reactor, reactor)
        self.assertEqual(turing.connected_peers(), {"ritchie"})
        self.assertNotIn("sqlite.version", self.log.text())

    def test_timing_mismatch_is_a_warning_once(self) -> None:
        """Different timeouts connect, with one warning per peer and value."""
        turing, turing_reactor = self.start(
            "turing", settings={"fsm.factory": SQLITE, "timeouts.election_ms": "350"}
        )
        _, reactor = self.start(
            "ritchie", settings={"fsm.factory": SQLITE, "timeouts.election_ms": "500"}
        )
        for _ in range(2):
            self.connect(turing, turing_reactor, reactor)
            self.assertEqual(turing.connected_peers(), {"ritchie"})
        text = self.log.text()
        self.assertEqual(text.count("timeouts.election_ms is '350' on this node but '500'"), 1)
        self.assertEqual(text.count("timeouts.election_ms is '500' on this node but '350'"), 1)

    def test_older_hello_without_settings_is_accepted_with_a_warning(self) -> None:
        """A hello without settings (an older node) is accepted; the node says once that it
        cannot compare."""
        ritchie, reactor = self.start("ritchie", settings={"fsm.factory": SQLITE})
        old = b"\x94\xa6_hello" + bytes([PROTOCOL_VERSION]) + b"\xa4test\xa6turing"
        for _ in range(2):
            rogue, factory = self.rogue_factory("turing", [len(old).to_bytes(4, "big") + old])
            self.net.connect(factory, reactor, "127.0.0.1")
            self.assertIsNone(rogue.lost)
        self.assertEqual(self.log.text().count("sent no settings in its hello"), 1)
        self.assertEqual(ritchie._inbound.unauthenticated, 0)


class ClusterSettingsTests(SynchronousTestCase):
    def load(self, extra: str) -> Any:
        path = Path(self.mktemp())
        path.write_text(
            "timeouts: {election: 400, heartbeat: 40}\n"
            "peers: {a: {host: 127.0.0.1, ports: {p2p: 7001, api: 8001}}}\n"
            "transport: {max_connections: 9, max_connections_per_address: 3,"
            " max_unauthenticated: 2}\n" + extra
        )
        return load_config(path)

    def test_settings_of_the_sqlite_fsm_include_the_sqlite_build(self) -> None:
        """The hello carries the FSM factory, the timeouts and, for the SQLite FSM, SQLite's
        version and sorted compile options as this process's library reports them."""
        settings = cluster_settings(self.load(""))
        self.assertEqual(settings["fsm.factory"], SQLITE)
        self.assertEqual(settings["timeouts.election_ms"], "400")
        self.assertEqual(settings["timeouts.heartbeat_ms"], "40")
        self.assertEqual(settings["sqlite.version"], sqlite3.sqlite_version)
        options = settings["sqlite.compile_options"].split(" ")
        self.assertEqual(options, sorted(options))
        kv = cluster_settings(self.load("fsm: {factory: 'graft.fsm.kv:KeyValueStateMachine'}\n"))
        self.assertNotIn("sqlite.version", kv)

    def test_fsm_limits_are_compared_and_a_difference_refuses(self) -> None:
        """The hello carries the FSM limits (graft.fsm.limits), for every FSM: two nodes whose
        limits differ would refuse different commands of one log, so the connection is
        refused."""
        for fsm in ("", "fsm: {factory: 'graft.fsm.kv:KeyValueStateMachine'}\n"):
            mine = cluster_settings(self.load(fsm))
            limits = json.loads(mine["fsm.limits"])
            self.assertEqual(limits["sqlite_vm_step_budget"], SQLITE_VM_STEP_BUDGET)
            self.assertEqual(limits["kv_max_containers"], KV_MAX_CONTAINERS)
            theirs = dict(mine, **{"fsm.limits": mine["fsm.limits"].replace("10000000", "1")})
            [difference] = compare_settings(mine, theirs)
            self.assertEqual(difference.name, "fsm.limits")
            self.assertTrue(difference.fatal)

    def test_connection_limits_come_from_the_file(self) -> None:
        """transport.max_connections, max_connections_per_address and max_unauthenticated
        reach the transport's ConnectionLimits."""
        self.assertEqual(
            connection_limits(self.load("")),
            ConnectionLimits(
                max_connections=9, max_connections_per_address=3, max_unauthenticated=2
            ),
        )
