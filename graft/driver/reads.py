# mypy: disable-error-code="no-untyped-call"
"""Reads: weak (this node's state), default (the leader's lease, else a quorum), strong
(ReadIndex); each within its time limit, in a query thread for FSMs that offer one."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from graft.driver.clock import ReactorTime
from graft.driver.forwarding import Forwarder, forwarded_time_limit
from graft.driver.fsm_work import FsmWork
from graft.driver.lifecycle import Lifecycle, Scheduler
from graft.driver.outcomes import failed
from graft.driver.port import Consistency, QueryResult
from graft.driver.settings import DriverSettings
from graft.driver.ticks import Ticks
from graft.errors import (
    BadRequest,
    MinIndexBeyondLog,
    NoLeader,
    Overloaded,
    QueryTimeout,
    Stale,
    Timeout,
    shutting_down,
)
from graft.fsm import QueryRejected, QueryTimedOut, StateMachine, threaded_query
from graft.metrics import NodeMetrics
from graft.raft.config import LATE_TICKS
from graft.raft.messages import AppendEntries, Heartbeat, Message
from graft.raft.node import RaftNode
from graft.raft.ready import Ready, Role
from graft.waiters import IndexWaiters

# Runs a query function in a query thread: (function, *args) -> its result.
RunQuery = Callable[..., Deferred[Any]]


@dataclass(frozen=True, slots=True)
class TimeLimit:
    """A read's time limit: its length, and when it ends on the reactor's clock."""

    seconds: float
    deadline: float


def query_pool(threads: int) -> ThreadPool:
    """The threads FSMs with query_in_thread (SQLite) answer in, so a heavy query never holds
    the reactor thread; a dedicated pool, so queries cannot starve snapshots."""
    pool = ThreadPool(minthreads=0, maxthreads=max(1, threads), name="graft-query")
    # Daemon threads: a query stuck in SQLite must not keep a stopping process alive.
    pool.threadFactory = _daemon_thread  # type: ignore[assignment]
    return pool


class Reads:
    def __init__(
        self,
        *,
        raft: RaftNode,
        fsm: StateMachine,
        clock: ReactorTime,
        ticks: Ticks,
        pipeline: Scheduler,
        applied: IndexWaiters,
        forwarder: Forwarder,
        lifecycle: Lifecycle,
        metrics: NodeMetrics,
        settings: DriverSettings,
        run_query: RunQuery,
        fsm_work: FsmWork | None = None,
    ) -> None:
        self._raft = raft
        self._fsm = fsm
        self._clock = clock
        self._ticks = ticks
        self._pipeline = pipeline
        self._applied = applied
        self._forwarder = forwarder
        self._lifecycle = lifecycle
        self._metrics = metrics
        self._settings = settings
        self._run_query = run_query
        self._fsm_work = fsm_work
        # Reads waiting for a quorum's confirmation, by their read context.
        self.pending: dict[bytes, Deferred[int]] = {}
        # Read contexts differ between runs of this node, so that a leader's answer to a read
        # of an earlier run can never be taken for one of this run.
        self._prefix = os.urandom(6).hex().encode()
        self._ids = itertools.count(1)
        self._last_leader_contact = 0.0

    def heard(self, message: Message) -> None:
        """A message arrived: a leader's append or heartbeat counts as contact (max_lag_ms)."""
        if isinstance(message, AppendEntries | Heartbeat) and message.term >= self._raft.term:
            self._last_leader_contact = self._ticks.now()

    def query(
        self,
        query: bytes,
        consistency: Consistency,
        *,
        min_index: int | None = None,
        max_lag_ms: int | None = None,
        forwarded: bool = False,
        timeout: float | None = None,
    ) -> Deferred[QueryResult]:
        if self._lifecycle.stopping:
            return failed(shutting_down())
        self._metrics.reads.labels(consistency=consistency.value).inc()
        # The read's time limit, from now: waiting for a quorum, for the apply, for a query
        # thread, and running the query all count.
        seconds = self._settings.query_timeout if timeout is None else timeout
        limit = TimeLimit(seconds=seconds, deadline=self._clock.seconds() + seconds)
        if min_index is not None and self._raft.role is Role.LEADER:
            # The leader knows every index there is: beyond its log, waiting cannot help.
            beyond = self._beyond_log(min_index, 0)
            if beyond is not None:
                return failed(beyond)
        if consistency is Consistency.WEAK:
            return self._weak_read(query, min_index, max_lag_ms, limit)
        if consistency is Consistency.DEFAULT:
            if self._raft.role is not Role.LEADER and not forwarded:
                return self._forward(query, consistency, min_index, timeout)
            # The core's ticks catch up with the monotonic clock first, so the lease is judged
            # on the time that really passed. The lateness guard stays as a defence: should
            # the ticks not have caught up, the lease may have expired unseen, so confirm with
            # a quorum (the lease's margin allows LATE_TICKS of lateness, graft/raft/config).
            if self._ticks.catch_up():
                self._pipeline.schedule()
            late = self._ticks.late(LATE_TICKS)
            lease_index = None if late else self._raft.lease_read_index()
            if lease_index is not None:
                return self._read_at(query, max(lease_index, min_index or 0), limit)
        return self._linearizable_read(query, min_index, limit)

    def forwarded(self, peer: str, args: dict[str, Any]) -> Deferred[dict[str, Any]]:
        """forward_query and forward_query_within: a follower's read, on this leader."""
        d: Deferred[Any] = self.query(
            bytes(args["query"]),
            Consistency(args["consistency"]),
            min_index=args.get("min_index"),
            forwarded=True,
            timeout=forwarded_time_limit(args.get("timeout"), self._settings.query_time_limit),
        )
        return d.addCallback(lambda r: {"output": r.output, "applied_index": r.applied_index})

    def _forward(
        self, query: bytes, consistency: Consistency, min_index: int | None, timeout: float | None
    ) -> Deferred[QueryResult]:
        def route(leader: str) -> Deferred[QueryResult]:
            if leader == self._raft.id:
                return self.query(
                    query, consistency, min_index=min_index, forwarded=True, timeout=timeout
                )
            return self._forwarder.query_on(leader, query, consistency, min_index, timeout)

        routed: Deferred[Any] = self._forwarder.route_to_leader()
        return routed.addCallback(route)

    def _weak_read(
        self, query: bytes, min_index: int | None, max_lag_ms: int | None, limit: TimeLimit
    ) -> Deferred[QueryResult]:
        if max_lag_ms is not None and self._raft.role is not Role.LEADER:
            stale = self._stale(max_lag_ms)
            if stale is not None:
                return failed(stale)
        if min_index is not None and min_index > self._known_index():
            # Beyond what this follower holds: the leader's commit index (as for ReadIndex)
            # tells a write it has not received yet from an index nobody has.
            return self._confirm(min_index, limit).addCallback(
                lambda index: self._read_at(query, index, limit)
            )
        return self._read_at(query, min_index or 0, limit)

    def _stale(self, max_lag_ms: int) -> Stale | None:
        """max_lag_ms means one thing: how long ago this node last heard from a leader (an
        append or a heartbeat of the current term). The leader is never stale."""
        since = (self._ticks.now() - self._last_leader_contact) * 1000
        if self._raft.leader is not None and since <= max_lag_ms:
            return None
        heartbeat = self._settings.tick_seconds * 1000
        heard = "knows no leader" if self._raft.leader is None else "last heard from a leader"
        return Stale(
            f"{self._raft.id} {heard} {since:.0f} ms ago, more than max_lag_ms={max_lag_ms} "
            f"(leaders send a heartbeat every {heartbeat:g} ms); ask the leader or another "
            "node, or allow more lag"
        )

    def _known_index(self) -> int:
        """The highest index this node knows the cluster has: its own last log index (a
        follower holds what a leader sent it) or what it has applied."""
        return max(self._raft.log.last_index(), self._applied.applied)

    def _beyond_log(self, min_index: int, confirmed: int) -> MinIndexBeyondLog | None:
        """The refusal of a ``min_index`` beyond the cluster's log: past both the commit index a
        leader ``confirmed`` and every index this node holds."""
        known = max(confirmed, self._known_index())
        if min_index <= known:
            return None
        return MinIndexBeyondLog(
            f"min_index={min_index} is beyond the cluster's log (its last index is {known}): "
            "no write has that index yet; pass the index a write was answered with"
        )

    def _confirm(self, min_index: int, limit: TimeLimit) -> Deferred[int]:
        """The leader's commit index, learned by ReadIndex: min_index if it is within the
        cluster's log (the index to wait for), else fail with MinIndexBeyondLog."""

        def check(index: int) -> int:
            beyond = self._beyond_log(min_index, index)
            if beyond is not None:
                raise beyond
            return min_index

        d = self._read_index(limit)
        return d.addCallback(check)

    def _linearizable_read(
        self, query: bytes, min_index: int | None, limit: TimeLimit
    ) -> Deferred[QueryResult]:
        def confirmed(index: int) -> Any:
            if min_index is not None and (beyond := self._beyond_log(min_index, index)):
                raise beyond
            return self._read_at(query, max(index, min_index or 0), limit)

        return self._read_index(limit).addCallback(confirmed)

    def _read_index(self, limit: TimeLimit) -> Deferred[int]:
        """A ReadIndex round: the leader's commit index once a quorum confirmed it led."""
        if len(self.pending) >= self._applied.limit:
            return failed(self._too_many_reads())
        context = b"%s.%d" % (self._prefix, next(self._ids))
        d: Deferred[Any] = Deferred()
        self.pending[context] = d

        def expire() -> None:
            if self.pending.pop(context, None) is d and not d.called:
                lost = self._forwarder.quorum_lost()
                d.errback(
                    lost or Timeout("the read could not be confirmed by a quorum in time; retry")
                )

        timer = self._clock.callLater(self._time_left(limit), expire)

        def settled(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            return result

        d.addBoth(settled)
        self._raft.read_index(context)
        self._pipeline.want_early()
        self._pipeline.schedule()
        return d

    def _too_many_reads(self) -> Overloaded:
        return Overloaded(
            f"{len(self.pending)} reads are waiting for a quorum's confirmation on "
            f"{self._raft.id}, its limit (api.limits.max_read_waiters): retry shortly"
        )

    def _retry(self, context: bytes) -> None:
        waiter = self.pending.get(context)
        if waiter is None or waiter.called or self._lifecycle.stopping:
            return
        self._raft.read_index(context)
        self._pipeline.want_early()
        self._pipeline.schedule()

    def answer_confirmed(self, ready: Ready) -> None:
        """Hand out the reads this Ready confirms before a step-down in it fails the rest.

        A read index in a Ready was confirmed while this node led (a quorum answered a round
        sent after the read arrived; the core fails, with no index, what it had not confirmed
        when it stepped down), so it stays a linearizable point: the read runs once this node
        has applied up to it, whatever its role by then."""
        for read in ready.read_states:
            if read.index is None:
                continue
            waiter = self.pending.pop(read.context, None)
            if waiter is not None and not waiter.called:
                waiter.callback(read.index)

    def leadership_lost(self) -> None:
        """Reads waiting on this node's leadership cannot be confirmed any more."""
        for context, d in list(self.pending.items()):
            if not d.called:
                d.errback(NoLeader("leadership was lost; retry the read"))
            del self.pending[context]

    def on_read_states(self, ready: Ready) -> None:
        for read in ready.read_states:
            waiter = self.pending.pop(read.context, None)
            if waiter is None or waiter.called:
                continue
            if read.index is None:
                # Refused for now (no leader yet, or a new leader that has not committed in its
                # term): ask again next tick; the read's own deadline bounds the retries.
                self.pending[read.context] = waiter
                self._clock.callLater(self._settings.tick_seconds, self._retry, read.context)
            else:
                waiter.callback(read.index)

    def fail_all(self) -> None:
        """The node stops: every read still waiting for a quorum fails."""
        for d in list(self.pending.values()):
            if not d.called:
                d.errback(shutting_down())
        self.pending.clear()

    def _read_at(self, query: bytes, index: int, limit: TimeLimit) -> Deferred[QueryResult]:
        d: Deferred[Any] = self._applied.wait(
            self._after_restores(index),
            self._time_left(limit),
            lambda: self._not_applied(index),
        )

        def run(applied: int) -> QueryResult | Deferred[QueryResult]:
            in_thread = threaded_query(self._fsm)
            if in_thread is not None:
                return self._query_in_thread(in_thread, query, applied, limit)
            try:
                output = self._fsm.query(query)
            except QueryRejected as e:
                raise BadRequest(str(e)) from None
            return QueryResult(output=output, applied_index=applied, leader=self._raft.leader)

        d.addCallback(run)
        return d

    def _after_restores(self, index: int) -> int:
        """The applied index a read at ``index`` waits for: while the FSM is restored from a
        snapshot (graft.driver.fsm_work), at least that snapshot's, so no read sees the FSM
        before the restore is done."""
        if self._fsm_work is not None and self._fsm_work.restoring:
            return max(index, self._fsm_work.restoring_to)
        return index

    def _not_applied(self, index: int) -> Timeout:
        if self._fsm_work is not None and self._fsm_work.restoring:
            return Timeout(
                f"{self._raft.id} is still restoring its state from snapshot "
                f"{self._fsm_work.restoring_to} sent by the leader; retry, or read from "
                "another node"
            )
        return Timeout(f"{self._raft.id} did not apply up to index {index} in time; retry")

    def _time_left(self, limit: TimeLimit) -> float:
        left: float = limit.deadline - self._clock.seconds()
        return max(0.0, left)

    def _query_in_thread(
        self,
        in_thread: Callable[[bytes, float], bytes],
        query: bytes,
        applied: int,
        limit: TimeLimit,
    ) -> Deferred[QueryResult]:
        """Run the query in a query thread; its read starts there, after everything applied up
        to now (``applied``), so the answer is at least that fresh."""
        in_flight = self._metrics.queries_in_threads
        in_flight.inc()
        # The FSM measures its deadline on time.monotonic(), not on the reactor's clock.
        deadline = time.monotonic() + self._time_left(limit)
        d: Deferred[Any] = self._run_query(in_thread, query, deadline)

        def answered(output: bytes) -> QueryResult:
            in_flight.dec()
            return QueryResult(output=output, applied_index=applied, leader=self._raft.leader)

        def refused(failure: Failure) -> Failure:
            in_flight.dec()
            if self._lifecycle.stopping:
                return Failure(shutting_down())
            if failure.check(QueryRejected):
                return Failure(BadRequest(str(failure.value)))
            if failure.check(QueryTimedOut):
                self._metrics.query_timeouts.inc()
                return Failure(QueryTimeout(_query_timeout_message(limit.seconds)))
            return failure

        return d.addCallbacks(answered, refused)


def _daemon_thread(*args: Any, **kwargs: Any) -> threading.Thread:
    return threading.Thread(*args, daemon=True, **kwargs)


def _query_timeout_message(limit: float) -> str:
    return (
        f"the query was stopped at its time limit of {limit:g} s and changed nothing; give "
        "it more time with ?timeout= (e.g. ?timeout=30s, up to the node's "
        "api.max_query_timeout_ms) or make it cheaper (a WHERE on an indexed column, a LIMIT)"
    )
