"""The driver with a slow disk (issue 15 item 4): heartbeats and their answers keep flowing
while fsyncs are held, and nothing that claims durable state leaves before its write.

Same in-memory cluster as tests/test_node.py; the channel checks each message against its
sender's storage (what a crash would leave) at the moment it leaves.
"""

from __future__ import annotations

from graft.raft.messages import (
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    Message,
    RequestVote,
    RequestVoteResponse,
)
from graft.raft.ready import Role
from graft.testing.kv import put
from tests.support.driver import NODES, TICK, Channel, DriverCluster, MemoryDurable, Network


class CheckedChannel(Channel):
    """Fails the test if a message leaves before the state it depends on is durable, and
    records what each node sent."""

    def __init__(
        self, network: Network, me: str, storage: MemoryDurable, sent: list[Message]
    ) -> None:
        super().__init__(network, me)
        self.storage = storage
        self.sent = sent
        self.violations: list[str] = []

    def send(self, message: Message) -> None:
        durable = self.storage.hard_state()
        if message.term > durable.term and not (
            isinstance(message, RequestVote | RequestVoteResponse) and message.pre_vote
        ):
            self.violations.append(f"{message} left before term {message.term} was durable")
        if (
            isinstance(message, AppendEntriesResponse)
            and message.success
            and self.storage.last_index() < message.match_index
        ):
            self.violations.append(f"{message} left before its entries were durable")
        if (
            isinstance(message, RequestVoteResponse)
            and message.granted
            and not message.pre_vote
            and durable.vote != message.to
        ):
            self.violations.append(f"{message} left before its vote was durable")
        if isinstance(message, RequestVote) and not message.pre_vote and durable.vote != self.me:
            self.violations.append(f"{message} left before the self-vote was durable")
        self.sent.append(message)
        super().send(message)


class SlowDiskTests(DriverCluster):
    """Three GraftNodes as in tests/test_node.py, each on a CheckedChannel."""

    def setUp(self) -> None:
        self.start_nodes()
        self.sent: dict[str, list[Message]] = {n: [] for n in NODES}
        self.channels: dict[str, CheckedChannel] = {}
        for node_id, node in self.network.nodes.items():
            channel = CheckedChannel(
                self.network, node_id, self.storages[node_id], self.sent[node_id]
            )
            self.channels[node_id] = channel
            node.peers = channel
        self.addCleanup(self._no_violations)

    def _no_violations(self) -> None:
        for channel in self.channels.values():
            self.assertEqual(channel.violations, [])

    def _fill_pipeline(self, leader_id: str, held: list[str]) -> None:
        """Two proposals in separate turns: every held node has two Readies waiting on its
        disk, so it may take no further Ready."""
        leader = self.network.nodes[leader_id]
        for node_id in held:
            self.storages[node_id].hold = True
        for i in range(2):
            # Answered or timed out (the disks are held longer than the command timeout).
            leader.submit([put("slow", str(i))]).addErrback(lambda _: None)
            self.clock.advance(0)
            self.clock.advance(0)
        for node_id in held:
            self.assertGreaterEqual(len(self.storages[node_id].pending), 2, node_id)

    def _terms(self) -> dict[str, int]:
        return {n: node._raft.term for n, node in self.network.nodes.items()}

    def test_leader_with_a_held_fsync_keeps_sending_heartbeats(self) -> None:
        """The leader's fsync is held for five election timeouts: its heartbeats still leave,
        the followers answer, nobody campaigns and it stays leader."""
        leader_id = self.leader()
        self.advance(3 * TICK)
        terms = self._terms()
        self._fill_pipeline(leader_id, [leader_id])
        before = len([m for m in self.sent[leader_id] if isinstance(m, Heartbeat)])
        self.advance(50 * TICK)
        heartbeats = len([m for m in self.sent[leader_id] if isinstance(m, Heartbeat)])
        self.assertGreater(heartbeats - before, 20, "the leader stopped sending heartbeats")
        self.assertEqual(self._terms(), terms, "an election ran while the leader's disk was slow")
        self.assertTrue(self.network.nodes[leader_id].is_leader())
        storage = self.storages[leader_id]
        storage.hold = False
        storage.release()
        self.assertIsInstance(
            self.result(self.network.nodes[leader_id].submit([put("a", "1")])), list
        )

    def test_followers_with_held_fsyncs_keep_answering_heartbeats(self) -> None:
        """Both followers' fsyncs are held: their heartbeat answers still leave, so the
        leader's check-quorum keeps it in office; their append answers wait for the disk."""
        leader_id = self.leader()
        followers = [n for n in NODES if n != leader_id]
        self.advance(3 * TICK)
        terms = self._terms()
        self._fill_pipeline(leader_id, followers)
        marks = {n: len(self.sent[n]) for n in followers}
        self.advance(50 * TICK)
        for n in followers:
            later = self.sent[n][marks[n] :]
            answers = [m for m in later if isinstance(m, HeartbeatResponse)]
            self.assertGreater(len(answers), 20, f"{n} stopped answering heartbeats")
            acks = [m for m in later if isinstance(m, AppendEntriesResponse) and m.success]
            self.assertEqual(acks, [], f"{n} acknowledged entries its disk does not hold")
        self.assertEqual(self._terms(), terms, "an election ran while the followers were slow")
        self.assertTrue(self.network.nodes[leader_id].is_leader())
        for n in followers:
            self.storages[n].hold = False
            self.storages[n].release()
        self.assertIsInstance(
            self.result(self.network.nodes[leader_id].submit([put("b", "1")])), list
        )

    def test_votes_wait_for_their_write(self) -> None:
        """An election among nodes whose disks are held: no vote request, vote or term leaves
        before it is durable (CheckedChannel); once the disks catch up, a leader is elected."""
        leader_id = self.leader()
        followers = [n for n in NODES if n != leader_id]
        for n in followers:
            self.storages[n].hold = True
        self.network.isolate(leader_id)
        self.advance(40 * TICK)  # the followers time out and campaign; their writes are held
        self.assertFalse(
            any(node.is_leader() for n, node in self.network.nodes.items() if n != leader_id)
        )
        for _ in range(40):
            for n in followers:
                self.storages[n].release()
            self.advance(TICK)
        for n in followers:
            self.storages[n].hold = False
            self.storages[n].release()
        self.advance(20 * TICK)
        roles = {n: self.network.nodes[n]._raft.role for n in followers}
        self.assertIn(Role.LEADER, roles.values())
