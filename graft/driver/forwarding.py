# mypy: disable-error-code="no-untyped-call"
"""Forwarding to the leader, and the peer requests this node answers.

A follower sends commands, default reads and administration to the leader over the peer
channel, so that a client may talk to any node. Outgoing calls are the Forwarder's; incoming
ones go through PeerRequests, a table of one handler per command schema (graft.wire.commands),
whose arguments the transport has checked against that schema before the handler sees them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from twisted.internet.defer import Deferred

from graft.driver.clock import ReactorTime
from graft.driver.lifecycle import Lifecycle
from graft.driver.outcomes import (
    applied_but_too_large,
    failed,
    not_leader_any_more,
    remote_failure,
    timed_out,
)
from graft.driver.peers import PeerPort
from graft.driver.port import CommandResult, Consistency, MemberList, QueryResult
from graft.driver.quorum import leaderless, quorum_lost
from graft.driver.settings import DriverSettings
from graft.errors import BadRequest, GraftError, NoLeader, NoQuorum, Timeout, shutting_down
from graft.raft.node import RaftNode
from graft.raft.ready import Role
from graft.raft.types import MemberAddress
from graft.wire.commands import (
    FORWARD_ADMIN,
    FORWARD_QUERY,
    FORWARD_QUERY_WITHIN,
    FORWARD_SESSION_SUBMIT,
    FORWARD_SUBMIT,
    Command,
)
from graft.wire.errors import ProtocolError

# A handler of a peer request: the peer's id and the checked arguments, to the answer.
Handler = Callable[[str, dict[str, Any]], Deferred[dict[str, Any]]]
# An administrative operation carried out on the leader: its checked arguments, to its answer.
AdminHandler = Callable[[dict[str, Any]], Deferred[Any]]
T = TypeVar("T")


def as_is(document: dict[str, Any]) -> dict[str, Any]:
    """The codec of an operation whose answer travels as it is (a JSON-ready document)."""
    return document


def members_to_wire(members: MemberList) -> dict[str, Any]:
    """A membership change's answer in forward_admin's result. The peer protocol's shape (the
    same as GET /cluster/members today, which graft.api.views renders on its own), kept for
    nodes of other versions."""
    return {
        "leader": members.leader,
        "voters": list(members.voters),
        "learners": list(members.learners),
        "non_voters": list(members.non_voters),
        "addresses": {
            node: {"host": a.host, "p2p": a.p2p_port, "api": a.api_port}
            for node, a in members.addresses.items()
        },
    }


def members_from_wire(raw: dict[str, Any]) -> MemberList:
    return MemberList(
        leader=raw["leader"],
        voters=tuple(raw["voters"]),
        learners=tuple(raw["learners"]),
        non_voters=tuple(raw.get("non_voters", ())),  # absent from older nodes' answers
        addresses={
            node: MemberAddress(host=str(a["host"]), p2p_port=int(a["p2p"]), api_port=int(a["api"]))
            for node, a in raw["addresses"].items()
        },
    )


def result_to_wire(r: CommandResult) -> dict[str, Any]:
    wire = {
        "index": r.index,
        "term": r.term,
        "leader": r.leader,
        "output": r.output,
        "error": r.error,
    }
    if r.refusal is not None:  # a session's answers only (older nodes never see them)
        wire["refusal"] = r.refusal
    if r.duplicate:
        wire["duplicate"] = True
    return wire


def result_from_wire(raw: dict[str, Any]) -> CommandResult:
    refusal = raw.get("refusal")
    return CommandResult(
        index=int(raw["index"]),
        term=int(raw["term"]),
        leader=str(raw["leader"]),
        output=bytes(raw["output"]),
        error=raw["error"],
        refusal=None if refusal is None else str(refusal),
        duplicate=raw.get("duplicate") is True,
    )


def forwarded_time_limit(value: object, most: float) -> float | None:
    """The time limit a follower forwarded with a read, at most this node's own maximum; None
    (this node's default) when there is none or it is not a positive number of seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return min(float(value), most)  # NaN fails `> 0`; inf becomes `most`
    return None


class Forwarder:
    """Outgoing calls to the leader."""

    def __init__(
        self,
        *,
        raft: RaftNode,
        clock: ReactorTime,
        peers: PeerPort,
        lifecycle: Lifecycle,
        settings: DriverSettings,
    ) -> None:
        self._raft = raft
        self._clock = clock
        self._peers = peers
        self._lifecycle = lifecycle
        self._settings = settings

    def route_to_leader(self) -> Deferred[str]:
        """The leader to send a request to: this node, or a leader whose peer connection is up.

        Right after an election a follower may know the leader before its own connection to it
        is up (or know none yet); waiting a little here spares clients a 503 in that window.
        """
        d: Deferred[str] = Deferred()
        settings = self._settings
        deadline = self._clock.seconds() + min(settings.route_wait, settings.command_timeout)

        def poll() -> None:
            if self._lifecycle.stopping:
                d.errback(shutting_down())
                return
            leader = self._raft.leader
            if leader == self._raft.id and self._raft.role is Role.LEADER:
                d.callback(leader)
                return
            if leader is not None and leader in self._peers.connected_peers():
                d.callback(leader)
                return
            if self._clock.seconds() >= deadline:
                d.errback(leaderless(self._raft, self._peers.connected_peers()))
                return
            self._clock.callLater(settings.tick_seconds, poll)

        poll()
        return d

    def quorum_lost(self) -> NoQuorum | None:
        """A NoQuorum naming the voters out of reach, when a majority of them is."""
        return quorum_lost(self._raft, self._peers.connected_peers())

    def submit_on(
        self, leader: str, commands: Sequence[bytes], *, sessioned: bool = False
    ) -> Deferred[list[CommandResult]]:
        # Session operations travel in a command of their own, so that forward_submit keeps
        # its schema and a leader that does not know sessions refuses them (unknown_command).
        name, key = (
            (FORWARD_SESSION_SUBMIT.name, "operations")
            if sessioned
            else (FORWARD_SUBMIT.name, "commands")
        )
        d: Deferred[Any] = self._peers.call(
            leader,
            name,
            {key: list(commands)},
            timeout=self._settings.command_timeout + 1.0,
        )
        d.addCallback(lambda answer: [result_from_wire(r) for r in answer["results"]])
        d.addErrback(applied_but_too_large, leader, len(commands))
        # Once sent, a lost answer leaves the outcome unknown: the leader may have committed it.
        d.addErrback(remote_failure, leader, lost=timed_out)
        return d

    def query_on(
        self,
        leader: str,
        query: bytes,
        consistency: Consistency,
        min_index: int | None,
        timeout: float | None,
    ) -> Deferred[QueryResult]:
        args: dict[str, Any] = {
            "query": query,
            "consistency": consistency.value,
            "min_index": min_index,
        }
        # Only a client's own ?timeout= needs the newer command: without it, the leader's
        # default applies, and a leader that predates the command still answers.
        command = FORWARD_QUERY if timeout is None else FORWARD_QUERY_WITHIN
        if timeout is not None:
            args["timeout"] = float(timeout)
        d: Deferred[Any] = self._peers.call(
            leader,
            command.name,
            args,
            timeout=(self._settings.query_timeout if timeout is None else timeout) + 1.0,
        )
        d.addCallback(
            lambda a: QueryResult(
                output=bytes(a["output"]), applied_index=int(a["applied_index"]), leader=leader
            )
        )
        d.addErrback(
            remote_failure,
            leader,
            lost=lambda: NoLeader(f"the leader {leader} did not answer the read; retry"),
        )
        return d

    def on_leader(
        self,
        op: Command,
        args: dict[str, Any],
        here: Callable[[], Deferred[T]],
        decode: Callable[[dict[str, Any]], T],
    ) -> Deferred[T]:
        """Run an administrative operation on the leader: ``here()`` if it is this node, else
        forwarded to it (its answer decoded from the wire)."""
        if self._lifecycle.stopping:
            return failed(shutting_down())

        def route(leader: str) -> Deferred[T]:
            if leader == self._raft.id:
                return here()
            return self.admin_on(leader, op, args).addCallback(decode)

        routed: Deferred[Any] = self.route_to_leader()
        return routed.addCallback(route)

    def admin_on(self, leader: str, op: Command, args: dict[str, Any]) -> Deferred[dict[str, Any]]:
        d: Deferred[Any] = self._peers.call(
            leader,
            FORWARD_ADMIN.name,
            {"op": op.name, "args": args},
            timeout=self._settings.catch_up_timeout + 10.0,
        )
        d.addCallback(lambda answer: answer["result"])
        d.addErrback(
            remote_failure,
            leader,
            lost=lambda: Timeout(
                f"the leader {leader} did not answer the {op.name} request; check "
                "`graft members list` before retrying"
            ),
        )
        return d


class PeerRequests:
    """The requests peers may send this node: one handler per command, by its schema's name."""

    def __init__(self, handlers: Sequence[tuple[Command, Handler]]) -> None:
        self._handlers = {command.name: handler for command, handler in handlers}

    def handle(self, peer: str, command: str, args: dict[str, Any]) -> Deferred[dict[str, Any]]:
        handler = self._handlers.get(command)
        if handler is None:
            return failed(BadRequest(f"unknown peer request {command!r}"))
        try:
            return handler(peer, args)
        except GraftError as e:
            return failed(e)


class AdminRequests:
    """forward_admin on the leader: one handler per administrative operation's schema."""

    def __init__(
        self,
        raft: RaftNode,
        handlers: Sequence[tuple[Command, AdminHandler, Callable[[Any], dict[str, Any]]]],
    ) -> None:
        """``handlers``: each operation's schema, handler, and the encoder of its answer."""
        self._raft = raft
        self._handlers = {op.name: (op, handler, encode) for op, handler, encode in handlers}

    def handle(self, peer: str, args: dict[str, Any]) -> Deferred[dict[str, Any]]:
        if self._raft.role is not Role.LEADER:
            return failed(not_leader_any_more(self._raft.id))
        name = str(args["op"])
        found = self._handlers.get(name)
        if found is None:
            return failed(BadRequest(f"unknown administrative operation {name!r}"))
        op, handler, encode = found
        try:
            op_args = op.check_arguments(args["args"], f"{name} arguments")
        except ProtocolError as e:
            return failed(BadRequest(e.reason))
        d = handler(op_args)
        return d.addCallback(lambda result: {"result": encode(result)})
