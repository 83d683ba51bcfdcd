"""Distinct causes get distinct error codes: a stale weak read (``stale``), a lost quorum
(``no_quorum``, naming the voters out of reach) against an election under way (``no_leader``),
and a ``min_index`` beyond the cluster's log (``min_index_beyond_log``, at once rather than a
504 after waiting). Real GraftNodes on a Clock and the in-memory network."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure

from graft.driver.outcomes import remote_failure
from graft.driver.port import Consistency
from graft.errors import (
    ForwardingFailed,
    GraftError,
    Internal,
    MemberUnreachable,
    MinIndexBeyondLog,
    NoLeader,
    NoQuorum,
    Stale,
    Timeout,
)
from graft.testing.kv import get, put
from graft.transport import PeerUnavailable, RemoteError
from tests.support.driver import NODES, TICK, DriverCluster


def outcome(d: Deferred[Any]) -> list[Any]:
    box: list[Any] = []
    d.addBoth(box.append)
    return box


class StaleReadTests(DriverCluster):
    def setUp(self) -> None:
        self.start_nodes()
        self.leader_id = self.leader()
        self.follower_id = next(n for n in NODES if n != self.leader_id)
        self.result(self.network.nodes[self.leader_id].submit([put("k", "1")]))
        self.advance(5 * TICK)

    def test_stale_follower_answers_stale_409(self) -> None:
        """A follower that has not heard from a leader for longer than max_lag_ms refuses with
        code ``stale`` (409), not no_leader, and says how long ago it heard from one."""
        self.network.isolate(self.follower_id)
        self.advance(0.3)
        refused = self.result(
            self.network.nodes[self.follower_id].query(get("k"), Consistency.WEAK, max_lag_ms=100)
        )
        self.assertIsInstance(refused, Failure)
        error = refused.value
        self.assertIsInstance(error, Stale)
        self.assertNotIsInstance(error, NoLeader)
        self.assertEqual((error.code, error.status), ("stale", 409))
        self.assertIn("max_lag_ms=100", error.message)
        self.assertIn("ms ago", error.message)

    def test_leader_is_never_stale(self) -> None:
        """The leader answers a weak read with any max_lag_ms, even 0."""
        answer = self.result(
            self.network.nodes[self.leader_id].query(get("k"), Consistency.WEAK, max_lag_ms=0)
        )
        self.assertNotIsInstance(answer, Failure)
        self.assertIn(b"1", answer.output)

    def test_connected_follower_within_max_lag_answers(self) -> None:
        """A follower that heard a heartbeat within max_lag_ms answers."""
        answer = self.result(
            self.network.nodes[self.follower_id].query(
                get("k"), Consistency.WEAK, max_lag_ms=int(20 * TICK * 1000)
            )
        )
        self.assertNotIsInstance(answer, Failure)


class LeaderlessTests(DriverCluster):
    def test_lost_quorum_is_no_quorum_naming_the_voters(self) -> None:
        """A node cut off from both other voters answers a forwarded request with no_quorum
        (503), naming the two voters it cannot reach, not "an election may be under way"."""
        self.start_nodes(route_wait=0.5)
        leader = self.leader()
        follower = next(n for n in NODES if n != leader)
        self.network.isolate(follower)
        self.advance(0.5)
        others = sorted(n for n in NODES if n != follower)
        node = self.network.nodes[follower]
        for d in (node.submit([put("k", "1")]), node.query(get("k"), Consistency.DEFAULT)):
            failure = self.result(d)
            self.assertIsInstance(failure, Failure)
            error = failure.value
            self.assertIsInstance(error, NoQuorum)
            self.assertEqual((error.code, error.status), ("no_quorum", 503))
            self.assertIn(f"no connection to {', '.join(others)}", error.message)
            self.assertIn("1 of 3", error.message)

    def test_strong_read_without_quorum_is_no_quorum(self) -> None:
        """A strong read on a node cut off from the others ends with no_quorum at its time
        limit, not with a timeout that invites a retry."""
        self.start_nodes()
        leader = self.leader()
        follower = next(n for n in NODES if n != leader)
        self.network.isolate(follower)
        failure = self.result(
            self.network.nodes[follower].query(get("k"), Consistency.STRONG, timeout=0.5)
        )
        self.assertIsInstance(failure, Failure)
        self.assertIsInstance(failure.value, NoQuorum)

    def test_election_under_way_is_no_leader(self) -> None:
        """Before the first election ends, every node reaches the others: no_leader, saying
        an election is under way (and not no_quorum)."""
        self.start_nodes(route_wait=0.0)
        failure = self.result(self.network.nodes["a"].submit([put("k", "1")]))
        self.assertIsInstance(failure, Failure)
        error = failure.value
        self.assertIsInstance(error, NoLeader)
        self.assertNotIsInstance(error, NoQuorum)
        self.assertEqual(error.code, "no_leader")
        self.assertIn("election is under way", error.message)


class MinIndexBeyondLogTests(DriverCluster):
    def setUp(self) -> None:
        self.start_nodes()
        self.leader_id = self.leader()
        self.follower_id = next(n for n in NODES if n != self.leader_id)
        results = self.result(self.network.nodes[self.leader_id].submit([put("k", "1")]))
        self.index = results[0].index
        self.advance(5 * TICK)

    def test_refused_at_once_on_leader_and_follower(self) -> None:
        """min_index beyond the leader's last index is a 400 min_index_beyond_log within a few
        ticks (the follower's ReadIndex round), for every consistency, on every node; never a
        504 after the read's time limit."""
        far = self.index + 1000
        for node_id in (self.leader_id, self.follower_id):
            for consistency in Consistency:
                box = outcome(
                    self.network.nodes[node_id].query(get("k"), consistency, min_index=far)
                )
                self.advance(10 * TICK)  # far less than the 2 s time limit
                self.assertEqual(len(box), 1, f"{node_id} {consistency} still waits")
                self.assertIsInstance(box[0], Failure)
                error = box[0].value
                self.assertIsInstance(error, MinIndexBeyondLog, (node_id, consistency))
                self.assertEqual((error.code, error.status), ("min_index_beyond_log", 400))
                self.assertIn(f"min_index={far}", error.message)

    def test_index_within_the_log_is_answered(self) -> None:
        """min_index equal to the last write's index is answered on every node."""
        for node_id in NODES:
            answer = self.result(
                self.network.nodes[node_id].query(get("k"), Consistency.WEAK, min_index=self.index)
            )
            self.assertFalse(isinstance(answer, Failure), f"{node_id}: {answer}")


class ForwardingFailureTests(DriverCluster):
    def setUp(self) -> None:
        self.logged: list[dict[str, Any]] = []
        observer: Any = self.logged.append
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def test_unforeseen_failure_names_its_cause_at_warning_level(self) -> None:
        """An exception the peer channel did not foresee (empty text) becomes forwarding_failed
        naming the exception's type, logged as a warning, never an Internal (which the API logs
        as a critical traceback) with an empty reason."""
        failure = remote_failure(Failure(RuntimeError()), "ritchie", lost=lambda: Timeout("x"))
        error: Any = failure.value
        self.assertIsInstance(error, ForwardingFailed)
        self.assertNotIsInstance(error, Internal)
        self.assertEqual((error.code, error.status), ("forwarding_failed", 502))
        self.assertIn("leader ritchie failed (RuntimeError)", error.message)
        events = [e for e in self.logged if "ritchie" in str(e.get("leader", ""))]
        self.assertEqual([e["log_level"] for e in events], [LogLevel.warn])

    def test_client_gone_and_lost_answers(self) -> None:
        """A cancelled call (the client went away) stays a CancelledError, dropped quietly by
        the API; a call that got no answer is the caller's ``lost`` error."""
        cancelled = remote_failure(Failure(CancelledError()), "r", lost=lambda: Timeout("x"))
        self.assertIsInstance(cancelled.value, CancelledError)
        lost = remote_failure(Failure(PeerUnavailable("r", "gone")), "r", lost=lambda: Timeout("x"))
        self.assertIsInstance(lost.value, Timeout)
        self.assertIsInstance(lost.value, GraftError)

    def test_new_codes_cross_the_peer_channel(self) -> None:
        """The leader's refusals keep their code and class on the follower that forwarded the
        request (they used to arrive as internal)."""
        for cls in (NoQuorum, Stale, MinIndexBeyondLog, MemberUnreachable):
            failure = remote_failure(
                Failure(RemoteError(cls.code, "why")), "r", lost=lambda: Timeout("x")
            )
            self.assertIsInstance(failure.value, cls)
            self.assertEqual(failure.value.message, "why")  # type: ignore[union-attr]
