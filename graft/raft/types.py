"""Plain data the Raft core reads and writes: log entries, hard state, membership, snapshots.

Everything here is frozen and slotted so it can be shared between the core, the storage and the
wire codec without defensive copies.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field

NodeId = str


class EntryKind(enum.IntEnum):
    """What a log entry carries; the driver only hands NORMAL entries to the FSM."""

    NORMAL = 0  # an FSM command
    NOOP = 1  # the empty entry a new leader appends to commit its term
    MEMBERSHIP = 2  # data is an encoded Membership (see encode_membership)


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    index: int
    term: int
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class HardState:
    """What must be durable before a node answers anyone (Raft paper, Figure 2)."""

    term: int = 0
    vote: NodeId | None = None
    commit: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Membership:
    """The cluster configuration: who votes and who only receives the log."""

    voters: frozenset[NodeId] = field(default_factory=frozenset)
    learners: frozenset[NodeId] = field(default_factory=frozenset)

    @property
    def members(self) -> frozenset[NodeId]:
        return self.voters | self.learners

    def quorum(self) -> int:
        return len(self.voters) // 2 + 1


def encode_membership(membership: Membership) -> bytes:
    """The bytes stored in a MEMBERSHIP entry and in snapshot manifests (stable, sorted JSON)."""
    return json.dumps(
        {"voters": sorted(membership.voters), "learners": sorted(membership.learners)},
        separators=(",", ":"),
    ).encode()


def decode_membership(data: bytes) -> Membership:
    raw = json.loads(data)
    return Membership(voters=frozenset(raw["voters"]), learners=frozenset(raw["learners"]))


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotMeta:
    """Identifies a snapshot: the last index and term it covers and the membership at that point."""

    index: int = 0
    term: int = 0
    membership: Membership = field(default_factory=Membership)
