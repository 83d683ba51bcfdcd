"""GraftNode under hostile reads and proposals: waiters freed and bounded (issue 14, item 5)."""

from __future__ import annotations

import json
from typing import Any

from twisted.python.failure import Failure

from graft.driver.port import Consistency
from graft.errors import MinIndexBeyondLog, Overloaded
from graft.raft.messages import AppendEntries
from graft.testing.kv import get, put
from tests.support.driver import NODES, DriverCluster


class NodeWaiterLimitTests(DriverCluster):
    """On the in-memory 3-node cluster of tests.support.driver."""

    def setUp(self) -> None:
        self.start_nodes()

    def test_far_min_index_waiters_are_freed(self) -> None:
        """Each consistency=weak&min_index=10**18 read left a waiter in the node forever; now
        it is refused (min_index_beyond_log, once the leader's commit index is known) and
        nothing of it is kept."""
        leader = self.leader()
        follower = self.network.nodes[next(n for n in NODES if n != leader)]
        outcomes: list[Any] = []
        for _ in range(50):
            d = follower.query(get("k"), Consistency.WEAK, min_index=10**18)
            d.addBoth(outcomes.append)
        self.advance(2.5)  # past the 2 s query timeout
        self.assertEqual(len(outcomes), 50)
        self.assertTrue(
            all(isinstance(o, Failure) and o.check(MinIndexBeyondLog) for o in outcomes)
        )
        self.assertEqual(follower._parts.applied._heap, [])
        self.assertEqual(len(follower._parts.applied), 0)
        self.assertEqual(follower._parts.reads.pending, {})

    def test_read_waiters_bounded(self) -> None:
        """Over max_read_waiters waiting reads, the next is refused with Overloaded; reads that
        need no wait still answer."""
        leader = self.leader()
        node = self.network.nodes[leader]
        node.limit_waiters(commands=1000, reads=2)
        # A proposal no follower receives: in the leader's log, never applied, so reads with
        # its index as min_index wait.
        for follower in NODES:
            if follower != leader:
                self.network.hold(leader, follower, AppendEntries)
        node.submit([put("k", "1")]).addErrback(lambda _: None)
        self.advance(0.1)
        waiting = node.status().last_index
        for _ in range(2):
            node.query(get("k"), Consistency.WEAK, min_index=waiting).addErrback(lambda _: None)
        refused = self.result(node.query(get("k"), Consistency.WEAK, min_index=waiting))
        self.assertIsInstance(refused, Failure)
        self.assertTrue(refused.check(Overloaded))
        answer = self.result(node.query(get("k"), Consistency.WEAK))
        self.assertEqual(json.loads(answer.output), {"value": None})

    def test_unconfirmed_strong_reads_bounded(self) -> None:
        """Reads waiting for a quorum's confirmation (here: an isolated follower, which never
        gets it) are bounded too; one more is Overloaded at once."""
        leader = self.leader()
        follower_id = next(n for n in NODES if n != leader)
        node = self.network.nodes[follower_id]
        node.limit_waiters(commands=1000, reads=2)
        self.network.isolate(follower_id)
        for _ in range(2):
            node.query(get("k"), Consistency.STRONG).addErrback(lambda _: None)
        refused = self.result(node.query(get("k"), Consistency.STRONG), seconds=0.1)
        self.assertIsInstance(refused, Failure)
        self.assertTrue(refused.check(Overloaded))
        self.assertEqual(len(node._parts.reads.pending), 2)

    def test_pending_proposals_bounded(self) -> None:
        """A batch that would pass max_pending_commands is refused with Overloaded before
        anything is proposed; on a follower the leader's refusal comes back as Overloaded."""
        leader = self.leader()
        node = self.network.nodes[leader]
        node.limit_waiters(commands=3, reads=10)
        before = node._raft.status().last_index
        refused = self.result(node.submit([put("a", "1")] * 4))
        self.assertIsInstance(refused, Failure)
        self.assertTrue(refused.check(Overloaded))
        self.assertEqual(node._raft.status().last_index, before)
        follower = self.network.nodes[next(n for n in NODES if n != leader)]
        forwarded = self.result(follower.submit([put("a", "1")] * 4))
        self.assertIsInstance(forwarded, Failure)
        self.assertTrue(forwarded.check(Overloaded), forwarded)
        done = self.result(node.submit([put("a", "1")] * 3))
        self.assertEqual(len(done), 3)
