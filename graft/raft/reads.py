"""Linearizable reads (Raft thesis 6.4): ReadIndex rounds, the leader's lease, and the reads a
follower forwards to its leader."""

from __future__ import annotations

from graft.raft.messages import ReadIndexRequest, ReadIndexResponse
from graft.raft.readonly import PendingRead
from graft.raft.ready import ReadState, Role
from graft.raft.state import RaftState
from graft.raft.types import NodeId


class Reads(RaftState):
    """The leader confirms reads by heartbeat rounds or its lease; a follower asks the leader."""

    # -- the driver's calls -----------------------------------------------------------------

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

    # -- leader: reads wait for a round a quorum answers ------------------------------------

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

    # -- reads that will get no answer ------------------------------------------------------

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

    # -- follower: reads forwarded to the leader --------------------------------------------

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

    def _on_read_index_response(self, msg: ReadIndexResponse) -> None:
        # Only an answer of our current term gets here (step drops older ones, and a newer
        # term has already failed what we forwarded): _requester_completes_quorum relies on it.
        reads = self._forwarded.pop(msg.context, None)
        self._forwarded_at.pop(msg.context, None)
        if reads is not None:
            self._read_states.extend(ReadState(context=c, index=msg.index) for c in reads)

    def _fail_forwarded_reads(self) -> None:
        for reads in [self._forward_queue, *self._forwarded.values()]:
            self._read_states.extend(ReadState(context=c, index=None) for c in reads)
        self._forward_queue = []
        self._forwarded = {}
        self._forwarded_at = {}
