"""Leadership transfer (TimeoutNow) and single-server membership changes with learners."""

from __future__ import annotations

from twisted.trial import unittest

from graft.raft.errors import MembershipChangeRefused, NotLeader, ProposalDropped
from graft.raft.messages import TimeoutNow
from graft.raft.ready import Role
from graft.raft.types import Membership
from tests.raft.helpers import Recorder, make_cluster


def members(voters: str, learners: str = "") -> Membership:
    return Membership(voters=frozenset(voters.split()), learners=frozenset(learners.split()))


class TransferTests(unittest.SynchronousTestCase):
    def test_transfer_to_caught_up_follower(self) -> None:
        """The target receives TimeoutNow, wins at once, and the old leader follows it."""
        c = make_cluster()
        old = c.elect("n1")
        c.run(2)
        old.transfer_leadership("n2")
        with self.assertRaises(ProposalDropped):
            old.propose(b"during transfer")
        c.stabilize()
        self.assertIs(c.node("n2").role, Role.LEADER)
        self.assertEqual(old.leader, "n2")
        self.assertEqual(c.node("n2").term, old.term)

    def test_transfer_catches_the_target_up_first(self) -> None:
        """A lagging target first receives the missing entries, then TimeoutNow."""
        c = make_cluster()
        old = c.elect("n1")
        c.isolate("n3")
        c.propose("n1", [b"a", b"b", b"c"])
        c.stabilize()
        c.heal()
        rec = Recorder(c)
        old.transfer_leadership("n3")
        c.stabilize()
        timeout_now = rec.of(TimeoutNow, to="n3")
        self.assertEqual(len(timeout_now), 1)
        self.assertIs(c.node("n3").role, Role.LEADER)
        self.assertEqual(c.node("n3").log.last_index(), 5)  # noop, 3 entries, its own noop

    def test_transfer_aborts_after_an_election_timeout(self) -> None:
        """If the target never takes over, the leader accepts proposals again."""
        c = make_cluster(election_ticks=10)
        old = c.elect("n1")
        c.crash("n3")
        old.transfer_leadership("n3")
        c.run(5, ["n1", "n2"])
        with self.assertRaises(ProposalDropped):
            old.propose(b"x")
        c.run(6, ["n1", "n2"])
        self.assertIs(old.role, Role.LEADER)
        old.propose(b"x")

    def test_no_lease_after_a_timed_out_transfer(self) -> None:
        """A leader whose transfer timed out after it sent TimeoutNow serves no lease reads
        for the rest of its term: the late TimeoutNow still makes the target win, bypassing
        the stickiness the lease relies on (simulation seeds 807 and 1857)."""
        c = make_cluster(election_ticks=10)
        old = c.elect("n1")
        c.run(3)
        self.assertIsNotNone(old.lease_read_index())
        c.delays = lambda msg: [25] if isinstance(msg, TimeoutNow) else [0]
        term = old.term
        old.transfer_leadership("n2")
        c.process("n1")
        c.run(12)
        self.assertIs(old.role, Role.LEADER)
        old.propose(b"after the timeout")  # the transfer is over
        c.run(3)
        self.assertIsNone(old.lease_read_index())
        c.run(15)
        self.assertIs(c.node("n2").role, Role.LEADER)
        self.assertGreater(c.node("n2").term, term)
        self.assertEqual(old.leader, "n2")

    def test_transfer_on_follower_raises_not_leader(self) -> None:
        """Only the leader transfers leadership; a follower names the leader."""
        c = make_cluster()
        c.elect("n1")
        with self.assertRaises(NotLeader) as caught:
            c.node("n2").transfer_leadership("n3")
        self.assertEqual(caught.exception.leader, "n1")


class MembershipTests(unittest.SynchronousTestCase):
    def test_add_learner_then_promote(self) -> None:
        """A new node joins as a learner (receives the log, does not vote), then is promoted
        to voter; each change takes effect on every node when appended."""
        c = make_cluster()
        leader = c.elect("n1")
        c.propose("n1", [b"before"])
        c.stabilize()
        c.add_node("n4")
        leader.propose_membership(members("n1 n2 n3", "n4"))
        c.process("n1")
        self.assertEqual(leader.membership, members("n1 n2 n3", "n4"))  # on append
        c.stabilize()
        learner = c.node("n4")
        self.assertIs(learner.role, Role.LEARNER)
        self.assertEqual(learner.log.committed, leader.log.committed)
        leader.propose_membership(members("n1 n2 n3 n4"))
        c.stabilize()
        self.assertIs(learner.role, Role.FOLLOWER)
        self.assertEqual(leader.membership.quorum(), 3)
        c.propose("n1", [b"after"])
        c.stabilize()
        self.assertEqual(c.nodes["n4"].applied[-1].data, b"after")

    def test_one_change_at_a_time_one_voter_at_a_time(self) -> None:
        """A second change waits for the first to commit; two voters cannot change at once."""
        c = make_cluster()
        leader = c.elect("n1")
        with self.assertRaises(MembershipChangeRefused):
            leader.propose_membership(members("n1 n2 n3 n4 n5"))
        c.isolate("n1")
        leader.propose_membership(members("n1 n2 n3", "n4"))
        with self.assertRaises(MembershipChangeRefused):
            leader.propose_membership(members("n1 n2 n3"))

    def test_remove_leader_steps_down_after_commit(self) -> None:
        """A leader that removes itself keeps leading until the change commits, then steps
        down and the rest elect a new leader."""
        c = make_cluster()
        leader = c.elect("n1")
        leader.propose_membership(members("n2 n3"))
        c.stabilize()
        self.assertIsNot(leader.role, Role.LEADER)
        c.run(60, ["n2", "n3"])
        new = c.leader()
        self.assertIsNotNone(new)
        assert new is not None
        self.assertIn(new.id, {"n2", "n3"})
        self.assertEqual(new.membership, members("n2 n3"))

    def test_uncommitted_change_rolled_back_on_truncation(self) -> None:
        """A follower whose uncommitted membership entry is overwritten returns to the
        previous membership."""
        c = make_cluster()
        old = c.elect("n1")
        c.isolate("n1")
        c.crash("n3")
        old.propose_membership(members("n1 n2 n3", "n9"))
        c.stabilize()
        self.assertEqual(old.membership, members("n1 n2 n3", "n9"))
        c.start("n3")
        c.heal()
        c.isolate("n1")
        c.elect("n2")
        c.heal()
        c.run(30)
        self.assertEqual(old.membership, members("n1 n2 n3"))
        self.assertEqual(old.leader, "n2")

    def test_membership_committed_follows_the_entry_not_the_append(self) -> None:
        """A membership is in force from its append but committed only once a majority holds
        it: what a member that lost an answer waits for before it reports a removal."""
        c = make_cluster()
        leader = c.elect("n1")
        c.stabilize()
        self.assertTrue(leader.membership_committed)
        leader.propose_membership(members("n1 n2"))
        self.assertEqual(leader.membership, members("n1 n2"))
        self.assertFalse(leader.membership_committed)
        c.stabilize()
        self.assertTrue(leader.membership_committed)
        self.assertTrue(c.node("n2").membership_committed)
        c.isolate("n1")  # a change that cannot commit stays uncommitted
        leader.propose_membership(members("n1 n2", "n9"))
        c.stabilize()
        self.assertEqual(leader.membership, members("n1 n2", "n9"))
        self.assertFalse(leader.membership_committed)
