# mypy: disable-error-code="no-untyped-call"
"""Commands: proposed on the leader (forwarded to it from a follower), answered once applied."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred

from graft import devtrace
from graft.driver.apply import Applier
from graft.driver.clock import ReactorTime
from graft.driver.forwarding import Forwarder, result_to_wire
from graft.driver.lifecycle import Lifecycle, Scheduler
from graft.driver.outcomes import failed, not_leader_any_more, timed_out
from graft.driver.port import CommandResult
from graft.driver.space import SpaceReporting
from graft.driver.stamps import Stamper
from graft.errors import NoLeader, Overloaded, shutting_down
from graft.metrics import NodeMetrics
from graft.raft.errors import NotLeader, ProposalDropped
from graft.raft.node import RaftNode
from graft.raft.ready import Role
from graft.raft.types import EntryKind
from graft.stamp import SESSION_VERSION, STAMP_VERSION
from graft.waiters import ProposalWaiters


class Proposer:
    def __init__(
        self,
        *,
        raft: RaftNode,
        clock: ReactorTime,
        proposals: ProposalWaiters,
        applier: Applier,
        space: SpaceReporting,
        forwarder: Forwarder,
        pipeline: Scheduler,
        lifecycle: Lifecycle,
        metrics: NodeMetrics,
        command_timeout: float,
        stamper: Stamper,
    ) -> None:
        self._raft = raft
        self._clock = clock
        self._proposals = proposals
        self._applier = applier
        self._space = space
        self._forwarder = forwarder
        self._pipeline = pipeline
        self._lifecycle = lifecycle
        self._metrics = metrics
        self._command_timeout = command_timeout
        self._stamper = stamper

    def submit(
        self, commands: Sequence[bytes], *, sessioned: bool = False
    ) -> Deferred[list[CommandResult]]:
        """Propose ``commands`` (``sessioned``: session operations, graft.sessions.envelope)."""
        if self._lifecycle.stopping:
            return failed(shutting_down())
        if (refused := self._space.refusal()) is not None:
            return failed(refused)
        if self._raft.role is Role.LEADER:
            return self._propose(commands, sessioned)
        d: Deferred[Any] = self._forwarder.route_to_leader()
        d.addCallback(
            lambda leader: (
                self._propose(commands, sessioned)
                if leader == self._raft.id
                else self._forwarder.submit_on(leader, commands, sessioned=sessioned)
            )
        )
        return d

    def forwarded(self, peer: str, args: dict[str, Any]) -> Deferred[dict[str, Any]]:
        """forward_submit: a follower's client commands, on this leader."""
        if self._raft.role is not Role.LEADER:
            return failed(not_leader_any_more(self._raft.id))
        d: Deferred[Any] = self.submit([bytes(c) for c in args["commands"]])
        return d.addCallback(lambda results: {"results": [result_to_wire(r) for r in results]})

    def forwarded_operations(self, peer: str, args: dict[str, Any]) -> Deferred[dict[str, Any]]:
        """forward_session_submit: a follower's client-session operations, on this leader."""
        if self._raft.role is not Role.LEADER:
            return failed(not_leader_any_more(self._raft.id))
        d: Deferred[Any] = self.submit([bytes(c) for c in args["operations"]], sessioned=True)
        return d.addCallback(lambda results: {"results": [result_to_wire(r) for r in results]})

    def _propose(
        self, commands: Sequence[bytes], sessioned: bool = False
    ) -> Deferred[list[CommandResult]]:
        try:
            self._proposals.check_room(len(commands))
        except Overloaded as e:
            self._metrics.proposals_failed.labels(reason="overloaded").inc()
            return failed(e)
        try:
            # Stamped here, on the leader: a follower forwards its clients' commands unstamped.
            version = SESSION_VERSION if sessioned else STAMP_VERSION
            stamped = self._stamper.stamp(commands, version)
            indexes = self._raft.propose_batch(stamped, EntryKind.STAMPED)
        except NotLeader:
            self._metrics.proposals_failed.labels(reason="not_leader").inc()
            return failed(NoLeader("this node lost leadership before proposing; retry"))
        except ProposalDropped:
            self._metrics.proposals_failed.labels(reason="transfer").inc()
            return failed(NoLeader("leadership is being transferred; retry shortly"))
        if devtrace.ON:
            devtrace.mark("propose", indexes[-1])
        term = self._raft.term
        self._metrics.proposals.inc(len(indexes))
        self._space.note_proposed(commands)
        # One latency observation per batch, timed on its first entry.
        self._applier.proposed_at[indexes[0]] = self._clock.seconds()
        d: Deferred[Any] = self._proposals.add_batch(
            indexes[0], len(indexes), term, self._command_timeout, timed_out
        )
        self._pipeline.schedule()
        return d
