"""What the core hands its driver: a Ready, and the status the API reports."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from graft.raft.messages import (
    AppendEntries,
    Heartbeat,
    HeartbeatResponse,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
)
from graft.raft.progress import ProgressState
from graft.raft.types import Entry, HardState, Membership, NodeId, SnapshotMeta


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"
    LEARNER = "learner"


@dataclass(frozen=True, slots=True, kw_only=True)
class SoftState:
    """Volatile state the driver wants to know about when it changes."""

    role: Role
    leader: NodeId | None
    term: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadState:
    """The answer to ``read_index(context)``: once applied >= index, a read is linearizable.

    ``index`` None means the read was refused (no leader, or the leader has not committed in its
    term yet, or it lost leadership): the driver fails or retries that read.
    """

    context: bytes
    index: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Ready:
    """Work for the driver, to be done in this order (see DESIGN.md section 2):

    1. install ``snapshot`` (if not None: it replaces the log, and the FSM is restored from it),
       then persist ``hard_state`` and ``entries`` (which may replace a suffix, and after a
       snapshot start right after its index);
    2. send ``messages`` (only after step 1 is durable, except those ``leaves_before_write``
       allows, which need only their term to be durable);
    3. apply ``committed_entries`` to the FSM in order, answer ``read_states``;
    4. call ``advance(ready)``.
    """

    hard_state: HardState | None = None
    entries: tuple[Entry, ...] = ()
    snapshot: SnapshotMeta | None = None
    messages: tuple[Message, ...] = ()
    committed_entries: tuple[Entry, ...] = ()
    read_states: tuple[ReadState, ...] = ()
    soft_state: SoftState | None = None

    def __bool__(self) -> bool:
        return bool(
            self.hard_state is not None
            or self.entries
            or self.snapshot is not None
            or self.messages
            or self.committed_entries
            or self.read_states
            or self.soft_state is not None
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerProgress:
    """The leader's view of one follower's replication (etcd's Progress)."""

    match: int
    next: int
    state: ProgressState
    inflight: int
    recent_active: bool
    learner: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Status:
    id: NodeId
    role: Role
    term: int
    vote: NodeId | None
    leader: NodeId | None
    commit: int
    applied: int
    first_index: int
    last_index: int
    snapshot: SnapshotMeta
    membership: Membership
    lease_valid: bool = False
    progress: dict[NodeId, PeerProgress] = field(default_factory=dict)


# -- messages that need not wait for a write ---------------------------------------------------
#
# A Ready's messages leave once its writes (and every earlier Ready's) are durable, except the
# ones below: they claim nothing about this node's log or vote, only its term (docs/
# architecture.md, "Messages before writes"). Both drivers (graft.driver and the simulation's)
# use these two functions, so the simulation checks the rule the node runs.


def leaves_before_write(message: Message, durable_term: int) -> bool:
    """Whether ``message`` may leave before the writes of its Ready and earlier ones.

    A leader's appends and heartbeats, a heartbeat answer (term and round number only) and the
    read-index traffic, of a term that is already durable here. Never a vote, a vote answer, an
    append answer (its match index claims entries on disk), a TimeoutNow or a snapshot.
    """
    return isinstance(message, _BEFORE_WRITE) and message.term == durable_term


def leaves_between_readies(message: Message, durable_term: int) -> bool:
    """Whether ``message`` may leave through ``RaftNode.take_messages`` while the driver cannot
    take a Ready (its earlier Readies still wait on the disk).

    As ``leaves_before_write`` but without AppendEntries: the appends wait for the next Ready,
    so that, under load, the entries proposed meanwhile still leave together (group commit).
    """
    return isinstance(message, _BETWEEN_READIES) and message.term == durable_term


_BETWEEN_READIES = (Heartbeat, HeartbeatResponse, ReadIndexRequest, ReadIndexResponse)
_BEFORE_WRITE = (AppendEntries, *_BETWEEN_READIES)
