"""The driver (graft.driver) in memory: three GraftNodes with real Raft cores, the kv FSM, an
in-memory network and a Clock. No sockets, no threads, no sleeps."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure

from graft.driver.port import CommandResult, Consistency, QueryResult
from graft.errors import BadRequest, GraftError, NoLeader, QueryTimeout, Stale, Timeout
from graft.fsm import QueryRejected, QueryTimedOut, StateMachine
from graft.fsm.kv import KeyValueStateMachine
from graft.raft.messages import AppendEntries, Heartbeat, HeartbeatResponse, Message
from graft.testing.kv import get, put
from graft.transport import RemoteError
from tests.support.driver import NODES, TICK, Channel, DriverCluster


class FailingFSM(KeyValueStateMachine):
    """Raises a non-rejection error on a poisoned command: a bug the node must not survive."""

    def apply(self, command: bytes, index: int) -> bytes:
        if command == b"poison":
            raise RuntimeError("FSM bug")
        return super().apply(command, index)


class DriverTests(DriverCluster):
    run_query: Any = None  # the driver's own query threads

    def make_fsm(self) -> StateMachine:
        return FailingFSM()

    def setUp(self) -> None:
        self.start_nodes(fsm=self.make_fsm, run_query=self.run_query)

    def test_command_on_leader_and_forwarded_from_follower(self) -> None:
        """A command on the leader resolves with the FSM's answer and its index; on a follower
        it is forwarded to the leader and resolves the same way."""
        leader = self.leader()
        follower = next(n for n in NODES if n != leader)
        first = self.result(self.network.nodes[leader].submit([put("k", "1")]))
        self.assertIsInstance(first, list)
        self.assertEqual(json.loads(first[0].output), {"prev": None})
        second = self.result(self.network.nodes[follower].submit([put("k", "2")]))
        self.assertIsInstance(second, list)
        self.assertIsInstance(second[0], CommandResult)
        self.assertEqual(json.loads(second[0].output), {"prev": "1"})
        self.assertGreater(second[0].index, first[0].index)
        self.assertEqual(second[0].leader, leader)

    def test_lost_connection_to_the_leader_shortens_the_election(self) -> None:
        """peer_lost (the transport's on_peer_lost) about the leader makes the followers
        campaign at the bottom of their timeout range: within 1.25 election timeouts of the
        last heartbeat, where their longest draws would have taken two. (They tick in lockstep
        here, so they may split this first vote; real processes tick out of phase.)"""
        leader = self.leader()
        self.advance(TICK * 3)
        followers = [n for n in NODES if n != leader]
        election_ticks = self.network.nodes[leader]._raft._cfg.election_ticks
        for n in followers:
            self.network.nodes[n]._raft._randomized_timeout = 2 * election_ticks - 1
        self.network.isolate(leader)
        with capturedLogs() as events:
            for n in followers:
                self.network.nodes[n].peer_lost(leader)
                self.network.nodes[n].peer_lost(leader)  # its other connection: said once
        said = [formatEvent(e) for e in events]
        self.assertEqual(len([t for t in said if "lost the connection to the leader" in t]), 2)
        term = self.network.nodes[leader]._raft.term
        self.advance(TICK * (election_ticks + election_ticks // 4 + 1))
        terms = [self.network.nodes[n]._raft.term for n in followers]
        self.assertEqual(terms, [term + 1, term + 1], "both followers campaigned")

    def test_batch_preserves_order_and_reports_rejections(self) -> None:
        """A batch becomes one entry per command, answered in order; a command the FSM rejects
        carries its error without failing the others."""
        leader = self.network.nodes[self.leader()]
        results = self.result(leader.submit([put("a", "1"), b"{not json", put("a", "2")]))
        self.assertEqual([r.index for r in results], sorted(r.index for r in results))
        self.assertIsNone(results[0].error)
        self.assertIsNotNone(results[1].error)
        self.assertEqual(json.loads(results[2].output), {"prev": "1"})

    def test_overwritten_proposal_fails_as_not_applied(self) -> None:
        """A proposal on a leader that is cut off before it commits is overwritten by the new
        leader's log after the partition heals: the client learns it was not applied (503),
        not a false success."""
        old = self.leader()
        self.network.isolate(old)
        pending = self.network.nodes[old].submit([put("lost", "x")])
        self.advance(3 * TICK)
        others = [n for n in NODES if n != old]
        self.advance(2.0)
        new = [n for n in others if self.network.nodes[n].is_leader()]
        self.assertEqual(len(new), 1)
        self.result(self.network.nodes[new[0]].submit([put("won", "y")]))
        self.network.heal()
        outcome = self.result(pending)
        self.assertIsInstance(outcome, Failure)
        self.assertIsInstance(outcome.value, (NoLeader, Timeout))
        read = self.result(self.network.nodes[new[0]].query(get("lost"), Consistency.STRONG))
        self.assertEqual(json.loads(read.output), {"value": None})
        if isinstance(outcome.value, Timeout):
            self.assertIn("unknown", outcome.value.message)

    def test_command_times_out_with_unknown_outcome(self) -> None:
        """A leader cut off from everyone cannot commit: the command fails with a timeout
        whose message says the outcome is unknown."""
        leader = self.leader()
        self.network.isolate(leader)
        outcome = self.result(self.network.nodes[leader].submit([put("t", "1")]), seconds=5)
        self.assertIsInstance(outcome, Failure)
        error = outcome.value
        self.assertIsInstance(error, GraftError)
        self.assertIn(error.code, ("timeout", "no_leader"))
        if error.code == "timeout":
            self.assertIn("unknown", error.message)

    def test_strong_read_on_follower_sees_acknowledged_write(self) -> None:
        """A strong read on a follower right after the leader acknowledged a write returns it:
        the follower waits for the leader's read index before answering."""
        leader = self.leader()
        follower = next(n for n in NODES if n != leader)
        for i in range(5):
            self.result(self.network.nodes[leader].submit([put("s", str(i))]))
            read = self.result(self.network.nodes[follower].query(get("s"), Consistency.STRONG))
            self.assertIsInstance(read, QueryResult)
            self.assertEqual(json.loads(read.output), {"value": str(i)})

    def test_default_read_uses_lease_on_leader(self) -> None:
        """A default read on the leader answers from its state under the lease, without a
        round trip, and sees its own acknowledged writes."""
        leader = self.network.nodes[self.leader()]
        self.result(leader.submit([put("d", "1")]))
        self.advance(10 * TICK)
        d = leader.query(get("d"), Consistency.DEFAULT)
        box: list[Any] = []
        d.addBoth(box.append)
        self.clock.advance(0)
        self.assertEqual(len(box), 1, "a lease read should not wait for a heartbeat round")
        self.assertEqual(json.loads(box[0].output), {"value": "1"})

    def test_weak_read_with_max_lag_refuses_isolated_follower(self) -> None:
        """A weak read with max_lag_ms on a follower that has not heard from the leader for
        longer than that is refused; without the bound it answers from local state."""
        leader = self.leader()
        follower = next(n for n in NODES if n != leader)
        self.result(self.network.nodes[leader].submit([put("w", "1")]))
        self.advance(5 * TICK)
        self.network.isolate(follower)
        self.advance(0.3)
        node = self.network.nodes[follower]
        stale = self.result(node.query(get("w"), Consistency.WEAK))
        self.assertEqual(json.loads(stale.output), {"value": "1"})
        refused = self.result(node.query(get("w"), Consistency.WEAK, max_lag_ms=100))
        self.assertIsInstance(refused, Failure)
        self.assertIsInstance(refused.value, Stale)

    def test_slow_disk_batches_proposals_into_one_write(self) -> None:
        """At most two writes are in flight (the next queues behind the current fsync); while
        both are, further proposals wait in the core and reach storage together in the next
        write (group commit). Every proposal is answered once its write is durable."""
        leader_id = self.leader()
        leader = self.network.nodes[leader_id]
        storage = self.storages[leader_id]
        storage.hold = True
        first = leader.submit([put("g", "0")])
        self.clock.advance(0)
        # The entry, then (the followers acknowledged it at once) the new commit index.
        self.assertEqual(len(storage.pending), 2, "the second write did not queue behind the first")
        rest = [leader.submit([put("g", str(i))]) for i in range(1, 20)]
        self.clock.advance(0)
        self.assertEqual(len(storage.pending), 2, "a third write started while two were in flight")
        storage.release()
        self.clock.advance(0)
        batch_sizes = [len(entries) for _, _, entries in storage.pending if entries]
        self.assertEqual(batch_sizes, [19])
        storage.hold = False
        storage.release()
        for d in [first, *rest]:
            self.assertIsInstance(self.result(d), list)

    def test_readies_finish_in_the_order_they_were_taken(self) -> None:
        """With two writes in flight, a later write that becomes durable first does not let its
        Ready overtake: nothing is applied or acknowledged until the earlier write is durable."""
        leader_id = self.leader()
        leader = self.network.nodes[leader_id]
        storage = self.storages[leader_id]
        storage.hold = True
        first = leader.submit([put("o", "0")])
        self.clock.advance(0)
        second = leader.submit([put("o", "1")])
        self.clock.advance(0)
        self.assertEqual(len(storage.pending), 2)
        (d1, hs1, e1), (d2, hs2, e2) = storage.pending
        storage.pending = []
        storage.hold = False
        # The second write completes first (as a storage that reorders would): held back.
        self.advance(5 * TICK)
        self.assertFalse(first.called)
        self.assertFalse(second.called)
        storage._write(hs1, e1)
        storage._write(hs2, e2)
        d2.callback(None)
        self.advance(5 * TICK)
        self.assertFalse(first.called, "a Ready finished before the one taken before it")
        self.assertFalse(second.called, "a Ready finished before the one taken before it")
        d1.callback(None)
        self.advance(5 * TICK)
        self.assertIsInstance(self.result(first), list)
        self.assertIsInstance(self.result(second), list)

    def test_durable_committed_entries_are_answered_before_the_next_write(self) -> None:
        """A proposal whose entry is durable on the leader is applied and answered as soon as
        it commits: the Ready that carries the commit does not make it wait for its own write
        (which may be a long fsync of later proposals). An entry not yet durable here waits."""
        leader_id = self.leader()
        leader = self.network.nodes[leader_id]
        storage = self.storages[leader_id]
        storage.hold = True
        self.network.isolate(leader_id)  # no acknowledgement until the entry is durable here
        answer = leader.submit([put("e", "1")])
        self.clock.advance(0)
        self.assertEqual(len(storage.pending), 1)
        storage.release()  # the entry is durable on the leader; later writes are held
        self.clock.advance(0)
        self.assertFalse(answer.called, "answered before a quorum had the entry")
        self.network.heal()
        self.advance(3 * TICK)
        self.assertTrue(storage.pending, "the Ready with the new commit index was not held")
        self.assertIsInstance(self.result(answer), list)

        late = leader.submit([put("e", "2")])
        self.advance(3 * TICK)  # committed by the followers, but not durable on the leader
        self.assertFalse(late.called, "applied an entry this node's disk does not hold yet")
        storage.hold = False
        storage.release()
        self.advance(TICK)
        self.assertIsInstance(self.result(late), list)

    def test_commit_is_answered_before_the_commit_index_is_sent(self) -> None:
        """When a leader's Ready carries a commit but no new entries, the client is answered
        before the followers are sent the new commit index: that answer waits for no send."""
        leader = self.network.nodes[self.leader()]
        channel = leader.peers
        assert isinstance(channel, Channel)
        answer = leader.submit([put("o", "1")])
        # (commit index carried, whether the client had its answer when it was sent)
        sent: list[tuple[int, bool]] = []

        def send_all(messages: Sequence[Message]) -> None:
            for message in messages:
                if isinstance(message, AppendEntries | Heartbeat) and not getattr(
                    message, "entries", ()
                ):
                    sent.append((message.commit, answer.called))
            Channel.send_all(channel, messages)

        channel.send_all = send_all  # type: ignore[method-assign]
        results = self.result(answer)
        index = results[0].index
        carrying = [answered for commit, answered in sent if commit >= index]
        self.assertTrue(carrying, "the new commit index was never sent")
        self.assertTrue(all(carrying), "the commit index left before the client's answer")

    def test_fsm_bug_stops_the_node(self) -> None:
        """An FSM exception other than CommandRejected stops the node (replicas would diverge
        otherwise): it applies nothing more, and the error is logged."""
        leader_id = self.leader()
        leader = self.network.nodes[leader_id]
        leader.submit([b"poison"]).addErrback(lambda _: None)
        self.advance(10 * TICK)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 3)
        for node in self.network.nodes.values():
            self.assertTrue(node.stopping)

    def test_stalled_leader_does_not_trust_its_lease(self) -> None:
        """A leader whose reactor stalls (one big clock jump, as after SIGSTOP) ticks for every
        interval it missed, so its lease has expired when it wakes: a default read then needs a
        quorum, which an isolated leader cannot get, instead of answering from a stale lease."""
        leader_id = self.leader()
        leader = self.network.nodes[leader_id]
        self.result(leader.submit([put("l", "1")]))
        self.advance(10 * TICK)
        fresh = leader.query(get("l"), Consistency.DEFAULT)
        self.clock.advance(0)
        self.assertTrue(fresh.called, "a fresh lease should answer at once")
        self.network.isolate(leader_id)
        self.clock.advance(2.0)
        box: list[Any] = []
        leader.query(get("l"), Consistency.DEFAULT).addBoth(box.append)
        self.clock.advance(0)
        self.assertEqual(box, [], "answered from a lease that expired during the stall")
        self.advance(3.0)
        self.assertEqual(len(box), 1)
        self.assertIsInstance(box[0], Failure)

    def test_forwarded_batch_with_too_large_results_says_it_was_applied(self) -> None:
        """When the leader applied a forwarded batch but its results exceed the peer frame limit
        (the transport answers `answer_too_large`), the follower's client gets a 502
        `answer_too_large` saying the batch was applied and not to resend it, not a 500."""
        leader = self.leader()
        follower = next(n for n in NODES if n != leader)
        node = self.network.nodes[follower]
        channel = node.peers
        assert isinstance(channel, Channel)

        def call(peer: str, command: str, args: dict[str, Any], **kw: Any) -> Deferred[Any]:
            done = Channel.call(channel, peer, command, args, **kw)

            def too_large(_: object) -> None:
                raise RemoteError(
                    "answer_too_large",
                    f"the answer to {command} is 17000000 bytes, over the peer frame limit of "
                    "16777216; the request itself was carried out",
                )

            return done.addCallback(too_large)

        channel.call = call  # type: ignore[method-assign]
        outcome = self.result(node.submit([put("big", "1")]))
        self.assertIsInstance(outcome, Failure)
        error = outcome.value
        self.assertIsInstance(error, GraftError)
        self.assertEqual((error.code, error.status), ("answer_too_large", 502))
        self.assertIn(f"the leader {leader} applied the batch of 1 commands", error.message)
        self.assertIn("do not resend it", error.message)
        read = self.result(self.network.nodes[leader].query(get("big"), Consistency.STRONG))
        self.assertEqual(json.loads(read.output), {"value": "1"})

    def test_read_confirmed_in_the_step_down_ready_is_answered(self) -> None:
        """A strong read whose round a quorum answered is answered with its value even when
        the same Ready steps the leader down (a newer term arrived in the same turn): it was
        confirmed while this node led, so it is linearizable; only unconfirmed reads fail."""
        leader_id = self.leader()
        leader = self.network.nodes[leader_id]
        self.result(leader.submit([put("r", "1")]))
        self.network.isolate(leader_id)
        confirmed = leader.query(get("r"), Consistency.STRONG)
        self.clock.advance(0)  # the Ready that sends the read's round (lost: isolated)
        round_seq = leader._raft._hb_seq
        term = leader._raft.term
        f1, f2 = (n for n in NODES if n != leader_id)
        unconfirmed = leader.query(get("r"), Consistency.STRONG)  # waits for the next round
        # In one turn: f1 answers the round, then f2 shows a newer term.
        leader.receive(HeartbeatResponse(term=term, sender=f1, to=leader_id, seq=round_seq))
        leader.receive(Heartbeat(term=term + 1, sender=f2, to=leader_id, commit=0, seq=1))
        self.clock.advance(0)
        self.assertFalse(leader.is_leader())
        answer = self.result(confirmed)
        self.assertIsInstance(answer, QueryResult)
        self.assertEqual(json.loads(answer.output), {"value": "1"})
        refused = self.result(unconfirmed)
        self.assertIsInstance(refused, Failure)
        self.assertIsInstance(refused.value, NoLeader)


class ThreadedFSM(FailingFSM):
    """kv with query_in_thread, as the SQLite FSM has it: the driver must answer queries
    through it (here called at once, in place of a thread), with the read's deadline."""

    def __init__(self) -> None:
        super().__init__()
        self.time_left: list[float] = []  # the deadline of each call, as seconds left

    def query_in_thread(self, query: bytes, deadline: float) -> bytes:
        self.time_left.append(deadline - time.monotonic())
        if query == b"endless":
            raise QueryTimedOut("the query ran past its deadline and was stopped")
        if query == b"write":
            raise QueryRejected("a query must be read-only")
        return self.query(query)


def _at_once(f: Callable[..., Any], *args: Any) -> Deferred[Any]:
    return maybeDeferred(f, *args)


class ThreadedQueryDriverTests(DriverTests):
    """Every driver test again, with an FSM that offers query_in_thread; and its time limit."""

    run_query = staticmethod(_at_once)

    def make_fsm(self) -> StateMachine:
        # start_nodes builds the nodes in NODES order.
        fsm = self.fsms[NODES[len(self.fsms)]] = ThreadedFSM()
        return fsm

    def setUp(self) -> None:
        self.fsms: dict[str, ThreadedFSM] = {}
        super().setUp()

    def test_reads_go_through_query_in_thread(self) -> None:
        """Reads at every consistency are answered by query_in_thread, with the default limit
        (query_timeout, 2 s here) as their deadline."""
        leader = self.leader()
        self.result(self.network.nodes[leader].submit([put("q", "1")]))
        for consistency in Consistency:
            read = self.result(self.network.nodes[leader].query(get("q"), consistency))
            self.assertEqual(json.loads(read.output), {"value": "1"})
        left = self.fsms[leader].time_left
        self.assertEqual(len(left), 3)
        for seconds in left:
            self.assertTrue(0 < seconds <= 2.0, seconds)

    def test_query_stopped_at_its_limit_is_query_timeout(self) -> None:
        """A query the FSM stops at its deadline fails with QueryTimeout (504 query_timeout),
        whose message names the read's limit and how to raise it; the node goes on."""
        leader = self.leader()
        node = self.network.nodes[leader]
        outcome = self.result(node.query(b"endless", Consistency.STRONG, timeout=0.25))
        self.assertIsInstance(outcome, Failure)
        error = outcome.value
        self.assertIsInstance(error, QueryTimeout)
        self.assertEqual((error.code, error.status), ("query_timeout", 504))
        self.assertIn("time limit of 0.25 s", error.message)
        self.assertIn("?timeout=", error.message)
        self.assertIn("api.max_query_timeout_ms", error.message)
        refused = self.result(node.query(b"write", Consistency.WEAK))
        self.assertIsInstance(refused.value, BadRequest)
        self.result(node.submit([put("after", "1")]))
        self.assertEqual(node._metrics.query_timeouts._value.get(), 1)
        self.assertEqual(node._metrics.queries_in_threads._value.get(), 0)

    def test_timeout_travels_with_a_forwarded_read(self) -> None:
        """A default read on a follower runs on the leader with the time limit the client asked
        for, and a QueryTimeout there comes back as QueryTimeout."""
        leader = self.leader()
        follower = next(n for n in NODES if n != leader)
        node = self.network.nodes[follower]
        self.result(node.query(get("x"), Consistency.DEFAULT, timeout=30.0))
        (left,) = self.fsms[leader].time_left
        self.assertTrue(2.0 < left <= 30.0, left)
        self.assertEqual(self.fsms[follower].time_left, [])
        outcome = self.result(node.query(b"endless", Consistency.DEFAULT, timeout=30.0))
        self.assertIsInstance(outcome.value, QueryTimeout)
        self.assertIn("time limit of 30 s", outcome.value.message)

    def test_forwarded_time_limit_is_checked(self) -> None:
        """A forwarded time limit that is not a positive number of seconds is ignored (the
        leader's default applies), and one above the leader's maximum is cut to it."""
        leader = self.leader()
        node = self.network.nodes[leader]
        for too_long in (10**30, float("inf"), 61.0):
            self.result(
                node.handle_request(
                    "b",
                    "forward_query_within",
                    {"query": get("x"), "consistency": "default", "timeout": too_long},
                )
            )
            self.assertTrue(2.0 < self.fsms[leader].time_left[-1] <= 60.0)
        for bad in (None, "30", True, -1, 0, float("nan"), [1]):
            answer = self.result(
                node.handle_request(
                    "b",
                    "forward_query_within",
                    {"query": get("x"), "consistency": "default", "timeout": bad},
                )
            )
            self.assertEqual(answer["output"], b'{"value":null}')
            self.assertTrue(0 < self.fsms[leader].time_left[-1] <= 2.0)


class WallStepClock(Clock):
    """A reactor clock whose seconds() is the wall clock: ``monotonic`` plus a step offset.
    Delayed calls are timed on seconds(), as the real reactor's are, so a step back holds
    them back and a step forward fires them at once; ``monotonic`` moves only by advance()."""

    def __init__(self) -> None:
        super().__init__()
        self.offset = 0.0

    def seconds(self) -> float:
        return self.rightNow + self.offset

    def monotonic(self) -> float:
        return self.rightNow


class WallClockStepTests(DriverTests):
    """NTP steps the wall clock; the driver's ticks and lease follow the monotonic clock."""

    def setUp(self) -> None:
        self.wall = WallStepClock()
        self.start_nodes(clock=self.wall, fsm=FailingFSM, monotonic=self.wall.monotonic)

    def test_lease_ends_on_time_after_wall_step_back(self) -> None:
        """The leader is cut off and its wall clock steps back 2 s: its reactor timers wait for
        the step, but once the lease's 210 ms of monotonic time have passed a default read no
        longer answers from the lease (the other nodes may have committed newer writes)."""
        leader_id = self.leader()
        leader = self.network.nodes[leader_id]
        self.result(leader.submit([put("l", "1")]))
        self.advance(10 * TICK)
        fresh = leader.query(get("l"), Consistency.DEFAULT)
        self.clock.advance(0)
        self.assertTrue(fresh.called, "a fresh lease should answer at once")
        self.network.isolate(leader_id)
        self.wall.offset -= 2.0
        self.advance(0.4)  # > 350 ms of monotonic time, < the 2 s step
        box: list[Any] = []
        leader.query(get("l"), Consistency.DEFAULT).addBoth(box.append)
        self.clock.advance(0)
        self.assertEqual(box, [], "answered from a lease that ended on the monotonic clock")
        self.advance(3.0)
        self.assertEqual(len(box), 1)
        self.assertIsInstance(box[0], Failure)

    def test_wall_step_forward_fires_no_tick_burst(self) -> None:
        """A step forward of 1 s fires the pending timers at once, but no node ticks more than
        the monotonic time allows: the leader keeps its term, the followers their patience."""
        leader_id = self.leader()
        self.advance(5 * TICK)
        before = {n: node._raft._ticks for n, node in self.network.nodes.items()}
        term = self.network.nodes[leader_id]._raft.term
        self.wall.offset += 1.0
        self.clock.advance(0)
        self.clock.advance(0)
        after = {n: node._raft._ticks for n, node in self.network.nodes.items()}
        for n in NODES:
            self.assertLessEqual(after[n] - before[n], 1, f"{n} ticked a burst")
        self.advance(20 * TICK)
        self.assertTrue(self.network.nodes[leader_id].is_leader())
        self.assertEqual(self.network.nodes[leader_id]._raft.term, term)
