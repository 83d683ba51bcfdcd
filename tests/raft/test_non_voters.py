"""Permanent non-voters: learners that stay learners until an operator promotes them."""

from __future__ import annotations

from twisted.trial import unittest

from graft.raft.errors import MembershipChangeRefused
from graft.raft.messages import RequestVote
from graft.raft.ready import Role
from graft.raft.types import Membership
from graft.testing.simulation.cluster import Cluster
from tests.raft.helpers import Recorder, make_cluster


def members(voters: str, non_voters: str = "") -> Membership:
    nv = frozenset(non_voters.split())
    return Membership(voters=frozenset(voters.split()), learners=nv, non_voters=nv)


def with_non_voter() -> Cluster:
    """n1 leads n1 n2 n3; n4 was added as a non-voter and caught up."""
    c = make_cluster()
    leader = c.elect("n1")
    c.propose("n1", [b"before"])
    c.stabilize()
    c.add_node("n4")
    leader.propose_membership(members("n1 n2 n3", "n4"))
    c.stabilize()
    return c


class NonVoterTests(unittest.SynchronousTestCase):
    def test_non_voter_receives_the_log(self) -> None:
        """A non-voter is a learner to the core: it takes the log and applies it."""
        c = with_non_voter()
        n4 = c.node("n4")
        self.assertIs(n4.role, Role.LEARNER)
        self.assertEqual(n4.membership, members("n1 n2 n3", "n4"))
        c.propose("n1", [b"after"])
        c.stabilize()
        self.assertEqual(c.nodes["n4"].applied[-1].data, b"after")

    def test_non_voter_never_campaigns(self) -> None:
        """Cut off from everyone for many election timeouts, a non-voter sends no vote
        request and keeps its term."""
        c = with_non_voter()
        n4 = c.node("n4")
        term = n4.term
        rec = Recorder(c)
        c.isolate("n4")
        c.run(200, ["n4"])
        self.assertEqual(rec.of(RequestVote, sender="n4"), [])
        self.assertIs(n4.role, Role.LEARNER)
        self.assertEqual(n4.term, term)

    def test_non_voter_not_counted_for_commit(self) -> None:
        """With two of three voters down, the leader and the non-voter hold an entry: it is
        not committed, and a read round the non-voter answers confirms nothing."""
        c = with_non_voter()
        leader = c.node("n1")
        c.crash("n2")
        c.crash("n3")
        [index] = c.propose("n1", [b"not yet"])
        c.read("n1", b"r1")
        c.run(5, ["n1", "n4"])
        self.assertGreaterEqual(c.node("n4").log.last_index(), index)
        self.assertLess(leader.log.committed, index)
        self.assertNotIn(b"r1", c.nodes["n1"].read_answers)

    def test_non_voter_vote_not_counted(self) -> None:
        """The one voter left and the non-voter cannot elect anyone: the non-voter never
        campaigns, and the voter's elections ask and count only voters."""
        c = with_non_voter()
        c.crash("n2")
        c.crash("n3")
        c.run(300, ["n1", "n4"])
        self.assertEqual(c.leaders(), [])
        self.assertIs(c.node("n4").role, Role.LEARNER)

    def test_promote_then_demote(self) -> None:
        """Promotion makes the non-voter a voter (quorum 3 of 4); demotion makes it a
        non-voter again (quorum 2 of 3), each through the log."""
        c = with_non_voter()
        leader = c.node("n1")
        leader.propose_membership(Membership(voters=frozenset({"n1", "n2", "n3", "n4"})))
        c.stabilize()
        self.assertIs(c.node("n4").role, Role.FOLLOWER)
        self.assertEqual(leader.membership.quorum(), 3)
        leader.propose_membership(members("n1 n2 n3", "n4"))
        c.stabilize()
        self.assertIs(c.node("n4").role, Role.LEARNER)
        self.assertEqual(c.node("n4").membership, members("n1 n2 n3", "n4"))
        self.assertEqual(leader.membership.quorum(), 2)

    def test_demoted_leader_steps_down(self) -> None:
        """A leader that demotes itself leads until the change commits, then steps down to a
        non-voter; the voters elect a leader and the old one keeps receiving the log."""
        c = make_cluster()
        leader = c.elect("n1")
        leader.propose_membership(members("n2 n3", "n1"))
        self.assertIs(leader.role, Role.LEADER)
        c.stabilize()
        self.assertIs(leader.role, Role.LEARNER)
        c.run(60)
        new = c.leader()
        assert new is not None
        self.assertIn(new.id, {"n2", "n3"})
        c.propose(new.id, [b"later"])
        c.stabilize()
        self.assertEqual(c.nodes["n1"].applied[-1].data, b"later")
        c.run(200)
        self.assertIs(leader.role, Role.LEARNER)

    def test_non_voters_must_be_learners(self) -> None:
        c = make_cluster()
        leader = c.elect("n1")
        bad = Membership(voters=frozenset({"n1", "n2", "n3"}), non_voters=frozenset({"n4"}))
        with self.assertRaises(MembershipChangeRefused):
            leader.propose_membership(bad)
