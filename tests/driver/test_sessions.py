"""Client sessions in a running cluster (graft.sessions through the driver): a numbered
command resent after a leader change, or through a follower, is applied once on every
replica and answered with its first result; the session's refusals reach the caller."""

from __future__ import annotations

import json
from typing import Any

from graft.driver.port import CommandResult
from graft.raft.messages import AppendEntriesResponse
from graft.sessions import envelope
from tests.sessions.test_machine import Counter
from tests.support.driver import NODES, DriverCluster


class SessionClusterTests(DriverCluster):
    def setUp(self) -> None:
        self.fsms: dict[str, Counter] = {}
        self.start_nodes(fsm=self.counter)

    def counter(self) -> Counter:
        fsm = Counter()
        self.fsms[f"n{len(self.fsms)}"] = fsm
        return fsm

    def fsm(self, node: str) -> Counter:
        return self.fsms[f"n{NODES.index(node)}"]

    def operations(self, node: str, *operations: bytes) -> list[CommandResult]:
        results: Any = self.result(self.network.nodes[node].submit_operations(list(operations)))
        self.assertIsInstance(results, list, results)
        return list(results)

    def register(self, node: str) -> str:
        (answer,) = self.operations(node, envelope.encode_register())
        return str(json.loads(answer.output)["session"])

    def test_resent_after_a_leader_change_is_applied_once(self) -> None:
        """The leader appends a numbered command and its followers store it, but it learns of
        no acknowledgement and is cut off: the client's first try has no answer. The resent
        command on the new leader is a duplicate, answered with the first entry's result, and
        every replica applied the command once."""
        first = self.leader()
        others = [n for n in NODES if n != first]
        sid = self.register(others[0])  # forwarded to the leader
        for node in others:
            self.network.hold(node, first, AppendEntriesResponse)
        op = envelope.encode_command(sid, 1, 0, b"add")
        lost = self.network.nodes[first].submit_operations([op])
        self.advance(0.05)  # the append reaches the followers; no answer comes back
        self.assertFalse(lost.called)
        self.network.isolate(first)
        self.wait_until(
            lambda: any(self.network.nodes[n].is_leader() for n in others), "a new leader"
        )
        second = next(n for n in others if self.network.nodes[n].is_leader())
        (again,) = self.operations(second, op)
        self.assertTrue(again.duplicate)
        self.assertEqual(again.output, b'{"n":1}')
        self.assertLess(again.index, self.network.nodes[second].status().applied)
        self.network.heal()
        for node in NODES:
            self.network.holds.pop((node, first), None)
        index = self.network.nodes[second].status().applied
        for node in NODES:
            self.wait_applied(node, index)
            self.assertEqual(self.fsm(node).applied, [b"add"], node)
        lost.addErrback(lambda _: None)

    def test_through_a_follower_the_duplicate_flag_and_refusals_travel(self) -> None:
        """A follower forwards numbered commands; the duplicate's first index and the
        session's refusals come back over the peer channel."""
        leader = self.leader()
        follower = next(n for n in NODES if n != leader)
        sid = self.register(follower)
        ops = envelope.encode_numbered(sid, 1, 0, [b"x", b"y"])
        first = self.operations(follower, *ops)
        again = self.operations(follower, *ops)
        self.assertEqual([r.duplicate for r in first], [False, False])
        self.assertEqual([r.duplicate for r in again], [True, True])
        self.assertEqual([r.index for r in again], [r.index for r in first])
        (expired,) = self.operations(follower, envelope.encode_command("1-0", 1, 0, b"z"))
        self.assertEqual(expired.refusal, "session_expired")
        (forgotten,) = self.operations(follower, envelope.encode_command(sid, 1, 3, b"x"))
        self.assertEqual(forgotten.refusal, "sequence_forgotten")
        index = self.network.nodes[leader].status().applied
        for node in NODES:
            self.wait_applied(node, index)
            self.assertEqual(self.fsm(node).applied, [b"x", b"y"], node)
