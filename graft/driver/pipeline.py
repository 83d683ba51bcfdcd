# mypy: disable-error-code="no-untyped-call"
"""The Ready pipeline: runs the core's output in the order of the Ready contract.

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
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, runtime_checkable

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from graft import devtrace
from graft.driver.clock import DelayedCall, ReactorTime
from graft.driver.commit_hold import CommitHold
from graft.driver.lifecycle import Lifecycle
from graft.driver.peers import PeerPort
from graft.metrics import NodeMetrics
from graft.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    ReadIndexRequest,
)
from graft.raft.node import RaftNode
from graft.raft.ready import Ready, Role, leaves_before_write, leaves_between_readies
from graft.raft.storage import LogStorage
from graft.raft.types import Entry, EntryKind, HardState, SnapshotMeta

if TYPE_CHECKING:
    from graft.driver.apply import Applier, Computed
    from graft.driver.membership import MembershipManager
    from graft.driver.reads import Reads
    from graft.driver.snapshots import Snapshots
    from graft.driver.stamps import Stamper
    from graft.driver.ticks import Ticks

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


@runtime_checkable
class LeadershipAware(Protocol):
    """A storage whose writes depend on whether this node leads (the durable log's inline
    fsync is for followers only: graft.storage.inline_fsync)."""

    def set_leading(self, leading: bool) -> None: ...


@dataclass(frozen=True, slots=True)
class Stages:
    """What a Ready hands its work to, once its writes allow."""

    applier: Applier
    reads: Reads
    membership: MembershipManager
    snapshots: Snapshots
    stamper: Stamper


APPLY_ADVICE = (
    "This is a bug in Graft, not in the FSM (an FSM's exception names the entry instead): "
    "restart the node, which applies the entries again, and report the log."
)


def thread_segments(entries: Sequence[Entry]) -> list[tuple[Sequence[Entry], bool]]:
    """``entries`` cut into runs, each with whether it is applied in a thread: a marker (a
    NOOP with data) alone, on the reactor thread, since its digest must pin the FSM exactly at
    its index; a run holding no command on the reactor thread, since it has no FSM work."""
    segments: list[tuple[Sequence[Entry], bool]] = []
    start = 0
    for i, entry in enumerate(entries):
        if entry.kind is EntryKind.NOOP and entry.data:
            if i > start:
                segments.append(_run(entries[start:i]))
            segments.append((entries[i : i + 1], False))
            start = i + 1
    if start < len(entries):
        segments.append(_run(entries[start:]))
    return segments


def _run(entries: Sequence[Entry]) -> tuple[Sequence[Entry], bool]:
    commands = (EntryKind.NORMAL, EntryKind.STAMPED)
    return entries, any(entry.kind in commands for entry in entries)


class ReadyPipeline:
    """Takes Readies from the core, persists them, sends their messages, hands them to the
    stages, and advances the core. Built first; the composition root then connects the
    stages (which schedule the pipeline in turn)."""

    def __init__(
        self,
        *,
        raft: RaftNode,
        storage: DurableStorage,
        clock: ReactorTime,
        peers: PeerPort,
        lifecycle: Lifecycle,
        metrics: NodeMetrics,
        readies_in_flight: int,
    ) -> None:
        self._raft = raft
        self._storage = storage
        self._clock = clock
        self._peers = peers
        self._lifecycle = lifecycle
        self._metrics = metrics
        self._stages: Stages | None = None
        self._scheduled: DelayedCall | None = None
        # Readies taken from the core whose writes are not all done, at most this many: the next
        # Ready's writes queue behind the current fsync instead of waiting for it (the writer
        # thread keeps them in order), and every Ready still finishes in the order it was taken.
        self._in_flight = 0
        self._max_in_flight = max(1, readies_in_flight)
        self.finished: Deferred[None] = succeed(None)  # fires when the last Ready taken is done
        # (term, is_leader, commit, applied, last index) as the gauges show them.
        self._gauges_shown: tuple[int, ...] = (-1, -1, -1, -1, -1)
        # A call of _send_early on the next turn, while no Ready may be taken (see there), and
        # whether the core may hold messages for it: set by what makes heartbeats, their
        # answers or read-index traffic (a tick, such a message, a read), cleared when they
        # leave, so that appends and their answers under load cost no extra turn.
        self._early_scheduled: DelayedCall | None = None
        self._early_wanted = False
        # A Ready that installs a received snapshot is taken alone: storage adopts the
        # snapshot only when its turn comes, so nothing after it may be queued early.
        self._installing = False
        # A leader's commit-only AppendEntries wait briefly for entries to carry their commit.
        self._commit_hold = CommitHold(clock, peers.send_all)
        # Readies in flight whose committed entries wait for their write: while there are
        # any, later Readies apply after theirs too, so entries are applied in order.
        self._applies_waiting = 0
        # The first index of each queued write's entries, oldest first: a committed entry at
        # or above one of them may still be replaced on disk.
        self._writes_from: deque[int] = deque()
        self._durable_term = raft.term  # the term in storage's hard state
        self._role = raft.role
        self._leader = raft.leader
        self._set_leading = storage.set_leading if isinstance(storage, LeadershipAware) else None
        if self._set_leading is not None:
            self._set_leading(raft.role is Role.LEADER)

    def connect(self, stages: Stages) -> None:
        """The one step that completes the wiring (graft.driver.wiring)."""
        self._stages = stages

    @property
    def stages(self) -> Stages:
        assert self._stages is not None, "connect() the stages before starting"
        return self._stages

    @property
    def stopping(self) -> bool:
        return self._lifecycle.stopping

    def stop(self) -> None:
        for call in (self._scheduled, self._early_scheduled):
            if call is not None and call.active():
                call.cancel()
        self._scheduled = None
        self._commit_hold.stop()

    def want_early(self) -> None:
        self._early_wanted = True

    def schedule(self) -> None:
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
        stages = self.stages
        ready = self._raft.ready()
        if devtrace.ON:
            _trace_ready(ready)
        self._early_wanted = False  # the Ready took every message
        if ready.soft_state is not None and self._set_leading is not None:
            # Before this Ready's write: a new leader's first entry is already a leader's.
            self._set_leading(ready.soft_state.role is Role.LEADER)
        if ready.entries:
            stages.stamper.saw(ready.entries)  # the floor of this node's stamps, if it leads
        if ready.snapshot is not None:
            stages.stamper.saw_floor(ready.snapshot.stamp_floor_ns)
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
        # below wakes the storage thread, which would contend for the GIL with them. A
        # commit-only AppendEntries waits a few milliseconds for the next entries to the same
        # follower, which carry its commit index instead (graft.driver.commit_hold).
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
        self._peers.send_all(self._commit_hold.carried(entries) + entries)
        if devtrace.ON and entries and ready.entries:
            devtrace.mark("ae.sent", ready.entries[-1].index)
        self._in_flight += 1
        self._installing = ready.snapshot is not None
        # Claimed now, so a newer snapshot completing meanwhile cannot remove this one's file.
        received = stages.snapshots.claim_received(ready.snapshot)
        applied = self._apply_before_write(ready)
        self._peers.send_all(self._commit_hold.hold(commit_only))
        write: Deferred[None] | None = None
        if ready.snapshot is None and (ready.hard_state is not None or ready.entries):
            # Queued now, behind the writes of the Readies still in flight.
            write = self._storage.persist(ready.hard_state, ready.entries)
            if devtrace.ON and ready.entries:
                devtrace.mark("persist.submit", ready.entries[-1].index)

        def writes(_: object) -> Deferred[None] | None:
            if self._lifecycle.stopping:  # after a fatal error: nothing more is acknowledged
                if write is not None:
                    write.addErrback(lambda _: None)
                return None
            if ready.snapshot is None:
                return write
            # A received snapshot replaces the log: install it only after every earlier write,
            # and write this Ready's state after it.
            d = stages.snapshots.install(ready.snapshot, received)
            if ready.hard_state is not None or ready.entries:
                d.addCallback(lambda _: self._storage.persist(ready.hard_state, ready.entries))
            return d

        def finish(_: object) -> Deferred[None]:
            d: Deferred[None] = succeed(None)
            d.addCallback(writes)
            d.addCallback(lambda _: self._after_persist(ready, later, applied=applied))
            d.addErrback(self._lifecycle.fatal, "writing the Raft log")
            return d

        self.finished.addCallback(finish)

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

    def _apply(self, entries: Sequence[Entry]) -> None:
        work = self.stages.snapshots.fsm_work
        if self.stages.applier.in_thread:
            for segment, threaded in thread_segments(entries):
                if threaded:
                    work.apply(
                        partial(self.stages.applier.compute, segment),
                        partial(self._applied_in_thread, segment),
                        f"applying entries {segment[0].index}-{segment[-1].index} in a thread",
                        APPLY_ADVICE,
                    )
                else:
                    work.after(partial(self._apply_now, segment))
        else:  # now, or after the work on the FSM under way (a restore), in order
            work.after(partial(self._apply_now, entries))

    def _applied_in_thread(self, entries: Sequence[Entry], computed: Computed) -> None:
        if self._lifecycle.stopping:
            return
        # thread_segments leaves no marker in a threaded run, so compute did them all.
        assert computed.fatal or len(computed.outcomes) == len(entries), "a marker in a run"
        if self.stages.applier.finish(entries, computed):
            self.stages.snapshots.maybe_snapshot(entries)

    def _apply_now(self, entries: Sequence[Entry]) -> None:
        if self._lifecycle.stopping:
            return
        if devtrace.ON:
            devtrace.mark("apply", entries[-1].index)
        if self.stages.applier.apply(entries):
            self.stages.snapshots.maybe_snapshot(entries)

    def _schedule_early_sends(self) -> None:
        """While no Ready may be taken (two wait on the disk, or a snapshot is installed), send
        the core's messages that wait on no write on the next reactor turn."""
        if self._early_scheduled is None and not self._lifecycle.stopping:
            self._early_scheduled = self._clock.callLater(0, self._send_early)

    def _send_early(self) -> None:
        self._early_scheduled = None
        if self._lifecycle.stopping or self._may_take_ready():
            return  # (a Ready will carry them)
        self._early_wanted = False
        durable_term = self._durable_term
        messages = self._raft.take_messages(
            lambda message: leaves_between_readies(message, durable_term)
        )
        self._peers.send_all(messages)

    def _may_take_ready(self) -> bool:
        return (
            not self._lifecycle.stopping
            and not self._installing
            and self._in_flight < self._max_in_flight
        )

    def _after_persist(self, ready: Ready, messages: list[Message], *, applied: bool) -> None:
        self._in_flight -= 1
        if devtrace.ON and ready.entries:
            devtrace.mark("persisted", ready.entries[-1].index)
        if ready.entries:
            self._writes_from.popleft()
        if ready.snapshot is not None:
            self._installing = False
        if self._lifecycle.stopping:
            return
        stages = self.stages
        if ready.hard_state is not None:
            self._durable_term = ready.hard_state.term
        plain: list[Message] = []
        for message in messages:
            if isinstance(message, InstallSnapshot):
                stages.snapshots.send(message)  # a file to stream, not a message to send
            else:
                plain.append(message)
        self._peers.send_all(plain)
        if devtrace.ON and ready.entries and plain:
            devtrace.mark("resp.sent", ready.entries[-1].index)
        if ready.soft_state is not None:
            stages.reads.answer_confirmed(ready)
            self._on_soft_state(ready)
        if ready.committed_entries and not applied:
            self._applies_waiting -= 1
            self._apply(ready.committed_entries)
        stages.reads.on_read_states(ready)
        self._raft.advance(ready)
        stages.membership.follow_core()
        self._update_gauges()
        self.schedule()

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
            self.stages.reads.leadership_lost()
        if soft.role is Role.LEADER and self._role is not Role.LEADER:
            self.stages.membership.record_addresses()
        self._role = soft.role
        self._leader = soft.leader

    def _update_gauges(self) -> None:
        # After every Ready: read the few numbers (status() builds every peer's progress) and
        # set only the gauges that changed (each set takes the gauge's lock).
        raft = self._raft
        values = (raft.term, 1 if raft.role is Role.LEADER else 0, *raft.indexes())
        shown = self._gauges_shown
        if values == shown:
            return
        m = self._metrics
        gauges = (m.term, m.is_leader, m.commit_index, m.applied_index, m.last_index)
        for gauge, value, old in zip(gauges, values, shown, strict=True):
            if value != old:
                gauge.set(value)
        self._gauges_shown = values


class Inbox:
    """Messages from peers (the transport's on_message), and lost connections."""

    def __init__(
        self, *, raft: RaftNode, ticks: Ticks, reads: Reads, pipeline: ReadyPipeline
    ) -> None:
        self._raft = raft
        self._ticks = ticks
        self._reads = reads
        self._pipeline = pipeline
        self._leader_lost: tuple[int, str] | None = None  # last (term, leader) logged lost

    def receive(self, message: Message) -> None:
        if self._pipeline.stopping:
            return
        # Ticks already due count before the message: a follower's stickiness then starts
        # after it, never with a backlog of ticks that elapsed before it arrived.
        self._ticks.catch_up()
        self._reads.heard(message)
        if devtrace.ON:
            _trace_received(message)
        if isinstance(message, _MAKE_EARLY_MESSAGES):
            self._pipeline.want_early()
        self._raft.step(message)
        self._pipeline.schedule()

    def peer_lost(self, peer: str) -> None:
        """An authenticated connection to ``peer`` closed: if it is the leader, it may have
        died, and the core stops waiting longer than it must."""
        if self._pipeline.stopping:
            return
        lost = (self._raft.term, peer)
        if (
            peer == self._raft.leader
            and self._raft.role is not Role.LEADER
            and lost != self._leader_lost
        ):
            self._leader_lost = lost  # both connections to it close: say it once
            log.info(
                "lost the connection to the leader {peer}: if it stays silent, this node "
                "campaigns one election timeout after it last heard from it",
                peer=peer,
            )
        self._raft.report_unreachable(peer)


# Received messages after which the core may queue messages that leave between Readies.
_MAKE_EARLY_MESSAGES = (Heartbeat, HeartbeatResponse, ReadIndexRequest)


def _trace_ready(ready: Ready) -> None:
    """The developer's tracer (graft.devtrace): a Ready's new and committed entries."""
    if ready.entries:
        devtrace.mark("ready.entries", ready.entries[-1].index)
    if ready.committed_entries:
        devtrace.mark("ready.commit", ready.committed_entries[-1].index)


def _trace_received(message: Message) -> None:
    if isinstance(message, AppendEntries) and message.entries:
        devtrace.mark("inbox.ae", message.entries[-1].index)
    elif isinstance(message, AppendEntriesResponse) and message.success:
        devtrace.mark(f"inbox.resp.{message.sender}", message.match_index)
