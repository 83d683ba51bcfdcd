"""Log replication (Raft paper section 5.3): proposals, AppendEntries and heartbeats to the
followers and their answers, the commit rule (section 5.4.2, Figure 8), and InstallSnapshot
(section 7, Figure 13)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from graft.raft.errors import LogCompacted
from graft.raft.membership import MembershipChanges
from graft.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
)
from graft.raft.progress import Progress, ProgressState
from graft.raft.ready import Role
from graft.raft.types import Entry, EntryKind, NodeId, make_entry


class Replication(MembershipChanges):
    """The leader replicates its log and commits; a follower appends what it is sent."""

    if TYPE_CHECKING:
        # Defined by Elections (election.py), which extends this class.
        def _become_follower(self, term: int, leader: NodeId | None) -> None: ...
        def _follow(self, leader: NodeId) -> None: ...
        def _send_timeout_now(self, to: NodeId) -> None: ...

    # -- proposals --------------------------------------------------------------------------

    def propose(self, data: bytes) -> int:
        return self.propose_batch([data])[0]

    def propose_batch(
        self, datas: Sequence[bytes], kind: EntryKind = EntryKind.NORMAL
    ) -> list[int]:
        """Append commands (NORMAL, or STAMPED when the driver put its stamp in the data)."""
        if kind is not EntryKind.NORMAL and kind is not EntryKind.STAMPED:
            raise ValueError(f"a command is a NORMAL or STAMPED entry, not {kind.name}")
        self._check_can_propose()
        first = self._log.last_index() + 1
        term = self._term
        # Built here rather than by _append_entries: no membership to look for, and this runs
        # once per command.
        self._log.append([make_entry(first + k, term, kind, d) for k, d in enumerate(datas)])
        self._append_needed = True
        return list(range(first, first + len(datas)))

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

    # -- leader: messages out ---------------------------------------------------------------

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

    # -- leader: answers, the commit rule, snapshot reports ---------------------------------

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

    # -- follower side ----------------------------------------------------------------------

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

    def _on_heartbeat(self, msg: Heartbeat) -> None:
        self._follow(msg.sender)
        log = self._log
        log.commit_to(min(msg.commit, log.last_index()))
        self._send(HeartbeatResponse(term=self._term, sender=self._id, to=msg.sender, seq=msg.seq))

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
