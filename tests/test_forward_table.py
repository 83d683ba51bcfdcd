"""Forwarding administration to the leader through the peer request table
(graft.driver.forwarding): the answers keep their wire shape, and each operation's arguments
are checked against its schema."""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from graft.driver.port import MemberList
from graft.driver.settings import DriverSettings
from graft.driver.wiring import build_node
from graft.errors import BadRequest, Timeout
from graft.fsm.kv import KeyValueStateMachine
from graft.raft.config import RaftConfig
from graft.raft.node import RaftNode
from graft.raft.types import MemberAddress, Membership
from graft.transport.errors import PeerUnavailable
from tests.support.driver import NODES, TICK, Channel, DriverCluster, MemoryDurable, Network

ADDRESSES = {
    n: MemberAddress(host="127.0.0.1", p2p_port=9000 + i, api_port=8000 + i)
    for i, n in enumerate(NODES)
}


class ForwardedAdminTests(DriverCluster):
    def setUp(self) -> None:
        self.clock = Clock()
        self.network = Network(self.clock)
        for i, node_id in enumerate(NODES):
            storage = MemoryDurable()
            raft = RaftNode(
                RaftConfig(id=node_id, bootstrap=Membership(voters=frozenset(NODES))),
                storage,
                random.Random(i),
            )
            node = build_node(
                raft=raft,
                storage=storage,
                fsm=KeyValueStateMachine(),
                clock=self.clock,
                settings=DriverSettings(
                    tick_seconds=TICK,
                    command_timeout=2.0,
                    query_timeout=2.0,
                    static_addresses=ADDRESSES,
                ),
            )
            node.attach_peers(Channel(self.network, node_id))
            self.network.nodes[node_id] = node
            node.startService()
        self.addCleanup(self._stop)

    def test_removal_from_a_follower_answers_the_new_membership(self) -> None:
        """A follower's remove_member runs on the leader and answers the typed membership,
        decoded from the leader's wire answer."""
        leader = self.leader()
        follower, removed = (n for n in NODES if n != leader)
        answer = self.result(self.network.nodes[follower].remove_member(removed))
        self.assertIsInstance(answer, MemberList)
        self.assertEqual(answer.voters, tuple(sorted({leader, follower})))
        self.assertEqual(answer.leader, leader)
        self.assertEqual(dict(answer.addresses), {n: ADDRESSES[n] for n in (leader, follower)})

    def lose_answers(self, of: str, *, run_remote: bool = True) -> None:
        """``of``'s forwarded calls get no answer, as when the connection drops: the remote
        side runs the request (unless not ``run_remote``) and its answer is lost."""
        forward = Channel.call

        def call(
            channel: Channel, peer: str, command: str, args: dict[str, Any], **kw: Any
        ) -> Deferred[dict[str, Any]]:
            if channel.me != of:
                return forward(channel, peer, command, args, **kw)
            if run_remote:
                forward(channel, peer, command, args, **kw).addErrback(lambda _: None)
            return fail(PeerUnavailable(peer, "connection lost"))

        self.patch(Channel, "call", call)

    def test_a_removal_whose_answer_is_lost_answers_once_committed(self) -> None:
        """The leader removes a member but its answer to the follower that forwarded the
        request is lost: the follower sees the removal commit and answers the new membership,
        not a 504."""
        leader = self.leader()
        follower, removed = (n for n in NODES if n != leader)
        self.lose_answers(follower)
        answer = self.result(self.network.nodes[follower].remove_member(removed))
        self.assertIsInstance(answer, MemberList)
        self.assertEqual(answer.voters, tuple(sorted({leader, follower})))

    def test_removing_the_leader_through_a_follower_survives_a_lost_answer(self) -> None:
        """The leader being removed hands over and forwards the removal; with the answers to
        the follower lost, the follower still answers the membership without the old leader."""
        leader = self.leader()
        follower = next(n for n in NODES if n != leader)
        self.lose_answers(follower)
        answer = self.result(self.network.nodes[follower].remove_member(leader), seconds=6)
        self.assertIsInstance(answer, MemberList)
        self.assertNotIn(leader, answer.voters)
        self.assertEqual(len(answer.voters), 2)

    def test_a_lost_removal_that_did_not_happen_stays_a_timeout(self) -> None:
        """When the request never reached the leader, the follower waits out the command
        timeout and answers the Timeout: nothing was removed, and it does not say otherwise."""
        leader = self.leader()
        follower, removed = (n for n in NODES if n != leader)
        self.lose_answers(follower, run_remote=False)
        outcome = self.result(self.network.nodes[follower].remove_member(removed), seconds=5)
        self.assertIsInstance(outcome, Failure)
        self.assertIsInstance(outcome.value, Timeout)
        self.assertIn(removed, self.network.nodes[follower].members().voters)

    def test_leader_answers_forward_admin_in_the_wire_shape(self) -> None:
        """forward_admin's result is the document nodes of every version exchange."""
        leader = self.leader()
        follower, removed = (n for n in NODES if n != leader)
        d = self.network.nodes[leader].handle_request(
            follower, "forward_admin", {"op": "remove_member", "args": {"id": removed}}
        )
        answer: Any = self.result(d)
        kept = sorted({leader, follower})
        self.assertEqual(
            answer,
            {
                "result": {
                    "leader": leader,
                    "voters": kept,
                    "learners": [],
                    "non_voters": [],
                    "addresses": {
                        n: {
                            "host": "127.0.0.1",
                            "p2p": ADDRESSES[n].p2p_port,
                            "api": ADDRESSES[n].api_port,
                        }
                        for n in kept
                    },
                }
            },
        )

    def test_unknown_operation_and_bad_arguments_are_refused(self) -> None:
        """An operation no handler knows, or arguments its schema refuses, are 400s; the
        membership does not change."""
        leader = self.network.nodes[self.leader()]
        for args in (
            {"op": "reboot", "args": {}},
            {"op": "remove_member", "args": {"id": 7}},
            {"op": "remove_member", "args": {"id": "b", "force": True}},
        ):
            outcome = self.result(leader.handle_request("a", "forward_admin", args))
            self.assertIsInstance(outcome, Failure, args)
            self.assertIsInstance(outcome.value, BadRequest, args)
        self.assertEqual(leader.members().voters, tuple(sorted(NODES)))

    def test_unknown_peer_request_is_refused(self) -> None:
        node = self.network.nodes["a"]
        outcome = self.result(node.handle_request("b", "reboot", {}))
        self.assertIsInstance(outcome, Failure)
        self.assertIsInstance(outcome.value, BadRequest)
        self.assertIn("unknown peer request", outcome.value.message)


def _on_the_wire(a: MemberAddress) -> dict[str, Any]:
    return {"host": a.host, "p2p": a.p2p_port, "api": a.api_port}
