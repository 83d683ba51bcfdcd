"""The driver's port: what the HTTP API (graft.api) may ask of a node. GraftNode implements it;
API tests use fakes. The API imports this module; the driver never imports graft.api.

Every Deferred fails with a graft.errors.GraftError subclass for anything the client should see;
any other exception is a bug and becomes a 500 ``internal`` error without a traceback.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

from prometheus_client import CollectorRegistry
from twisted.internet.defer import Deferred

from graft.raft.progress import ProgressState
from graft.raft.types import MemberAddress


class Consistency(enum.Enum):
    DEFAULT = "default"  # leader, under its lease (ReadIndex if the lease is not valid)
    STRONG = "strong"  # linearizable: ReadIndex, on the leader or a follower
    WEAK = "weak"  # this node's FSM as it is


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandResult:
    """A command applied at ``index`` in ``term``: ``output`` is the FSM's answer, or ``error``
    (the FSM's deterministic rejection message) when it refused the command.

    A numbered command of a client session (graft.sessions) may also carry ``refusal``: the
    error code when the session refused it (``session_expired``, ``sequence_forgotten``;
    ``error`` then says why), and ``duplicate``: it was applied before, and this is the first
    result again (``index``/``term`` are the entry that applied it)."""

    index: int
    term: int
    leader: str
    output: bytes = b""
    error: str | None = None
    refusal: str | None = None
    duplicate: bool = False


_SET_RESULT_FIELDS = tuple(
    CommandResult.__dict__[f].__set__
    for f in ("index", "term", "leader", "output", "error", "refusal", "duplicate")
)


def make_command_result(
    index: int, term: int, leader: str, output: bytes, error: str | None
) -> CommandResult:
    """``CommandResult(index=..., term=..., leader=..., output=..., error=...)`` for the leader's
    apply loop, which builds one per command: a frozen dataclass's __init__ sets each field
    through object.__setattr__, most of its cost; this sets the slots."""
    result: CommandResult = object.__new__(CommandResult)
    set_index, set_term, set_leader, set_output, set_error, set_refusal, set_dup = (
        _SET_RESULT_FIELDS
    )
    set_index(result, index)
    set_term(result, term)
    set_leader(result, leader)
    set_output(result, output)
    set_error(result, error)
    set_refusal(result, None)
    set_dup(result, False)
    return result


@dataclass(frozen=True, slots=True, kw_only=True)
class QueryResult:
    output: bytes
    applied_index: int  # the FSM state the query read
    leader: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerProgress:
    """The leader's view of one follower's replication."""

    match: int
    next: int
    state: ProgressState
    lag: int  # entries the follower lacks of the leader's log
    active: bool  # heard from within the last election timeout


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeStatus:
    """This node's view of itself and the cluster, as of the call (GET /status renders it:
    graft.api.views)."""

    id: str
    role: str
    term: int
    leader: str | None
    leader_api: str | None  # the leader's API base URL, when known
    commit: int
    applied: int
    first_index: int
    last_index: int
    snapshot_index: int
    snapshot_term: int
    voters: tuple[str, ...]  # sorted
    learners: tuple[str, ...]  # sorted
    peers_connected: tuple[str, ...]  # sorted
    last_check: Mapping[str, Any] | None = None  # the latest replica check's result
    space: Mapping[str, Any] | None = None  # the data dir's quota (graft.space), if watched
    progress: Mapping[str, PeerProgress] | None = None  # on the leader only
    log_bytes: int | None = None  # the log's size on disk, when the storage can tell
    fsm_bytes: int | None = None  # the FSM's size, when it can tell
    certificate_not_after: float | None = None  # this node's peer certificate (Unix time)
    non_voters: tuple[str, ...] = ()  # sorted; the learners that stay learners


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberList:
    """The membership as this node knows it (GET /cluster/members renders it)."""

    leader: str | None
    voters: tuple[str, ...]  # sorted
    learners: tuple[str, ...]  # sorted
    addresses: Mapping[str, MemberAddress] = field(default_factory=dict)  # by id, sorted
    # The learners that stay learners (read replicas), sorted; the others are on their way
    # to become voters.
    non_voters: tuple[str, ...] = ()


class ClusterBackend(Protocol):
    @property
    def node_id(self) -> str: ...

    @property
    def content_type(self) -> str:
        """The FSM's output media type (``application/json`` for the built-in FSMs)."""
        ...

    def leader_id(self) -> str | None: ...

    def is_leader(self) -> bool: ...

    def api_url(self, node_id: str) -> str | None:
        """The base URL of a member's HTTP API (``http://host:port``), for redirects."""
        ...

    def submit(self, commands: Sequence[bytes]) -> Deferred[list[CommandResult]]:
        """Append the commands (forwarding to the leader from a follower), wait until each is
        committed and applied, and return their results in order. Fails with NoLeader or
        Timeout as a whole; per-command FSM rejections are CommandResult.error."""
        ...

    def submit_operations(self, operations: Sequence[bytes]) -> Deferred[list[CommandResult]]:
        """``submit`` for client-session operations (graft.sessions.envelope: a registration,
        numbered commands, the session settings): the same path, and one result each."""
        ...

    def query(
        self,
        query: bytes,
        consistency: Consistency,
        *,
        min_index: int | None = None,
        max_lag_ms: int | None = None,
        timeout: float | None = None,
    ) -> Deferred[QueryResult]:
        """Run a read at the asked consistency, within ``timeout`` seconds (None: the node's
        default). Fails with BadRequest when the FSM refuses the query (e.g. a write
        statement), NoLeader, Timeout, or QueryTimeout when the FSM stopped the query at the
        time limit."""
        ...

    def status(self) -> NodeStatus:
        """This node's view (DESIGN.md section 5, GET /status)."""
        ...

    def is_ready(self) -> bool:
        """A leader is known and this node has applied up to that leader's commit index."""
        ...

    @property
    def metrics(self) -> CollectorRegistry: ...


class ClusterAdmin(Protocol):
    """Cluster administration (DESIGN.md section 5). GraftNode implements it; on a follower each
    operation is carried out by the leader (forwarded over the peer channel), except
    ``shutdown`` and ``latest_snapshot``, which concern the node asked.

    Failures are GraftErrors: BadRequest (e.g. already a member, a change in progress),
    NotFound (no such member), NoLeader, Timeout.
    """

    def members(self) -> MemberList:
        """The members, their addresses and the leader, as this node knows them."""
        ...

    def add_member(
        self, node_id: str, host: str, p2p_port: int, api_port: int
    ) -> Deferred[MemberList]:
        """Add as a learner, wait until it has caught up, promote it to voter; answers
        members() once the promotion is committed."""
        ...

    def remove_member(self, node_id: str) -> Deferred[MemberList]:
        """Remove a member (the leader hands over first if it is the one removed)."""
        ...

    def add_non_voter(
        self, node_id: str, host: str, p2p_port: int, api_port: int
    ) -> Deferred[MemberList]:
        """Add a member that receives the log and serves reads but never votes; answers
        members() once the change is committed (the member catches up afterwards)."""
        ...

    def promote_member(self, node_id: str) -> Deferred[MemberList]:
        """Make a learner (a non-voter, or one still joining) a voter once it has caught up."""
        ...

    def demote_member(self, node_id: str) -> Deferred[MemberList]:
        """Make a voter a non-voter (the leader hands over first if it is the one demoted)."""
        ...

    def update_member(
        self, node_id: str, host: str, p2p_port: int | None, api_port: int | None
    ) -> Deferred[MemberList]:
        """Change a member's advertised addresses in the replicated membership (a port that
        is None keeps the one the membership has); answers members() once committed."""
        ...

    def transfer_leadership(self, target: str | None) -> Deferred[dict[str, Any]]:
        """Hand leadership to ``target`` (the most caught-up voter when None); answers
        ``{"leader": new leader, "term": term}`` once it has moved."""
        ...

    def take_snapshot(self) -> Deferred[dict[str, Any]]:
        """Snapshot this node's FSM now and compact its log; answers ``{"index", "term"}``."""
        ...

    def latest_snapshot(self) -> tuple[dict[str, Any], BinaryIO] | None:
        """This node's latest snapshot: its manifest (index, term, membership, fsm, size) and
        an open file positioned at the start of the data, or None when there is none."""
        ...

    def shutdown(self) -> None:
        """Stop this node gracefully (as SIGTERM does: a leader hands over first)."""
        ...

    def check_replicas(self) -> Deferred[dict[str, Any]]:
        """Run a replica consistency check (graft.consistency) on the leader: every member's
        FSM digest at one log index. Answers ``{"check", "index", "ok", "complete",
        "mismatch": [ids], "members": {id: {"digest", "error"}}}``."""
        ...
