"""Two PeerTransports over real sockets on 127.0.0.1: connect, exchange, call, shut down."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from graft.raft.messages import AppendEntries, HeartbeatResponse
from graft.raft.types import Entry
from graft.transport.protocol import UNACKNOWLEDGED_TIMEOUT_MS
from tests.transport.support import Inbox, Peer, make_transport, shared_cluster


async def _until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Let the reactor run until ``condition`` holds (real I/O cannot be driven by a Clock)."""
    waited = 0.0
    while not condition():
        if waited >= timeout:
            raise AssertionError(f"timed out waiting for {what}")
        await task.deferLater(reactor, 0.01, lambda: None)
        waited += 0.01


class LoopbackTests(TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def test_two_transports_exchange_messages_and_calls(self) -> Any:
        """Over real TLS sockets each side connects to the other, a message arrives, a call is
        answered, and stopService leaves nothing behind."""
        cfg = shared_cluster(("turing", "ritchie"))
        turing_inbox, ritchie_inbox = Inbox(), Inbox()
        ritchie_inbox.handler = lambda peer, command, args: {
            "results": [{"index": i} for i, _ in enumerate(args["commands"], start=1)]
        }
        turing = make_transport(
            cfg,
            "turing",
            reactor,
            turing_inbox,
            peers={"turing": Peer(host="127.0.0.1", p2p_port=0)},
        )
        turing.startService()
        self.addCleanup(lambda: turing.stopService() if turing.running else None)
        peers = {
            "turing": Peer(host="127.0.0.1", p2p_port=turing.port or 0),
            "ritchie": Peer(host="127.0.0.1", p2p_port=0),
        }
        ritchie = make_transport(cfg, "ritchie", reactor, ritchie_inbox, peers=peers)
        ritchie.startService()
        self.addCleanup(lambda: ritchie.stopService() if ritchie.running else None)
        turing.update_peers(
            {**peers, "ritchie": Peer(host="127.0.0.1", p2p_port=ritchie.port or 0)}
        )

        yield defer.Deferred.fromCoroutine(
            _until(
                lambda: (
                    turing.connected_peers() == {"ritchie"}
                    and ritchie.connected_peers() == {"turing"}
                ),
                "both outbound connections",
            )
        )
        entries = tuple(Entry(index=i, term=1, data=bytes(100)) for i in range(1, 101))
        message = AppendEntries(
            term=1,
            sender="turing",
            to="ritchie",
            prev_index=0,
            prev_term=0,
            entries=entries,
            commit=0,
        )
        turing.send_all([message])
        reply = HeartbeatResponse(term=1, sender="ritchie", to="turing", seq=9)
        ritchie.send_all([reply])
        answer = yield turing.call("ritchie", "forward_submit", {"commands": [b"a", b"b"]})
        self.assertEqual(answer, {"results": [{"index": 1}, {"index": 2}]})
        yield defer.Deferred.fromCoroutine(
            _until(lambda: bool(ritchie_inbox.messages and turing_inbox.messages), "both messages")
        )
        self.assertEqual(ritchie_inbox.messages, [message])
        self.assertEqual(turing_inbox.messages, [reply])
        # Peer sockets bound how long sent data may go unacknowledged (fast redial after a
        # partition heals).
        outbound = turing._outbound["ritchie"]
        sock = outbound.transport.transport.getHandle()  # type: ignore[union-attr]
        self.assertEqual(
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
            UNACKNOWLEDGED_TIMEOUT_MS,
        )

        yield defer.gatherResults([turing.stopService(), ritchie.stopService()])
        self.assertEqual(turing.connected_peers(), set())
        self.assertEqual(ritchie.connected_peers(), set())
