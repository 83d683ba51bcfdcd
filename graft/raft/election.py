"""Leader election (Raft paper section 5.2) with pre-vote (Raft thesis 9.6), check-quorum and
leader stickiness (thesis 6.2, 4.2.3), the election and heartbeat timers, and leadership
transfer (thesis 3.10)."""

from __future__ import annotations

from graft.raft.errors import NotLeader, RaftError
from graft.raft.messages import RequestVote, RequestVoteResponse, TimeoutNow
from graft.raft.progress import Progress, ProgressState
from graft.raft.ready import Role
from graft.raft.replication import Replication
from graft.raft.types import EntryKind, NodeId


class Elections(Replication):
    """Timers, role changes, votes and leadership transfer."""

    # -- timers -----------------------------------------------------------------------------

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

    # -- votes ------------------------------------------------------------------------------

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

    def _on_timeout_now(self, msg: TimeoutNow) -> None:
        """Campaign at once, past stickiness (a leader never gets here: it drops TimeoutNow)."""
        if self._id in self._membership.voters:
            self._campaign(pre_vote=False, transfer=True)
