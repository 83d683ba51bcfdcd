# mypy: disable-error-code="no-untyped-call"
"""The driver: runs a RaftNode on the reactor and connects it to storage, peers and the FSM.

One loop does everything the core asks, in the order of the Ready contract:

    ready = raft.ready()
    storage.persist(hard_state, entries)    # group commit, fsync off the reactor thread
      -> send messages                       # only once the state they depend on is durable
      -> apply committed entries to the FSM, resolve proposals, answer reads
      -> raft.advance(ready)

Up to two Readies are in flight: the next Ready's writes queue behind the current fsync (the
storage writer keeps them in order) rather than waiting for it, and every Ready finishes, in
the order taken, only once its own writes and all earlier ones are durable. Proposals, ticks and
peer messages that arrive while both are in flight go into the core and come out together in
the next Ready, so the busier the node, the bigger each fsync's batch (group commit without a
timer). A Ready that installs a received snapshot is taken alone.

Clients reach the node through the ClusterBackend methods (graft.api.backend). A follower
forwards commands and default reads to the leader over the peer channel, so a client may talk
to any node.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol, cast

from prometheus_client import CollectorRegistry
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, DeferredList, succeed
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread, deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from graft.api.backend import (
    ClusterBackend,
    CommandResult,
    Consistency,
    QueryResult,
    make_command_result,
)
from graft.consistency import MARKER_PREFIX, DigestBook, summarize
from graft.errors import (
    AnswerTooLarge,
    BadRequest,
    FSMRejected,
    GraftError,
    Internal,
    NoLeader,
    NoSpace,
    NotFound,
    Overloaded,
    QueryTimeout,
    Timeout,
)
from graft.fsm import (
    CommandRejected,
    QueryRejected,
    QueryTimedOut,
    StateMachine,
    begin_digest,
    begin_snapshot,
    threaded_query,
)
from graft.metrics import NodeMetrics
from graft.origin import url_host
from graft.raft.config import LATE_TICKS
from graft.raft.errors import NotLeader, ProposalDropped
from graft.raft.messages import (
    AppendEntries,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    ReadIndexRequest,
)
from graft.raft.node import MembershipChangeRefused, RaftNode
from graft.raft.ready import Ready, Role, leaves_before_write, leaves_between_readies
from graft.raft.storage import LogStorage
from graft.raft.types import (
    Entry,
    EntryKind,
    HardState,
    MemberAddress,
    Membership,
    SnapshotMeta,
    decode_membership,
    membership_to_dict,
)
from graft.snapshot_transfer import LocalSnapshot, SnapshotReceiver, SnapshotSender
from graft.space import SPACE_REPORT, SpaceMonitor, SpaceQuota
from graft.storage.errors import SnapshotSuperseded
from graft.storage.rejected import RejectedEntry
from graft.tick_waker import TickWaker
from graft.transport import PeerUnavailable, RemoteError
from graft.waiters import IndexWaiters, ProposalWaiters

log = Logger(namespace="graft.node")


class DurableStorage(LogStorage, Protocol):
    def persist(self, hard_state: HardState | None, entries: Sequence[Entry]) -> Deferred[None]: ...

    @property
    def durable_index(self) -> int:
        """The last index whose entry is durable (``persist`` has fired for it)."""
        ...

    def save_snapshot(
        self, meta: SnapshotMeta, fsm_name: str, write: Callable[[BinaryIO], object]
    ) -> Any: ...

    def snapshot_info(self) -> Any: ...

    def compact(self, index: int, keep: int = 0) -> Deferred[None]: ...

    def install_snapshot(self, meta: SnapshotMeta, path: Path, fsm_name: str = "") -> Any: ...

    def close(self) -> Deferred[None]: ...


class PeerChannel(Protocol):
    """The part of graft.transport.PeerTransport the driver uses."""

    def send_all(self, messages: Sequence[Message]) -> None:
        """Send now, before returning: a Ready's messages to one peer as one write."""
        ...

    def call(
        self, peer: str, command: str, args: dict[str, Any], *, timeout: float | None = None
    ) -> Deferred[dict[str, Any]]: ...

    def connected_peers(self) -> set[str]: ...

    def update_peers(self, peers: Mapping[str, MemberAddress]) -> None: ...

    def admit_unlisted(self, admit: bool, members: Collection[str] = ()) -> None: ...


# Error codes that cross the peer channel in a forwarded call, back to their classes.
_ERRORS_BY_CODE: dict[str, type[GraftError]] = {
    cls.code: cls
    for cls in (BadRequest, NotFound, NoLeader, Timeout, QueryTimeout, Internal, Overloaded)
}
_ERRORS_BY_CODE[NoSpace.code] = NoSpace  # the leader's data dir is over its quota
_ERRORS_BY_CODE[AnswerTooLarge.code] = AnswerTooLarge  # done, but the answer cannot travel


class GraftNode(Service, ClusterBackend):
    """A Raft node on the reactor; implements the API's ClusterBackend."""

    def __init__(
        self,
        *,
        raft: RaftNode,
        storage: DurableStorage,
        fsm: StateMachine,
        clock: Any,
        tick_seconds: float,
        command_timeout: float,
        query_timeout: float,
        api_urls: dict[str, str],
        metrics: NodeMetrics | None = None,
        route_wait: float = 2.0,
        election_seconds: float | None = None,
        static_addresses: Mapping[str, MemberAddress] | None = None,
        bootstrap: Membership | None = None,
        api_scheme: str = "http",
        snapshot_entries: int = 0,
        snapshot_trailing: int = 0,
        fsm_name: str = "",
        catch_up_timeout: float = 120.0,
        run_in_thread: Callable[..., Deferred[Any]] | None = None,
        incoming_dir: Path | None = None,
        readies_in_flight: int = 2,
        check_timeout: float = 60.0,
        query_threads: int = 2,
        run_query: Callable[..., Deferred[Any]] | None = None,
        max_query_timeout: float = 60.0,
        monotonic: Callable[[], float] | None = None,
        tick_waker: bool = False,
    ) -> None:
        self._raft = raft
        self._storage = storage
        self._fsm = fsm
        self._clock = clock
        self._tick_seconds = tick_seconds
        self._init_monotonic_ticks(monotonic, tick_waker)
        self._command_timeout = command_timeout
        self._query_timeout = query_timeout
        self._api_urls = dict(api_urls)
        self._route_wait = route_wait
        self._metrics = metrics or NodeMetrics()
        self.peers: PeerChannel | None = None
        self._scheduled: Any = None
        self._leader_lost: tuple[int, str] | None = None  # last (term, leader) logged lost
        # Readies taken from the core whose writes are not all done, at most this many: the next
        # Ready's writes queue behind the current fsync instead of waiting for it (the writer
        # thread keeps them in order), and every Ready still finishes in the order it was taken.
        self._in_flight = 0
        self._max_in_flight = max(1, readies_in_flight)
        self._finished: Deferred[None] = succeed(None)  # fires when the last Ready taken is done
        # A call of _send_early on the next turn, while no Ready may be taken (see there), and
        # whether the core may hold messages for it: set by what makes heartbeats, their
        # answers or read-index traffic (a tick, such a message, a read), cleared when they
        # leave, so that appends and their answers under load cost no extra turn.
        self._early_scheduled: Any = None
        self._early_wanted = False
        # A Ready that installs a received snapshot is taken alone: storage adopts the
        # snapshot only when its turn comes, so nothing after it may be queued early.
        self._installing = False
        # Readies in flight whose committed entries wait for their write: while there are
        # any, later Readies apply after theirs too, so entries are applied in order.
        self._applies_waiting = 0
        # The first index of each queued write's entries, oldest first: a committed entry at
        # or above one of them may still be replaced on disk.
        self._writes_from: deque[int] = deque()
        self._stopping = False
        self._proposals = ProposalWaiters(clock)
        self._applied = IndexWaiters(clock, applied=raft.status().applied)
        self._reads: dict[bytes, Deferred[int]] = {}
        # Read contexts differ between runs of this node, so that a leader's answer to a read
        # of an earlier run can never be taken for one of this run.
        self._read_prefix = os.urandom(6).hex().encode()
        self._read_ids = itertools.count(1)
        self._proposed_at: dict[int, float] = {}
        self._last_leader_contact = 0.0
        self._leader = raft.leader
        self._role = raft.role
        self._durable_term = raft.term  # the term in storage's hard state
        self._election_seconds = election_seconds or 10 * tick_seconds
        self._static_addresses = dict(static_addresses or {})
        self._api_scheme = api_scheme
        self._catch_up_timeout = catch_up_timeout
        self._membership = raft.membership
        # The membership as of the applied index: what a snapshot taken now must record.
        snapshot = storage.snapshot_meta()
        self._applied_membership = (
            snapshot.membership if snapshot.index > 0 else (bootstrap or raft.membership)
        )
        self._snapshot_entries = snapshot_entries
        self._snapshot_trailing = snapshot_trailing
        self._snapshot_index = snapshot.index
        self._snapshotting: Deferred[dict[str, Any]] | None = None
        self._fsm_name = fsm_name
        self._run_in_thread = run_in_thread or _defer_to_thread
        self._forget_timer: Any = None
        self._sender = SnapshotSender(
            peers=lambda: self.peers,
            latest=self._latest_local_snapshot,
            report=self._report_snapshot,
            call_timeout=max(10.0, command_timeout),
        )
        self._receiver = (
            SnapshotReceiver(
                incoming_dir=incoming_dir,
                current_term=lambda: self._raft.term,
                current_leader=lambda: self._raft.leader,
                deliver=self.receive,
                node_id=raft.id,
            )
            if incoming_dir is not None
            else None
        )
        self._max_catch_up_ticks = 2 * max(1, round(self._election_seconds / tick_seconds)) + 2
        self._init_checks(check_timeout)
        # Entries an operator marked rejected with `graft skip-entry` (see skip_rejected_entries).
        self._rejected: dict[int, RejectedEntry] = {}
        self._space: SpaceMonitor | None = None  # the data dir's quota (see watch_space)
        self._space_reported_over = False  # the alarm this node last reported to the leader
        self._init_query_threads(query_threads, run_query)
        self._max_query_timeout = max(max_query_timeout, query_timeout)

    # -- service ---------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        st = self._raft.status()
        log.info(
            "node {id} starting in term {term}: log {first}..{last}, commit {commit}, "
            "members {members}",
            id=st.id,
            term=st.term,
            first=st.first_index,
            last=st.last_index,
            commit=st.commit,
            members=",".join(sorted(st.membership.voters)),
        )
        self._start_ticks()
        self._query_pool.start()
        self._schedule()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self._stopping = True
        self._stop_ticks()
        if self._scheduled is not None and self._scheduled.active():
            self._scheduled.cancel()
        if self._early_scheduled is not None and self._early_scheduled.active():
            self._early_scheduled.cancel()
        if self._forget_timer is not None and self._forget_timer.active():
            self._forget_timer.cancel()
        self._scheduled = None
        shutting_down = lambda: NoLeader("this node is shutting down; retry on another node")  # noqa: E731
        # A proposal already in the log may still commit (under another leader): unknown.
        self._proposals.fail_all(
            lambda: Timeout(
                "the node stopped before the command was applied; its outcome is unknown: it "
                "may still commit. Check with a query before retrying a non-idempotent command"
            )
        )
        self._applied.fail_all(shutting_down)
        for d in list(self._reads.values()):
            if not d.called:
                d.errback(shutting_down())
        self._reads.clear()
        pending: Deferred[None] = Deferred()
        self._finished.addBoth(pending.callback)

        def close(_: object) -> Deferred[None]:
            self._fsm.close()  # also stops the queries running in the query threads
            if not self._query_pool.joined:  # stopService may run twice (a fatal error, then stop)
                self._query_pool.stop()
            return self._storage.close()

        pending.addBoth(close)
        return pending

    # -- ticks on the monotonic clock --------------------------------------------------------
    #
    # Elapsed time is measured on a monotonic clock (time.monotonic() in production), never on
    # the reactor's seconds(), which is the wall clock: an NTP step must neither stop the
    # ticks (a leader's lease would outlive the followers' stickiness) nor fire a burst of
    # them (a follower's stickiness would end early). Tick k is due when k tick periods of
    # monotonic time have passed since the start; the reactor's timers only say "look now".

    def _init_monotonic_ticks(self, monotonic: Callable[[], float] | None, waker: bool) -> None:
        # Without a monotonic source (tests on a fake reactor) the reactor's clock is it.
        self._now: Callable[[], float] = monotonic or self._clock.seconds
        self._tick_origin = self._now()
        self._ticks_done = 0  # ticks due so far, as counted (not all run after a long stall)
        self._last_tick = self._tick_origin  # when ticks last caught up, monotonic
        self._tick_call: Any = None
        self._use_tick_waker = waker
        self._tick_waker: TickWaker | None = None

    def _start_ticks(self) -> None:
        self._tick_origin = self._now()
        self._ticks_done = 0
        self._last_tick = self._tick_origin
        self._schedule_tick()
        if self._use_tick_waker:
            self._tick_waker = TickWaker(
                self._clock, self._tick_seconds, self._ticks_overdue, self._on_tick_timer
            )
            self._tick_waker.start()

    def _stop_ticks(self) -> None:
        if self._tick_waker is not None:
            self._tick_waker.stop()
            self._tick_waker = None
        if self._tick_call is not None and self._tick_call.active():
            self._tick_call.cancel()
        self._tick_call = None

    def _ticks_due(self) -> int:
        # The epsilon keeps a timer that fires exactly on a boundary from missing it.
        return int((self._now() - self._tick_origin) / self._tick_seconds + 1e-9)

    def _ticks_overdue(self) -> bool:
        """A tick has been due for over half a period (the reactor's timer is late)."""
        next_due = self._tick_origin + (self._ticks_done + 1) * self._tick_seconds
        return self._now() > next_due + self._tick_seconds / 2

    def _catch_up_ticks(self) -> int:
        """Tick the core for every period that passed since the last catch-up; how many.

        Bounded: past two election timeouts, more ticks change nothing."""
        if self._stopping:
            return 0
        due = self._ticks_due()
        missed = due - self._ticks_done
        if missed <= 0:
            return 0
        self._ticks_done = due
        self._last_tick = self._now()
        for _ in range(min(missed, self._max_catch_up_ticks)):
            self._raft.tick()
        self._early_wanted = True  # the ticks may have made heartbeats that can leave early
        return missed

    def _on_tick_timer(self) -> None:
        self._tick_call = None
        if self._catch_up_ticks():
            self._schedule()
        self._schedule_tick()

    def _schedule_tick(self) -> None:
        if self._stopping:
            return
        if self._tick_call is not None and self._tick_call.active():
            self._tick_call.cancel()
        next_due = self._tick_origin + (self._ticks_done + 1) * self._tick_seconds
        # A wall clock stepped forward fires this early: nothing is due then, and it waits again.
        self._tick_call = self._clock.callLater(
            max(0.0, next_due - self._now()), self._on_tick_timer
        )

    # -- the Raft loop ---------------------------------------------------------------------

    def receive(self, message: Message) -> None:
        """A message from a peer (the transport's on_message)."""
        if self._stopping:
            return
        # Ticks already due count before the message: a follower's stickiness then starts
        # after it, never with a backlog of ticks that elapsed before it arrived.
        self._catch_up_ticks()
        if isinstance(message, AppendEntries | Heartbeat) and message.term >= self._raft.term:
            self._last_leader_contact = self._now()
        if isinstance(message, _MAKE_EARLY_MESSAGES):
            self._early_wanted = True
        self._raft.step(message)
        self._schedule()

    def peer_lost(self, peer: str) -> None:
        """An authenticated connection to ``peer`` closed (the transport's on_peer_lost): if
        it is the leader, it may have died, and the core stops waiting longer than it must."""
        if self._stopping:
            return
        lost = (self._raft.term, peer)
        if peer == self._raft.leader and not self.is_leader() and lost != self._leader_lost:
            self._leader_lost = lost  # both connections to it close: say it once
            log.info(
                "lost the connection to the leader {peer}: if it stays silent, this node "
                "campaigns one election timeout after it last heard from it",
                peer=peer,
            )
        self._raft.report_unreachable(peer)

    def _schedule(self) -> None:
        """Process the core's output on the next reactor turn, so a turn's work is batched."""
        if not self._may_take_ready():
            if self._early_wanted:
                self._schedule_early_sends()
            return
        if self._scheduled is not None:
            return
        if self._raft.has_ready():
            self._scheduled = self._clock.callLater(0, self._process_ready)

    def _process_ready(self) -> None:
        self._scheduled = None
        if not self._may_take_ready() or not self._raft.has_ready():
            return
        ready = self._raft.ready()
        self._early_wanted = False  # the Ready took every message
        # A leader's appends and heartbeats depend on no state of this Ready, only on its term,
        # which is already durable: send them now, so the leader's fsync and the followers'
        # run in parallel (thesis 10.2.1). The core counts the leader's own entries toward a
        # commit only once advance() says they are durable. Heartbeat answers and read-index
        # traffic claim nothing on disk either: they go now too, so a slow fsync does not
        # hold them back (docs/architecture.md, "Messages before writes").
        #
        # Entries go first, then the committed entries are applied (clients answered), then the
        # messages that only carry the commit index: at low load a commit's Ready carries no new
        # entries, and its client need not wait for those sends. All leave before the write
        # below wakes the storage thread, which would contend for the GIL with them.
        entries: list[Message] = []
        commit_only: list[Message] = []
        later: list[Message] = []
        for message in ready.messages:
            if leaves_before_write(message, self._durable_term):
                if isinstance(message, AppendEntries) and message.entries:
                    entries.append(message)
                else:
                    commit_only.append(message)
            else:
                later.append(message)
        peers = self.peers
        if entries and peers is not None:
            peers.send_all(entries)
        self._in_flight += 1
        self._installing = ready.snapshot is not None
        # Claimed now, so a newer snapshot completing meanwhile cannot remove this one's file.
        received = self._claim_received_snapshot(ready.snapshot)
        applied = self._apply_before_write(ready)
        if commit_only and peers is not None:
            peers.send_all(commit_only)
        write: Deferred[None] | None = None
        if ready.snapshot is None and (ready.hard_state is not None or ready.entries):
            # Queued now, behind the writes of the Readies still in flight.
            write = self._storage.persist(ready.hard_state, ready.entries)

        def writes(_: object) -> Deferred[None] | None:
            if self._stopping:  # after a fatal error: nothing more is acknowledged
                if write is not None:
                    write.addErrback(lambda _: None)
                return None
            if ready.snapshot is None:
                return write
            # A received snapshot replaces the log: install it only after every earlier write,
            # and write this Ready's state after it.
            d = self._install_snapshot(ready.snapshot, received)
            if ready.hard_state is not None or ready.entries:
                d.addCallback(lambda _: self._storage.persist(ready.hard_state, ready.entries))
            return d

        def finish(_: object) -> Deferred[None]:
            d: Deferred[None] = succeed(None)
            d.addCallback(writes)
            d.addCallback(lambda _: self._after_persist(ready, later, applied=applied))
            d.addErrback(self._fatal, "writing the Raft log")
            return d

        self._finished.addCallback(finish)

    def _apply_before_write(self, ready: Ready) -> bool:
        """Apply the Ready's committed entries now if this node's disk already holds them.

        They are committed (durable on a quorum) and durable here, and no write still queued
        (this Ready's included) replaces them, so the write concerns them in nothing; the
        client's answer then does not wait for the next fsync. The FSM is rebuilt from the
        snapshot and the log at start, so it never holds what the log lacks. True if applied.
        """
        entries = ready.committed_entries
        if ready.entries:
            self._writes_from.append(ready.entries[0].index)
        if not entries:
            return False
        last = entries[-1].index
        if (
            ready.snapshot is None
            and self._applies_waiting == 0
            and last <= self._storage.durable_index
            and (not self._writes_from or last < min(self._writes_from))
        ):
            self._apply(entries)
            return True
        self._applies_waiting += 1
        return False

    def _schedule_early_sends(self) -> None:
        """While no Ready may be taken (two wait on the disk, or a snapshot is installed), send
        the core's messages that wait on no write on the next reactor turn."""
        if self._early_scheduled is None and not self._stopping:
            self._early_scheduled = self._clock.callLater(0, self._send_early)

    def _send_early(self) -> None:
        self._early_scheduled = None
        if self._stopping or self.peers is None or self._may_take_ready():
            return  # (a Ready will carry them)
        self._early_wanted = False
        durable_term = self._durable_term
        messages = self._raft.take_messages(
            lambda message: leaves_between_readies(message, durable_term)
        )
        if messages:
            self.peers.send_all(messages)

    def _may_take_ready(self) -> bool:
        return not self._stopping and not self._installing and self._in_flight < self._max_in_flight

    def _claim_received_snapshot(self, meta: SnapshotMeta | None) -> Path | None:
        if meta is None or self._receiver is None:
            return None
        return self._receiver.take(meta)

    def _install_snapshot(self, meta: SnapshotMeta, path: Path | None) -> Deferred[None]:
        """The core restored from a snapshot the leader sent: make it this node's log and state
        before anything that depends on it (the acknowledgement) leaves."""
        if path is None:
            return _fail_with(
                RuntimeError(f"the core installed snapshot {meta.index} but no file arrived")
            )
        d: Deferred[None] = self._storage.install_snapshot(meta, path, self._fsm_name)

        def restore(_: object) -> None:
            with path.open("rb") as source:
                self._fsm.restore(source)
            path.unlink(missing_ok=True)
            if self._receiver is not None:
                self._receiver.installed(meta)
            self._snapshot_index = meta.index
            self._applied_membership = meta.membership
            self._applied.advance(meta.index)
            self._forget_skipped_proposals(meta.index)
            log.info("installed snapshot {index} from the leader", index=meta.index)

        d.addCallback(restore)
        return d

    def _answer_confirmed_reads(self, ready: Ready) -> None:
        """Hand out the reads this Ready confirms before a step-down in it fails the rest.

        A read index in a Ready was confirmed while this node led (a quorum answered a round
        sent after the read arrived; the core fails, with no index, what it had not confirmed
        when it stepped down), so it stays a linearizable point: the read runs once this node
        has applied up to it, whatever its role by then."""
        for read in ready.read_states:
            if read.index is None:
                continue
            waiter = self._reads.pop(read.context, None)
            if waiter is not None and not waiter.called:
                waiter.callback(read.index)

    def _forget_skipped_proposals(self, index: int) -> None:
        """The entries up to ``index`` came in a snapshot and are never applied here one by
        one: their proposal times would otherwise stay in ``_proposed_at`` for good."""
        skipped = [i for i in self._proposed_at if i <= index]
        for i in skipped:
            del self._proposed_at[i]

    def _after_persist(self, ready: Ready, messages: list[Message], *, applied: bool) -> None:
        self._in_flight -= 1
        if ready.entries:
            self._writes_from.popleft()
        if ready.snapshot is not None:
            self._installing = False
        if self._stopping:
            return
        if ready.hard_state is not None:
            self._durable_term = ready.hard_state.term
        if self.peers is not None and messages:
            plain: list[Message] = []
            for message in messages:
                if isinstance(message, InstallSnapshot):
                    self._sender.send(message)  # a file to stream, not a message to send
                else:
                    plain.append(message)
            if plain:
                self.peers.send_all(plain)
        if ready.soft_state is not None:
            self._answer_confirmed_reads(ready)
            self._on_soft_state(ready)
        if ready.committed_entries and not applied:
            self._applies_waiting -= 1
            self._apply(ready.committed_entries)
        for read in ready.read_states:
            waiter = self._reads.pop(read.context, None)
            if waiter is None or waiter.called:
                continue
            if read.index is None:
                # Refused for now (no leader yet, or a new leader that has not committed in its
                # term): ask again next tick; the read's own deadline bounds the retries.
                self._reads[read.context] = waiter
                self._clock.callLater(self._tick_seconds, self._retry_read, read.context)
            else:
                waiter.callback(read.index)
        self._raft.advance(ready)
        if self._raft.membership != self._membership:
            self._on_membership(self._raft.membership)
        self._update_gauges()
        self._schedule()

    def _on_soft_state(self, ready: Ready) -> None:
        soft = ready.soft_state
        assert soft is not None
        if soft.role is Role.CANDIDATE and self._role is not Role.CANDIDATE:
            self._metrics.elections.inc()
        if soft.role is Role.PRE_CANDIDATE and self._role is not Role.PRE_CANDIDATE:
            self._metrics.election_timeouts.inc()
        if soft.leader != self._leader:
            self._metrics.leader_changes.inc()
            log.info(
                "leader is now {leader} in term {term} ({role})",
                leader=soft.leader or "unknown",
                term=soft.term,
                role=soft.role.value,
            )
        if soft.role is not Role.LEADER and self._role is Role.LEADER:
            # Reads waiting on this node's leadership cannot be confirmed any more.
            for context, d in list(self._reads.items()):
                if not d.called:
                    d.errback(NoLeader("leadership was lost; retry the read"))
                del self._reads[context]
        if soft.role is Role.LEADER and self._role is not Role.LEADER:
            self._record_addresses()
        self._role = soft.role
        self._leader = soft.leader

    def _apply(self, entries: Sequence[Entry]) -> None:
        now = self._clock.seconds()
        leader = self._raft.leader or ""
        apply = self._fsm.apply
        proposals = self._proposals
        proposed_at = self._proposed_at
        normal, membership = EntryKind.NORMAL, EntryKind.MEMBERSHIP
        rejected = self._rejected
        # Only the node that proposed entries waits on them: followers build no results. The
        # results are handed over once, after the loop (or before a fatal error's stop).
        results: list[tuple[int, int, CommandResult]] | None = [] if len(proposals) else None
        for entry in entries:
            index = entry.index
            output, error = b"", None
            kind = entry.kind
            if kind is normal:
                try:
                    if rejected and index in rejected:
                        self._check_rejected(entry)  # raises CommandRejected if marked
                    output = apply(entry.data, index)
                except CommandRejected as e:
                    error = str(e)
                except Exception:
                    failure = Failure()
                    self._resolve(results)
                    self._fatal_entry(failure, entry)
                    return
            elif kind is membership:
                self._applied_membership = decode_membership(entry.data)
            elif entry.data:  # a NOOP with data: a marker (the consistency check's)
                self._digests.marker_applied(index, entry.data)
            if results is not None:
                term = entry.term
                result = make_command_result(index, term, leader, output, error)
                results.append((index, term, result))
            if proposed_at:  # also once its waiter timed out, or the entry is not ours
                started = proposed_at.pop(index, None)
                if started is not None:
                    self._metrics.commit_latency.observe(now - started)
        self._resolve(results)
        self._applied.advance(entries[-1].index)
        self._maybe_snapshot()

    def _resolve(self, results: list[tuple[int, int, CommandResult]] | None) -> None:
        if results:
            self._proposals.resolve_applied(results, _overwritten, _partly_applied)

    def _fatal(
        self,
        failure: Failure,
        doing: str,
        advice: str = "Fix the cause (disk, FSM bug) and restart the node; it will replay its log.",
    ) -> None:
        """A failure the node cannot survive without risking divergence: stop the process."""
        log.failure(
            "graft stopped: fatal error while {doing}; replicas would diverge if it went on. "
            "{advice}",
            failure=failure,
            doing=doing,
            advice=advice,
        )
        self._stopping = True
        reactor = self._clock
        stop = getattr(reactor, "stop", None)
        if stop is not None and getattr(reactor, "running", False):
            stop()

    # -- poison entries --------------------------------------------------------------------

    def skip_rejected_entries(self, rejected: Mapping[int, RejectedEntry]) -> None:
        """Treat these entries (``graft skip-entry``, read from the data dir) as commands the
        FSM refused, if the log still holds them when they are applied. Call before start."""
        self._rejected = dict(rejected)
        for marked in sorted(self._rejected.values(), key=lambda r: r.index):
            log.warn(
                "entry {index} (term {term}) is marked rejected on this node (graft "
                "skip-entry): it is not applied here; every replica must skip it too",
                index=marked.index,
                term=marked.term,
            )

    def _check_rejected(self, entry: Entry) -> None:
        marked = self._rejected[entry.index]
        if marked.matches(entry):
            raise CommandRejected(
                f"entry {entry.index} was marked rejected on {self.node_id} by an operator "
                "(graft skip-entry) after it stopped the node; it was not applied"
            )
        log.warn(
            "entry {index} is marked rejected (term {term}) but the log holds another entry "
            "there (term {found}, other data): applying it",
            index=entry.index,
            term=marked.term,
            found=entry.term,
        )

    def _fatal_entry(self, failure: Failure, entry: Entry) -> None:
        """The FSM raised on a committed entry: stop, naming the entry and the way out."""
        error = failure.value
        self._fatal(
            failure,
            f"applying entry {entry.index} (term {entry.term}) to the FSM: it raised "
            f"{type(error).__name__}: {error}",
            "If this machine is the cause (disk full, I/O error), fix it and restart; if the "
            "FSM has a bug, deploy a fixed FSM and restart (the node replays the entry). As the "
            f"UNSAFE last resort, run `graft skip-entry {entry.index} -c CONFIG --node "
            f"{self.node_id}` on every node that stops at this entry, then restart them "
            "(docs/operations.md, poison entries).",
        )

    # -- the space quota -------------------------------------------------------------------

    def watch_space(self, monitor: SpaceMonitor) -> None:
        """Refuse writes while the data dir (or, on the leader, a follower's) is over its
        quota (graft.space); this node reports its own alarm to the leader after each scan."""
        self._space = monitor
        monitor.report = self._report_space

    def _space_refusal(self) -> GraftError | None:
        assert self._space is not None
        leader = self._raft.role is Role.LEADER
        refused = self._space.quota.refusal(self._clock.seconds(), leader=leader)
        if refused is not None:
            self._metrics.proposals_failed.labels(reason="no_space").inc()
        return refused

    def _report_space(self, quota: SpaceQuota) -> None:
        """After a scan: a follower over its quota tells the leader (again at every scan while
        it lasts, since a leader forgets a report after a few seconds), and once more when it
        is below again."""
        leader = self._raft.leader
        over = quota.alarm
        if leader is None or leader == self.node_id or self.peers is None or self._stopping:
            self._space_reported_over = over
            return
        if not over and not self._space_reported_over:
            return
        self._space_reported_over = over
        args = {"usage": quota.usage, "quota": quota.quota, "over": over}
        d = self.peers.call(leader, SPACE_REPORT.name, args, timeout=self._tick_seconds * 20)
        d.addErrback(lambda _: None)  # the next scan reports again

    def _space_reported(self, peer: str, args: dict[str, Any]) -> dict[str, Any]:
        # Only members count: a removed node still connected for a while must not hold up
        # the cluster's writes.
        if self._space is not None and peer in self._membership.members:
            self._space.quota.peer_report(
                peer,
                max(0, int(args["usage"])),
                max(0, int(args["quota"])),
                bool(args["over"]),
                self._clock.seconds(),
            )
        return {}

    def _update_gauges(self) -> None:
        st = self._raft.status()
        m = self._metrics
        m.term.set(st.term)
        m.is_leader.set(1 if st.role is Role.LEADER else 0)
        m.commit_index.set(st.commit)
        m.applied_index.set(st.applied)
        m.last_index.set(st.last_index)

    # -- ClusterBackend: commands ----------------------------------------------------------

    @property
    def node_id(self) -> str:
        return self._raft.id

    @property
    def content_type(self) -> str:
        return self._fsm.content_type

    @property
    def metrics(self) -> CollectorRegistry:
        if self.peers is not None:
            connected = self.peers.connected_peers()
            for peer in self._api_urls:
                if peer != self.node_id:
                    self._metrics.peer_connected.labels(peer=peer).set(peer in connected)
        return self._metrics.registry

    def leader_id(self) -> str | None:
        return self._raft.leader

    def is_leader(self) -> bool:
        return self._raft.role is Role.LEADER

    def api_url(self, node_id: str) -> str | None:
        return self._api_urls.get(node_id)

    def submit(self, commands: Sequence[bytes]) -> Deferred[list[CommandResult]]:
        if self._stopping:
            return _fail(NoLeader("this node is shutting down; retry on another node"))
        if self._space is not None and (refused := self._space_refusal()) is not None:
            return _fail(refused)
        if self._raft.role is Role.LEADER:
            return self._propose(commands)
        d: Deferred[Any] = self._route_to_leader()
        d.addCallback(
            lambda leader: (
                self._propose(commands)
                if leader == self.node_id
                else self._forward_submit(leader, commands)
            )
        )
        return d

    def _propose(self, commands: Sequence[bytes]) -> Deferred[list[CommandResult]]:
        try:
            self._proposals.check_room(len(commands))
        except Overloaded as e:
            self._metrics.proposals_failed.labels(reason="overloaded").inc()
            return _fail(e)
        try:
            indexes = self._raft.propose_batch(list(commands))
        except NotLeader:
            self._metrics.proposals_failed.labels(reason="not_leader").inc()
            return _fail(NoLeader("this node lost leadership before proposing; retry"))
        except ProposalDropped:
            self._metrics.proposals_failed.labels(reason="transfer").inc()
            return _fail(NoLeader("leadership is being transferred; retry shortly"))
        term = self._raft.term
        self._metrics.proposals.inc(len(indexes))
        if self._space is not None:
            self._space.note_proposed(sum(map(len, commands)))
        # One latency observation per batch, timed on its first entry.
        self._proposed_at[indexes[0]] = self._clock.seconds()
        d: Deferred[Any] = self._proposals.add_batch(
            indexes[0], len(indexes), term, self._command_timeout, _timed_out
        )
        self._schedule()
        return d

    def _route_to_leader(self) -> Deferred[str]:
        """The leader to send a request to: this node, or a leader whose peer connection is up.

        Right after an election a follower may know the leader before its own connection to it
        is up (or know none yet); waiting a little here spares clients a 503 in that window.
        """
        d: Deferred[str] = Deferred()
        deadline = self._clock.seconds() + min(self._route_wait, self._command_timeout)

        def poll() -> None:
            if self._stopping:
                d.errback(NoLeader("this node is shutting down; retry on another node"))
                return
            leader = self._raft.leader
            if leader == self.node_id and self._raft.role is Role.LEADER:
                d.callback(leader)
                return
            if (
                leader is not None
                and self.peers is not None
                and leader in self.peers.connected_peers()
            ):
                d.callback(leader)
                return
            if self._clock.seconds() >= deadline:
                if leader is None:
                    d.errback(NoLeader("no leader is known (an election may be under way); retry"))
                else:
                    d.errback(NoLeader(f"the leader {leader} cannot be reached from here; retry"))
                return
            self._clock.callLater(self._tick_seconds, poll)

        poll()
        return d

    def _forward_submit(
        self, leader: str, commands: Sequence[bytes]
    ) -> Deferred[list[CommandResult]]:
        assert self.peers is not None
        d: Deferred[Any] = self.peers.call(
            leader,
            "forward_submit",
            {"commands": list(commands)},
            timeout=self._command_timeout + 1.0,
        )
        d.addCallback(lambda answer: [_result_from_wire(r) for r in answer["results"]])
        d.addErrback(_applied_but_too_large, leader, len(commands))
        # Once sent, a lost answer leaves the outcome unknown: the leader may have committed it.
        d.addErrback(_remote_failure, leader, lost=_timed_out)
        return d

    def handle_request(
        self, peer: str, command: str, args: dict[str, Any]
    ) -> Deferred[dict[str, Any]]:
        """An RPC from a peer (the transport's on_request): forwarded commands and reads."""
        if command == "forward_submit":
            if self._raft.role is not Role.LEADER:
                return _fail(NoLeader(f"{self.node_id} is not the leader any more; retry"))
            d: Deferred[Any] = self.submit([bytes(c) for c in args["commands"]])
            d.addCallback(lambda results: {"results": [_result_to_wire(r) for r in results]})
            return d
        if command in ("forward_query", "forward_query_within"):
            consistency = Consistency(args["consistency"])
            dq: Deferred[Any] = self.query(
                bytes(args["query"]),
                consistency,
                min_index=args.get("min_index"),
                forwarded=True,
                timeout=_forwarded_time_limit(args.get("timeout"), self._max_query_timeout),
            )
            dq.addCallback(lambda r: {"output": r.output, "applied_index": r.applied_index})
            return dq
        if command == "install_snapshot_chunk":
            if self._receiver is None:
                return _fail(BadRequest(f"{self.node_id} cannot receive snapshots"))
            try:
                return succeed(self._receiver.chunk(peer, args))
            except GraftError as e:
                return _fail(e)
        if command == SPACE_REPORT.name:
            return succeed(self._space_reported(peer, args))
        if command == "forward_admin":
            if self._raft.role is not Role.LEADER:
                return _fail(NoLeader(f"{self.node_id} is not the leader any more; retry"))
            da: Deferred[Any] = Deferred.fromCoroutine(
                self._admin_here(str(args["op"]), dict(args["args"]))
            )
            return da.addCallback(lambda result: {"result": result})
        if command == "replica_digest":
            return self._digest_here(str(args["check"]), int(args["index"]))
        return _fail(BadRequest(f"unknown peer request {command!r}"))

    # -- ClusterBackend: queries -----------------------------------------------------------

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
        if self._stopping:
            return _fail(NoLeader("this node is shutting down; retry on another node"))
        self._metrics.reads.labels(consistency=consistency.value).inc()
        # The read's time limit, from now: waiting for a quorum, for the apply, for a query
        # thread, and running the query all count.
        seconds = self._query_timeout if timeout is None else timeout
        limit = _TimeLimit(seconds=seconds, deadline=self._clock.seconds() + seconds)
        if consistency is Consistency.WEAK:
            return self._weak_read(query, min_index, max_lag_ms, limit)
        if consistency is Consistency.DEFAULT:
            if self._raft.role is not Role.LEADER and not forwarded:
                return self._forward_query(query, consistency, min_index, timeout)
            # The core's ticks catch up with the monotonic clock first, so the lease is judged
            # on the time that really passed. The lateness guard stays as a defence: should
            # the ticks not have caught up, the lease may have expired unseen, so confirm with
            # a quorum (the lease's margin allows LATE_TICKS of lateness, graft/raft/config).
            if self._catch_up_ticks():
                self._schedule()
            late = self._now() - self._last_tick > LATE_TICKS * self._tick_seconds
            lease_index = None if late else self._raft.lease_read_index()
            if lease_index is not None:
                return self._read_at(query, max(lease_index, min_index or 0), limit)
        return self._linearizable_read(query, min_index, limit)

    def _weak_read(
        self, query: bytes, min_index: int | None, max_lag_ms: int | None, limit: _TimeLimit
    ) -> Deferred[QueryResult]:
        if max_lag_ms is not None and self._raft.role is not Role.LEADER:
            since = (self._now() - self._last_leader_contact) * 1000
            if self._raft.leader is None or since > max_lag_ms:
                return _fail(
                    NoLeader(
                        f"{self.node_id} last heard from a leader {since:.0f} ms ago, "
                        f"more than max_lag_ms={max_lag_ms}; ask another node or drop max_lag_ms"
                    )
                )
        return self._read_at(query, min_index or 0, limit)

    def _linearizable_read(
        self, query: bytes, min_index: int | None, limit: _TimeLimit
    ) -> Deferred[QueryResult]:
        if len(self._reads) >= self._applied.limit:
            return _fail(self._too_many_reads())
        context = b"%s.%d" % (self._read_prefix, next(self._read_ids))
        d: Deferred[Any] = Deferred()
        self._reads[context] = d

        def expire() -> None:
            if self._reads.pop(context, None) is d and not d.called:
                d.errback(Timeout("the read could not be confirmed by a quorum in time; retry"))

        timer = self._clock.callLater(self._time_left(limit), expire)

        def confirmed(index: int) -> Any:
            if timer.active():
                timer.cancel()
            return self._read_at(query, max(index, min_index or 0), limit)

        def failed(f: Failure) -> Failure:
            if timer.active():
                timer.cancel()
            return f

        d.addCallbacks(confirmed, failed)
        self._raft.read_index(context)
        self._early_wanted = True
        self._schedule()
        return d

    def limit_waiters(self, *, commands: int, reads: int) -> None:
        """api.limits: at most ``commands`` proposals waiting to be applied, and at most
        ``reads`` reads waiting for a quorum's confirmation (and as many for an index); more
        are refused with Overloaded (503) instead of held."""
        self._proposals.limit = commands
        self._applied.limit = reads

    def _too_many_reads(self) -> Overloaded:
        return Overloaded(
            f"{len(self._reads)} reads are waiting for a quorum's confirmation on "
            f"{self.node_id}, its limit (api.limits.max_read_waiters): retry shortly"
        )

    def _retry_read(self, context: bytes) -> None:
        waiter = self._reads.get(context)
        if waiter is None or waiter.called or self._stopping:
            return
        self._raft.read_index(context)
        self._early_wanted = True
        self._schedule()

    def _read_at(self, query: bytes, index: int, limit: _TimeLimit) -> Deferred[QueryResult]:
        d: Deferred[Any] = self._applied.wait(
            index,
            self._time_left(limit),
            lambda: Timeout(f"{self.node_id} did not apply up to index {index} in time; retry"),
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

    def _forward_query(
        self,
        query: bytes,
        consistency: Consistency,
        min_index: int | None,
        timeout: float | None = None,
    ) -> Deferred[QueryResult]:
        def route(leader: str) -> Deferred[QueryResult]:
            if leader == self.node_id:
                return self.query(
                    query, consistency, min_index=min_index, forwarded=True, timeout=timeout
                )
            assert self.peers is not None
            args: dict[str, Any] = {
                "query": query,
                "consistency": consistency.value,
                "min_index": min_index,
            }
            # Only a client's own ?timeout= needs the newer command: without it, the leader's
            # default applies, and a leader that predates the command still answers.
            command = "forward_query" if timeout is None else "forward_query_within"
            if timeout is not None:
                args["timeout"] = float(timeout)
            d: Deferred[Any] = self.peers.call(
                leader,
                command,
                args,
                timeout=(self._query_timeout if timeout is None else timeout) + 1.0,
            )
            d.addCallback(
                lambda a: QueryResult(
                    output=bytes(a["output"]), applied_index=int(a["applied_index"]), leader=leader
                )
            )
            d.addErrback(
                _remote_failure,
                leader,
                lost=lambda: NoLeader(f"the leader {leader} did not answer the read; retry"),
            )
            return d

        routed: Deferred[Any] = self._route_to_leader()
        return routed.addCallback(route)

    # -- queries in threads ----------------------------------------------------------------

    def _init_query_threads(
        self, threads: int, run_query: Callable[..., Deferred[Any]] | None
    ) -> None:
        # FSMs with query_in_thread (SQLite) answer in these threads, so a heavy query never
        # holds the reactor thread; a dedicated pool, so queries cannot starve snapshots.
        self._query_pool = ThreadPool(minthreads=0, maxthreads=max(1, threads), name="graft-query")
        # Daemon threads: a query stuck in SQLite must not keep a stopping process alive.
        self._query_pool.threadFactory = _daemon_thread  # type: ignore[assignment]
        self._run_query = run_query or self._defer_to_query_pool

    def _defer_to_query_pool(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        return deferToThreadPool(self._clock, self._query_pool, f, *args)

    def _time_left(self, limit: _TimeLimit) -> float:
        left: float = limit.deadline - self._clock.seconds()
        return max(0.0, left)

    def _query_in_thread(
        self,
        in_thread: Callable[[bytes, float], bytes],
        query: bytes,
        applied: int,
        limit: _TimeLimit,
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

        def failed(failure: Failure) -> Failure:
            in_flight.dec()
            if self._stopping:
                return Failure(NoLeader("this node is shutting down; retry on another node"))
            if failure.check(QueryRejected):
                return Failure(BadRequest(str(failure.value)))
            if failure.check(QueryTimedOut):
                self._metrics.query_timeouts.inc()
                return Failure(QueryTimeout(_query_timeout_message(limit.seconds)))
            return failure

        return d.addCallbacks(answered, failed)

    # -- membership ------------------------------------------------------------------------

    def address_of(self, node_id: str) -> MemberAddress | None:
        return self._membership.address_of(node_id) or self._static_addresses.get(node_id)

    def _on_membership(self, membership: Membership) -> None:
        """The core adopted a new membership (on append, as the thesis says): dial new members,
        drop removed ones, and learn their API addresses for redirects."""
        old = self._membership
        departed = {
            m: a
            for m in old.members - membership.members
            if (a := old.address_of(m) or self._static_addresses.get(m)) is not None
        }
        self._membership = membership
        addresses = {m: a for m in membership.members if (a := self.address_of(m)) is not None}
        self._api_urls = {m: _api_url(self._api_scheme, a) for m, a in addresses.items()}
        if (me := self.address_of(self.node_id)) is not None:
            addresses[self.node_id] = me
        log.info(
            "membership is now voters {voters}, learners {learners}",
            voters=",".join(sorted(membership.voters)),
            learners=",".join(sorted(membership.learners)) or "-",
        )
        if self.peers is None:
            return
        # Keep talking to departed members for a while: the answer to the request that removed
        # one may still have to travel over its connection.
        self.peers.update_peers({**departed, **addresses})
        self.admit_while_joining()
        if departed:
            self._forget_timer = self._clock.callLater(
                2 * self._election_seconds, self._forget_departed
            )

    def peer_addresses(self) -> dict[str, MemberAddress]:
        """The peer address book: this node and the members of the membership the core
        recovered from the log and snapshot (or, in a fresh data dir, the bootstrap one), never
        the config file's other peers. An address comes from the membership, else from the
        file for a member the cluster was created with (those are in the file by definition)."""
        book = {m: a for m in self._membership.members if (a := self.address_of(m)) is not None}
        me = self._static_addresses.get(self.node_id) or self.address_of(self.node_id)
        if me is not None:  # where this node listens: its own file says
            book[self.node_id] = me
        return book

    def admit_while_joining(self) -> None:
        """A node that knows no membership yet (joining with a fresh data dir) lets the
        cluster's members connect, so the leader can send it the log that names them; once the
        core has a membership, only its members may connect (those whose address it does not
        know, from a log written before addresses were recorded, on their own connections)."""
        if self.peers is not None:
            members = self._membership.members
            unknown = members - self.peer_addresses().keys()
            self.peers.admit_unlisted(not members, unknown)

    def _forget_departed(self) -> None:
        if self._stopping or self.peers is None:
            return
        members = self._membership.members | {self.node_id}
        self.peers.update_peers({m: a for m in members if (a := self.address_of(m)) is not None})

    def members(self) -> dict[str, Any]:
        m = self._membership
        return {
            "leader": self._raft.leader,
            "voters": sorted(m.voters),
            "learners": sorted(m.learners),
            "addresses": {
                node: {"host": a.host, "p2p": a.p2p_port, "api": a.api_port}
                for node in sorted(m.members)
                if (a := self.address_of(node)) is not None
            },
        }

    def add_member(
        self, node_id: str, host: str, p2p_port: int, api_port: int
    ) -> Deferred[dict[str, Any]]:
        args = {"id": node_id, "host": host, "p2p": p2p_port, "api": api_port}
        return self._admin("add_member", args)

    def remove_member(self, node_id: str) -> Deferred[dict[str, Any]]:
        return self._admin("remove_member", {"id": node_id})

    def transfer_leadership(self, target: str | None) -> Deferred[dict[str, Any]]:
        return self._admin("transfer_leadership", {"id": target})

    def _admin(self, op: str, args: dict[str, Any]) -> Deferred[dict[str, Any]]:
        """Run an administrative operation on the leader (forwarding it from a follower)."""
        if self._stopping:
            return _fail(NoLeader("this node is shutting down; retry on another node"))

        def route(leader: str) -> Deferred[dict[str, Any]]:
            if leader == self.node_id:
                return Deferred.fromCoroutine(self._admin_here(op, args))
            assert self.peers is not None
            d: Deferred[Any] = self.peers.call(
                leader,
                "forward_admin",
                {"op": op, "args": args},
                timeout=self._catch_up_timeout + 10.0,
            )
            d.addCallback(lambda answer: answer["result"])
            d.addErrback(
                _remote_failure,
                leader,
                lost=lambda: Timeout(
                    f"the leader {leader} did not answer the {op} request; check "
                    "`graft members list` before retrying"
                ),
            )
            return d

        routed: Deferred[Any] = self._route_to_leader()
        return routed.addCallback(route)

    async def _admin_here(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        if op == "add_member":
            return await self._add_member_here(
                str(args["id"]), str(args["host"]), int(args["p2p"]), int(args["api"])
            )
        if op == "remove_member":
            return await self._remove_member_here(str(args["id"]))
        if op == "transfer_leadership":
            target = args.get("id")
            return await self._transfer_here(None if target is None else str(target))
        if op == "check":
            return await self._run_check()
        raise BadRequest(f"unknown administrative operation {op!r}")

    async def _add_member_here(
        self, node_id: str, host: str, p2p_port: int, api_port: int
    ) -> dict[str, Any]:
        m = self._membership
        if node_id in m.voters:
            raise BadRequest(f"{node_id} is already a voting member; nothing to do")
        address = MemberAddress(host=host, p2p_port=p2p_port, api_port=api_port)
        for other in m.members:
            a = self.address_of(other)
            if other != node_id and a is not None and (a.host, a.p2p_port) == (host, p2p_port):
                raise BadRequest(
                    f"{host}:{p2p_port} is already the peer address of {other}; "
                    "give the new member its own address"
                )
        if node_id not in m.learners:
            log.info(
                "adding {id} at {host}:{port} as a learner", id=node_id, host=host, port=p2p_port
            )
            await self._change_membership(
                Membership(
                    voters=m.voters,
                    learners=m.learners | {node_id},
                    addresses=_with_address(m.addresses, node_id, address),
                )
            )
        target = self._raft.status().commit
        log.info("waiting for {id} to catch up to index {target}", id=node_id, target=target)
        deadline = self._clock.seconds() + self._catch_up_timeout
        while True:
            st = self._raft.status()
            if st.role is not Role.LEADER:
                raise NoLeader(
                    f"leadership moved while {node_id} was catching up; it stays a learner: "
                    "retry the add to promote it"
                )
            progress = st.progress.get(node_id)
            if progress is not None and progress.match >= target:
                break
            if self._clock.seconds() > deadline:
                match = progress.match if progress is not None else 0
                raise Timeout(
                    f"{node_id} did not catch up within {self._catch_up_timeout:.0f} s (it has "
                    f"{match} of {target}); check it runs and reaches {host}:{p2p_port}. It "
                    "stays a learner: retry the add to promote it, or remove it"
                )
            await _sleep(self._clock, self._tick_seconds)
        m = self._membership
        log.info("{id} caught up; promoting it to voter", id=node_id)
        await self._change_membership(
            Membership(
                voters=m.voters | {node_id},
                learners=m.learners - {node_id},
                addresses=_with_address(m.addresses, node_id, address),
            )
        )
        return self.members()

    async def _remove_member_here(self, node_id: str) -> dict[str, Any]:
        m = self._membership
        if node_id not in m.members:
            raise NotFound(f"{node_id} is not a member (members: {', '.join(sorted(m.members))})")
        if node_id == self.node_id:
            # The leader removes itself by handing over first; the new leader removes it.
            await self._transfer_here(None)
            result: dict[str, Any] = await self._admin("remove_member", {"id": node_id})
            return result
        if m.voters == {node_id}:
            raise BadRequest("cannot remove the last voter; add another member first")
        address = self.address_of(node_id)
        kept = tuple((n, a) for n, a in m.addresses if n != node_id)
        await self._change_membership(
            Membership(voters=m.voters - {node_id}, learners=m.learners - {node_id}, addresses=kept)
        )
        log.info("removed {id} ({address})", id=node_id, address=address)
        return self.members()

    async def _change_membership(self, membership: Membership) -> None:
        """Propose a membership and wait until it is committed and applied here."""
        membership = self._with_known_addresses(membership)
        deadline = self._clock.seconds() + self._command_timeout
        while True:
            if self._raft.role is not Role.LEADER:
                raise NoLeader("leadership moved during the membership change; retry it")
            try:
                index = self._raft.propose_membership(membership)
                break
            except MembershipChangeRefused as e:
                # The previous change or the term's first commit is still on its way.
                if self._clock.seconds() > deadline:
                    raise BadRequest(f"the membership change was refused: {e}") from None
            except ProposalDropped:
                if self._clock.seconds() > deadline:
                    raise NoLeader("leadership is being transferred; retry shortly") from None
            await _sleep(self._clock, self._tick_seconds)
        waiter = self._proposals.add(index, self._raft.term, self._command_timeout, _timed_out)
        self._schedule()
        await waiter

    def _record_addresses(self) -> None:
        """A new leader whose membership lacks a member's address (a cluster's first leader:
        the membership it was created with comes from the config file) writes it into the log
        with every address it knows, so no node needs its file's peers again."""
        if self._with_known_addresses(self._raft.membership) == self._raft.membership:
            return
        d: Deferred[None] = Deferred.fromCoroutine(self._propose_addresses())
        d.addErrback(lambda f: log.info("membership addresses not recorded: {e}", e=f.value))

    async def _propose_addresses(self) -> None:
        deadline = self._clock.seconds() + self._command_timeout
        while self._raft.role is Role.LEADER and not self._stopping:
            # Built from the core's membership in the turn it is proposed, so that it can never
            # undo a change committed meanwhile.
            current = self._raft.membership
            target = self._with_known_addresses(current)
            if target == current:
                return
            try:
                self._raft.propose_membership(target)
            except NotLeader:
                return
            except (MembershipChangeRefused, ProposalDropped):
                if self._clock.seconds() > deadline:
                    raise
                await _sleep(self._clock, self._tick_seconds)
                continue
            log.info("recording the members' addresses in the log")
            self._schedule()
            return

    def _with_known_addresses(self, membership: Membership) -> Membership:
        """The membership with every member's address this node knows, so that the log alone
        tells each node where its peers are (a joining node's file lists only itself, and a
        restarted node never takes members from its file)."""
        addresses = dict(membership.addresses)
        for member in membership.members - addresses.keys():
            if (a := self.address_of(member)) is not None:
                addresses[member] = a
        return Membership(
            voters=membership.voters,
            learners=membership.learners,
            addresses=tuple(sorted(addresses.items(), key=lambda pair: pair[0])),
        )

    async def _transfer_here(self, target: str | None) -> dict[str, Any]:
        st = self._raft.status()
        voters = sorted(v for v in self._membership.voters if v != self.node_id)
        if target is None:
            if not voters:
                raise BadRequest("there is no other voter to hand leadership to; add one first")
            # The most caught-up voter needs the least catching up before TimeoutNow.
            target = max(voters, key=lambda v: st.progress[v].match if v in st.progress else -1)
        if target == self.node_id:
            return {"leader": self.node_id, "term": self._raft.term}
        if target not in voters:
            raise BadRequest(f"{target} is not a voting member; choose one of {', '.join(voters)}")
        log.info("transferring leadership to {target}", target=target)
        try:
            self._raft.transfer_leadership(target)
        except NotLeader:
            raise NoLeader("this node is no longer the leader; retry") from None
        self._schedule()
        deadline = self._clock.seconds() + 2 * self._election_seconds
        while self._clock.seconds() <= deadline:
            await _sleep(self._clock, self._tick_seconds)
            if self._raft.role is not Role.LEADER and self._raft.leader is not None:
                if self._raft.leader != target:
                    log.info(
                        "leadership went to {leader}, not {target}",
                        leader=self._raft.leader,
                        target=target,
                    )
                return {"leader": self._raft.leader, "term": self._raft.term}
        raise Timeout(
            f"leadership did not move to {target} within {2 * self._election_seconds:.1f} s; "
            f"{self._raft.leader or 'no node'} leads. Check {target} is healthy and retry"
        )

    def hand_over(self) -> Deferred[None]:
        """Before stopping: a leader hands leadership to the most caught-up voter, so stopping
        it costs the cluster no election timeout. Best effort; never fails."""
        if self._raft.role is not Role.LEADER or len(self._membership.voters) < 2:
            return succeed(None)
        d: Deferred[Any] = Deferred.fromCoroutine(self._transfer_here(None))

        def done(result: object) -> None:
            if isinstance(result, Failure):
                log.warn("could not hand over leadership before stopping: {e}", e=result.value)

        d.addBoth(done)
        return d

    # -- snapshots -------------------------------------------------------------------------

    def _maybe_snapshot(self) -> None:
        if (
            self._snapshot_entries > 0
            and self._snapshotting is None
            and self._applied.applied - self._snapshot_index >= self._snapshot_entries
        ):
            self.take_snapshot().addErrback(
                lambda f: log.failure("automatic snapshot failed; will retry", failure=f)
            )

    def take_snapshot(self) -> Deferred[dict[str, Any]]:
        """Snapshot the FSM at the applied index (the copy is written off the reactor thread
        while commands keep applying), then drop log segments below it."""
        if self._snapshotting is not None:
            # One at a time: wait for the one under way, then take one at the new applied index.
            after: Deferred[Any] = Deferred()

            def chain(result: object) -> object:
                after.callback(None)
                return result

            running: Deferred[Any] = self._snapshotting
            running.addBoth(chain)
            return after.addCallback(lambda _: self.take_snapshot())
        applied = self._applied.applied
        if applied <= self._snapshot_index:
            current = self._storage.snapshot_meta()
            return succeed({"index": current.index, "term": current.term})
        meta = SnapshotMeta(
            index=applied, term=self._storage.term(applied), membership=self._applied_membership
        )
        write = begin_snapshot(self._fsm)
        started = self._clock.seconds()
        d: Deferred[Any] = self._run_in_thread(
            self._storage.save_snapshot, meta, self._fsm_name, write
        )

        def compact(_: object) -> Deferred[None]:
            self._snapshot_index = max(self._snapshot_index, meta.index)
            log.info(
                "snapshot at index {index} (term {term}) written in {seconds:.2f} s",
                index=meta.index,
                term=meta.term,
                seconds=self._clock.seconds() - started,
            )
            return self._storage.compact(meta.index, keep=self._snapshot_trailing)

        def finished(result: object) -> object:
            self._snapshotting = None
            return result

        d.addCallback(compact)
        d.addCallback(lambda _: {"index": meta.index, "term": meta.term})
        d.addErrback(self._snapshot_superseded)
        d.addBoth(finished)
        self._snapshotting = d
        out: Deferred[dict[str, Any]] = Deferred()
        d.addBoth(lambda r: out.callback(r) if not isinstance(r, Failure) else out.errback(r))
        return out

    def _snapshot_superseded(self, failure: Failure) -> dict[str, Any]:
        """A snapshot from the leader was installed while this node wrote its own, older one:
        storage kept the leader's and dropped this one (see DurableLog.save_snapshot)."""
        failure.trap(SnapshotSuperseded)
        current = self._storage.snapshot_meta()
        log.info(
            "snapshot dropped: {reason}; keeping snapshot {index}",
            reason=failure.value,
            index=current.index,
        )
        return {"index": current.index, "term": current.term}

    def _latest_local_snapshot(self) -> LocalSnapshot | None:
        info = self._storage.snapshot_info()
        if info is None:
            return None
        return LocalSnapshot(
            meta=info.meta,
            fsm_name=info.fsm_name,
            size=info.size,
            path=info.data_path,
            crc32=info.crc32,
        )

    def _report_snapshot(self, peer: str, ok: bool) -> None:
        report = getattr(self._raft, "report_snapshot", None)
        if report is not None and self._raft.role is Role.LEADER:
            report(peer, ok)
            self._schedule()

    def latest_snapshot(self) -> tuple[dict[str, Any], BinaryIO] | None:
        info = self._storage.snapshot_info()
        if info is None:
            return None
        manifest = {
            "index": info.meta.index,
            "term": info.meta.term,
            "fsm": info.fsm_name,
            "size": info.size,
            "membership": membership_to_dict(info.meta.membership),
        }
        return manifest, open(info.data_path, "rb")

    def shutdown(self) -> None:
        log.info("shutdown requested through the API")
        stop = getattr(self._clock, "stop", None)
        if stop is not None:
            self._clock.callLater(0, stop)

    # -- ClusterBackend: status ------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        st = self._raft.status()
        connected = self.peers.connected_peers() if self.peers is not None else set()
        out: dict[str, Any] = {
            "id": st.id,
            "role": st.role.value,
            "term": st.term,
            "leader": st.leader,
            "leader_api": self._api_urls.get(st.leader) if st.leader else None,
            "commit": st.commit,
            "applied": st.applied,
            "first_index": st.first_index,
            "last_index": st.last_index,
            "snapshot": {"index": st.snapshot.index, "term": st.snapshot.term},
            "members": {
                "voters": sorted(st.membership.voters),
                "learners": sorted(st.membership.learners),
            },
            "peers_connected": sorted(connected),
        }
        if self._last_check is not None:
            out["last_check"] = self._last_check
        if self._space is not None:
            out["space"] = self._space.quota.status(self._clock.seconds())
        if st.role is Role.LEADER:
            out["progress"] = {
                peer: {
                    "match": p.match,
                    "next": p.next,
                    "state": p.state,
                    "lag": max(0, st.last_index - p.match),
                    "active": p.recent_active,
                }
                for peer, p in st.progress.items()
            }
        return out

    def is_ready(self) -> bool:
        st = self._raft.status()
        return st.leader is not None and st.applied >= st.commit

    # -- the replica consistency check (graft.consistency) -------------------------------------

    def _init_checks(self, check_timeout: float) -> None:
        self._check_timeout = check_timeout
        self._digests = DigestBook(
            node_id=self._raft.id,
            begin=lambda: begin_digest(self._fsm),
            run_in_thread=self._run_in_thread,
        )
        # Callers waiting for the check under way on this leader (None: no check runs).
        self._check_waiters: list[Deferred[dict[str, Any]]] | None = None
        self._last_check: dict[str, Any] | None = None

    def check_replicas(self) -> Deferred[dict[str, Any]]:
        """Run a replica consistency check (on the leader, forwarded from a follower) and answer
        its result (graft.consistency.summarize), which this node also keeps for its status."""
        d = self._admin("check", {})
        return d.addCallback(self._record_check)

    def _record_check(self, result: dict[str, Any]) -> dict[str, Any]:
        index = int(result.get("index", 0))
        if self._last_check is None or index >= int(self._last_check.get("index", 0)):
            self._last_check = result
            self._metrics.replica_digest_mismatch.set(1 if result.get("mismatch") else 0)
            self._metrics.replica_check_index.set(index)
        return result

    def _run_check(self) -> Deferred[dict[str, Any]]:
        """One check at a time on a leader: a request that arrives while one runs gets its
        result (each check digests the whole state on every member)."""
        if self._check_waiters is not None:
            joined: Deferred[dict[str, Any]] = Deferred()
            self._check_waiters.append(joined)
            return joined
        self._check_waiters = []
        d: Deferred[dict[str, Any]] = Deferred.fromCoroutine(self._check_here())

        def share(result: object) -> object:
            waiters, self._check_waiters = self._check_waiters or [], None
            for waiter in waiters:
                if isinstance(result, Failure):
                    waiter.errback(result)
                else:
                    waiter.callback(cast(dict[str, Any], result))
            return result

        d.addBoth(share)
        return d.addCallback(self._record_check)

    async def _check_here(self) -> dict[str, Any]:
        check = os.urandom(8).hex()
        try:
            index = self._raft.propose_marker(MARKER_PREFIX + check.encode("ascii"))
        except NotLeader:
            raise NoLeader("this node lost leadership before the check started; retry") from None
        except ProposalDropped:
            raise NoLeader("leadership is being transferred; retry the check shortly") from None
        waiter = self._proposals.add(index, self._raft.term, self._command_timeout, _timed_out)
        self._schedule()
        await waiter  # committed, and applied here: this node's digest has started
        members = sorted(self._membership.members)
        asks = [self._ask_digest(member, check, index) for member in members]
        answers = await DeferredList(asks, consumeErrors=True)
        by_member = {m: answer for m, (_, answer) in zip(members, answers, strict=True)}
        result = summarize(check, index, by_member)
        if result["mismatch"]:
            log.error(
                "replica consistency check at index {index}: the FSM digests of {odd} differ "
                "from the others; the replicas have diverged",
                index=index,
                odd=", ".join(result["mismatch"]),
            )
        return result

    def _ask_digest(self, member: str, check: str, index: int) -> Deferred[dict[str, Any]]:
        if member == self.node_id:
            d = self._digest_here(check, index)
        elif self.peers is None:
            d = _fail(NoLeader(f"{member} is unreachable: this node has no peer transport"))
        else:
            d = self.peers.call(
                member,
                "replica_digest",
                {"check": check, "index": index},
                timeout=self._check_timeout + 1.0,
            )

        def failed(failure: Failure) -> dict[str, Any]:
            if failure.check(PeerUnavailable):
                error = f"{member} is unreachable: {failure.getErrorMessage()}"
            elif failure.check(RemoteError):
                error = cast(RemoteError, failure.value).message
            elif failure.check(GraftError):
                error = cast(GraftError, failure.value).message
            else:
                error = f"{member} did not answer: {failure.getErrorMessage()}"
            return {"digest": None, "error": error}

        d.addCallback(lambda answer: {"digest": str(answer["digest"]), "error": None})
        return d.addErrback(failed)

    def _digest_here(self, check: str, index: int) -> Deferred[dict[str, Any]]:
        """This node's digest for a check, once it has applied the marker and computed it."""
        timeout = self._check_timeout
        applied = self._applied.wait(
            index,
            timeout,
            lambda: Timeout(
                f"{self.node_id} did not apply up to the check's index {index} within "
                f"{timeout:g} s; it is behind"
            ),
        )
        d: Deferred[Any] = applied.addCallback(lambda _: self._digests.digest_of(check, index))

        def too_slow(failure: Failure) -> Failure:
            failure.trap(CancelledError, TimeoutError)
            return Failure(
                Timeout(f"{self.node_id} did not finish its digest within {timeout:g} s")
            )

        d.addTimeout(timeout, self._clock).addErrback(too_slow)
        return d.addCallback(lambda digest: {"digest": digest})


# Received messages after which the core may queue messages that leave between Readies.
_MAKE_EARLY_MESSAGES = (Heartbeat, HeartbeatResponse, ReadIndexRequest)


def _fail(error: GraftError) -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    d.errback(error)
    return d


def _fail_with(error: Exception) -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    d.errback(error)
    return d


def _partly_applied() -> GraftError:
    return Timeout(
        "leadership changed while the batch was committing: its first commands were applied and "
        "the rest were not; check with a query which ones took effect before retrying"
    )


def _timed_out() -> GraftError:
    return Timeout(
        "the command was not applied in time; its outcome is unknown: it may still commit. "
        "Check with a query before retrying a non-idempotent command"
    )


def _overwritten() -> GraftError:
    return NoLeader(
        "leadership changed and the command was dropped before it committed; it was not applied, "
        "retry it"
    )


def _result_to_wire(r: CommandResult) -> dict[str, Any]:
    return {
        "index": r.index,
        "term": r.term,
        "leader": r.leader,
        "output": r.output,
        "error": r.error,
    }


def _result_from_wire(raw: dict[str, Any]) -> CommandResult:
    return CommandResult(
        index=int(raw["index"]),
        term=int(raw["term"]),
        leader=str(raw["leader"]),
        output=bytes(raw["output"]),
        error=raw["error"],
    )


def _applied_but_too_large(failure: Failure, leader: str, count: int) -> Failure:
    """A forwarded batch whose results the leader could not send back: say it was applied, so
    that the client does not resend it (which would apply it twice)."""
    if failure.check(RemoteError) and cast(RemoteError, failure.value).code == AnswerTooLarge.code:
        return Failure(
            AnswerTooLarge(
                f"the leader {leader} applied the batch of {count} commands, but their results "
                f"are too large to forward ({cast(RemoteError, failure.value).message}); do not "
                "resend it: read the outcome back, and send smaller batches, or send them to "
                "the leader directly"
            )
        )
    return failure


def _remote_failure(failure: Failure, leader: str, *, lost: Callable[[], GraftError]) -> Failure:
    """Turn a forwarded call's failure into the error the client should see."""
    if failure.check(RemoteError):
        err = cast(RemoteError, failure.value)
        cls = _ERRORS_BY_CODE.get(err.code, Internal)
        return Failure(cls(err.message))
    if failure.check(PeerUnavailable):
        return Failure(lost())
    if failure.check(GraftError):
        return failure
    return Failure(
        Internal(f"forwarding to the leader {leader} failed: {failure.getErrorMessage()}")
    )


def _sleep(clock: Any, seconds: float) -> Deferred[None]:
    return deferLater(clock, seconds, lambda: None)


@dataclass(frozen=True, slots=True)
class _TimeLimit:
    """A read's time limit: its length, and when it ends on the reactor's clock."""

    seconds: float
    deadline: float


def _daemon_thread(*args: Any, **kwargs: Any) -> threading.Thread:
    return threading.Thread(*args, daemon=True, **kwargs)


def _forwarded_time_limit(value: object, most: float) -> float | None:
    """The time limit a follower forwarded with a read, at most this node's own maximum; None
    (this node's default) when there is none or it is not a positive number of seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return min(float(value), most)  # NaN fails `> 0`; inf becomes `most`
    return None


def _query_timeout_message(limit: float) -> str:
    return (
        f"the query was stopped at its time limit of {limit:g} s and changed nothing; give "
        "it more time with ?timeout= (e.g. ?timeout=30s, up to the node's "
        "api.max_query_timeout_ms) or make it cheaper (a WHERE on an indexed column, a LIMIT)"
    )


def _defer_to_thread(f: Callable[..., Any], *args: Any) -> Deferred[Any]:
    return deferToThread(f, *args)


def _api_url(scheme: str, address: MemberAddress) -> str:
    return f"{scheme}://{url_host(address.host)}:{address.api_port}"


def _with_address(
    addresses: tuple[tuple[str, MemberAddress], ...], node: str, address: MemberAddress
) -> tuple[tuple[str, MemberAddress], ...]:
    kept = [(n, a) for n, a in addresses if n != node]
    return tuple(sorted([*kept, (node, address)], key=lambda pair: pair[0]))


__all__ = ["DurableStorage", "FSMRejected", "GraftNode", "PeerChannel"]
