"""The driver's read path against writes a follower learns of late: strong reads and
``min_index`` wait for the index they need, and a wait that never ends fails at its time
limit. The leader's appends to one follower are held back (Network.hold) so that the write is
committed and acknowledged while that follower has not applied it; all on a Clock."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from graft.api import make_api_resource
from graft.driver.port import Consistency, QueryResult
from graft.errors import Timeout
from graft.raft.messages import AppendEntries
from graft.testing.kv import get, put
from tests.api.fakes import Settings
from tests.support.driver import NODES, TICK, DriverCluster


class LateCommitReadTests(DriverCluster):
    def setUp(self) -> None:
        self.start_nodes()
        self.leader_id = self.leader()
        self.follower_id = next(n for n in NODES if n != self.leader_id)
        self.follower = self.network.nodes[self.follower_id]

    def write_behind_the_follower(self, value: str) -> int:
        """Commit and acknowledge put k=value while the follower has not received it (its
        appends are held; the other follower makes the quorum); the write's index."""
        self.network.hold(self.leader_id, self.follower_id, AppendEntries)
        results = self.result(self.network.nodes[self.leader_id].submit([put("k", value)]))
        index: int = results[0].index
        self.advance(5 * TICK)
        self.assertLess(self.follower.status().applied, index, "the follower has the write")
        return index

    def pending(self, d: Deferred[QueryResult]) -> list[Any]:
        box: list[Any] = []
        d.addBoth(box.append)
        return box

    def test_strong_read_waits_for_a_commit_delivered_late(self) -> None:
        """A strong read on a follower that has not applied an acknowledged write when the read
        starts waits for it (the leader's read index), and answers with the write once the
        delayed appends arrive; it does not answer from the follower's stale state."""
        index = self.write_behind_the_follower("1")
        box = self.pending(self.follower.query(get("k"), Consistency.STRONG))
        self.advance(10 * TICK)
        self.assertEqual(box, [], "answered before the follower applied the write")
        self.network.release(self.leader_id, self.follower_id)
        self.wait_until(lambda: box, "the strong read answered")
        read = box[0]
        self.assertIsInstance(read, QueryResult)
        self.assertEqual(json.loads(read.output), {"value": "1"})
        self.assertGreaterEqual(read.applied_index, index)

    def test_min_index_waits_until_applied(self) -> None:
        """A weak read with min_index above the follower's applied index waits until the
        follower applies it, then answers with that state."""
        index = self.write_behind_the_follower("2")
        box = self.pending(self.follower.query(get("k"), Consistency.WEAK, min_index=index))
        self.advance(10 * TICK)
        self.assertEqual(box, [], "answered below min_index")
        stale = self.result(self.follower.query(get("k"), Consistency.WEAK))
        self.assertEqual(json.loads(stale.output), {"value": None}, "the follower was not behind")
        self.network.release(self.leader_id, self.follower_id)
        self.wait_until(lambda: box, "the min_index read answered")
        self.assertEqual(json.loads(box[0].output), {"value": "2"})
        self.assertGreaterEqual(box[0].applied_index, index)

    def test_strong_read_honours_min_index_beyond_the_read_index(self) -> None:
        """A strong read on a follower whose min_index (an acknowledged write it has not
        received) is beyond its own log waits for min_index, and answers with the write once
        the delayed appends arrive."""
        index = self.write_behind_the_follower("3")
        box = self.pending(self.follower.query(get("k"), Consistency.STRONG, min_index=index))
        self.advance(10 * TICK)
        self.assertEqual(box, [], "answered below min_index")
        self.network.release(self.leader_id, self.follower_id)
        self.wait_until(lambda: box, "the min_index read answered")
        self.assertEqual(json.loads(box[0].output), {"value": "3"})
        self.assertGreaterEqual(box[0].applied_index, index)

    def test_min_index_never_reached_fails_at_the_query_timeout(self) -> None:
        """A read whose min_index (committed, but the follower's appends are held back) never
        arrives waits for query_timeout (2 s here) of clock time and no less, then fails with
        504 timeout naming the index; with ?timeout= its own limit applies instead. Nothing of
        the wait is kept."""
        far = self.write_behind_the_follower("4")
        default = self.pending(self.follower.query(get("k"), Consistency.WEAK, min_index=far))
        short = self.pending(
            self.follower.query(get("k"), Consistency.WEAK, min_index=far, timeout=0.5)
        )
        self.advance(0.45)
        self.assertEqual((default, short), ([], []), "gave up before its time limit")
        self.advance(0.1)
        self.assertEqual(default, [], "the default limit is query_timeout, not ?timeout=")
        self.assertEqual(len(short), 1, "?timeout=0.5 did not end the wait at 0.5 s")
        self.advance(1.4)
        self.assertEqual(default, [], "gave up before query_timeout")
        self.advance(0.1)
        self.assertEqual(len(default), 1, "the wait outlived query_timeout")
        for outcome in (default[0], short[0]):
            self.assertIsInstance(outcome, Failure)
            error = outcome.value
            self.assertIsInstance(error, Timeout)
            self.assertEqual((error.code, error.status), ("timeout", 504))
            self.assertIn(f"did not apply up to index {far}", error.message)
        self.assertEqual(len(self.follower._parts.applied), 0, "a timed-out wait was kept")


class MinIndexOverApiTests(DriverCluster):
    """``?min_index=`` through the HTTP API (in memory) to a real GraftNode."""

    def setUp(self) -> None:
        self.start_nodes()
        self.leader_id = self.leader()
        self.follower_id = next(n for n in NODES if n != self.leader_id)
        resource = make_api_resource(
            self.network.nodes[self.follower_id], Settings(), reactor=self.clock
        )
        self.stub: Any = StubTreq(resource)

    def start(self, **params: Any) -> Deferred[Any]:
        """GET /query with these parameters; the Deferred fires with the treq response."""
        query = urlencode({"q": get("k").decode(), **params})
        pending: Deferred[Any] = self.stub.get(f"http://127.0.0.1:8080/query?{query}")
        return pending

    def answered(self, pending: Deferred[Any]) -> bool:
        self.stub.flush()
        box: list[Any] = []

        def seen(result: object) -> object:
            box.append(result)
            return result

        pending.addBoth(seen)
        return bool(box)

    def finish(self, pending: Deferred[Any]) -> tuple[int, Any]:
        """Advance the clock until the request is answered: its status and JSON body."""
        self.wait_until(lambda: self.answered(pending), "the API answered", seconds=10.0)
        response = self.successResultOf(pending)
        body = self.successResultOf(self.stub.content(response))
        return response.code, json.loads(body)

    def test_min_index_reaches_the_node(self) -> None:
        """The API passes min_index to the node: held-back appends make the follower wait,
        and the answer carries the write; an index beyond the cluster's log is a 400 at once."""
        self.network.hold(self.leader_id, self.follower_id, AppendEntries)
        results = self.result(self.network.nodes[self.leader_id].submit([put("k", "5")]))
        index = results[0].index
        pending = self.start(consistency="weak", min_index=index)
        self.advance(10 * TICK)
        self.assertFalse(self.answered(pending), "answered below min_index")
        self.network.release(self.leader_id, self.follower_id)
        self.assertEqual(self.finish(pending), (200, {"value": "5"}))
        status, body = self.finish(self.start(consistency="weak", min_index=index + 1000))
        self.assertEqual(status, 400)
        self.assertEqual(body["error"]["code"], "min_index_beyond_log")
        self.assertIn(f"min_index={index + 1000}", body["error"]["message"])
