"""Plain data the Raft core reads and writes: log entries, hard state, membership, snapshots.

Everything here is frozen and slotted so it can be shared between the core, the storage and the
wire codec without defensive copies.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any

NodeId = str


class EntryKind(enum.IntEnum):
    """What a log entry carries; the driver only hands NORMAL and STAMPED entries to the FSM.

    To the core a STAMPED entry is a command like a NORMAL one; only the driver reads its data.
    A kind this build does not know (a newer Graft's) is refused by storage and the wire.
    """

    NORMAL = 0  # an FSM command (written before stamps existed: no stamp)
    NOOP = 1  # the empty entry a new leader appends to commit its term
    MEMBERSHIP = 2  # data is an encoded Membership (see encode_membership)
    STAMPED = 3  # an FSM command with the leader's stamp in front (graft.stamp)


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    index: int
    term: int
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""


_new_object = object.__new__
_SET_ENTRY_FIELDS = tuple(Entry.__dict__[f].__set__ for f in ("index", "term", "kind", "data"))


def make_entry(index: int, term: int, kind: EntryKind, data: bytes) -> Entry:
    """``Entry(index=index, term=term, kind=kind, data=data)``, for the paths that build one per
    command (proposing, decoding AppendEntries): a frozen dataclass's __init__ sets each field
    through object.__setattr__, over half the cost of an entry there; this sets the slots."""
    entry = _new_object(Entry)
    set_index, set_term, set_kind, set_data = _SET_ENTRY_FIELDS
    set_index(entry, index)
    set_term(entry, term)
    set_kind(entry, kind)
    set_data(entry, data)
    return entry


@dataclass(frozen=True, slots=True, kw_only=True)
class HardState:
    """What must be durable before a node answers anyone (Raft paper, Figure 2)."""

    term: int = 0
    vote: NodeId | None = None
    commit: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberAddress:
    """Where a member listens; carried in the membership so every node can reach a newcomer."""

    host: str
    p2p_port: int
    api_port: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Membership:
    """The cluster configuration: who votes and who only receives the log.

    ``non_voters`` are the learners meant to stay learners (read replicas): to the core they
    are learners like any other (they receive the log and never count for an election, a
    commit or a read round); the driver never promotes them on its own, only when an operator
    asks. Learners outside it are on their way to becoming voters.

    ``addresses`` is for the driver (the core ignores it): members added at run time are in no
    node's config file, so their addresses travel with the membership through the log and
    snapshots. A member without an address here falls back to the config file's ``peers``.
    """

    voters: frozenset[NodeId] = field(default_factory=frozenset)
    learners: frozenset[NodeId] = field(default_factory=frozenset)
    addresses: tuple[tuple[NodeId, MemberAddress], ...] = ()
    non_voters: frozenset[NodeId] = field(default_factory=frozenset)  # a subset of learners

    @property
    def members(self) -> frozenset[NodeId]:
        return self.voters | self.learners

    def quorum(self) -> int:
        return len(self.voters) // 2 + 1

    def address_of(self, node: NodeId) -> MemberAddress | None:
        for member, address in self.addresses:
            if member == node:
                return address
        return None


def membership_to_dict(membership: Membership) -> dict[str, Any]:
    """A plain, canonical form (sorted ids) for JSON and msgpack."""
    out: dict[str, Any] = {
        "voters": sorted(membership.voters),
        "learners": sorted(membership.learners),
    }
    # Only when there are any, so that the bytes of every membership without non-voters (all
    # those written before they existed) stay the same.
    if membership.non_voters:
        out["non_voters"] = sorted(membership.non_voters)
    if membership.addresses:
        out["addresses"] = {
            node: {"host": a.host, "p2p": a.p2p_port, "api": a.api_port}
            for node, a in sorted(membership.addresses, key=lambda pair: pair[0])
        }
    return out


def membership_from_dict(raw: object) -> Membership:
    """The inverse of membership_to_dict; ValueError names what is malformed."""
    if not isinstance(raw, dict):
        raise ValueError("a membership must be a mapping with voters and learners")
    voters, learners = raw.get("voters"), raw.get("learners")
    non_voters = raw.get("non_voters", [])
    for name, ids in (("voters", voters), ("learners", learners), ("non_voters", non_voters)):
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError(f"membership {name} must be a list of node ids")
    assert isinstance(voters, list) and isinstance(learners, list)
    assert isinstance(non_voters, list)
    if not set(non_voters) <= set(learners):
        raise ValueError("membership non_voters must all be learners")
    addresses: list[tuple[NodeId, MemberAddress]] = []
    raw_addresses = raw.get("addresses", {})
    if not isinstance(raw_addresses, dict):
        raise ValueError("membership addresses must map node ids to addresses")
    for node, a in raw_addresses.items():
        if not (
            isinstance(node, str)
            and isinstance(a, dict)
            and isinstance(a.get("host"), str)
            and all(type(a.get(k)) is int and 0 < a[k] < 65536 for k in ("p2p", "api"))
        ):
            raise ValueError(f"membership address of {node!r} must be {{host, p2p, api}}")
        address = MemberAddress(host=a["host"], p2p_port=a["p2p"], api_port=a["api"])
        addresses.append((node, address))
    return Membership(
        voters=frozenset(voters),
        learners=frozenset(learners),
        addresses=tuple(sorted(addresses, key=lambda pair: pair[0])),
        non_voters=frozenset(non_voters),
    )


def encode_membership(membership: Membership) -> bytes:
    """The bytes stored in a MEMBERSHIP entry (stable, sorted JSON)."""
    return json.dumps(membership_to_dict(membership), separators=(",", ":")).encode()


def decode_membership(data: bytes) -> Membership:
    return membership_from_dict(json.loads(data))


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotMeta:
    """Identifies a snapshot: the last index and term it covers and the membership at that point.

    ``stamp_floor_ns`` is for the driver (the core only carries it): a time no earlier than
    any command stamp in the entries the snapshot covers (0: none known), so that a node whose
    log holds no stamped entry after its snapshot still never stamps earlier (graft.stamp).
    """

    index: int = 0
    term: int = 0
    membership: Membership = field(default_factory=Membership)
    stamp_floor_ns: int = 0
