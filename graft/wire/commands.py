"""AMP-style commands: named requests with declared argument and answer schemas.

A command is asked with ``_ask`` (id, name, arguments) and answered with ``_answer`` (id,
result) or ``_error`` (id, code, message). Schemas are maps of field name to annotation (see
graft.wire.schema); both sides check them, so a handler only ever sees well-typed arguments and
a caller only ever sees a well-typed answer. The node registers its own commands on
``COMMANDS`` (or on a registry it passes to the transport).

Error codes every command may answer with: ``unknown_command``, ``bad_arguments`` and
``internal``; a command declares any others it uses (``errors``, documentation for callers:
the codes of graft.errors, since forwarded calls relay those to the client).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from graft.wire.errors import ProtocolError, SchemaError
from graft.wire.schema import compile_fields

# The handler ran (a command was applied, a query answered) but its answer is over the frame
# limit, so it cannot be sent: the caller must not take this for "not done".
ANSWER_TOO_LARGE = "answer_too_large"
STANDARD_ERRORS = frozenset({"unknown_command", "bad_arguments", "internal", ANSWER_TOO_LARGE})


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    name: str
    arguments: Mapping[str, Any]
    response: Mapping[str, Any]
    errors: frozenset[str] = frozenset()
    check_arguments: Callable[[Any, str], dict[str, Any]] = field(init=False, repr=False)
    check_response: Callable[[Any, str], dict[str, Any]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # Compiled once here: a bad annotation fails at import time, not on the first ask.
        object.__setattr__(self, "check_arguments", compile_fields(self.arguments))
        object.__setattr__(self, "check_response", compile_fields(self.response))


class CommandRegistry:
    """The commands one side understands, by name."""

    def __init__(self, commands: tuple[Command, ...] = ()) -> None:
        self._commands: dict[str, Command] = {}
        for command in commands:
            self.register(command)

    def register(self, command: Command) -> Command:
        if command.name in self._commands:
            raise ValueError(f"command {command.name!r} is already registered; pick another name")
        self._commands[command.name] = command
        return command

    def get(self, name: str) -> Command | None:
        return self._commands.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._commands

    def __iter__(self) -> Iterator[Command]:
        return iter(self._commands.values())

    def copy(self) -> CommandRegistry:
        return CommandRegistry(tuple(self._commands.values()))

    def outgoing_arguments(self, name: str, args: Mapping[str, Any]) -> dict[str, Any]:
        """Check arguments this side is about to send; SchemaError is a local programming error."""
        command = self._require(name)
        try:
            return command.check_arguments(dict(args), f"{name} arguments")
        except ProtocolError as e:
            raise SchemaError(e.reason) from None

    def outgoing_response(self, name: str, result: Mapping[str, Any]) -> dict[str, Any]:
        command = self._require(name)
        try:
            return command.check_response(dict(result), f"{name} answer")
        except ProtocolError as e:
            raise SchemaError(e.reason) from None

    def _require(self, name: str) -> Command:
        command = self._commands.get(name)
        if command is None:
            raise SchemaError(f"unknown command {name!r}: register it on the CommandRegistry")
        return command


FORWARD_SUBMIT = Command(
    name="forward_submit",
    # A follower forwards client commands to the leader; one result per command, in order.
    arguments={"commands": list[bytes]},
    response={"results": list[Any]},
    errors=frozenset({"no_leader", "timeout", "bad_request"}),
)

FORWARD_SESSION_SUBMIT = Command(
    name="forward_session_submit",
    # A follower forwards client-session operations (graft.sessions.envelope) to the leader:
    # registrations and numbered commands; one result per operation, in order.
    arguments={"operations": list[bytes]},
    response={"results": list[Any]},
    errors=frozenset({"no_leader", "timeout", "bad_request"}),
)

FORWARD_QUERY = Command(
    name="forward_query",
    arguments={"query": bytes, "consistency": str, "min_index": int | None},
    response={"output": bytes, "applied_index": int},
    errors=frozenset({"no_leader", "timeout", "query_timeout", "bad_request"}),
)

FORWARD_QUERY_WITHIN = Command(
    name="forward_query_within",
    # forward_query with the client's own time limit (?timeout=), in seconds. A separate
    # command, so that forward_query keeps its schema for nodes that do not know this one.
    arguments={"query": bytes, "consistency": str, "min_index": int | None, "timeout": float},
    response={"output": bytes, "applied_index": int},
    errors=frozenset({"no_leader", "timeout", "query_timeout", "bad_request"}),
)

FORWARD_ADMIN = Command(
    name="forward_admin",
    # A follower forwards cluster administration (add/remove member, transfer) to the leader.
    arguments={"op": str, "args": dict[str, Any]},
    response={"result": dict[str, Any]},
    errors=frozenset({"no_leader", "timeout", "bad_request", "not_found"}),
)

# The operations forward_admin carries: its "op" is one of these names, its "args" are checked
# against the operation's arguments. Not registered on COMMANDS: they travel inside forward_admin,
# whose "result" is the operation's answer document.
ADMIN_ADD_MEMBER = Command(
    name="add_member",
    arguments={"id": str, "host": str, "p2p": int, "api": int},
    response={},
)
ADMIN_REMOVE_MEMBER = Command(name="remove_member", arguments={"id": str}, response={})
ADMIN_TRANSFER_LEADERSHIP = Command(
    name="transfer_leadership", arguments={"id": str | None}, response={}
)
ADMIN_CHECK = Command(name="check", arguments={}, response={})  # a replica consistency check
# A member that receives the log and serves reads but never votes (a read replica).
ADMIN_ADD_NON_VOTER = Command(
    name="add_non_voter",
    arguments={"id": str, "host": str, "p2p": int, "api": int},
    response={},
)
ADMIN_PROMOTE_MEMBER = Command(name="promote_member", arguments={"id": str}, response={})
ADMIN_DEMOTE_MEMBER = Command(name="demote_member", arguments={"id": str}, response={})
# A member's advertised addresses, changed in the replicated membership (a port left out,
# nil, keeps the one the membership has).
ADMIN_UPDATE_MEMBER = Command(
    name="update_member",
    arguments={"id": str, "host": str, "p2p": int | None, "api": int | None},
    response={},
)

INSTALL_SNAPSHOT_CHUNK = Command(
    name="install_snapshot_chunk",
    # The leader streams its snapshot file to a follower, one chunk per call. A call at offset 0
    # with no data asks where to resume; the answer's next_offset is where the receiver wants
    # the next chunk (its partial file's size), so a broken transfer resumes, not restarts.
    # crc32 covers the whole file; the receiver checks it before the core may install it.
    arguments={
        "term": int,
        "snapshot_index": int,
        "snapshot_term": int,
        "membership": dict[str, Any],
        "fsm": str,
        "size": int,
        "offset": int,
        "data": bytes,
        "done": bool,
        "crc32": int,
        "stamp_floor_ns": int,  # SnapshotMeta.stamp_floor_ns
    },
    response={"term": int, "next_offset": int},
    errors=frozenset({"bad_request"}),
)

REPLICA_DIGEST = Command(
    name="replica_digest",
    # The leader running a consistency check asks a member for its digest of the FSM state at
    # the check's marker (graft.consistency); the member answers once it has applied the marker
    # and computed the digest.
    arguments={"check": str, "index": int},
    response={"digest": str},
    errors=frozenset({"no_leader", "timeout", "not_found"}),
)

COMMANDS = CommandRegistry(
    (
        FORWARD_SUBMIT,
        FORWARD_QUERY,
        FORWARD_ADMIN,
        INSTALL_SNAPSHOT_CHUNK,
        REPLICA_DIGEST,
        FORWARD_QUERY_WITHIN,
        FORWARD_SESSION_SUBMIT,
    )
)
