# mypy: disable-error-code="no-untyped-call"
"""Applying committed entries to the FSM, resolving their proposals; entries an operator
marked rejected (``graft skip-entry``), and the stop on an entry the FSM raises on."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from twisted.logger import Logger
from twisted.python.failure import Failure

from graft.consistency import DigestBook
from graft.driver.clock import ReactorTime
from graft.driver.lifecycle import Lifecycle
from graft.driver.outcomes import overwritten, partly_applied
from graft.driver.port import CommandResult, make_command_result
from graft.fsm import CommandRejected, StateMachine, stamped_apply
from graft.metrics import NodeMetrics
from graft.raft.node import RaftNode
from graft.raft.types import Entry, EntryKind, Membership, decode_membership
from graft.sessions.machine import Applied, with_sessions
from graft.stamp import Stamp, StampFormatError, split_stamped
from graft.storage.rejected import RejectedEntry
from graft.waiters import IndexWaiters, ProposalWaiters

log = Logger(namespace="graft.node")

# One command's output, its refusal (None if applied), and for a session's operation what the
# session table made of it.
_Outcome = tuple[bytes, str | None, Applied | None]


@dataclass(frozen=True, slots=True)
class Computed:
    """What ``Applier.compute`` hands ``Applier.finish``: an outcome per entry (None for an
    entry that is not a command), ending early at the entry the FSM raised on (``fatal``: the
    failure, and the stamp's error if it was the stamp); the latest stamp time; the seconds
    the FSM took."""

    outcomes: list[_Outcome | None]
    fatal: tuple[Failure, str | None] | None
    stamp_floor_ns: int
    seconds: float


class Applier:
    def __init__(
        self,
        *,
        raft: RaftNode,
        fsm: StateMachine,
        clock: ReactorTime,
        proposals: ProposalWaiters,
        applied: IndexWaiters,
        digests: DigestBook,
        metrics: NodeMetrics,
        lifecycle: Lifecycle,
        applied_membership: Membership,
    ) -> None:
        self._raft = raft
        self._fsm = fsm
        self._apply_stamped = stamped_apply(fsm)
        self._sessions = with_sessions(fsm)  # wiring.build_node hands the sessioned FSM
        # An FSM without apply_stamped gets its plain commands through its own apply, as
        # stamped_apply would hand them, minus the wrappers' calls and a Stamp per entry.
        inner = self._sessions.inner
        self._apply_plain = None if hasattr(inner, "apply_stamped") else inner.apply
        self._clock = clock
        self._proposals = proposals
        self._applied = applied
        self._digests = digests
        self._metrics = metrics
        self._lifecycle = lifecycle
        # The membership as of the applied index: what a snapshot taken now must record.
        self.applied_membership = applied_membership
        # The latest stamp time among the entries applied (or covered by the snapshot they
        # follow): what a snapshot taken now records as its stamp floor.
        self.stamp_floor_ns = 0
        # When each batch this node proposed was proposed, by its first index (a latency metric).
        self.proposed_at: dict[int, float] = {}
        # Entries an operator marked rejected with `graft skip-entry` (see skip_rejected).
        self._rejected: dict[int, RejectedEntry] = {}
        # The FSM asks for its commands to be applied in a worker thread (graft.driver.fsm_work):
        # its commands may take long, and the reactor must keep the node's Raft timing.
        self.in_thread = bool(getattr(fsm, "apply_in_thread", False))

    def apply(self, entries: Sequence[Entry]) -> bool:
        """Apply committed entries in order, here; False if the FSM raised (the node then
        stops). A marker ends a ``compute``: its digest is taken in ``finish``, before the
        commands after it touch the FSM."""
        while True:
            computed = self.compute(entries)
            if not self.finish(entries, computed):
                return False
            done = len(computed.outcomes)
            if done == len(entries):
                return True
            entries = entries[done:]

    def compute(self, entries: Sequence[Entry]) -> Computed:
        """The FSM's part of applying ``entries``: each command's output or refusal, up to the
        first the FSM raised on, or up to a marker (a NOOP with data) that is not the last
        entry: the marker's digest must pin the FSM before the next command changes it, so
        the outcomes end with the marker's and the caller computes the rest after ``finish``.
        It touches only the FSM, so it may run in a worker thread while nothing else touches
        the FSM (graft.driver.fsm_work); ``finish`` does the rest on the reactor thread."""
        started = time.perf_counter()
        apply_stamped = self._apply_stamped
        apply_plain = self._apply_plain
        normal, stamped, noop = EntryKind.NORMAL, EntryKind.STAMPED, EntryKind.NOOP
        last = entries[-1]
        rejected = self._rejected
        floor = self.stamp_floor_ns
        outcomes: list[_Outcome | None] = []
        fatal: tuple[Failure, str | None] | None = None
        for entry in entries:
            kind = entry.kind
            if kind is not stamped and kind is not normal:
                outcomes.append(None)
                if kind is noop and entry.data and entry is not last:
                    break  # a marker: pinned in ``finish`` before what follows is applied
                continue
            index = entry.index
            output, error = b"", None
            session: Applied | None = None
            try:
                if rejected and index in rejected:
                    self._check_rejected(entry)  # raises CommandRejected if marked
                if kind is stamped:
                    time_ns, seed, command, sessioned = split_stamped(entry.data)
                    if time_ns > floor:
                        floor = time_ns
                    if sessioned:  # a client session's operation (graft.sessions)
                        session = self._sessions.apply_operation(
                            command, index, entry.term, Stamp(time_ns, seed), apply_stamped
                        )
                    elif apply_plain is not None:
                        output = apply_plain(command, index)
                    else:
                        output = apply_stamped(command, index, Stamp(time_ns, seed))
                else:  # written before stamps: the FSM answers as it did then
                    output = apply_stamped(entry.data, index, None)
            except CommandRejected as e:
                error = str(e)
            except StampFormatError as e:
                fatal = (Failure(), str(e))
                break
            except Exception:
                fatal = (Failure(), None)
                break
            outcomes.append((output, error, session))
        return Computed(outcomes, fatal, floor, time.perf_counter() - started)

    def finish(self, entries: Sequence[Entry], computed: Computed) -> bool:
        """The rest of applying ``entries`` once the FSM applied their commands (``compute``):
        membership and markers, the proposals' answers, the applied index. On the reactor
        thread, for the entries ``compute`` got to (it may have stopped at a marker). False
        if the FSM raised on one (the node then stops)."""
        now = self._clock.seconds()
        leader = self._raft.leader or ""
        proposed_at = self.proposed_at
        outcomes = computed.outcomes
        if computed.stamp_floor_ns > self.stamp_floor_ns:
            self.stamp_floor_ns = computed.stamp_floor_ns
        # Only the node that proposed entries waits on them: followers build no results. The
        # results are handed over once, after the loop (or before a fatal error's stop).
        results: list[tuple[int, int, CommandResult]] | None = [] if len(self._proposals) else None
        if results is None and not proposed_at:  # a follower: only membership and markers
            for entry, outcome in zip(entries, outcomes, strict=False):  # to a fatal one
                if outcome is None:
                    self._not_a_command(entry)
        else:
            for entry, outcome in zip(entries, outcomes, strict=False):  # to a fatal one
                index = entry.index
                if outcome is None:
                    self._not_a_command(entry)
                    output, error, session = b"", None, None
                else:
                    output, error, session = outcome
                if results is not None:
                    term = entry.term
                    if session is None:
                        result = make_command_result(index, term, leader, output, error)
                    else:
                        result = _session_result(session, leader)
                    results.append((index, term, result))
                if proposed_at:  # also once its waiter timed out, or the entry is not ours
                    started = proposed_at.pop(index, None)
                    if started is not None:
                        self._metrics.commit_latency.observe(now - started)
        if computed.fatal is not None:  # the FSM raised on the entry after the last outcome
            self._resolve(results)
            self._stop_at(entries[len(outcomes)], *computed.fatal)
            return False
        self._resolve(results)
        self._applied.advance(entries[len(outcomes) - 1].index)
        self._metrics.apply_duration.observe(computed.seconds)
        return True

    def _not_a_command(self, entry: Entry) -> None:
        if entry.kind is EntryKind.MEMBERSHIP:
            self.applied_membership = decode_membership(entry.data)
        elif entry.data:  # a NOOP with data: a marker (the consistency check's)
            self._digests.marker_applied(entry.index, entry.data)

    def _stop_at(self, entry: Entry, failure: Failure, stamp_error: str | None) -> None:
        if stamp_error is not None:
            self._lifecycle.fatal(
                failure,
                f"entry {entry.index} (term {entry.term}) cannot be applied: {stamp_error}",
                "Run the same Graft version on every node (upgrade this one).",
            )
        else:
            self._fatal_entry(failure, entry)

    def _resolve(self, results: list[tuple[int, int, CommandResult]] | None) -> None:
        if results:
            self._proposals.resolve_applied(results, overwritten, partly_applied)

    def skipped_to(self, index: int, membership: Membership, stamp_floor_ns: int = 0) -> None:
        """The entries up to ``index`` came in a snapshot and are never applied here one by
        one: their proposal times would otherwise stay in ``proposed_at`` for good."""
        self.applied_membership = membership
        self.stamp_floor_ns = max(self.stamp_floor_ns, stamp_floor_ns)
        self._applied.advance(index)
        for i in [i for i in self.proposed_at if i <= index]:
            del self.proposed_at[i]

    # -- poison entries --------------------------------------------------------------------

    def skip_rejected(self, rejected: Mapping[int, RejectedEntry]) -> None:
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
                f"entry {entry.index} was marked rejected on {self._raft.id} by an operator "
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
        self._lifecycle.fatal(
            failure,
            f"applying entry {entry.index} (term {entry.term}) to the FSM: it raised "
            f"{type(error).__name__}: {error}",
            "If this machine is the cause (disk full, I/O error), fix it and restart; if the "
            "FSM has a bug, deploy a fixed FSM and restart (the node replays the entry). As the "
            f"UNSAFE last resort, run `graft skip-entry {entry.index} -c CONFIG --node "
            f"{self._raft.id}` on every node that stops at this entry, then restart them "
            "(docs/operations.md, poison entries).",
        )


def _session_result(applied: Applied, leader: str) -> CommandResult:
    """The answer to a session operation: a duplicate's carries the index and term of the
    entry that first applied it."""
    return CommandResult(
        index=applied.index,
        term=applied.term,
        leader=leader,
        output=applied.output,
        error=applied.error,
        refusal=applied.refusal,
        duplicate=applied.duplicate,
    )
