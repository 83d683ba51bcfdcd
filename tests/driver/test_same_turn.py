"""A write's round trip takes no extra reactor turn on an idle node (ReadyPipeline.schedule_now):
the proposal's Ready is taken in the request's turn, a follower's in the turn its AppendEntries
arrives, and the leader's commit in the turn the answers arrive; with a write in flight, the
Ready waits for the next turn and gathers what arrives meanwhile."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred

from tests.support.driver import TICK, DriverCluster


def _put(key: str) -> bytes:
    return json.dumps({"op": "put", "key": key, "value": "v"}).encode()


class SameTurnTests(DriverCluster):
    def setUp(self) -> None:
        self.start_nodes()
        self.lead = self.leader()
        self.advance(TICK * 5)  # the no-op committed everywhere, nothing in flight
        self.followers = [n for n in self.network.nodes if n != self.lead]

    def one_turn(self) -> None:
        """Run the calls due now, not the ones they schedule (those are the next turn's)."""
        now = self.clock.seconds()
        due = [call for call in self.clock.calls if call.getTime() <= now]
        for call in due:
            if call.active():
                self.clock.calls.remove(call)
                call.func(*call.args, **call.kw)

    def last(self, node: str) -> int:
        return self.storages[node].last_index()

    def test_an_idle_round_trip_takes_one_turn_per_hop(self) -> None:
        before = self.last(self.lead)
        answered: list[Any] = []
        d: Deferred[Any] = self.network.nodes[self.lead].submit([_put("a")])
        d.addBoth(answered.append)
        self.assertEqual(self.last(self.lead), before + 1)  # written in the request's turn
        self.one_turn()  # the AppendEntries arrive: each follower writes in that turn
        self.assertEqual([self.last(f) for f in self.followers], [before + 1] * 2)
        self.one_turn()  # the answers arrive: the leader commits and applies in that turn
        self.assertEqual(len(answered), 1)
        self.assertIsNone(answered[0][0].error)

    def test_with_a_write_in_flight_the_next_ready_waits_a_turn(self) -> None:
        storage = self.storages[self.lead]
        storage.hold = True
        node = self.network.nodes[self.lead]
        writes = [node.submit([_put("a")])]
        self.assertEqual(len(storage.pending), 1)  # taken at once: nothing was in flight
        writes += [node.submit([_put("b")]), node.submit([_put("c")])]
        self.assertEqual(len(storage.pending), 1)
        self.one_turn()  # the next turn takes both proposals in one Ready
        self.assertEqual(len(storage.pending), 2)
        self.assertEqual(len(storage.pending[1][2]), 2)
        storage.hold = False
        storage.release()
        for d in writes:
            self.assertIsNone(self.result(d)[0].error)
