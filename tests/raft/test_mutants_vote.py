"""Votes at their boundaries: written to kill the mutants `make mutate` found alive in vote
handling and the up-to-date check (docs/testing.md, "Mutation testing")."""

from __future__ import annotations

from twisted.trial import unittest

from graft.raft.memory import MemoryStorage
from graft.raft.messages import RequestVote, RequestVoteResponse
from graft.raft.ready import Role
from graft.raft.types import Entry, HardState
from tests.raft.driven import Driven, ShortestTimeout
from tests.raft.helpers import storage_with


def voter(terms: list[int], *, term: int | None = None) -> Driven:
    """Follower n2 of n1..n3 whose log has one entry per element of ``terms``."""
    return Driven("n2", ("n1", "n2", "n3"), storage=storage_with(terms, term=term))


def ask(
    d: Driven,
    *,
    last_index: int,
    last_term: int,
    term: int | None = None,
    pre_vote: bool = False,
    sender: str = "n1",
) -> bool:
    """Step a vote request (a transfer one: leader stickiness is not under test here) and
    return the answer."""
    d.step(
        RequestVote(
            term=term if term is not None else d.node.term + 1,
            sender=sender,
            to=d.id,
            last_log_index=last_index,
            last_log_term=last_term,
            pre_vote=pre_vote,
            transfer=True,
        )
    )
    (answer,) = d.take(RequestVoteResponse)
    return answer.granted


class UpToDateTests(unittest.SynchronousTestCase):
    """Section 5.4.1: the later last term wins; with equal last terms, the longer log."""

    def test_lower_last_term_refused_however_long(self) -> None:
        self.assertFalse(ask(voter([1, 1, 2]), last_index=9, last_term=1))

    def test_same_last_term_shorter_log_refused(self) -> None:
        self.assertFalse(ask(voter([1, 1, 2]), last_index=2, last_term=2))

    def test_same_last_term_longer_log_granted(self) -> None:
        self.assertTrue(ask(voter([1, 1, 2]), last_index=4, last_term=2))

    def test_same_log_granted(self) -> None:
        self.assertTrue(ask(voter([1, 1, 2]), last_index=3, last_term=2))

    def test_higher_last_term_granted_however_short(self) -> None:
        self.assertTrue(ask(voter([1, 1, 2]), last_index=1, last_term=3))

    def test_terms_are_compared_by_value(self) -> None:
        """Equal terms past 256 (distinct int objects in CPython) are equal terms."""
        storage = MemoryStorage()
        storage.append([Entry(index=1, term=int("300"), data=b"x")])
        storage.set_hard_state(HardState(term=int("300")))
        d = Driven("n2", ("n1", "n2", "n3"), storage=storage)
        self.assertTrue(ask(d, last_index=1, last_term=int("300"), term=int("301")))


class PreVoteTests(unittest.SynchronousTestCase):
    def test_pre_vote_at_the_voters_own_term_refused(self) -> None:
        """A pre-vote must name a later term than the voter's own, even with a good log."""
        d = voter([1, 1, 2], term=4)
        self.assertFalse(ask(d, last_index=3, last_term=2, term=4, pre_vote=True))

    def test_pre_vote_at_the_own_term_refused_past_256(self) -> None:
        d = voter([1, 1, 2], term=int("300"))
        self.assertFalse(ask(d, last_index=3, last_term=2, term=int("300"), pre_vote=True))

    def test_pre_vote_with_a_stale_log_refused(self) -> None:
        d = voter([1, 1, 2], term=4)
        self.assertFalse(ask(d, last_index=9, last_term=1, term=5, pre_vote=True))

    def test_pre_vote_answer_terms(self) -> None:
        """A grant carries the term the candidate would campaign in; a refusal the voter's own,
        so that a refused pre-candidate is not pushed to a later term."""
        d = voter([1, 1, 2], term=4)
        d.step(
            RequestVote(
                term=5,
                sender="n1",
                to="n2",
                last_log_index=3,
                last_log_term=2,
                pre_vote=True,
                transfer=True,
            )
        )
        (grant,) = d.take(RequestVoteResponse)
        self.assertEqual((grant.granted, grant.term), (True, 5))
        d.step(
            RequestVote(
                term=5,
                sender="n3",
                to="n2",
                last_log_index=1,
                last_log_term=1,
                pre_vote=True,
                transfer=True,
            )
        )
        (refusal,) = d.take(RequestVoteResponse)
        self.assertEqual((refusal.granted, refusal.term), (False, 4))
        self.assertEqual(d.node.term, 4)


class VoteTests(unittest.SynchronousTestCase):
    def test_repeated_request_of_the_same_candidate_granted_again(self) -> None:
        """A retransmitted request (its sender id another str object, as off the wire) gets
        the same vote again."""
        d = voter([1], term=1)
        self.assertTrue(ask(d, last_index=1, last_term=1, term=2, sender="".join(["n", "1"])))
        self.assertTrue(ask(d, last_index=1, last_term=1, term=2, sender="".join(["n", "1"])))
        self.assertFalse(ask(d, last_index=1, last_term=1, term=2, sender="n3"))

    def test_granting_a_vote_restarts_the_election_timer(self) -> None:
        """A vote granted in the voter's current term restarts its timer: it campaigns a full
        election timeout after the grant, not earlier or later."""
        storage = storage_with([1], term=3)
        d = Driven("n2", ("n1", "n2", "n3"), storage=storage, rng=ShortestTimeout())
        d.tick(4)
        self.assertEqual(d.take(RequestVote), [])
        self.assertTrue(ask(d, last_index=1, last_term=1, term=3))
        election_ticks = 10
        d.tick(election_ticks - 1)
        self.assertEqual(d.take(RequestVote), [])
        d.tick()
        self.assertNotEqual(d.take(RequestVote), [])


def candidate(voters: tuple[str, ...]) -> tuple[Driven, list[RequestVote]]:
    """n1 as a pre-candidate (pre-vote on) with its requests."""
    d = Driven("n1", voters)
    return d, d.campaign()


class ElectionOutcomeTests(unittest.SynchronousTestCase):
    def test_quorum_of_refusals_ends_the_candidacy(self) -> None:
        d, asked = candidate(("n1", "n2", "n3"))
        d.grant(asked, granted=False)
        self.assertIs(d.role, Role.FOLLOWER)
        d, asked = candidate(("n1", "n2", "n3"))
        d.grant(asked)  # pre-vote won: now a candidate
        asked = d.take(RequestVote)
        self.assertIs(d.role, Role.CANDIDATE)
        for rv in asked:
            d.step(RequestVoteResponse(term=rv.term, sender=rv.to, to="n1", granted=False))
        self.assertIs(d.role, Role.FOLLOWER)

    def test_one_refusal_of_three_leaves_the_election_open(self) -> None:
        d, asked = candidate(("n1", "n2", "n3"))
        by = {rv.to: rv for rv in asked}
        d.grant([by["n2"]], granted=False)
        self.assertIs(d.role, Role.PRE_CANDIDATE)
        d.grant([by["n3"]])
        self.assertIs(d.role, Role.CANDIDATE)

    def test_five_voters_win_on_the_third_vote(self) -> None:
        d, asked = candidate(("n1", "n2", "n3", "n4", "n5"))
        for phase in (Role.PRE_CANDIDATE, Role.CANDIDATE):
            by = {rv.to: rv for rv in asked}
            d.grant([by["n2"]])
            self.assertIs(d.role, phase)
            d.grant([by["n3"]])
            self.assertIsNot(d.role, phase)
            asked = d.take(RequestVote)
        self.assertIs(d.role, Role.LEADER)

    def test_four_voters_one_grant_is_undecided(self) -> None:
        """Two of four (the candidate and one grant) neither win nor lose."""
        d, asked = candidate(("n1", "n2", "n3", "n4"))
        by = {rv.to: rv for rv in asked}
        d.grant([by["n2"]])
        self.assertIs(d.role, Role.PRE_CANDIDATE)
        d.grant([by["n3"]], granted=False)
        self.assertIs(d.role, Role.PRE_CANDIDATE)
        d.grant([by["n4"]], granted=False)
        self.assertIs(d.role, Role.FOLLOWER)
