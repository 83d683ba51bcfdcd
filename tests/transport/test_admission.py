"""A joining node's transport over real sockets: it admits a member it has no address for,
answers it on the connection the member opened, and stops admitting once it knows the
membership."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from graft.raft.messages import HeartbeatResponse
from tests.transport.support import Inbox, LogCapture, Peer, make_transport, shared_cluster
from tests.transport.test_loopback import _until


class AdmissionTests(TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def test_joining_node_admits_and_answers_an_unlisted_member(self) -> Any:
        """Newbie's address book holds only itself. Without admission the member's hello is
        refused; with it, the member connects, newbie's messages and calls reach it over that
        connection, and turning admission off drops it and refuses it again."""
        cfg = shared_cluster(("turing", "newbie"))
        logs = LogCapture().install(self)
        newbie_inbox, turing_inbox = Inbox(), Inbox()
        newbie = make_transport(
            cfg,
            "newbie",
            reactor,
            newbie_inbox,
            peers={"newbie": Peer(host="127.0.0.1", p2p_port=0)},
        )
        newbie.startService()
        self.addCleanup(lambda: newbie.stopService() if newbie.running else None)
        peers = {
            "turing": Peer(host="127.0.0.1", p2p_port=0),
            "newbie": Peer(host="127.0.0.1", p2p_port=newbie.port or 0),
        }
        turing = make_transport(cfg, "turing", reactor, turing_inbox, peers=peers)
        turing.startService()
        self.addCleanup(lambda: turing.stopService() if turing.running else None)
        refused = "refused hello from node 'turing': not a member of the cluster"

        yield defer.Deferred.fromCoroutine(_until(lambda: refused in logs.text(), "a refusal"))
        self.assertEqual(newbie.connected_peers(), set())

        newbie.admit_unlisted(True)
        yield defer.Deferred.fromCoroutine(
            _until(lambda: newbie.connected_peers() == {"turing"}, "turing admitted")
        )
        reply = HeartbeatResponse(term=1, sender="newbie", to="turing", seq=3)
        newbie.send_all([reply])
        yield defer.Deferred.fromCoroutine(_until(lambda: bool(turing_inbox.messages), "reply"))
        self.assertEqual(turing_inbox.messages, [reply])
        answer = yield newbie.call(
            "turing", "forward_query", {"query": b"q", "consistency": "weak", "min_index": None}
        )
        self.assertEqual(answer, {"output": b"ok", "applied_index": 7})

        before = logs.text().count(refused)
        newbie.admit_unlisted(False)
        self.assertEqual(newbie.connected_peers(), set())
        yield defer.Deferred.fromCoroutine(
            _until(lambda: logs.text().count(refused) > before, "a refusal after admission ends")
        )
        self.assertEqual(newbie.connected_peers(), set())

        # A member of the learned membership whose address is unknown is admitted by name.
        newbie.admit_unlisted(False, ["turing"])
        yield defer.Deferred.fromCoroutine(
            _until(lambda: newbie.connected_peers() == {"turing"}, "turing admitted by name")
        )
        yield defer.gatherResults([turing.stopService(), newbie.stopService()])
