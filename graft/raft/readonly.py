"""Leader-side ReadIndex bookkeeping (Raft thesis 6.4).

A read registered while the leader's commit index is C waits for a heartbeat round sent *after*
it was registered. Once a quorum has answered that round the leader knows it was still the
leader when the read arrived, so any state machine that has applied C can answer the read.
All reads registered between two rounds share the next round, so one round confirms a batch.
"""

from __future__ import annotations

from dataclasses import dataclass

from graft.raft.types import NodeId


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingRead:
    context: bytes
    index: int
    # The round whose quorum acknowledgement confirms this read.
    seq: int
    # The follower that asked (answered with ReadIndexResponse), or None for a local read.
    requester: NodeId | None


class ReadQueue:
    def __init__(self) -> None:
        self._pending: list[PendingRead] = []

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, read: PendingRead) -> None:
        self._pending.append(read)

    def confirmed(self, seq: int) -> list[PendingRead]:
        """Remove and return the reads that a quorum answer to round ``seq`` confirms."""
        if not self._pending or self._pending[0].seq > seq:
            return []
        done = [r for r in self._pending if r.seq <= seq]
        self._pending = [r for r in self._pending if r.seq > seq]
        return done

    def take_up_to(self, seq: int) -> list[PendingRead]:
        """Remove and return the reads waiting for round ``seq`` or an earlier one (rounds
        that went unanswered too long to be trusted: the caller fails them)."""
        return self.confirmed(seq)

    def drain(self) -> list[PendingRead]:
        """Remove and return everything (the leader lost its leadership)."""
        out, self._pending = self._pending, []
        return out
