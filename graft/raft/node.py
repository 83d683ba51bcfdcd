"""RaftNode: the Raft protocol as a pure, deterministic state machine (DESIGN.md section 2).

Inputs are ``tick()`` (logical time), ``step(message)`` (a peer's message), and the client calls
``propose``, ``read_index`` and ``transfer_leadership``. Outputs wait in a ``Ready`` that the
driver collects, carries out in order (persist, send, apply, answer reads) and returns with
``advance``. Nothing here does I/O, reads a clock or draws randomness from a global.

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

from collections.abc import Callable, Sequence

from graft.raft.config import RaftConfig
from graft.raft.errors import LogCompacted, NotLeader, ProposalDropped, RaftError
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
from graft.raft.progress import Progress, ProgressState
from graft.raft.readonly import PendingRead, ReadQueue
from graft.raft.ready import PeerProgress, ReadState, Ready, Role, SoftState, Status
from graft.raft.rng import Rng
from graft.raft.storage import LogStorage
from graft.raft.types import (
    Entry,
    EntryKind,
    HardState,
    Membership,
    NodeId,
    decode_membership,
    encode_membership,
    make_entry,
)


class MembershipChangeRefused(RaftError):
    """A membership change was refused: one change at a time, one server per change."""


class RaftNode:
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
    def log(self) -> RaftLog:
        """The node's log (read-only use: tests and the simulation's checks)."""
        return self._log

    # -- time -------------------------------------------------------------------------------

    def tick(self) -> None:
        self._ticks += 1
        self._expire_stale_reads()
        if self._role is Role.LEADER:
            self._tick_leader()
        else:
            self._tick_election()

    def _tick_election(self) -> None:
        self._election_elapsed += 1
        if self._quiet and self._election_elapsed >= self._cfg.election_ticks:
            self._quiet = False
        if (
            self._election_elapsed >= self._randomized_timeout
            and self._id in self._membership.voters
        ):
            self._election_elapsed = 0
            self._campaign(pre_vote=self._cfg.pre_vote)

    def _tick_leader(self) -> None:
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self._election_elapsed >= self._cfg.election_ticks:
            self._election_elapsed = 0
            if self._cfg.check_quorum and not self._quorum_recently_active():
                self._become_follower(self._term, None)
                return
        if self._transfer_target is not None:
            self._transfer_elapsed += 1
            if self._transfer_elapsed >= self._cfg.election_ticks:
                self._transfer_target = None  # the target did not take over in time
        for pr in self._progress.values():
            if pr.state is ProgressState.SNAPSHOT:
                pr.snapshot_elapsed += 1
                if pr.snapshot_elapsed >= self._cfg.election_ticks:
                    # Neither a report nor an answer: the InstallSnapshot (or the transfer)
                    # may be lost. Probe again; the next heartbeat answer re-sends it.
                    pr.snapshot_failed()
        if self._heartbeat_elapsed >= self._cfg.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            self._broadcast_heartbeat()

    def _quorum_recently_active(self) -> bool:
        active = 1 if self._id in self._membership.voters else 0
        for peer, pr in self._progress.items():
            if pr.recent_active and peer in self._membership.voters:
                active += 1
            pr.recent_active = False
        return active >= self._membership.quorum()

    def _reset_randomized_timeout(self) -> None:
        t = self._cfg.election_ticks
        self._randomized_timeout = self._rng.randrange(t, 2 * t)

    def _in_lease(self) -> bool:
        """Leader stickiness: we heard from a live leader (or just restarted) too recently to
        help anyone else win an election."""
        if not self._cfg.check_quorum:
            return False
        if self._quiet:
            return True
        return self._leader is not None and self._election_elapsed < self._cfg.stickiness_ticks

    # -- role changes -----------------------------------------------------------------------

    def _become_follower(self, term: int, leader: NodeId | None) -> None:
        if self._role is Role.LEADER:
            self._fail_pending_reads()
        if self._has_forwarded() and (
            leader is None or leader != self._leader or term != self._term
        ):
            self._fail_forwarded_reads()
        if term != self._term:
            self._term = term
            self._vote = None
        self._role = Role.FOLLOWER if self._id in self._membership.voters else Role.LEARNER
        self._leader = leader
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._reset_randomized_timeout()
        self._progress = {}
        self._votes = {}
        self._transfer_target = None
        self._lease_until = -1
        self._append_needed = False
        self._read_round_needed = False

    def _campaign(self, *, pre_vote: bool, transfer: bool = False) -> None:
        self._fail_forwarded_reads()
        self._leader = None
        self._votes = {self._id: True}
        self._election_elapsed = 0
        self._reset_randomized_timeout()
        if pre_vote:
            self._role = Role.PRE_CANDIDATE
            vote_term = self._term + 1
        else:
            self._role = Role.CANDIDATE
            self._term += 1
            self._vote = self._id
            vote_term = self._term
        if self._won(self._votes) is True:
            if pre_vote:
                self._campaign(pre_vote=False, transfer=transfer)
            else:
                self._become_leader()
            return
        last_index = self._log.last_index()
        last_term = self._log.last_term()
        for peer in sorted(self._membership.voters):
            if peer != self._id:
                self._msgs.append(
                    RequestVote(
                        term=vote_term,
                        sender=self._id,
                        to=peer,
                        last_log_index=last_index,
                        last_log_term=last_term,
                        pre_vote=pre_vote,
                        transfer=transfer,
                    )
                )

    def _won(self, votes: dict[NodeId, bool]) -> bool | None:
        """True on a quorum of grants, False on a quorum of refusals, None while undecided."""
        voters = self._membership.voters
        quorum = self._membership.quorum()
        granted = sum(1 for n, v in votes.items() if v and n in voters)
        if granted >= quorum:
            return True
        refused = sum(1 for n, v in votes.items() if not v and n in voters)
        if refused > len(voters) - quorum:
            return False
        return None

    def _become_leader(self) -> None:
        self._role = Role.LEADER
        self._leader = self._id
        self._votes = {}
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._transfer_target = None
        self._timeout_now_sent = False
        last = self._log.last_index()
        self._progress = {
            peer: Progress(
                next_index=last + 1,
                max_inflight=self._cfg.max_inflight,
                learner=peer not in self._membership.voters,
            )
            for peer in sorted(self._membership.members)
            if peer != self._id
        }
        # Everyone starts "active": check-quorum gives followers one election timeout to answer.
        for pr in self._progress.values():
            pr.recent_active = True
        self._round_sent_tick = {}
        self._quorum_seq = self._hb_seq
        self._lease_until = -1
        self._pending_membership_index = self._find_pending_membership()
        self._append_entries([(EntryKind.NOOP, b"")])
        self._term_start = self._log.last_index()
        self._broadcast_append(allow_empty=True)
        self._maybe_commit()

    def _find_pending_membership(self) -> int:
        """Index of an uncommitted MEMBERSHIP entry in our log, or 0."""
        last = self._log.last_index()
        lo = max(self._log.committed + 1, self._log.first_index())
        if lo > last:
            return 0
        for entry in self._log.entries(lo, last + 1):
            if entry.kind is EntryKind.MEMBERSHIP:
                return entry.index
        return 0

    # -- proposals --------------------------------------------------------------------------

    def propose(self, data: bytes) -> int:
        return self.propose_batch([data])[0]

    def propose_batch(self, datas: Sequence[bytes]) -> list[int]:
        self._check_can_propose()
        first = self._log.last_index() + 1
        term, normal = self._term, EntryKind.NORMAL
        # Built here rather than by _append_entries: no membership to look for, and this runs
        # once per command.
        self._log.append([make_entry(first + k, term, normal, d) for k, d in enumerate(datas)])
        self._append_needed = True
        return list(range(first, first + len(datas)))

    def propose_membership(self, membership: Membership) -> int:
        """Propose a new membership; it takes effect on every node as soon as it is appended.

        One change at a time (the previous one must be committed), adding or removing at most
        one voter; learners may be added or removed freely, or promoted one at a time.
        """
        self._check_can_propose()
        if not self._committed_in_term():
            # Otherwise a change proposed here and one by an earlier leader that this leader
            # has not seen committed could both take effect (Ongaro, raft-dev 2015).
            raise MembershipChangeRefused(
                "the leader has not committed an entry of its term yet; retry shortly"
            )
        if self._pending_membership_index > self._log.committed:
            raise MembershipChangeRefused(
                "a membership change is still uncommitted; retry once it has committed"
            )
        old, new = self._membership.voters, membership.voters
        if len(old ^ new) > 1:
            raise MembershipChangeRefused(
                "change voters one server at a time; split the change into several"
            )
        if not new:
            raise MembershipChangeRefused("a membership needs at least one voter")
        if membership.voters & membership.learners:
            raise MembershipChangeRefused("a node is either a voter or a learner, not both")
        index = self._log.last_index() + 1
        self._append_entries([(EntryKind.MEMBERSHIP, encode_membership(membership))])
        return index

    def propose_marker(self, data: bytes) -> int:
        """Append a NOOP entry carrying ``data`` (a marker for the driver, never an FSM
        command) and return its index.

        Every replica applies it at the same point of the log, so the driver can act on the
        same state everywhere (the replica consistency check digests the FSM there). To the
        core it is an entry like any other: replicated, persisted, committed by quorum.
        """
        if not data:
            raise ValueError("a marker needs data; the empty NOOP is the term's first entry")
        self._check_can_propose()
        index = self._log.last_index() + 1
        self._append_entries([(EntryKind.NOOP, data)])
        return index

    def _check_can_propose(self) -> None:
        if self._role is not Role.LEADER:
            raise NotLeader(self._leader)
        if self._transfer_target is not None:
            raise ProposalDropped(
                f"leadership is being transferred to {self._transfer_target}; retry on the "
                "new leader"
            )

    def _append_entries(self, items: list[tuple[EntryKind, bytes]]) -> None:
        term = self._term
        first = self._log.last_index() + 1
        entries = [make_entry(first + k, term, kind, data) for k, (kind, data) in enumerate(items)]
        self._log.append(entries)
        for entry in entries:
            if entry.kind is EntryKind.MEMBERSHIP:
                self._pending_membership_index = entry.index
                self._membership_index = entry.index
                self._set_membership(decode_membership(entry.data))
        # Sent when the driver next collects a Ready, so a burst of proposals shares messages.
        self._append_needed = True

    # -- membership -------------------------------------------------------------------------

    def _set_membership(self, membership: Membership) -> None:
        self._membership = membership
        if self._role is Role.LEADER:
            last = self._log.last_index()
            for peer in sorted(membership.members):
                if peer != self._id and peer not in self._progress:
                    pr = Progress(next_index=last + 1, max_inflight=self._cfg.max_inflight)
                    pr.recent_active = True
                    self._progress[peer] = pr
            for peer in list(self._progress):
                if peer not in membership.members:
                    del self._progress[peer]
            # A leader that removed itself keeps replicating until the change commits (thesis
            # 4.2.2); _maybe_commit then steps it down.
            for peer, pr in self._progress.items():
                pr.learner = peer not in membership.voters
        elif self._role in (Role.FOLLOWER, Role.LEARNER):
            self._role = Role.FOLLOWER if self._id in membership.voters else Role.LEARNER

    def _recompute_membership(self, last: int) -> None:
        """After a log truncation: the membership is the latest one at or below ``last``."""
        lo = self._log.first_index()
        found: Membership | None = None
        index = last
        while index >= lo:
            chunk_lo = max(lo, index - 255)
            for entry in reversed(self._log.entries(chunk_lo, index + 1)):
                if entry.kind is EntryKind.MEMBERSHIP:
                    found = decode_membership(entry.data)
                    self._membership_index = entry.index
                    break
            if found is not None:
                break
            index = chunk_lo - 1
        if found is None:
            snap = self._log.snapshot_meta()
            found = snap.membership if snap.index > 0 else self._cfg.bootstrap
            self._membership_index = 0
        self._set_membership(found)

    # -- leadership transfer ----------------------------------------------------------------

    def transfer_leadership(self, to: NodeId) -> None:
        """Hand leadership to ``to``: proposals are dropped meanwhile; the target is caught up
        and then told to campaign at once. Gives up after one election timeout."""
        if self._role is not Role.LEADER:
            raise NotLeader(self._leader)
        if to == self._id:
            return
        if to not in self._membership.voters:
            raise RaftError(f"{to} is not a voter; transfer leadership to a voting member")
        self._transfer_target = to
        self._transfer_elapsed = 0
        pr = self._progress[to]
        if pr.match == self._log.last_index():
            self._send_timeout_now(to)
        else:
            self._send_append(to, allow_empty=True)

    def _send_timeout_now(self, to: NodeId) -> None:
        # From here on the target may win an election that voters grant despite our lease
        # (stickiness yields to TimeoutNow), whenever this message arrives: no lease this term.
        self._timeout_now_sent = True
        self._send(TimeoutNow(term=self._term, sender=self._id, to=to))

    # -- peers ------------------------------------------------------------------------------

    def report_unreachable(self, peer: NodeId) -> None:
        """The driver lost its connection to ``peer`` (a closed socket: typically a process
        that died).

        If ``peer`` is this follower's leader, the follower redraws its election timer from the
        bottom of the range, [election_ticks, election_ticks + a quarter of it): draws the
        randomized timeout could have made anyway, so stickiness and the leader's lease, which
        rest on election_ticks alone, are untouched. Only the random extra wait, up to another
        election timeout, is skipped when the leader is likely gone; the small spread keeps the
        followers, all told at once, from splitting the vote. Heartbeats that still arrive
        reset the timer as always.
        """
        if self._role is Role.FOLLOWER and peer == self._leader:
            t = self._cfg.election_ticks
            self._randomized_timeout = min(
                self._randomized_timeout, self._rng.randrange(t, t + max(2, t // 4))
            )

    # -- snapshots --------------------------------------------------------------------------

    def report_snapshot(self, peer: NodeId, ok: bool) -> None:
        """The driver's verdict on streaming a snapshot to ``peer`` (etcd's ReportSnapshot).

        On failure the leader probes the follower again: the next heartbeat answer re-sends
        InstallSnapshot if the follower still needs it. On success it waits for the follower's
        answer (or the next heartbeat answer) and then replicates after the snapshot.
        """
        if self._role is not Role.LEADER:
            return
        pr = self._progress.get(peer)
        if pr is None or pr.state is not ProgressState.SNAPSHOT:
            return
        if ok:
            pr.become_probe()
            pr.probe_sent = True  # wait for the follower to answer before probing
        else:
            pr.snapshot_failed()

    # -- reads ------------------------------------------------------------------------------

    def read_index(self, context: bytes) -> None:
        if self._role is Role.LEADER:
            if not self._committed_in_term():
                self._read_states.append(ReadState(context=context, index=None))
                return
            self._register_read(context, None)
        elif self._leader is not None:
            self._forward_queue.append(context)
        else:
            self._read_states.append(ReadState(context=context, index=None))

    def lease_read_index(self) -> int | None:
        """The commit index, when this leader may serve a read locally under its lease."""
        if (
            self._role is not Role.LEADER
            or not self._cfg.check_quorum
            or self._transfer_target is not None
            or self._timeout_now_sent
            or not self._committed_in_term()
        ):
            return None
        # Alone only if this leader is the one voter: a leader whose removal is in its log
        # (not yet committed) is no voter, and another node may be the only one left.
        if self._membership.voters == {self._id} or self._ticks < self._lease_until:
            return self._log.committed
        return None

    def _committed_in_term(self) -> bool:
        return self._log.committed >= self._term_start

    def _register_read(self, context: bytes, requester: NodeId | None) -> None:
        index = self._log.committed
        if self._membership.voters == {self._id} or self._requester_completes_quorum(requester):
            self._answer_read(PendingRead(context=context, index=index, seq=0, requester=requester))
            return
        self._reads.add(
            PendingRead(context=context, index=index, seq=self._hb_seq + 1, requester=requester)
        )
        self._read_round_needed = True

    def _requester_completes_quorum(self, requester: NodeId | None) -> bool:
        """Whether a follower's read needs no heartbeat round: the follower and this leader
        are a quorum.

        A round confirms a read when a quorum was still in this term after the read arrived
        here. The requester drops an answer from an older term than its own, so if it accepts
        ours it was still in this term after the read arrived (we answer after that): its
        acceptance is the acknowledgement a round would collect from it. With two or three
        voters, that and this leader are a quorum, and the answer can leave at once. Not
        when this leader is no voter (its removal is in its log, not yet committed): the
        voters left may have elected another leader and committed more without it.
        """
        return (
            requester is not None
            and requester in self._membership.voters
            and self._id in self._membership.voters
            and self._membership.quorum() <= 2
        )

    def _answer_read(self, read: PendingRead) -> None:
        if read.requester is None:
            self._read_states.append(ReadState(context=read.context, index=read.index))
        else:
            self._send(
                ReadIndexResponse(
                    term=self._term,
                    sender=self._id,
                    to=read.requester,
                    context=read.context,
                    index=read.index,
                )
            )

    def _fail_pending_reads(self) -> None:
        for read in self._reads.drain():
            self._fail_read(read)

    def _expire_stale_reads(self) -> None:
        """Fail what waited an election timeout for an answer that will not come, so memory
        stays bounded and the driver retries instead of holding the read to its deadline:
        a follower's forwarded requests, and a leader's reads whose round went unanswered
        (with check-quorum the leader steps down by then anyway; without it, it might not)."""
        horizon = self._ticks - self._cfg.election_ticks
        while self._forwarded_at:
            context, sent = next(iter(self._forwarded_at.items()))
            if sent > horizon:
                break
            del self._forwarded_at[context]
            reads = self._forwarded.pop(context, [])
            self._read_states.extend(ReadState(context=c, index=None) for c in reads)
        if self._role is not Role.LEADER:
            return
        stale = [seq for seq, sent in self._round_sent_tick.items() if sent <= horizon]
        for seq in stale:  # too old to give a lease (it ends election_ticks after sending)
            del self._round_sent_tick[seq]
        if stale:
            for read in self._reads.take_up_to(max(stale)):
                self._fail_read(read)

    def _fail_read(self, read: PendingRead) -> None:
        if read.requester is None:
            self._read_states.append(ReadState(context=read.context, index=None))
        else:
            self._send(
                ReadIndexResponse(
                    term=self._term,
                    sender=self._id,
                    to=read.requester,
                    context=read.context,
                    index=None,
                )
            )

    def _has_forwarded(self) -> bool:
        return bool(self._forward_queue or self._forwarded)

    def _forward_reads(self) -> None:
        """One ReadIndexRequest for every read queued since the last Ready. The leader's
        answer is a commit index taken after each of them arrived here, so it serves them all
        (thesis 6.4: the index only has to be fixed after the read began)."""
        queued, self._forward_queue = self._forward_queue, []
        if self._leader is None:  # lost the leader since: the driver retries
            self._read_states.extend(ReadState(context=c, index=None) for c in queued)
            return
        self._forwarded[queued[0]] = queued
        self._forwarded_at[queued[0]] = self._ticks
        self._send(
            ReadIndexRequest(term=self._term, sender=self._id, to=self._leader, context=queued[0])
        )

    def _fail_forwarded_reads(self) -> None:
        for reads in [self._forward_queue, *self._forwarded.values()]:
            self._read_states.extend(ReadState(context=c, index=None) for c in reads)
        self._forward_queue = []
        self._forwarded = {}
        self._forwarded_at = {}

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
            # Vote answers, read answers and TimeoutNow are for the other roles.

    def _step_candidate(self, msg: Message) -> None:
        """Pre-candidate and candidate: count votes; a leader of our term ends the election
        (Figure 2: "if AppendEntries RPC received from new leader: convert to follower")."""
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
            # A candidate has no forwarded reads (campaigning failed them) and no followers.

    def _step_follower(self, msg: Message) -> None:
        """Follower and learner: take what the leader sends, answer votes."""
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
            # Answers to a leader or a candidate we no longer are: stale, dropped.

    def _follow(self, leader: NodeId) -> None:
        """A message from the current term's leader: (re)become its follower."""
        if self._role is not Role.FOLLOWER and self._role is not Role.LEARNER:
            self._become_follower(self._term, leader)
        elif self._leader != leader:
            if self._has_forwarded():
                self._fail_forwarded_reads()
            self._leader = leader
        self._election_elapsed = 0
        self._quiet = False

    # Follower side.

    def _on_append(self, msg: AppendEntries) -> None:
        self._follow(msg.sender)
        log = self._log
        if msg.prev_index < log.committed:
            self._send(
                AppendEntriesResponse(
                    term=self._term,
                    sender=self._id,
                    to=msg.sender,
                    success=True,
                    match_index=log.committed,
                )
            )
            return
        last_before = log.last_index()
        match = log.maybe_append(msg.prev_index, msg.prev_term, msg.commit, msg.entries)
        if match is not None:
            if log.appended_from:
                self._after_follower_append(log.appended_from, last_before, msg.entries)
            self._send(
                AppendEntriesResponse(
                    term=self._term, sender=self._id, to=msg.sender, success=True, match_index=match
                )
            )
            return
        hint_index = log.find_conflict_by_term(min(msg.prev_index, log.last_index()), msg.prev_term)
        hint_term = log.term_or_none(hint_index) or 0
        self._send(
            AppendEntriesResponse(
                term=self._term,
                sender=self._id,
                to=msg.sender,
                success=False,
                reject_index=msg.prev_index,
                hint_index=hint_index,
                hint_term=hint_term,
            )
        )

    def _after_follower_append(
        self, start: int, last_before: int, entries: tuple[Entry, ...]
    ) -> None:
        """Keep the membership equal to the latest MEMBERSHIP entry in the log."""
        truncated = start <= last_before
        if truncated and (self._membership_index is None or self._membership_index >= start):
            # The entry that defined our membership may have been replaced.
            self._recompute_membership(start - 1)
        for entry in entries:
            if entry.index >= start and entry.kind is EntryKind.MEMBERSHIP:
                self._membership_index = entry.index
                self._set_membership(decode_membership(entry.data))

    def _on_heartbeat(self, msg: Heartbeat) -> None:
        self._follow(msg.sender)
        log = self._log
        log.commit_to(min(msg.commit, log.last_index()))
        self._send(HeartbeatResponse(term=self._term, sender=self._id, to=msg.sender, seq=msg.seq))

    def _on_request_vote(self, msg: RequestVote) -> None:
        up_to_date = self._log.is_up_to_date(msg.last_log_index, msg.last_log_term)
        if msg.pre_vote:
            granted = msg.term > self._term and up_to_date
            term = msg.term if granted else self._term
        else:
            can_vote = self._vote == msg.sender or (self._vote is None and self._leader is None)
            granted = can_vote and up_to_date
            term = self._term
            if granted:
                self._vote = msg.sender
                self._election_elapsed = 0
        self._send(
            RequestVoteResponse(
                term=term, sender=self._id, to=msg.sender, granted=granted, pre_vote=msg.pre_vote
            )
        )

    def _on_vote_response(self, msg: RequestVoteResponse) -> None:
        if msg.pre_vote:
            if self._role is not Role.PRE_CANDIDATE:
                return
        elif self._role is not Role.CANDIDATE:
            return
        self._votes[msg.sender] = msg.granted
        outcome = self._won(self._votes)
        if outcome is True:
            if msg.pre_vote:
                self._campaign(pre_vote=False)
            else:
                self._become_leader()
        elif outcome is False:
            self._become_follower(self._term, None)

    def _on_read_index_response(self, msg: ReadIndexResponse) -> None:
        # Only an answer of our current term gets here (step drops older ones, and a newer
        # term has already failed what we forwarded): _requester_completes_quorum relies on it.
        reads = self._forwarded.pop(msg.context, None)
        self._forwarded_at.pop(msg.context, None)
        if reads is not None:
            self._read_states.extend(ReadState(context=c, index=msg.index) for c in reads)

    def _on_timeout_now(self, msg: TimeoutNow) -> None:
        if self._id in self._membership.voters:
            self._campaign(pre_vote=False, transfer=True)

    def _on_install_snapshot(self, msg: InstallSnapshot) -> None:
        """The driver has the whole snapshot file on disk; adopt it (paper Figure 13)."""
        self._follow(msg.sender)
        log = self._log
        meta = msg.snapshot
        if meta.index <= log.committed:
            # Stale or duplicate: we already have (and committed) everything it covers.
            match = log.committed
        elif log.match_term(meta.index, meta.term):
            # Our log already holds the snapshot's last entry: keep the log, learn the commit.
            log.commit_to(meta.index)
            match = meta.index
        else:
            log.restore(meta)
            self._membership_index = 0
            self._set_membership(meta.membership)
            match = meta.index
        # Sent with the Ready that carries the snapshot, so only once the driver installed it.
        self._send(
            AppendEntriesResponse(
                term=self._term, sender=self._id, to=msg.sender, success=True, match_index=match
            )
        )

    # Leader side.

    def _on_append_response(self, msg: AppendEntriesResponse) -> None:
        pr = self._progress.get(msg.sender)
        if pr is None:
            return
        pr.recent_active = True
        if msg.success:
            was_probe = pr.state is ProgressState.PROBE
            updated = pr.maybe_update(msg.match_index)
            if pr.state is ProgressState.SNAPSHOT and self._log.term_or_none(pr.match) is not None:
                # The follower installed a snapshot (or caught up otherwise): the log can
                # serve it from match + 1 on, and match is known, so stream at once.
                pr.become_replicate()
                updated = True
            if updated:
                if was_probe:
                    pr.become_replicate()
                if self._maybe_commit():
                    self._broadcast_append(allow_empty=True)
                elif self._role is not Role.LEADER:
                    return  # our own removal committed
                else:
                    self._send_all(msg.sender)
                    if pr.commit_sent < self._log.committed:
                        self._send_append(msg.sender, allow_empty=True)
                if msg.sender == self._transfer_target and pr.match == self._log.last_index():
                    self._send_timeout_now(msg.sender)
            elif was_probe:
                # A duplicate answer to an old probe: no news, but the probe is answered.
                pr.probe_sent = False
                self._send_all(msg.sender)
            return
        next_probe = msg.hint_index
        if msg.hint_term > 0:
            next_probe = self._log.find_conflict_by_term(msg.hint_index, msg.hint_term)
        if pr.maybe_decrease_to(msg.reject_index, next_probe):
            self._send_append(msg.sender, allow_empty=True)

    def _on_heartbeat_response(self, msg: HeartbeatResponse) -> None:
        pr = self._progress.get(msg.sender)
        if pr is None:
            return
        pr.recent_active = True
        pr.probe_sent = False
        pr.free_one()
        if pr.match < self._log.last_index():
            self._send_append(msg.sender, allow_empty=True)
        if msg.seq > pr.acked_seq and not pr.learner:
            pr.acked_seq = msg.seq
            self._update_quorum_seq()

    def _update_quorum_seq(self) -> None:
        voters = self._membership.voters
        acked = sorted(
            (
                self._hb_seq if peer == self._id else self._progress[peer].acked_seq
                for peer in voters
                if peer == self._id or peer in self._progress
            ),
            reverse=True,
        )
        quorum = self._membership.quorum()
        if len(acked) < quorum:
            return
        seq = acked[quorum - 1]
        if seq <= self._quorum_seq:
            return
        self._quorum_seq = seq
        sent = self._round_sent_tick.get(seq)
        if sent is not None:
            self._lease_until = sent + self._cfg.lease_ticks
        for old in [s for s in self._round_sent_tick if s < seq]:
            del self._round_sent_tick[old]
        for read in self._reads.confirmed(seq):
            self._answer_read(read)

    def _on_read_index_request(self, msg: ReadIndexRequest) -> None:
        if not self._committed_in_term():
            self._refuse_read_index(msg)
            return
        self._register_read(msg.context, msg.sender)

    def _refuse_read_index(self, msg: ReadIndexRequest) -> None:
        """Not a leader, or one that cannot fix a read index yet: the follower asks again."""
        self._send(
            ReadIndexResponse(
                term=self._term, sender=self._id, to=msg.sender, context=msg.context, index=None
            )
        )

    # -- messages out -----------------------------------------------------------------------

    def _send(self, msg: Message) -> None:
        self._msgs.append(msg)

    def _broadcast_heartbeat(self) -> None:
        self._hb_seq += 1
        self._round_sent_tick[self._hb_seq] = self._ticks
        self._read_round_needed = False
        commit = self._log.committed
        for peer, pr in self._progress.items():
            self._msgs.append(
                Heartbeat(
                    term=self._term,
                    sender=self._id,
                    to=peer,
                    commit=min(pr.match, commit),
                    seq=self._hb_seq,
                )
            )
        if self._membership.voters <= {self._id}:
            self._update_quorum_seq()

    def _broadcast_append(self, *, allow_empty: bool) -> None:
        self._append_needed = False
        for peer in self._progress:
            if allow_empty:
                self._send_append(peer, allow_empty=True)
            self._send_all(peer)

    def _send_all(self, peer: NodeId) -> None:
        """Stream to ``peer`` until its window is full or it has everything."""
        while self._send_append(peer, allow_empty=False):
            pass

    def _send_append(self, peer: NodeId, *, allow_empty: bool) -> bool:
        pr = self._progress[peer]
        if pr.is_paused():
            return False
        log = self._log
        prev = pr.next - 1
        last = log.last_index()
        try:
            prev_term = log.term(prev)
            entries: list[Entry] = []
            if pr.next <= last:
                hi = min(last + 1, pr.next + self._cfg.max_msg_entries)
                entries = log.entries(pr.next, hi, self._cfg.max_msg_bytes)
        except LogCompacted:
            return self._send_snapshot(peer, pr)
        if not entries and not allow_empty:
            return False
        self._msgs.append(
            AppendEntries(
                term=self._term,
                sender=self._id,
                to=peer,
                prev_index=prev,
                prev_term=prev_term,
                entries=tuple(entries),
                commit=log.committed,
            )
        )
        pr.sent(entries[-1].index if entries else prev)
        pr.commit_sent = log.committed
        return bool(entries)

    def _send_snapshot(self, peer: NodeId, pr: Progress) -> bool:
        meta = self._log.snapshot_meta()
        pr.become_snapshot(meta.index)
        self._msgs.append(InstallSnapshot(term=self._term, sender=self._id, to=peer, snapshot=meta))
        return False

    def _maybe_commit(self) -> bool:
        """Advance commit to the highest index a quorum of voters holds, if of our term."""
        voters = self._membership.voters
        matches = sorted(
            (
                self._log.persisted_index() if peer == self._id else self._progress[peer].match
                for peer in voters
                if peer == self._id or peer in self._progress
            ),
            reverse=True,
        )
        quorum = self._membership.quorum()
        if len(matches) < quorum:
            return False
        index = matches[quorum - 1]
        if index <= self._log.committed or self._log.term_or_none(index) != self._term:
            return False
        self._log.commit_to(index)
        if self._id not in voters and self._pending_membership_index <= index:
            # Our own removal committed: hand over by stepping down (thesis 4.2.2).
            self._broadcast_append(allow_empty=True)
            self._become_follower(self._term, None)
            return False
        return True

    # -- the Ready cycle --------------------------------------------------------------------

    def _soft_state(self) -> SoftState:
        return SoftState(role=self._role, leader=self._leader, term=self._term)

    def _hard_state(self) -> HardState:
        return HardState(term=self._term, vote=self._vote, commit=self._log.committed)

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
