"""The commit rule at its boundaries: written to kill the mutants `make mutate` found alive in
the leader's commit advance and the log's commit index (docs/testing.md, "Mutation testing")."""

from __future__ import annotations

from twisted.trial import unittest

from graft.raft.memory import MemoryStorage
from graft.raft.messages import AppendEntries, AppendEntriesResponse, Heartbeat
from graft.raft.ready import Role
from graft.raft.types import HardState, Membership
from tests.raft.driven import Driven
from tests.raft.helpers import storage_with


def elected(nid: str = "n1", voters: tuple[str, ...] = ("n1", "n2", "n3"), **kw: object) -> Driven:
    d = Driven(nid, voters, **kw)  # type: ignore[arg-type]
    d.elect()
    return d


class CommitRuleTests(unittest.SynchronousTestCase):
    def test_leader_counts_only_itself_as_persisted(self) -> None:
        """A leader in the middle of the sorted ids commits nothing nobody acknowledged, and
        commits once one follower (with itself a majority of three) has the entry."""
        d = elected("n2")
        before = d.commit
        index = d.node.propose(b"x")
        d.flush()
        appends = d.take(AppendEntries)
        self.assertEqual(d.commit, before)
        d.step(d.accept([a for a in appends if a.to == "n3"][-1]))
        self.assertEqual(d.commit, index)

    def test_leader_id_is_compared_by_value(self) -> None:
        """An id string built at run time (not the same object as the membership's) still
        counts the leader's own log: one acknowledgement of three commits."""
        nid = "".join(["n", "1"])  # equal to "n1", but another str object
        d = elected(nid)
        index = d.node.propose(b"x")
        d.flush()
        appends = d.take(AppendEntries)
        d.step(d.accept([a for a in appends if a.to == "n2"][-1]))
        self.assertEqual(d.commit, index)

    def test_four_voters_need_three_copies(self) -> None:
        """With four voters a quorum is three: the leader and one follower are not enough."""
        d = elected(voters=("n1", "n2", "n3", "n4"))
        index = d.node.propose(b"x")
        d.flush()
        appends = {a.to: a for a in d.take(AppendEntries)}
        d.step(d.accept(appends["n2"]))
        self.assertLess(d.commit, index)
        d.step(d.accept(appends["n3"]))
        self.assertEqual(d.commit, index)

    def _redundant_ack_sends_nothing_to_others(self, storage_terms: list[int]) -> None:
        storage = storage_with(storage_terms) if storage_terms else None
        d = elected(storage=storage)
        index = d.node.propose(b"x")
        d.flush()
        appends = {a.to: a for a in d.take(AppendEntries)}
        d.step(d.accept(appends["n2"]))
        self.assertEqual(d.commit, index)
        d.sent.clear()
        # n3's answer adds a copy but commits nothing new: only n3 may hear back.
        d.step(d.accept(appends["n3"]))
        self.assertEqual(d.take(AppendEntries, to="n2"), [])

    def test_acknowledgement_that_commits_nothing_sends_nothing_to_others(self) -> None:
        self._redundant_ack_sends_nothing_to_others([])

    def test_acknowledgement_that_commits_nothing_with_a_long_log(self) -> None:
        """The same past index 256 (CPython shares the int objects below it)."""
        self._redundant_ack_sends_nothing_to_others([1] * 300)

    def test_quorum_index_below_commit_after_adding_a_voter_sends_nothing_to_others(
        self,
    ) -> None:
        """After a voter is added, the quorum's index may lie below the commit index; an
        answer that raises it, still below the commit, is no new commit."""
        d = elected()
        d.node.propose_batch([b"a", b"b", b"c"])
        d.flush()
        appends = {a.to: a for a in d.take(AppendEntries)}
        d.step(d.accept(appends["n2"]))  # n2 and the leader: a..c committed
        committed = d.commit
        d.node.propose_membership(Membership(voters=frozenset({"n1", "n2", "n3", "n4"})))
        d.flush()
        d.sent.clear()
        # n3 answers for part of its append only: the quorum index is now below the commit.
        ae = appends["n3"]
        partial = AppendEntriesResponse(
            term=ae.term,
            sender="n3",
            to="n1",
            success=True,
            match_index=committed - 1,
        )
        d.step(partial)
        self.assertEqual(d.commit, committed)
        self.assertEqual([m.to for m in d.take(AppendEntries) if m.to != "n3"], [])


class SelfRemovalTests(unittest.SynchronousTestCase):
    def _remove_leader(self, before: bytes | None, after: bytes | None) -> tuple[Driven, int]:
        d = elected()
        if before is not None:
            d.node.propose(before)
        removal = d.node.propose_membership(Membership(voters=frozenset({"n2", "n3"})))
        if after is not None:
            d.node.propose(after)
        d.flush()
        return d, removal

    def test_steps_down_when_commit_jumps_past_its_removal(self) -> None:
        """The commit passes the removal entry in one step (an entry after it was acknowledged
        together with it): the leader still hands over."""
        d, removal = self._remove_leader(None, b"after")
        appends = {a.to: a for a in d.take(AppendEntries)}
        d.step(d.accept(appends["n2"]))
        d.step(d.accept(appends["n3"]))
        self.assertEqual(d.commit, removal + 1)
        self.assertIsNot(d.role, Role.LEADER)

    def test_keeps_leading_until_its_removal_commits(self) -> None:
        """An earlier entry committing is not the removal committing."""
        d, removal = self._remove_leader(b"before", None)
        appends = {a.to: a for a in d.take(AppendEntries)}
        for peer in ("n2", "n3"):
            ae = appends[peer]
            d.step(
                AppendEntriesResponse(
                    term=ae.term, sender=peer, to="n1", success=True, match_index=removal - 1
                )
            )
        self.assertEqual(d.commit, removal - 1)
        self.assertIs(d.role, Role.LEADER)
        for peer in ("n2", "n3"):
            d.step(d.accept(appends[peer]))
        self.assertIsNot(d.role, Role.LEADER)

    def test_hand_over_tells_the_followers_the_commit(self) -> None:
        """Stepping down, the leader sends every follower the commit of its removal, even
        with no entry left to send, so they learn it without waiting for a new leader."""
        d, removal = self._remove_leader(None, None)
        appends = {a.to: a for a in d.take(AppendEntries)}
        d.step(d.accept(appends["n2"]))
        d.sent.clear()
        d.step(d.accept(appends["n3"]))
        self.assertIsNot(d.role, Role.LEADER)
        told = [a for a in d.take(AppendEntries, to="n2") if a.commit >= removal]
        self.assertNotEqual(told, [])


class FollowerCommitTests(unittest.SynchronousTestCase):
    def test_commit_index_never_goes_back(self) -> None:
        """A new leader that does not know a follower's log yet sends a heartbeat with commit 0;
        the follower keeps the commit index it had."""
        d = Driven("n2", ("n1", "n2", "n3"), storage=storage_with([1, 1, 1], commit=3))
        self.assertEqual(d.commit, 3)
        d.step(Heartbeat(term=2, sender="n1", to="n2", commit=0, seq=1))
        self.assertEqual(d.node.leader, "n1")
        self.assertEqual(d.commit, 3)


class ColumnarStorage(MemoryStorage):
    """Hands out each term as a new int object, as DurableLog does (it keeps terms in
    columns), so a comparison by identity fails past 256 where CPython stops sharing ints."""

    def term(self, index: int) -> int:
        return int(str(super().term(index)))


class LargeTermTests(unittest.SynchronousTestCase):
    def test_leader_commits_in_a_term_past_256(self) -> None:
        """The term of a persisted entry (read back from storage) equals the leader's term
        by value: the first entry of term 301 commits."""
        storage = ColumnarStorage()
        storage.set_hard_state(HardState(term=300))
        d = Driven("n1", ("n1", "n2", "n3"), storage=storage)
        d.elect()
        self.assertEqual(d.node.term, 301)
        self.assertEqual(d.commit, 1)
