"""Errors the core raises to its caller. Peers' bad messages are ignored, never raised."""

from __future__ import annotations

from graft.raft.types import NodeId


class RaftError(Exception):
    """Base class of everything the core raises."""


class NotLeader(RaftError):
    """A proposal or leader-only operation reached a node that is not the leader.

    ``leader`` is the leader this node knows of, or None when it knows of none (an election is
    under way): the caller should retry there, or later.
    """

    def __init__(self, leader: NodeId | None) -> None:
        super().__init__(f"not the leader; leader is {leader or 'unknown'}")
        self.leader = leader


class ProposalDropped(RaftError):
    """The leader refuses proposals for now (a leadership transfer is in progress)."""


class LogCompacted(RaftError):
    """The requested index lies below the first index kept (it is inside the snapshot)."""


class LogUnavailable(RaftError):
    """The requested index lies beyond the last index in the log."""


class MembershipChangeRefused(RaftError):
    """A membership change was refused: one change at a time, one server per change."""
