"""The messages Raft peers exchange: frozen, typed classes; the core dispatches on the class.

The wire codec (graft.wire) encodes any class listed in MESSAGE_TYPES generically from its
dataclass fields, so a field may only use: int, bool, str, bytes, ``X | None`` of those,
Membership, SnapshotMeta, and ``tuple[Entry, ...]``. Adding a message means adding it here and
to MESSAGE_TYPES; the codec needs no change.
"""

from __future__ import annotations

from dataclasses import dataclass

from graft.raft.types import Entry, NodeId, SnapshotMeta


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestVote:
    """A candidate (or a pre-candidate, when pre_vote) asks for a vote.

    For a pre-vote, ``term`` is the term the sender *would* campaign in; its own term is unchanged.
    ``transfer`` marks an election started by TimeoutNow, which bypasses leader stickiness.
    """

    term: int
    sender: NodeId
    to: NodeId
    last_log_index: int
    last_log_term: int
    pre_vote: bool = False
    transfer: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestVoteResponse:
    term: int
    sender: NodeId
    to: NodeId
    granted: bool
    pre_vote: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendEntries:
    """Replicate ``entries`` after (prev_index, prev_term); ``commit``: the leader's commit."""

    term: int
    sender: NodeId
    to: NodeId
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendEntriesResponse:
    """On success ``match_index`` is the last index now known to match the leader.

    On rejection, ``reject_index`` is the prev_index that did not match and ``hint_index`` /
    ``hint_term`` let the leader skip a whole conflicting term at once (fast back-tracking).
    """

    term: int
    sender: NodeId
    to: NodeId
    success: bool
    match_index: int = 0
    reject_index: int = 0
    hint_index: int = 0
    hint_term: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat:
    """Keeps followers from campaigning and advances their commit; ``seq`` names the round.

    A leader confirms pending ReadIndex requests and renews its lease when a quorum has answered
    a round whose seq is at least the one the request was registered under.
    """

    term: int
    sender: NodeId
    to: NodeId
    commit: int
    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class HeartbeatResponse:
    term: int
    sender: NodeId
    to: NodeId
    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadIndexRequest:
    """A follower asks the leader for a read index on behalf of its client (``context``)."""

    term: int
    sender: NodeId
    to: NodeId
    context: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadIndexResponse:
    """``index`` is None when the leader refused (e.g. it has not yet committed in its term)."""

    term: int
    sender: NodeId
    to: NodeId
    context: bytes
    index: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeoutNow:
    """Leadership transfer: the receiver campaigns at once, bypassing leader stickiness."""

    term: int
    sender: NodeId
    to: NodeId


@dataclass(frozen=True, slots=True, kw_only=True)
class InstallSnapshot:
    """The leader tells a follower to install the snapshot described by ``snapshot``.

    The core deals in metadata only; the transport streams the snapshot file in chunks and steps
    this message into the receiving core once the whole file is on the receiver's disk.
    """

    term: int
    sender: NodeId
    to: NodeId
    snapshot: SnapshotMeta


Message = (
    RequestVote
    | RequestVoteResponse
    | AppendEntries
    | AppendEntriesResponse
    | Heartbeat
    | HeartbeatResponse
    | ReadIndexRequest
    | ReadIndexResponse
    | TimeoutNow
    | InstallSnapshot
)

MESSAGE_TYPES: tuple[type[Message], ...] = (
    RequestVote,
    RequestVoteResponse,
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    ReadIndexRequest,
    ReadIndexResponse,
    TimeoutNow,
    InstallSnapshot,
)
