"""Slow writes (issue 15 item 4): what may leave before a write, in the core and the simulation."""

from __future__ import annotations

from collections.abc import Callable
from random import Random

from twisted.trial import unittest

from graft.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    Message,
    ReadIndexRequest,
    RequestVote,
    RequestVoteResponse,
)
from graft.raft.ready import Role, leaves_before_write, leaves_between_readies
from graft.testing.simulation import cluster as sim_cluster
from graft.testing.simulation.run import simulate_seed
from graft.testing.simulation.schedule import SlowDisks
from tests.raft.helpers import make_cluster

# A seed whose schedule stalls disks and where an append answer sent before its write breaks
# State Machine Safety; without the stalls the same broken rule goes unnoticed on it. (Found by
# trying seeds; any change to what the simulation draws moves it: the clock model's drift and
# stalls moved it from 364.)
CAUGHT_ONLY_WITH_SLOW_DISKS = 4288


def _early_acks(rule: Callable[[Message, int], bool]) -> Callable[[Message, int], bool]:
    """A broken rule: append answers leave before the entries they acknowledge are durable."""
    return lambda m, term: rule(m, term) or isinstance(m, AppendEntriesResponse)


class RulesTests(unittest.SynchronousTestCase):
    def test_what_leaves_before_a_write(self) -> None:
        """Heartbeats, their answers and read-index traffic of the durable term leave before a
        write; votes, vote answers and append answers never do; nothing of a newer term does."""
        hb = Heartbeat(term=3, sender="a", to="b", commit=1, seq=4)
        answer = HeartbeatResponse(term=3, sender="b", to="a", seq=4)
        read = ReadIndexRequest(term=3, sender="b", to="a", context=b"r")
        append = AppendEntries(
            term=3, sender="a", to="b", prev_index=0, prev_term=0, entries=(), commit=0
        )
        ack = AppendEntriesResponse(term=3, sender="b", to="a", success=True, match_index=5)
        vote = RequestVoteResponse(term=3, sender="b", to="c", granted=True)
        ask = RequestVote(term=3, sender="c", to="b", last_log_index=5, last_log_term=3)
        early: list[Message] = [hb, answer, read, append]
        for m in early:
            self.assertTrue(leaves_before_write(m, 3), m)
            self.assertFalse(leaves_before_write(m, 2), m)  # its term is not durable yet
        for m in early[:3]:
            self.assertTrue(leaves_between_readies(m, 3), m)
        self.assertFalse(leaves_between_readies(append, 3))  # batched in the next Ready
        late: list[Message] = [ack, vote, ask]
        for m in late:
            self.assertFalse(leaves_before_write(m, 3), m)
            self.assertFalse(leaves_between_readies(m, 3), m)

    def test_take_messages_keeps_the_rest_in_order(self) -> None:
        """take_messages hands out what the rule accepts and leaves the rest for the Ready."""
        c = make_cluster()
        leader = c.elect("n1")
        c.propose("n1", [b"x"])  # processed: nothing queued
        leader.propose(b"y")
        leader.tick()  # a heartbeat round (heartbeat_ticks is 1)
        taken = leader.take_messages(lambda m: leaves_between_readies(m, leader.term))
        self.assertTrue(taken)
        self.assertTrue(all(isinstance(m, Heartbeat) for m in taken))
        ready = leader.ready()
        self.assertFalse(any(isinstance(m, Heartbeat) for m in ready.messages))
        self.assertTrue(any(isinstance(m, AppendEntries) and m.entries for m in ready.messages))


class SlowDiskClusterTests(unittest.SynchronousTestCase):
    def _cluster(self) -> sim_cluster.Cluster:
        c = make_cluster()
        c.pipeline = 2
        c.elect("n1")
        return c

    def test_leader_with_a_stalled_disk_keeps_leading(self) -> None:
        """The leader's disk completes nothing for 5 election timeouts while proposals come:
        its heartbeats still flow, nobody campaigns, and the followers' quorum commits."""
        c = self._cluster()
        term = c.node("n1").term
        c.stall_disk("n1", 60)
        for k in range(50):
            if k % 5 == 0:
                c.propose("n1", [b"p%d" % k])
            c.run(1)
        self.assertEqual({c.node(n).term for n in ("n1", "n2", "n3")}, {term})
        self.assertIs(c.node("n1").role, Role.LEADER)
        self.assertTrue(c.nodes["n1"].pending, "the stall held no write")
        c.settle_disks()
        c.run(5)
        self.assertEqual(c.node("n1").log.committed, c.node("n1").log.last_index())

    def test_followers_with_stalled_disks_keep_the_leader(self) -> None:
        """Both followers' disks stall: their heartbeat answers keep the leader's check-quorum
        satisfied, and nothing commits until their writes complete."""
        c = self._cluster()
        term = c.node("n1").term
        commit = c.node("n1").log.committed
        c.stall_disk("n2", 60)
        c.stall_disk("n3", 60)
        for k in range(50):
            if k % 5 == 0:
                c.propose("n1", [b"p%d" % k])
            c.run(1)
        self.assertEqual({c.node(n).term for n in ("n1", "n2", "n3")}, {term})
        self.assertIs(c.node("n1").role, Role.LEADER)
        self.assertEqual(c.node("n1").log.committed, commit, "committed without durable acks")
        c.settle_disks()
        c.run(5)
        self.assertGreater(c.node("n1").log.committed, commit)

    def test_planted_early_append_answer_is_caught(self) -> None:
        """The checker is not blind to slow writes: with append answers sent before their
        writes, a slow-disk schedule breaks safety; the real rule keeps it clean."""
        seed = CAUGHT_ONLY_WITH_SLOW_DISKS
        self.assertIsNone(simulate_seed(seed, Random).violation)
        self.patch(sim_cluster, "leaves_before_write", _early_acks(leaves_before_write))
        self.patch(sim_cluster, "leaves_between_readies", _early_acks(leaves_between_readies))
        caught = simulate_seed(seed, Random).violation
        self.assertIsNotNone(caught)
        self.patch(
            SlowDisks, "draw", classmethod(lambda cls, c, ids, rng, drawn: cls(c, ids, rng, 0.0))
        )
        self.assertIsNone(simulate_seed(seed, Random).violation, "caught without slow disks")
