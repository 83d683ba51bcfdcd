"""Linearizable reads: ReadIndex on the leader and through followers, and the leader lease."""

from __future__ import annotations

from twisted.trial import unittest

from graft.raft.messages import (
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    ReadIndexRequest,
    ReadIndexResponse,
)
from graft.raft.simulation import Cluster
from graft.raft.types import Membership
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
