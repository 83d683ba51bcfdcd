"""RaftState: the state every part of a RaftNode shares, and the helpers all parts use.

RaftNode (node.py) is built from one class per concern, each extending the one before it:
RaftState, Reads (reads.py), MembershipChanges (membership.py), Replication (replication.py),
Elections (election.py), RaftNode. They share the attributes set here. Only RaftNode is meant to
be built; the others are its parts, in modules so that each concern reads on its own.
"""

from __future__ import annotations

from graft.raft.config import RaftConfig
from graft.raft.log import RaftLog
from graft.raft.messages import Message
from graft.raft.progress import Progress
from graft.raft.readonly import ReadQueue
from graft.raft.ready import ReadState, Role, SoftState
from graft.raft.rng import Rng
from graft.raft.storage import LogStorage
from graft.raft.types import HardState, NodeId


class RaftState:
    """Terms, votes, the log, timers and the outbox of one Raft server."""

    def __init__(self, config: RaftConfig, storage: LogStorage, rng: Rng) -> None:
        if config.election_ticks <= config.heartbeat_ticks:
            raise ValueError(
                "election_ticks must exceed heartbeat_ticks; raise election_ticks in RaftConfig"
            )
        self._cfg = config
        self._id = config.id
        self._rng = rng
        hard_state, membership = storage.initial_state()
        self._membership = membership if membership is not None else config.bootstrap
        # Index of the entry that defined the membership (0: bootstrap or snapshot); None until
        # known, since storage only tells the membership itself.
        self._membership_index: int | None = None if membership is not None else 0
        self._log = RaftLog(storage, committed=hard_state.commit, applied=config.applied)
        self._term = hard_state.term
        self._vote: NodeId | None = hard_state.vote
        self._leader: NodeId | None = None
        self._role = Role.FOLLOWER if self._id in self._membership.voters else Role.LEARNER

        self._ticks = 0
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = config.election_ticks
        self._reset_randomized_timeout()
        # A node that just (re)started does not know whether a leader holds a lease that counts
        # on it, so it grants no votes for one election timeout.
        self._quiet = True

        self._msgs: list[Message] = []
        self._read_states: list[ReadState] = []
        self._progress: dict[NodeId, Progress] = {}
        self._votes: dict[NodeId, bool] = {}

        # Leader: heartbeat rounds, reads, lease, batching flags.
        self._term_start = 0
        self._hb_seq = 0
        self._round_sent_tick: dict[int, int] = {}
        self._quorum_seq = 0
        self._lease_until = -1
        self._reads = ReadQueue()
        self._read_round_needed = False
        self._append_needed = False
        self._transfer_target: NodeId | None = None
        self._transfer_elapsed = 0
        self._timeout_now_sent = False
        self._pending_membership_index = 0
        # A follower's reads for the leader: queued this turn, then sent as one
        # ReadIndexRequest whose context is the first read's, answering all of them.
        self._forward_queue: list[bytes] = []
        self._forwarded: dict[bytes, list[bytes]] = {}
        # The tick each forwarded request left: one unanswered for an election timeout (the
        # transport dropped it, or the leader is cut off) is failed so the driver asks again.
        self._forwarded_at: dict[bytes, int] = {}

        self._prev_hard_state = hard_state
        self._prev_soft_state = self._soft_state()

    def _send(self, msg: Message) -> None:
        self._msgs.append(msg)

    def _committed_in_term(self) -> bool:
        return self._log.committed >= self._term_start

    def _reset_randomized_timeout(self) -> None:
        t = self._cfg.election_ticks
        self._randomized_timeout = self._rng.randrange(t, 2 * t)

    def _soft_state(self) -> SoftState:
        return SoftState(role=self._role, leader=self._leader, term=self._term)

    def _hard_state(self) -> HardState:
        return HardState(term=self._term, vote=self._vote, commit=self._log.committed)
