"""Graceful shutdown of the driver on the in-memory cluster: hand_over moves leadership to the
most caught-up follower before the node stops, and stopService answers everything still
waiting in the node's memory at once, with an error that says what happened, and finishes."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from graft.driver.port import Consistency
from graft.errors import GraftError, NoLeader, Timeout
from graft.raft.messages import AppendEntries, Heartbeat
from graft.testing.kv import get, put
from tests.support.driver import NODES, TICK, DriverCluster


def watch(d: Deferred[Any]) -> list[Any]:
    box: list[Any] = []
    d.addBoth(box.append)
    return box


class HandOverTests(DriverCluster):
    def setUp(self) -> None:
        self.start_nodes()
        self.leader_id = self.leader()
        self.node = self.network.nodes[self.leader_id]

    def test_hand_over_moves_leadership_to_the_most_caught_up_follower(self) -> None:
        """hand_over on the leader ends with another node leading in a later term: the
        follower that has the whole log, not one whose appends are held back. The old leader
        then stops and the cluster goes on committing without it."""
        behind, caught_up = (n for n in NODES if n != self.leader_id)
        self.network.hold(self.leader_id, behind, AppendEntries)
        self.result(self.node.submit([put("k", "1")]))
        term = self.node.status().term
        done = self.result(self.node.hand_over())
        self.assertIsNone(done)
        self.assertFalse(self.node.is_leader())
        new = self.network.nodes[caught_up]
        self.assertTrue(new.is_leader(), "leadership did not go to the caught-up follower")
        self.assertGreater(new.status().term, term)
        self.network.release(self.leader_id, behind)
        self.result(self.node.stopService())
        self.assertIsInstance(self.result(new.submit([put("k", "2")])), list)

    def test_hand_over_on_a_follower_changes_nothing(self) -> None:
        """hand_over on a follower is done at once and leaves the leader in place."""
        follower = self.network.nodes[next(n for n in NODES if n != self.leader_id)]
        term = self.node.status().term
        box = watch(follower.hand_over())
        self.assertEqual(box, [None])
        self.advance(10 * TICK)
        self.assertTrue(self.node.is_leader())
        self.assertEqual(self.node.status().term, term)


class StopTests(DriverCluster):
    def setUp(self) -> None:
        self.start_nodes()
        self.leader_id = self.leader()
        self.node = self.network.nodes[self.leader_id]

    def error(self, box: list[Any]) -> GraftError:
        self.assertEqual(len(box), 1, "still waiting after the node stopped")
        self.assertIsInstance(box[0], Failure)
        error = box[0].value
        self.assertIsInstance(error, GraftError)
        assert isinstance(error, GraftError)
        return error

    def test_stop_fails_what_waits_in_memory_at_once(self) -> None:
        """A leader whose followers hear nothing from it holds a proposal, a strong read
        (no quorum confirms it) and a min_index read. stopService answers all three in the
        same turn: the proposal with 504 timeout (it is in the log and may still commit under
        another leader: its outcome is unknown), the reads with 503 no_leader "shutting down".
        The stop itself finishes, and later calls are refused the same way."""
        for follower in NODES:
            if follower != self.leader_id:
                self.network.hold(self.leader_id, follower, AppendEntries, Heartbeat)
        command = watch(self.node.submit([put("k", "1")]))
        strong = watch(self.node.query(get("k"), Consistency.STRONG))
        # The uncommitted proposal's index: in the leader's log, so the read waits for it.
        last = self.node.status().last_index
        waiting = watch(self.node.query(get("k"), Consistency.WEAK, min_index=last))
        self.advance(3 * TICK)
        self.assertEqual((command, strong, waiting), ([], [], []))
        self.assertTrue(self.node.is_leader())
        stopped = watch(self.node.stopService())
        self.clock.advance(0)
        self.assertEqual(stopped, [None], "stopService did not finish")
        unknown = self.error(command)
        self.assertIsInstance(unknown, Timeout)
        self.assertIn("outcome is unknown", unknown.message)
        for box in (strong, waiting):
            error = self.error(box)
            self.assertIsInstance(error, NoLeader)
            self.assertEqual(error.status, 503)
            self.assertIn("shutting down", error.message)
        for late in (
            self.node.submit([put("k", "2")]),
            self.node.query(get("k"), Consistency.WEAK),
            self.node.add_member("d", "127.0.0.1", 9004, 8004),
            self.node.transfer_leadership(None),
        ):
            error = self.error(watch(late))
            self.assertIsInstance(error, NoLeader)
            self.assertIn("shutting down", error.message)

    def test_stop_fails_a_command_waiting_for_a_route(self) -> None:
        """A command on a follower cut off from the leader waits for a route to it; stopping
        the follower fails it with 503 "shutting down" instead of leaving it to its timeout."""
        follower_id = next(n for n in NODES if n != self.leader_id)
        follower = self.network.nodes[follower_id]
        self.network.isolate(follower_id)
        command = watch(follower.submit([put("k", "1")]))
        self.advance(3 * TICK)
        self.assertEqual(command, [])
        stopped = watch(follower.stopService())
        self.advance(TICK)
        self.assertEqual(stopped, [None])
        error = self.error(command)
        self.assertIsInstance(error, NoLeader)
        self.assertIn("shutting down", error.message)
