"""Leader election: timeouts, vote rules, pre-vote, check-quorum and leader stickiness."""

from __future__ import annotations

from twisted.trial import unittest

from graft.raft.messages import RequestVote, RequestVoteResponse
from graft.raft.ready import Role
from graft.raft.types import EntryKind
from tests.raft.helpers import Recorder, make_cluster, storage_with


class ElectionTests(unittest.SynchronousTestCase):
    def test_leader_elected_and_noop_committed(self) -> None:
        """A fresh 3-node cluster elects one leader, which commits a NOOP entry of its term."""
        c = make_cluster()
        c.run(60)
        leaders = c.leaders()
        self.assertEqual(len(leaders), 1)
        leader = leaders[0]
        self.assertEqual(leader.log.committed, 1)
        entry = leader.log.entries(1, 2)[0]
        self.assertEqual((entry.kind, entry.term), (EntryKind.NOOP, leader.term))
        for nid in c.ids:
            self.assertEqual(c.node(nid).leader, leader.id)

    def test_single_node_cluster(self) -> None:
        """A one-voter cluster elects itself and commits proposals once they are durable."""
        c = make_cluster(["solo"])
        c.run(30)
        node = c.node("solo")
        self.assertIs(node.role, Role.LEADER)
        index = c.propose("solo", [b"x"])[0]
        self.assertEqual(node.log.committed, index)
        self.assertEqual(c.nodes["solo"].applied[-1].data, b"x")

    def test_election_timeout_is_randomized(self) -> None:
        """Followers draw different timeouts from [T, 2T), so one of them usually goes first."""
        c = make_cluster(["a", "b", "c", "d", "e"], election_ticks=10)
        timeouts = {c.node(n)._randomized_timeout for n in c.ids}
        self.assertTrue(all(10 <= t < 20 for t in timeouts))
        self.assertGreater(len(timeouts), 1)

    def test_unreachable_leader_cuts_the_timer_to_the_minimum(self) -> None:
        """When a follower's connection to its leader drops (the leader's process died), it
        campaigns within the bottom quarter of the election timeout range after it last heard
        from the leader, not after a longer random draw; a report about another peer changes
        nothing."""
        c = make_cluster(election_ticks=10)
        leader = c.elect("n1")
        c.run(3)
        for nid in ("n2", "n3"):
            c.node(nid)._randomized_timeout = 19  # the longest draw
        c.node("n3").report_unreachable("n2")  # not its leader
        c.crash(leader.id)  # the cluster reports n1 unreachable to n2 and n3
        ticks = 0
        while all(c.node(n).role is Role.FOLLOWER for n in ("n2", "n3")):
            c.run(1)
            ticks += 1
        self.assertIn(ticks, (10, 11))
        c.run(40)
        self.assertEqual(len(c.leaders()), 1)

    def test_unreachable_report_about_a_live_leader_keeps_stickiness(self) -> None:
        """A follower told its leader is unreachable while the leader lives neither campaigns
        nor grants votes to others within the election timeout: the leader's lease stands."""
        c = make_cluster(election_ticks=10, check_quorum=True)
        leader = c.elect("n1")
        c.run(3)
        c.node("n2").report_unreachable(leader.id)
        c.node("n2").step(
            RequestVote(
                term=leader.term + 1,
                sender="n3",
                to="n2",
                last_log_index=leader.log.last_index(),
                last_log_term=leader.term,
            )
        )
        c.process("n2")
        self.assertEqual(c.node("n2").term, leader.term, "vote request inside the lease ignored")
        c.node("n3").report_unreachable(leader.id)
        c.run(60)
        self.assertEqual([n.id for n in c.leaders()], ["n1"])
        self.assertEqual([c.node(n).term for n in c.ids], [leader.term] * 3)

    def test_vote_refused_to_less_up_to_date_candidate(self) -> None:
        """A voter whose log has a higher last term refuses its vote (paper 5.4.1)."""
        c = make_cluster(
            storages={
                "n1": storage_with([1]),
                "n2": storage_with([1, 2]),
                "n3": storage_with([1, 2]),
            },
            pre_vote=False,
        )
        rec = Recorder(c)
        c.run(25, ["n1"])  # only n1's timer runs: it campaigns (in term 2, as theirs)
        answers = rec.of(RequestVoteResponse, to="n1")
        self.assertTrue(answers)
        self.assertFalse(any(m.granted for m in answers))
        self.assertIsNot(c.node("n1").role, Role.LEADER)

    def test_one_vote_per_term(self) -> None:
        """A node grants at most one vote per term, and remembers it across a restart."""
        c = make_cluster(pre_vote=False, storages={"n3": storage_with([1], term=4)})
        rec = Recorder(c)
        # Same-term requests are considered even in the quiet period after a (re)start.
        c.node("n3").step(
            RequestVote(term=4, sender="n1", to="n3", last_log_index=1, last_log_term=1)
        )
        c.process("n3")
        c.crash("n3")
        c.start("n3")
        c.node("n3").step(
            RequestVote(term=4, sender="n2", to="n3", last_log_index=1, last_log_term=1)
        )
        c.process("n3")
        answers = [(m.to, m.granted) for m in rec.of(RequestVoteResponse, sender="n3")]
        self.assertEqual(answers, [("n1", True), ("n2", False)])
        self.assertEqual(c.nodes["n3"].storage.hard_state().vote, "n1")


class PreVoteTests(unittest.SynchronousTestCase):
    def _isolated_follower_rejoins(self, pre_vote: bool) -> tuple[int, int, int]:
        c = make_cluster(pre_vote=pre_vote)
        leader = c.elect("n1")
        term = leader.term
        c.isolate("n3")
        c.run(200)
        isolated_term = c.node("n3").term
        c.heal()
        c.run(100)
        final = c.leader()
        assert final is not None
        return term, isolated_term, final.term

    def test_pre_vote_prevents_term_inflation(self) -> None:
        """An isolated node keeps its term under pre-vote; on rejoining the leader stays."""
        term, isolated_term, final_term = self._isolated_follower_rejoins(pre_vote=True)
        self.assertEqual(isolated_term, term)
        self.assertEqual(final_term, term)

    def test_without_pre_vote_terms_inflate(self) -> None:
        """Control: without pre-vote the isolated node's term runs away and disrupts the leader."""
        term, isolated_term, final_term = self._isolated_follower_rejoins(pre_vote=False)
        self.assertGreater(isolated_term, term + 3)
        self.assertGreater(final_term, term)


class CheckQuorumTests(unittest.SynchronousTestCase):
    def test_leader_cut_off_steps_down(self) -> None:
        """A leader that hears from no quorum steps down within about one election timeout."""
        c = make_cluster(election_ticks=10)
        leader = c.elect("n1")
        c.isolate("n1")
        stepped_down_after = None
        for tick in range(1, 40):
            c.run(1)
            if leader.role is not Role.LEADER:
                stepped_down_after = tick
                break
        self.assertIsNotNone(stepped_down_after)
        assert stepped_down_after is not None
        self.assertLessEqual(stepped_down_after, 20)
        self.assertIsNone(leader.leader)

    def test_without_check_quorum_leader_stays(self) -> None:
        """Control: with check_quorum off, the cut-off leader believes it leads indefinitely."""
        c = make_cluster(check_quorum=False)
        leader = c.elect("n1")
        c.isolate("n1")
        c.run(60, ["n1"])
        self.assertIs(leader.role, Role.LEADER)

    def test_stickiness_ignores_disruptive_vote(self) -> None:
        """A follower that hears from a live leader ignores a higher-term RequestVote."""
        c = make_cluster()
        c.elect("n1")
        c.run(3)
        follower = c.node("n2")
        term = follower.term
        follower.step(
            RequestVote(term=term + 5, sender="n3", to="n2", last_log_index=99, last_log_term=99)
        )
        self.assertEqual(follower.term, term)
        self.assertEqual(follower.leader, "n1")

    def test_transfer_vote_bypasses_stickiness(self) -> None:
        """A RequestVote marked transfer (from TimeoutNow) is considered despite stickiness."""
        c = make_cluster()
        c.elect("n1")
        c.run(3)
        follower = c.node("n2")
        term = follower.term
        follower.step(
            RequestVote(
                term=term + 1,
                sender="n3",
                to="n2",
                last_log_index=99,
                last_log_term=99,
                transfer=True,
            )
        )
        self.assertEqual(follower.term, term + 1)
        self.assertEqual(follower._vote, "n3")
