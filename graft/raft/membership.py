"""Membership changes, one server at a time (Raft thesis chapter 4), and the leader's appends
of its own entries, which is where a new membership takes effect."""

from __future__ import annotations

from graft.raft.errors import MembershipChangeRefused, NotLeader, ProposalDropped
from graft.raft.progress import Progress
from graft.raft.reads import Reads
from graft.raft.ready import Role
from graft.raft.types import (
    Entry,
    EntryKind,
    Membership,
    decode_membership,
    encode_membership,
    make_entry,
)


class MembershipChanges(Reads):
    """Proposes membership changes and keeps the membership equal to the log's latest one."""

    # -- proposing --------------------------------------------------------------------------

    def propose_membership(self, membership: Membership) -> int:
        """Propose a new membership; it takes effect on every node as soon as it is appended.

        One change at a time (the previous one must be committed), adding or removing at most
        one voter; learners may be added or removed freely, or promoted one at a time, and a
        voter demoted to learner (a leader that demotes itself leads until the change commits,
        then steps down, as one that removes itself). Non-voters are learners (a subset of
        them) to the core.
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
        if not membership.non_voters <= membership.learners:
            raise MembershipChangeRefused("a non-voter is a learner; list it among the learners")
        index = self._log.last_index() + 1
        self._append_entries([(EntryKind.MEMBERSHIP, encode_membership(membership))])
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

    # -- the membership follows the log -----------------------------------------------------

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
