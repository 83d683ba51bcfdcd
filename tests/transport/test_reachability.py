"""The transport's reachability lines (graft.transport.reachability): one line when a peer
cannot be reached and why, one when it can again, not one per attempt. Real sockets on
127.0.0.1, with a short redial backoff."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from graft.transport import PeerTransport
from graft.transport.dialer import Backoff
from tests.transport.support import (
    FakeClusterConfig,
    Inbox,
    LogCapture,
    Peer,
    make_cluster,
    make_transport,
    shared_cluster,
)

FAST = Backoff(initial=0.01, maximum=0.05)


async def _until(condition: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    waited = 0.0
    while not condition():
        if waited >= timeout:
            raise AssertionError(f"timed out waiting for {what}")
        await task.deferLater(reactor, 0.01, lambda: None)
        waited += 0.01


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ReachabilityLogTests(TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.log = LogCapture().install(self)
        self.port = _free_port()

    def start(self, cfg: FakeClusterConfig, node: str, peers: dict[str, Peer]) -> PeerTransport:
        transport = make_transport(cfg, node, reactor, Inbox(), peers=peers, backoff=FAST)
        transport.startService()
        self.addCleanup(lambda: transport.stopService() if transport.running else None)
        return transport

    def lines(self, fragment: str) -> list[str]:
        return [line for line in self.log.text().splitlines() if fragment in line]

    @defer.inlineCallbacks
    def test_refused_then_reachable_one_line_each(self) -> Any:
        """Many refused dials make one "cannot reach" line that says connection refused; the
        peer coming up makes one "reachable again" line."""
        cfg = shared_cluster(("turing", "ritchie"))
        turing = self.start(
            cfg,
            "turing",
            {"turing": Peer(host="127.0.0.1", p2p_port=0), "ritchie": Peer(
                host="127.0.0.1", p2p_port=self.port)},
        )  # fmt: skip
        yield defer.Deferred.fromCoroutine(
            _until(lambda: turing.reachability.failed_attempts("ritchie") >= 4, "4 attempts")
        )
        down = self.lines("cannot reach peer ritchie")
        self.assertEqual(len(down), 1, self.log.text())
        self.assertIn(f"127.0.0.1:{self.port}: connection refused", down[0])
        self.start(
            cfg,
            "ritchie",
            {"turing": Peer(host="127.0.0.1", p2p_port=turing.port or 0), "ritchie": Peer(
                host="127.0.0.1", p2p_port=self.port)},
        )  # fmt: skip
        yield defer.Deferred.fromCoroutine(
            _until(lambda: turing.connected_peers() == {"ritchie"}, "turing reaches ritchie")
        )
        back = self.lines("is reachable again")
        self.assertEqual(len(back), 1, self.log.text())
        self.assertIn("peer ritchie at", back[0])
        self.assertEqual(len(self.lines("cannot reach peer ritchie")), 1)
        self.assertEqual(turing.reachability.unreachable(), {})

    @defer.inlineCallbacks
    def test_tls_refusal_is_one_line(self) -> Any:
        """A peer whose certificate comes from another CA: one line saying TLS refused, however
        many attempts fail."""
        cfg = shared_cluster(("turing", "ritchie"))
        stranger = make_cluster(("turing", "ritchie"))  # same names, another CA
        turing = self.start(
            cfg,
            "turing",
            {"turing": Peer(host="127.0.0.1", p2p_port=0), "ritchie": Peer(
                host="127.0.0.1", p2p_port=self.port)},
        )  # fmt: skip
        self.start(
            stranger,
            "ritchie",
            {"turing": Peer(host="127.0.0.1", p2p_port=turing.port or 0), "ritchie": Peer(
                host="127.0.0.1", p2p_port=self.port)},
        )  # fmt: skip
        yield defer.Deferred.fromCoroutine(
            _until(
                lambda: (
                    turing.reachability.unreachable().get("ritchie") == "tls"
                    and turing.reachability.failed_attempts("ritchie") >= 3
                ),
                "3 TLS refusals",
            )
        )
        lines = self.lines("cannot reach peer ritchie")
        tls = [line for line in lines if "TLS refused" in line]
        self.assertEqual(len(tls), 1, self.log.text())
        self.assertIn("same cluster CA", tls[0])
