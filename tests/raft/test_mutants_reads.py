"""ReadIndex and the lease at their boundaries: written to kill the mutants `make mutate` found
alive in the read path of the core (docs/testing.md, "Mutation testing")."""

from __future__ import annotations

from twisted.trial import unittest

from graft.raft.config import DEFAULT_CLOCK_DRIFT, lease_ticks
from graft.raft.messages import (
    AppendEntries,
    Heartbeat,
    HeartbeatResponse,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from graft.raft.ready import Role
from tests.raft.driven import Driven, LongestTimeout

THREE = ("n1", "n2", "n3")
LEASE_TICKS = lease_ticks(10, DEFAULT_CLOCK_DRIFT)  # the default election_ticks


def leader(nid: str = "n1", voters: tuple[str, ...] = THREE, **kw: object) -> Driven:
    """An elected leader whose first entry of its term is committed, no round outstanding."""
    d = Driven(nid, voters, **kw)  # type: ignore[arg-type]
    d.elect()
    d.sent.clear()
    return d


def answer(d: Driven, hb: Heartbeat) -> None:
    d.step(HeartbeatResponse(term=hb.term, sender=hb.to, to=d.id, seq=hb.seq))


class LeaderReadTests(unittest.SynchronousTestCase):
    def test_read_waits_for_a_round_sent_after_it_arrived(self) -> None:
        """Answers to a round that left before the read arrived confirm nothing about it
        (another leader may have been elected in between): only the next round does. The
        leader is n2, in the middle of the sorted ids, and only n3 answers: n1's silence must
        count as silence."""
        d = leader("n2")
        d.tick()  # a heartbeat round leaves...
        early = {hb.to: hb for hb in d.take(Heartbeat)}
        self.assertEqual(set(early), {"n1", "n3"})
        d.node.read_index(b"r")  # ...then the read arrives, and starts its own round
        d.flush()
        later = {hb.to: hb for hb in d.take(Heartbeat)}
        self.assertGreater(later["n3"].seq, early["n3"].seq)
        answer(d, early["n3"])
        self.assertNotIn(b"r", d.reads)
        answer(d, later["n3"])
        self.assertIn(b"r", d.reads)

    def test_leader_alone_confirms_nothing(self) -> None:
        """A leader in the middle of the sorted ids (n2 of n1..n3) counts only itself as
        having its own round: with no answer, no read is confirmed; one answer (a quorum with
        itself) confirms it."""
        d = leader("n2")
        d.node.read_index(b"r")
        d.flush()
        round_ = {hb.to: hb for hb in d.take(Heartbeat)}
        self.assertNotIn(b"r", d.reads)
        answer(d, round_["n3"])
        self.assertIsNotNone(d.reads.get(b"r"))

    def test_one_answer_of_two_followers_confirms(self) -> None:
        d = leader()
        d.node.read_index(b"r")
        d.flush()
        round_ = {hb.to: hb for hb in d.take(Heartbeat)}
        answer(d, round_["n2"])
        self.assertIsNotNone(d.reads.get(b"r"))

    def test_leader_id_is_compared_by_value(self) -> None:
        """A leader id built at run time (equal, but not the membership's str object) still
        counts the leader's own share of the round."""
        d = leader("".join(["n", "1"]))
        d.node.read_index(b"r")
        d.flush()
        round_ = {hb.to: hb for hb in d.take(Heartbeat)}
        answer(d, round_["n3"])
        self.assertIsNotNone(d.reads.get(b"r"))

    def test_four_voters_need_two_answers(self) -> None:
        d = leader(voters=("n1", "n2", "n3", "n4"))
        d.node.read_index(b"r")
        d.flush()
        round_ = {hb.to: hb for hb in d.take(Heartbeat)}
        answer(d, round_["n2"])
        self.assertNotIn(b"r", d.reads)
        answer(d, round_["n3"])
        self.assertIsNotNone(d.reads.get(b"r"))

    def test_two_voters_confirm_with_the_one_follower(self) -> None:
        d = leader(voters=("n1", "n2"))
        d.node.read_index(b"r")
        d.flush()
        (hb,) = d.take(Heartbeat)
        self.assertNotIn(b"r", d.reads)
        answer(d, hb)
        self.assertIsNotNone(d.reads.get(b"r"))


class ForwardedReadTests(unittest.SynchronousTestCase):
    def test_new_leader_refuses_a_forwarded_read_before_committing_in_its_term(self) -> None:
        """Until its first entry of the term commits, a new leader's commit index may be
        behind the previous leader's: a follower's read gets no index (it retries)."""
        d = Driven("n1", THREE)
        asked = d.campaign()
        d.grant(asked)
        d.grant(d.take(RequestVote))
        self.assertNotEqual(d.take(AppendEntries), [])  # the NOOP, never acknowledged
        d.step(ReadIndexRequest(term=d.node.term, sender="n2", to="n1", context=b"f"))
        (response,) = d.take(ReadIndexResponse)
        self.assertIsNone(response.index)


class LeaseTests(unittest.SynchronousTestCase):
    def test_later_round_extends_the_lease_when_answered_after_an_earlier_one(self) -> None:
        """Two rounds in flight, answered in order: the lease counts from the later one."""
        d = leader()
        d.tick()
        first = {hb.to: hb for hb in d.take(Heartbeat)}
        d.tick()
        second = {hb.to: hb for hb in d.take(Heartbeat)}
        answer(d, first["n2"])
        answer(d, second["n2"])
        self.assertTrue(d.node.status().lease_valid)
        # The lease ends lease_ticks after the second round left (this tick count).
        d.tick(LEASE_TICKS - 1)
        self.assertIsNotNone(d.node.lease_read_index())
        d.tick()
        self.assertIsNone(d.node.lease_read_index())

    def test_single_voter_leader_serves_lease_reads_from_its_election_on(self) -> None:
        """A leader that is the only voter needs no round: its lease holds at once."""
        d = Driven("n1", ("n1",))
        while d.role is not Role.LEADER:
            d.tick()
        self.assertIs(d.role, Role.LEADER)
        self.assertEqual(d.node.lease_read_index(), d.commit)

    def _answered_leader(self) -> Driven:
        d = leader()
        d.tick()
        for hb in d.take(Heartbeat):
            answer(d, hb)
        self.assertIsNotNone(d.node.lease_read_index())
        return d

    def test_no_lease_while_a_transfer_waits_for_its_target(self) -> None:
        d = self._answered_leader()
        d.node.propose(b"x")  # n2 now lags: the transfer first catches it up
        d.flush()
        d.sent.clear()
        d.node.transfer_leadership("n2")
        d.flush()
        self.assertEqual(d.take(TimeoutNow), [])
        self.assertIsNone(d.node.lease_read_index())

    def test_no_lease_for_the_rest_of_the_term_once_timeout_now_left(self) -> None:
        """The target may campaign whenever TimeoutNow arrives, even after the transfer
        gave up: the leader serves no lease read again in this term."""
        d = self._answered_leader()
        d.node.transfer_leadership("n2")
        d.flush()
        self.assertNotEqual(d.take(TimeoutNow), [])
        for _ in range(12):  # past the transfer's timeout, every round answered
            d.tick()
            for hb in d.take(Heartbeat):
                answer(d, hb)
        self.assertIs(d.role, Role.LEADER)
        self.assertNotIn("n2", [m.to for m in d.take(TimeoutNow)])
        self.assertIsNone(d.node.lease_read_index())


def follower_of_n1(**kw: object) -> Driven:
    """n2 that heard n1's heartbeat (term 2) just now; its election timer at 0."""
    d = Driven("n2", THREE, rng=LongestTimeout(), **kw)  # type: ignore[arg-type]
    d.step(Heartbeat(term=2, sender="n1", to="n2", commit=0, seq=1))
    d.sent.clear()
    return d


def vote_request(d: Driven, sender: str = "n3", last_term: int = 2) -> None:
    d.step(
        RequestVote(
            term=d.node.term + 1, sender=sender, to=d.id, last_log_index=9, last_log_term=last_term
        )
    )


class StickinessTests(unittest.SynchronousTestCase):
    """A follower that heard from its leader within an election timeout ignores votes (the
    lease's other half): exactly election_ticks of its ticks."""

    def test_ignores_votes_until_election_ticks_after_the_leader(self) -> None:
        for ticks, ignored in ((9, True), (10, False), (11, False)):
            d = follower_of_n1()
            d.tick(ticks)
            vote_request(d)
            self.assertEqual(d.take(RequestVoteResponse) == [], ignored, ticks)

    def test_without_check_quorum_no_stickiness(self) -> None:
        d = follower_of_n1(check_quorum=False)
        vote_request(d)
        self.assertNotEqual(d.take(RequestVoteResponse), [])

    def test_restarted_node_ignores_votes_for_an_election_timeout(self) -> None:
        """It cannot know whether a leader's lease counts on it."""
        d = Driven("n2", THREE, rng=LongestTimeout())
        vote_request(d)
        self.assertEqual(d.take(RequestVoteResponse), [])
        self.assertEqual(d.node.term, 0)

    def test_leaderless_follower_is_not_sticky(self) -> None:
        """A node without a leader (it just voted in a newer term) answers the next candidate."""
        d = Driven("n2", THREE, rng=LongestTimeout())
        d.tick(10)  # the restart's quiet time is over
        vote_request(d, sender="n1", last_term=0)
        d.take(RequestVoteResponse)
        self.assertIsNone(d.node.leader)
        vote_request(d, sender="n3")
        self.assertNotEqual(d.take(RequestVoteResponse), [])
