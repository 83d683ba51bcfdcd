"""The leader sends each follower one AppendEntries per batch under load, not two: the commit
index rides on the next batch's entries (graft.driver.commit_hold), and reaches an idle
follower within COMMIT_HOLD_SECONDS."""

from __future__ import annotations

import json
from typing import Any

from graft.driver.commit_hold import COMMIT_HOLD_SECONDS
from graft.raft.messages import AppendEntries, Message
from tests.support.driver import TICK, DriverCluster


def _put(key: str) -> bytes:
    return json.dumps({"op": "put", "key": key, "value": "v"}).encode()


class CommitHoldTests(DriverCluster):
    def setUp(self) -> None:
        self.start_nodes()
        self.lead = self.leader()
        self.advance(TICK * 5)  # the no-op committed everywhere, nothing in flight
        self.followers = [n for n in self.network.nodes if n != self.lead]
        self.sent: list[AppendEntries] = []
        held = self.network.held

        def record(sender: str, message: Message) -> bool:
            if sender == self.lead and isinstance(message, AppendEntries):
                self.sent.append(message)
            return held(sender, message)

        self.network.held = record  # type: ignore[method-assign]

    def closed_loop(self, clients: int, writes: int, think: float) -> int:
        """``clients`` each write, wait for the answer, wait ``think`` seconds, write again,
        until ``writes`` are answered; returns the number answered."""
        node = self.network.nodes[self.lead]
        done: list[Any] = []

        def write(client: int, k: int) -> None:
            d = node.submit([_put(f"c{client}-{k}")])

            def answered(result: Any) -> None:
                done.append(result)
                if len(done) < writes:
                    self.clock.callLater(think, write, client, k + 1)

            d.addCallback(answered)

        for client in range(clients):
            self.clock.callLater(0, write, client, 0)
        self.wait_until(lambda: len(done) >= writes, f"{writes} writes answered", seconds=30)
        return len(done)

    def test_one_append_per_follower_per_batch_under_load(self) -> None:
        self.closed_loop(clients=4, writes=200, think=0)
        with_entries = [m for m in self.sent if m.entries]
        empty = [m for m in self.sent if not m.entries]
        # Every batch's entries carry the previous batch's commit: only the last batch's
        # commit (and any within the hold at the very end) goes alone.
        self.assertGreater(len(with_entries), 20)
        self.assertLessEqual(len(empty), len(self.followers) * 2, (len(with_entries), len(empty)))

    def test_an_idle_follower_learns_the_commit_within_the_hold(self) -> None:
        node = self.network.nodes[self.lead]
        answered: list[Any] = []
        node.submit([_put("x")]).addBoth(answered.append)
        self.clock.advance(0)  # the round trip: the leader commits and answers
        self.assertEqual(len(answered), 1)
        commit = node.status().commit
        behind = [f for f in self.followers if self.network.nodes[f].status().commit < commit]
        self.assertEqual(len(behind), 2)  # held: no entries followed yet
        self.clock.advance(COMMIT_HOLD_SECONDS)
        self.clock.advance(0)
        for f in self.followers:
            self.assertEqual(self.network.nodes[f].status().commit, commit)
        self.assertLess(COMMIT_HOLD_SECONDS, TICK)
