"""Non-voters, promotion, demotion and address updates (graft.driver.member_roles) through
GraftNode's public methods on the in-memory cluster."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from twisted.python.failure import Failure

from graft.driver.port import Consistency, MemberList
from graft.errors import BadRequest, GraftError, NotFound
from graft.raft.types import MemberAddress, Membership
from graft.testing.kv import get, put
from tests.support.driver import NODES, DriverCluster

NEW = "d"
ADDRESSES = {
    n: MemberAddress(host="127.0.0.1", p2p_port=9000 + i, api_port=8000 + i)
    for i, n in enumerate((*NODES, NEW))
}


class MemberRolesTests(DriverCluster):
    def start(self, **options: Any) -> None:
        self.start_nodes(catch_up_timeout=2.0, static_addresses=ADDRESSES, **options)
        self.leader_id = self.leader()
        self.node = self.network.nodes[self.leader_id]
        self.follower = self.network.nodes[next(n for n in NODES if n != self.leader_id)]

    def members(self, d: Any) -> MemberList:
        result = self.result(d, 5.0)
        if isinstance(result, Failure):
            result.raiseException()
        self.assertIsInstance(result, MemberList)
        members: MemberList = result
        return members

    def error(self, d: Any) -> GraftError:
        result = self.result(d, 5.0)
        self.assertIsInstance(result, Failure)
        self.assertIsInstance(result.value, GraftError)
        error: GraftError = result.value
        return error

    def add_non_voter(self) -> Any:
        """Start d in joining mode and add it as a non-voter, asked of a follower."""
        joining = self.add_node(NEW, Membership(), seed=7, static_addresses=ADDRESSES)
        a = ADDRESSES[NEW]
        members = self.members(self.follower.add_non_voter(NEW, a.host, a.p2p_port, a.api_port))
        self.assertEqual(members.non_voters, (NEW,))
        self.assertIn(NEW, members.learners)
        self.assertNotIn(NEW, members.voters)
        return joining

    def test_non_voter_serves_strong_reads_and_stays_a_non_voter(self) -> None:
        """A non-voter catches up, serves a strong read with the latest write, is listed by
        status() on every node, and is never promoted on its own."""
        self.start()
        joining = self.add_non_voter()
        index = self.result(self.node.submit([put("k", "v1")]))[0].index
        read = self.result(joining.query(get("k"), Consistency.STRONG))
        self.assertEqual(json.loads(read.output), {"value": "v1"})
        self.assertGreaterEqual(read.applied_index, index)
        self.advance(5.0)  # past the catch-up timeout: a joining learner would be promoted
        for node in self.network.nodes.values():
            st = node.status()
            self.assertEqual((st.voters, st.non_voters), (tuple(NODES), (NEW,)), node.node_id)
        self.assertEqual(joining.status().role, "learner")

    def test_quorum_survives_the_non_voter(self) -> None:
        """With the non-voter cut off, writes still commit; with one voter and the non-voter
        cut off, a write does not (the non-voter does not make a quorum)."""
        self.start()
        self.add_non_voter()
        self.network.isolate(NEW)
        self.assertIsInstance(self.result(self.node.submit([put("k", "v2")])), list)
        self.network.heal()
        other = next(n for n in NODES if n != self.leader_id and n != self.follower.node_id)
        self.network.isolate(other)
        self.network.isolate(self.follower.node_id)
        result = self.result(self.node.submit([put("k", "v3")]), 4.0)
        self.assertIsInstance(result, Failure)

    def test_promote_then_demote(self) -> None:
        """promote makes the non-voter a voter once caught up; demote makes it a non-voter
        again; both forwarded from a follower."""
        self.start()
        joining = self.add_non_voter()
        members = self.members(self.follower.promote_member(NEW))
        self.assertIn(NEW, members.voters)
        self.assertEqual((members.learners, members.non_voters), ((), ()))
        self.wait_until(lambda: NEW in joining.status().voters, "d knows it votes")
        members = self.members(self.follower.demote_member(NEW))
        self.assertEqual(members.non_voters, (NEW,))
        self.assertEqual(set(members.voters), set(NODES))

    def test_demoting_the_leader_hands_over_first(self) -> None:
        """The leader demoted hands leadership over, then the new leader demotes it; it
        stays a non-voter and keeps applying."""
        self.start()
        old = self.leader_id
        members = self.members(self.node.demote_member(old))
        self.assertEqual(members.non_voters, (old,))
        self.assertNotIn(old, members.voters)
        self.assertNotEqual(members.leader, old)
        assert members.leader is not None
        index = self.result(self.network.nodes[members.leader].submit([put("k", "after")]))
        self.wait_applied(old, index[0].index)
        self.assertEqual(self.node.status().role, "learner")

    def test_promotion_waits_for_the_non_voter_to_catch_up(self) -> None:
        """A non-voter cut off from the leader is not promoted: the promotion times out
        saying how far it got, and it stays a non-voter."""
        self.start()
        self.add_non_voter()
        self.network.isolate(NEW)
        self.result(self.node.submit([put("k", "behind")]))
        error = self.error(self.node.promote_member(NEW))
        self.assertIn("did not catch up", str(error))
        self.assertEqual(self.node.members().non_voters, (NEW,))

    def test_a_joining_learner_made_a_non_voter_is_not_promoted(self) -> None:
        """A learner added as a voter-to-be that could not be reached (the leader promotes it
        in the background once it catches up) and is then marked a non-voter stays one when
        it starts and catches up."""
        self.start()
        a = ADDRESSES[NEW]
        error = self.error(self.node.add_member(NEW, a.host, a.p2p_port, a.api_port))
        self.assertIn("cannot reach", str(error))
        members = self.members(self.node.add_non_voter(NEW, a.host, a.p2p_port, a.api_port))
        self.assertEqual(members.non_voters, (NEW,))
        joining = self.add_node(NEW, Membership(), seed=7, static_addresses=ADDRESSES)
        self.wait_until(lambda: joining.status().applied >= self.node.status().commit, "d")
        self.advance(2.0)
        self.assertEqual(self.node.members().non_voters, (NEW,))
        self.assertNotIn(NEW, self.node.members().voters)

    def test_refusals(self) -> None:
        """Each operation says what to do instead, and changes nothing."""
        self.start()
        self.add_non_voter()
        before = self.node.members()
        voter = self.follower.node_id
        a = ADDRESSES[NEW]
        cases = [
            (self.node.add_member(NEW, a.host, a.p2p_port, a.api_port), BadRequest, "promote"),
            (self.node.add_non_voter(voter, a.host, 9999, 8999), BadRequest, "demote"),
            (self.node.add_non_voter(NEW, a.host, a.p2p_port, a.api_port), BadRequest, "already"),
            (self.node.promote_member(voter), BadRequest, "already a voter"),
            (self.node.promote_member("zz"), NotFound, "not a member"),
            (self.node.demote_member(NEW), BadRequest, "already a non-voter"),
            (self.node.demote_member("zz"), NotFound, "not a member"),
            (self.node.add_non_voter("e", a.host, a.p2p_port, 8999), BadRequest, "peer address"),
        ]
        for d, kind, fragment in cases:
            error = self.error(d)
            self.assertIsInstance(error, kind)
            self.assertIn(fragment, str(error))
        self.assertEqual(self.node.members(), before)


class UpdateMemberTests(DriverCluster):
    def setUp(self) -> None:
        self.start_nodes(static_addresses=ADDRESSES)
        self.leader_id = self.leader()
        self.node = self.network.nodes[self.leader_id]
        self.dialed: dict[str, list[Mapping[str, MemberAddress]]] = {n: [] for n in NODES}
        for node_id in NODES:
            channel = self.network.nodes[node_id].peers
            assert channel is not None
            channel.update_peers = self.dialed[node_id].append  # type: ignore[method-assign,assignment]

    def test_update_moves_the_member_everywhere(self) -> None:
        """update_member (asked of a follower) writes the new address into the replicated
        membership: every node's member list, its peer book (the transport re-dials) and its
        API URL for the member follow; a port left out is kept."""
        moved = next(n for n in NODES if n != self.leader_id)
        asker = self.network.nodes[next(n for n in NODES if n not in (self.leader_id, moved))]
        old = ADDRESSES[moved]
        new = MemberAddress(host="node2.example", p2p_port=9555, api_port=old.api_port)
        result = self.result(asker.update_member(moved, new.host, new.p2p_port, None), 5.0)
        self.assertIsInstance(result, MemberList, repr(result))
        self.assertEqual(result.addresses[moved], new)
        for node_id in NODES:
            node = self.network.nodes[node_id]
            self.wait_until(
                lambda node=node: node.members().addresses.get(moved) == new,  # type: ignore[misc]
                f"{node_id} knows the new address",
            )
            self.assertEqual(node.api_url(moved), f"http://node2.example:{old.api_port}")
            if node_id != moved:
                self.assertEqual(self.dialed[node_id][-1][moved], new, node_id)

    def test_update_refusals(self) -> None:
        """An unknown member, another member's peer address, or the same address are
        refused; nothing changes."""
        other = next(n for n in NODES if n != self.leader_id)
        taken = ADDRESSES[self.leader_id]
        before = self.node.members()
        same = ADDRESSES[other]
        for d, kind, fragment in [
            (self.node.update_member("zz", "h", 1, 2), NotFound, "not a member"),
            (self.node.update_member(other, taken.host, taken.p2p_port, None), BadRequest, "peer"),
            (self.node.update_member(other, same.host, None, None), BadRequest, "nothing to do"),
            (self.node.update_member(other, "h", same.api_port, None), BadRequest, "two ports"),
        ]:
            result = self.result(d, 5.0)
            self.assertIsInstance(result, Failure)
            self.assertIsInstance(result.value, kind)
            self.assertIn(fragment, str(result.value))
        self.assertEqual(self.node.members(), before)
