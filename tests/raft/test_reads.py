"""Linearizable reads: ReadIndex on the leader and through followers, and the leader lease."""

from __future__ import annotations

import dataclasses

from twisted.trial import unittest

from graft.raft.messages import (
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    ReadIndexRequest,
    ReadIndexResponse,
)
from graft.raft.ready import Role
from graft.raft.types import Membership
from graft.testing.simulation.cluster import Cluster
from tests.raft.helpers import Recorder, make_cluster


def cluster_with_a_write(
    ids: tuple[str, ...] = ("n1", "n2", "n3"), election_ticks: int = 10
) -> Cluster:
    """A cluster led by n1 whose first write (index 2, after the NOOP) is committed."""
    c = make_cluster(ids, election_ticks=election_ticks)
    c.elect("n1")
    c.propose("n1", [b"w"])
    c.stabilize()
    return c


def read_dropping(c: Cluster, reader: str, dropped: type) -> Recorder:
    """Read b"f" on ``reader`` while every message of type ``dropped`` is lost."""
    rec = Recorder(c)
    rec.drop = [dropped]
    c.read(reader, b"f")
    c.stabilize()
    return rec


class ReadIndexTests(unittest.SynchronousTestCase):
    def test_refused_before_first_commit_in_term(self) -> None:
        """A new leader refuses ReadIndex until it has committed an entry of its term, then
        answers with its commit index."""
        c = make_cluster()
        rec = Recorder(c)
        rec.drop = [AppendEntriesResponse]  # the NOOP cannot commit yet
        leader = c.elect("n1")
        self.assertEqual(leader.log.committed, 0)
        c.read("n1", b"early")
        self.assertEqual(c.nodes["n1"].read_answers, {b"early": None})
        rec.drop = []
        c.run(3)
        self.assertEqual(leader.log.committed, 1)
        c.read("n1", b"later")
        c.stabilize()
        self.assertEqual(c.nodes["n1"].read_answers[b"later"], 1)

    def test_reads_wait_for_a_quorum_round_and_share_it(self) -> None:
        """Reads registered together are confirmed by one heartbeat round answered by a
        quorum, and not before."""
        c = make_cluster()
        c.elect("n1")
        rec = Recorder(c)
        c.node("n1").read_index(b"a")
        c.node("n1").read_index(b"b")
        c.process("n1")
        rounds = {m.seq for m in rec.of(Heartbeat, sender="n1")}
        self.assertEqual(len(rounds), 1)
        self.assertEqual(c.nodes["n1"].read_answers, {})  # no quorum answer yet
        c.in_flight.clear()  # the round is lost: nothing confirms the reads
        c.stabilize()
        self.assertEqual(c.nodes["n1"].read_answers, {})
        c.run(1)  # the next heartbeat round is answered
        self.assertEqual(c.nodes["n1"].read_answers, {b"a": 1, b"b": 1})

    def test_follower_read_is_relayed(self) -> None:
        """A follower asks the leader for a read index and hands it out as its ReadState."""
        c = make_cluster()
        c.elect("n1")
        c.propose("n1", [b"w"])
        c.stabilize()
        rec = Recorder(c)
        c.read("n2", b"f")
        c.stabilize()
        self.assertEqual(len(rec.of(ReadIndexRequest, sender="n2", to="n1")), 1)
        self.assertEqual(c.nodes["n2"].read_answers, {b"f": 2})

    def test_follower_reads_of_one_turn_share_one_request(self) -> None:
        """Reads a follower takes before its next Ready go to the leader as one
        ReadIndexRequest, whose answer serves them all; a read taken after that request was
        sent needs a request of its own (the index must be fixed after the read began)."""
        c = make_cluster()
        c.elect("n1")
        c.propose("n1", [b"w"])
        c.stabilize()
        rec = Recorder(c)
        for context in (b"a", b"b"):  # taken in one turn: no Ready in between
            c.checker.read_issued_now(context)
            c.node("n2").read_index(context)
        c.read("n2", b"c")
        c.stabilize()
        self.assertEqual(len(rec.of(ReadIndexRequest, sender="n2", to="n1")), 1)
        self.assertEqual(c.nodes["n2"].read_answers, {b"a": 2, b"b": 2, b"c": 2})
        c.propose("n1", [b"w2"])
        c.stabilize()
        c.read("n2", b"d")
        c.stabilize()
        self.assertEqual(len(rec.of(ReadIndexRequest, sender="n2", to="n1")), 2)
        self.assertEqual(c.nodes["n2"].read_answers[b"d"], 3)

    def test_follower_read_with_three_voters_needs_no_round(self) -> None:
        """With three voters the requester and the leader are a quorum: the leader answers a
        follower's ReadIndexRequest at once, with no heartbeat round in between."""
        c = cluster_with_a_write()
        rec = read_dropping(c, "n2", Heartbeat)  # no round can confirm anything
        self.assertEqual(rec.of(Heartbeat, sender="n1"), [])
        self.assertEqual(len(rec.of(ReadIndexResponse, sender="n1", to="n2")), 1)
        self.assertEqual(c.nodes["n2"].read_answers, {b"f": 2})

    def test_follower_read_with_five_voters_waits_for_a_round(self) -> None:
        """With five voters the requester and the leader are no quorum: the answer waits for
        a heartbeat round that a quorum acknowledged."""
        c = cluster_with_a_write(("n1", "n2", "n3", "n4", "n5"))
        rec = read_dropping(c, "n2", HeartbeatResponse)
        self.assertTrue(rec.of(Heartbeat, sender="n1"))
        self.assertEqual(rec.of(ReadIndexResponse, sender="n1"), [])
        self.assertEqual(c.nodes["n2"].read_answers, {})
        rec.drop = []
        c.run(1)  # the next round is answered
        self.assertEqual(c.nodes["n2"].read_answers, {b"f": 2})

    def test_follower_read_in_a_deposed_minority_is_never_stale(self) -> None:
        """Why five voters wait for a round: a leader cut off with one follower may already
        have been replaced, and the majority may have committed more. The follower's read is
        refused, never answered with the old leader's stale commit index."""
        c = cluster_with_a_write(("n1", "n2", "n3", "n4", "n5"))
        c.partition({"n1", "n2"}, {"n3", "n4", "n5"})
        c.elect("n3")
        c.propose("n3", [b"newer"])
        c.stabilize()
        newer = c.node("n3").log.committed
        self.assertGreater(newer, c.node("n1").log.committed)
        c.read("n2", b"f")  # the checker raises if it is answered below `newer`
        c.run(30)  # n1 hears no quorum and steps down
        self.assertEqual(c.nodes["n2"].read_answers, {b"f": None})

    def test_learner_read_waits_for_a_round(self) -> None:
        """A learner's acceptance counts toward no quorum: its read waits for a round."""
        c = make_cluster()
        leader = c.elect("n1")
        c.add_node("n4")
        leader.propose_membership(
            Membership(voters=frozenset({"n1", "n2", "n3"}), learners=frozenset({"n4"}))
        )
        c.stabilize()
        rec = read_dropping(c, "n4", HeartbeatResponse)
        self.assertEqual(rec.of(ReadIndexResponse, sender="n1"), [])
        self.assertEqual(c.nodes["n4"].read_answers, {})
        rec.drop = []
        c.run(1)
        self.assertEqual(c.nodes["n4"].read_answers, {b"f": leader.log.committed})

    def test_answer_from_an_older_term_is_not_taken(self) -> None:
        """A follower that has moved to a newer term when the leader's answer arrives refuses
        its read instead of answering it at the old leader's index: only in the leader's term
        does its acceptance stand for the acknowledgement of a round."""
        c = cluster_with_a_write()
        rec = read_dropping(c, "n2", ReadIndexResponse)
        (answer,) = rec.of(ReadIndexResponse, sender="n1", to="n2")
        rec.drop = []
        c.elect("n3")  # n2 votes in a newer term
        self.assertGreater(c.node("n2").term, answer.term)
        c.node("n2").step(answer)
        c.process("n2")
        self.assertEqual(c.nodes["n2"].read_answers, {b"f": None})

    def test_read_without_leader_refused(self) -> None:
        """With no known leader, read_index answers at once with a refused ReadState."""
        c = make_cluster()
        c.read("n2", b"x")
        self.assertEqual(c.nodes["n2"].read_answers, {b"x": None})

    def test_pending_reads_refused_when_leadership_is_lost(self) -> None:
        """Reads waiting for confirmation are refused if the leader steps down."""
        c = make_cluster(election_ticks=10)
        c.elect("n1")
        c.isolate("n1")
        c.read("n1", b"x")
        c.run(25)
        self.assertEqual(c.nodes["n1"].read_answers, {b"x": None})


class LeaseTests(unittest.SynchronousTestCase):
    def test_lease_valid_after_quorum_round_and_expires(self) -> None:
        """The lease is granted by a quorum-acknowledged round and expires lease_ticks (10 x 0.9
        - 1 - 2 = 6) after that round was sent when no further round is acknowledged."""
        c = make_cluster(election_ticks=10, clock_drift=0.1)
        leader = c.elect("n1")
        self.assertIsNone(leader.lease_read_index())  # no round acknowledged yet
        c.run(1)
        self.assertEqual(leader.lease_read_index(), leader.log.committed)
        c.isolate("n1")
        valid_for = 0
        while leader.lease_read_index() is not None:
            c.run(1)
            valid_for += 1
        # Valid for lease_ticks, counted from the sending of the last acknowledged round (the
        # tick just before the isolation).
        self.assertEqual(valid_for, 6)

    def test_no_lease_without_check_quorum(self) -> None:
        """Without check-quorum there is no stickiness, so the lease is never used."""
        c = make_cluster(check_quorum=False)
        leader = c.elect("n1")
        c.run(3)
        self.assertIsNone(leader.lease_read_index())

    def test_no_lease_for_followers(self) -> None:
        """Only the leader can hold a lease."""
        c = make_cluster()
        c.elect("n1")
        c.run(3)
        self.assertIsNone(c.node("n2").lease_read_index())


def removing_the_leader_then_partitioned(
    recorded: bool = False,
) -> tuple[Cluster, Recorder | None]:
    """{n1..n4} led by n1, which proposes {n2, n3, n4} (itself out); every follower appends
    that entry but n1 hears no acknowledgement, so it is not committed when {n1, n2} |
    {n3, n4} are cut apart. n3 and n4 (a quorum of the new voters) elect n3, which commits a
    write n1 never hears of. n1 is still leader, of a membership it is not a voter of."""
    c = cluster_with_a_write(("n1", "n2", "n3", "n4"))
    c.run(2)
    rec = Recorder(c)
    rec.drop = [AppendEntriesResponse]
    c.node("n1").propose_membership(Membership(voters=frozenset({"n2", "n3", "n4"})))
    c.process("n1")
    c.stabilize()
    c.partition({"n1", "n2"}, {"n3", "n4"})
    rec.drop = []
    c.elect("n3")
    c.propose("n3", [b"W"])
    c.stabilize()
    assert c.node("n3").log.committed > c.node("n1").log.committed
    assert c.node("n1").role is Role.LEADER
    return c, rec if recorded else None


class LeaderOutsideItsMembershipTests(unittest.SynchronousTestCase):
    """A leader whose own removal is in its log but not committed is no voter: neither read
    shortcut may count it toward a quorum (issue #15, item 5)."""

    def test_follower_read_is_not_answered_by_a_leader_that_is_no_voter(self) -> None:
        """F's strong read through the removed leader L: L and F are no quorum of {F, G, H},
        so L must confirm with a round (which G and H never answer) instead of answering at
        once with its commit index, older than the write G committed (the checker raises on
        a stale answer)."""
        c, _ = removing_the_leader_then_partitioned()
        c.read("n2", b"f")
        c.stabilize()
        self.assertNotIn(b"f", {k for k, v in c.nodes["n2"].read_answers.items() if v})
        c.run(30)  # n1 hears no quorum of the new voters and steps down
        self.assertEqual(c.nodes["n2"].read_answers, {b"f": None})

    def test_no_lease_when_the_only_voter_is_another_node(self) -> None:
        """{n1, n2} -> {n2}: the one voter left is n2, not the leader n1, so n1 holds no
        lease for being alone (only an acknowledgement from n2 can give it one)."""
        c = make_cluster(("n1", "n2"))
        leader = c.elect("n1")
        c.propose("n1", [b"w"])
        c.stabilize()
        rec = Recorder(c)
        rec.drop = [AppendEntriesResponse, HeartbeatResponse]
        leader.propose_membership(Membership(voters=frozenset({"n2"})))
        c.process("n1")
        c.stabilize()
        c.isolate("n1")
        c.run(c.node("n1")._cfg.election_ticks)  # any lease n1 had has run out
        self.assertIs(leader.role, Role.LEADER)
        self.assertEqual(leader.membership.voters, frozenset({"n2"}))
        self.assertIsNone(leader.lease_read_index())


class UnansweredReadsTests(unittest.SynchronousTestCase):
    """What waits for an answer that will not come is failed after an election timeout, so
    the driver retries it and the core's memory stays bounded (issue #15, item 6)."""

    def test_lost_forwarded_request_is_failed_not_held(self) -> None:
        """A follower's ReadIndexRequest the transport dropped (the link was down) is failed
        an election timeout later while the leader stays the same, instead of staying in the
        follower's forwarded reads until the leader or the term changes."""
        c = cluster_with_a_write()
        rec = read_dropping(c, "n2", ReadIndexRequest)
        self.assertEqual(c.nodes["n2"].read_answers, {})
        rec.drop = []
        c.run(c.node("n2")._cfg.election_ticks)
        self.assertEqual(c.nodes["n2"].read_answers, {b"f": None})
        self.assertEqual(c.node("n2")._forwarded, {})
        self.assertIs(c.node("n1").role, Role.LEADER)
        c.read("n2", b"again")  # the driver's retry, over the link that is back
        c.stabilize()
        self.assertEqual(c.nodes["n2"].read_answers[b"again"], 2)

    def test_unanswered_rounds_are_bounded_without_check_quorum(self) -> None:
        """Without check-quorum nothing deposes a leader no one answers: its rounds' sending
        ticks and the reads waiting on them are dropped (the reads failed) once older than an
        election timeout, instead of piling up for as long as it stays cut off."""
        c = cluster_with_a_write(election_ticks=10)
        for n in c.nodes.values():
            assert n.node is not None
            n.node._cfg = dataclasses.replace(n.node._cfg, check_quorum=False)
        c.run(2)
        leader = c.node("n1")
        c.isolate("n1")
        c.read("n1", b"x")
        c.run(100)
        self.assertIs(leader.role, Role.LEADER)
        self.assertEqual(c.nodes["n1"].read_answers, {b"x": None})
        self.assertEqual(len(leader._reads), 0)
        bound = leader._cfg.election_ticks // leader._cfg.heartbeat_ticks + 1
        self.assertLessEqual(len(leader._round_sent_tick), bound)
