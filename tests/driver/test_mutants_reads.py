"""The driver's read path at its edges: written to kill the mutants `make mutate` found alive
in the driver's Reads.query and _linearizable_read (docs/testing.md, "Mutation testing"). The
cluster is tests.support.driver's: three GraftNodes on a Clock and an in-memory network."""

from __future__ import annotations

import json
from typing import Any

from twisted.python.failure import Failure

from graft.driver.port import Consistency, QueryResult
from graft.errors import BadRequest, NoQuorum, Overloaded
from graft.raft.messages import Heartbeat, Message
from graft.testing.kv import get, put
from tests.support.driver import TICK, Channel, DriverCluster


class DriverReadTests(DriverCluster):
    def setUp(self) -> None:
        self.start_nodes()

    def network_channel(self, node_id: str) -> Channel:
        channel = self.network.nodes[node_id].peers
        assert isinstance(channel, Channel)
        return channel

    def test_lease_read_needs_no_message(self) -> None:
        """A leader with a fresh lease answers a default read from its own state, even with
        every link down: no round trip, so nothing to wait for."""
        leader_id = self.leader()
        leader = self.network.nodes[leader_id]
        self.result(leader.submit([put("k", "1")]))
        self.advance(3 * TICK)
        self.network.isolate(leader_id)
        box: list[Any] = []
        leader.query(get("k"), Consistency.DEFAULT).addBoth(box.append)
        self.clock.advance(0)
        self.assertEqual(len(box), 1, "a lease read waited for the network")
        self.assertIsInstance(box[0], QueryResult)
        self.assertEqual(json.loads(box[0].output), {"value": "1"})

    def test_unconfirmed_read_fails_at_its_limit(self) -> None:
        """A strong read no quorum confirms fails when its own time limit runs out, before the
        core gives up on the round: with no_quorum (503), since this leader reaches no voter."""
        leader_id = self.leader()
        leader = self.network.nodes[leader_id]
        self.network.isolate(leader_id)
        box: list[Any] = []
        leader.query(get("k"), Consistency.STRONG, timeout=0.1).addBoth(box.append)
        self.advance(0.05)
        self.assertEqual(box, [])
        self.advance(0.1)
        self.assertEqual(len(box), 1)
        self.assertIsInstance(box[0], Failure)
        self.assertTrue(box[0].check(NoQuorum), box[0])

    def test_query_the_fsm_rejects_is_a_bad_request(self) -> None:
        leader = self.network.nodes[self.leader()]
        outcome = self.result(leader.query(b"{not json", Consistency.STRONG))
        self.assertIsInstance(outcome, Failure)
        self.assertTrue(outcome.check(BadRequest), outcome)

    def test_read_waiter_limit_past_256(self) -> None:
        """The limit on unconfirmed reads holds for a limit past 256 (where CPython stops
        sharing int objects): the read after 300 waiting ones is refused at once."""
        leader_id = self.leader()
        leader = self.network.nodes[leader_id]
        leader.limit_waiters(commands=1000, reads=300)
        self.network.isolate(leader_id)
        for _ in range(300):
            leader.query(get("k"), Consistency.STRONG).addErrback(lambda _: None)
        box: list[Any] = []
        leader.query(get("k"), Consistency.STRONG).addBoth(box.append)
        self.assertEqual(len(box), 1)
        self.assertIsInstance(box[0], Failure)
        self.assertTrue(box[0].check(Overloaded), box[0])

    def test_read_round_leaves_at_once_while_the_disk_is_busy(self) -> None:
        """With two writes in flight no Ready may be taken; a strong read's heartbeat round
        still leaves on this reactor turn, not at the next tick."""
        leader_id = self.leader()
        leader = self.network.nodes[leader_id]
        self.advance(3 * TICK)
        storage = self.storages[leader_id]
        storage.hold = True
        leader.submit([put("g", "0")]).addErrback(lambda _: None)
        self.clock.advance(0)
        self.assertEqual(len(storage.pending), 2, "two writes should be in flight")
        sent: list[Message] = []
        channel = self.network_channel(leader_id)
        send = channel.send

        def recording(message: Message) -> None:
            sent.append(message)
            send(message)

        channel.send = recording  # type: ignore[method-assign]
        leader.query(get("g"), Consistency.STRONG).addErrback(lambda _: None)
        self.clock.advance(0)
        self.assertTrue(any(isinstance(m, Heartbeat) for m in sent), sent)

    def test_leader_serves_its_own_default_read_once(self) -> None:
        """A default read on the leader is served there, not routed back to itself through
        the forwarding path: it counts once in graft_reads."""
        leader = self.network.nodes[self.leader()]
        self.advance(3 * TICK)
        registry = leader._metrics.registry

        def served() -> float:
            value = registry.get_sample_value("graft_reads_total", {"consistency": "default"})
            return value or 0.0

        before = served()
        self.assertIsInstance(self.result(leader.query(get("k"), Consistency.DEFAULT)), QueryResult)
        self.assertEqual(served(), before + 1)
