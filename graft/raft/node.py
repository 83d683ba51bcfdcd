"""RaftNode: the Raft protocol as a pure, deterministic state machine (DESIGN.md section 2).

Inputs are ``tick()`` (logical time), ``step(message)`` (a peer's message), and the client calls
``propose``, ``read_index`` and ``transfer_leadership``. Outputs wait in a ``Ready`` that the
driver collects, carries out in order (persist, send, apply, answer reads) and returns with
``advance``. Nothing here does I/O, reads a clock or draws randomness from a global.

This module holds the facade the driver calls (etcd-raft's RawNode: ``step`` by role, ``tick``
through the election module, the Ready cycle, ``status``). The rules live in one module per
concern, each a class that extends the previous one and shares its state: state.py (the
attributes), reads.py (ReadIndex and the lease), membership.py (membership changes),
replication.py (replication and commit), election.py (timers, votes, role changes, transfer).

Theory of operation, briefly:

- Terms and roles. Every message carries the sender's term. A higher term makes us a follower
  of that term, except for (pre-)vote requests that arrive while we heard from a live leader
  within the election timeout (leader stickiness: they are ignored, which also keeps the
  leader's lease sound), and pre-vote traffic, which never changes a term. A lower-term
  AppendEntries or Heartbeat is answered with our term so a deposed leader learns of it.
- Elections. A follower that hears nothing for its randomized timeout (drawn from
  [election_ticks, 2 * election_ticks); from its bottom quarter once the driver reports the
  leader unreachable) first runs a pre-vote: it asks whether peers *would*
  vote for it in term + 1, and only with a quorum of yes does it raise its term and campaign.
  A leader appends a NOOP entry at the start of its term; commit advances only by counting
  replicas of an entry of the current term (paper, Figure 8).
- Replication follows progress.py: probe one message at a time until the follower's match is
  found (fast back-tracking skips a whole conflicting term per round trip), then stream.
- The leader counts itself towards a commit only once its own entries are durable (advance).
- Snapshots. A follower whose next entry the leader has compacted is sent InstallSnapshot
  (metadata; the driver streams the file and steps the message on the follower once the file
  is on disk). The follower restores (Ready.snapshot, answered in the same Ready) unless its
  log already holds the snapshot's last entry. The driver reports the transfer's outcome with
  ``report_snapshot``; without a report or an answer the leader retries after an election
  timeout.
- Reads. ReadIndex batches reads under the next heartbeat round; a quorum answer to that round
  confirms them. A follower's read needs no round when the follower and the leader are a
  quorum (two or three voters): the follower accepts the answer only while still in the
  leader's term, which is the acknowledgement the round would have collected from it. The
  lease is valid for lease_ticks (graft.raft.config: the stickiness less the margins for clock
  drift, tick quantisation and tick lateness) after the *sending* of a round a quorum answered.
  A leader that has sent TimeoutNow holds no lease for the rest of its term, even once the
  transfer timed out: the target's election ignores stickiness, and the TimeoutNow (or a
  duplicate of it) may still be on its way.
"""

from __future__ import annotations

from collections.abc import Callable

from graft.raft.election import Elections
from graft.raft.log import RaftLog
from graft.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)
from graft.raft.progress import ProgressState
from graft.raft.ready import PeerProgress, Ready, Role, SoftState, Status
from graft.raft.types import EntryKind, HardState, Membership, NodeId, decode_membership


class RaftNode(Elections):
    """One Raft server: the driver's entry point to the core."""

    # -- properties -------------------------------------------------------------------------

    @property
    def id(self) -> NodeId:
        return self._id

    @property
    def term(self) -> int:
        return self._term

    @property
    def role(self) -> Role:
        return self._role

    @property
    def leader(self) -> NodeId | None:
        return self._leader

    @property
    def membership(self) -> Membership:
        return self._membership

    @property
    def membership_committed(self) -> bool:
        """Whether the entry that set ``membership`` is committed (a membership takes effect
        on append, so the one in force may still be undone by a new leader)."""
        index = self._membership_index
        return index is not None and index <= self._log.committed

    @property
    def log(self) -> RaftLog:
        """The node's log (read-only use: tests and the simulation's checks)."""
        return self._log

    # -- messages in ------------------------------------------------------------------------

    def step(self, msg: Message) -> None:
        if msg.to != self._id:
            return
        if msg.term > self._term:
            if isinstance(msg, RequestVote):
                if not msg.transfer and self._in_lease():
                    return
                if not msg.pre_vote:
                    self._become_follower(msg.term, None)
            elif isinstance(msg, RequestVoteResponse) and msg.pre_vote and msg.granted:
                pass  # a pre-vote grant carries the term we would campaign in
            elif isinstance(msg, AppendEntries | Heartbeat | InstallSnapshot):
                self._become_follower(msg.term, msg.sender)
            else:
                self._become_follower(msg.term, None)
        elif msg.term < self._term:
            if isinstance(msg, AppendEntries | Heartbeat):
                # Tell a deposed leader about the newer term (it may not learn it otherwise,
                # since pre-vote keeps the rest of the cluster from bumping its term).
                self._send(
                    AppendEntriesResponse(
                        term=self._term, sender=self._id, to=msg.sender, success=False
                    )
                )
            elif isinstance(msg, RequestVote):
                # Answer with our term (Figure 2) so a candidate that fell behind catches up;
                # otherwise one we never send to (it is not in our, possibly stale,
                # membership) would keep campaigning a term behind us forever.
                self._send(
                    RequestVoteResponse(
                        term=self._term,
                        sender=self._id,
                        to=msg.sender,
                        granted=False,
                        pre_vote=msg.pre_vote,
                    )
                )
            return

        # A message of our term: what it means depends on our role (etcd's stepLeader,
        # stepCandidate, stepFollower). Each step function drops what its role never expects.
        if self._role is Role.LEADER:
            self._step_leader(msg)
        elif self._role is Role.CANDIDATE or self._role is Role.PRE_CANDIDATE:
            self._step_candidate(msg)
        else:
            self._step_follower(msg)

    def _step_leader(self, msg: Message) -> None:
        """Leader: the followers' answers and read requests, votes. Vote answers, read answers
        and TimeoutNow are for the other roles: dropped."""
        match msg:
            case AppendEntriesResponse():
                self._on_append_response(msg)
            case HeartbeatResponse():
                self._on_heartbeat_response(msg)
            case ReadIndexRequest():
                self._on_read_index_request(msg)
            case RequestVote():
                self._on_request_vote(msg)
            case AppendEntries() | Heartbeat() | InstallSnapshot():
                # Another leader of our term: Election Safety (Figure 3) rules it out; were
                # one to exist, we would follow it as any other role does.
                self._step_follower(msg)

    def _step_candidate(self, msg: Message) -> None:
        """Pre-candidate and candidate: count votes; a leader of our term ends the election
        (Figure 2: "if AppendEntries RPC received from new leader: convert to follower").

        Answers to a leader are dropped, and so are read answers: campaigning failed the reads
        this node had forwarded."""
        match msg:
            case RequestVoteResponse():
                self._on_vote_response(msg)
            case AppendEntries() | Heartbeat() | InstallSnapshot():
                self._step_follower(msg)
            case RequestVote():
                self._on_request_vote(msg)
            case ReadIndexRequest():
                self._refuse_read_index(msg)
            case TimeoutNow():
                self._on_timeout_now(msg)

    def _step_follower(self, msg: Message) -> None:
        """Follower and learner: take what the leader sends, answer votes. Answers meant for a
        leader or a candidate (one this node no longer is) are dropped."""
        match msg:
            case AppendEntries():
                self._on_append(msg)
            case Heartbeat():
                self._on_heartbeat(msg)
            case InstallSnapshot():
                self._on_install_snapshot(msg)
            case RequestVote():
                self._on_request_vote(msg)
            case ReadIndexResponse():
                self._on_read_index_response(msg)
            case ReadIndexRequest():
                self._refuse_read_index(msg)
            case TimeoutNow():
                self._on_timeout_now(msg)

    # -- the Ready cycle --------------------------------------------------------------------

    def _flush(self) -> None:
        if self._forward_queue:
            self._forward_reads()
        if self._role is Role.LEADER:
            if self._append_needed:
                self._broadcast_append(allow_empty=False)
            if self._read_round_needed:
                self._broadcast_heartbeat()

    def has_ready(self) -> bool:
        log = self._log
        return bool(
            self._msgs
            or self._read_states
            or self._forward_queue
            or (self._role is Role.LEADER and (self._append_needed or self._read_round_needed))
            or log.has_next_unstable_entries()
            or log.has_next_unstable_snapshot()
            or log.has_next_committed_entries()
            or self._prev_hard_state.term != self._term
            or self._prev_hard_state.vote != self._vote
            or self._prev_hard_state.commit != log.committed
            or self._prev_soft_state != self._soft_state()
        )

    def ready(self) -> Ready:
        self._flush()
        log = self._log
        snapshot = log.take_next_unstable_snapshot()
        entries = log.take_next_unstable_entries()
        committed = log.take_next_committed_entries()
        hard_state: HardState | None = None
        current_hard = self._hard_state()
        if current_hard != self._prev_hard_state:
            hard_state = self._prev_hard_state = current_hard
        soft: SoftState | None = None
        current_soft = self._soft_state()
        if current_soft != self._prev_soft_state:
            soft = self._prev_soft_state = current_soft
        msgs, self._msgs = tuple(self._msgs), []
        reads, self._read_states = tuple(self._read_states), []
        return Ready(
            hard_state=hard_state,
            entries=entries,
            snapshot=snapshot,
            messages=msgs,
            committed_entries=committed,
            read_states=reads,
            soft_state=soft,
        )

    def take_messages(self, accept: Callable[[Message], bool]) -> tuple[Message, ...]:
        """Hand out, outside a Ready, the queued messages ``accept`` allows; the others stay,
        in order, for the next Ready.

        For a driver whose Readies wait on a slow disk: heartbeats and their answers need not
        wait until it can take the next Ready (``ready.leaves_between_readies`` says which may
        go). A leader's read round and a follower's read request that the next Ready would
        start are started now, so that their messages can leave too.
        """
        if self._forward_queue:
            self._forward_reads()
        if self._role is Role.LEADER and self._read_round_needed:
            self._broadcast_heartbeat()
        taken: list[Message] = []
        kept: list[Message] = []
        for msg in self._msgs:
            (taken if accept(msg) else kept).append(msg)
        if taken:
            self._msgs = kept
        return tuple(taken)

    def advance(self, ready: Ready) -> None:
        if ready.snapshot is not None:
            log = self._log
            log.snapshot_installed(ready.snapshot)
            index = ready.snapshot.index
            if log.pending_snapshot is None and log.last_index() > index:
                # Entries after the snapshot (kept by storage, or appended since the restore)
                # define the membership if any of them is a MEMBERSHIP entry.
                for entry in log.entries(index + 1, log.last_index() + 1):
                    if entry.kind is EntryKind.MEMBERSHIP:
                        self._membership_index = entry.index
                        self._set_membership(decode_membership(entry.data))
        if ready.entries:
            last = ready.entries[-1]
            self._log.stable_to(last.index, last.term)
            if self._role is Role.LEADER and self._maybe_commit():
                self._broadcast_append(allow_empty=True)
        if ready.committed_entries:
            self._log.applied_to(ready.committed_entries[-1].index)

    # -- status -----------------------------------------------------------------------------

    def indexes(self) -> tuple[int, int, int]:
        """(commit, applied, last index): what ``status()`` says of them, without building the
        whole status (the driver updates its gauges from these after every Ready)."""
        log = self._log
        return log.committed, log.applied, log.last_index()

    def status(self) -> Status:
        log = self._log
        progress: dict[NodeId, PeerProgress] = {}
        if self._role is Role.LEADER:
            progress[self._id] = PeerProgress(
                match=log.persisted_index(),
                next=log.last_index() + 1,
                state=ProgressState.REPLICATE,
                inflight=0,
                recent_active=True,
                learner=self._id not in self._membership.voters,
            )
            for peer, pr in self._progress.items():
                progress[peer] = PeerProgress(
                    match=pr.match,
                    next=pr.next,
                    state=pr.state,
                    inflight=len(pr.inflights),
                    recent_active=pr.recent_active,
                    learner=pr.learner,
                )
        return Status(
            id=self._id,
            role=self._role,
            term=self._term,
            vote=self._vote,
            leader=self._leader,
            commit=log.committed,
            applied=log.applied,
            first_index=log.first_index(),
            last_index=log.last_index(),
            snapshot=log.snapshot_meta(),
            membership=self._membership,
            lease_valid=self.lease_read_index() is not None,
            progress=progress,
        )
