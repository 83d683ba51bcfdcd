"""Why this node has no leader to offer a client: a lost quorum or an election under way.

Both are 503s a client may retry, but they call for different actions: an election ends on its
own within an election timeout or two, while a lost quorum lasts until the operator brings
voters back. The driver tells them apart from what it knows now: the voters of its membership
and the peers it has a working connection to.
"""

from __future__ import annotations

from collections.abc import Collection

from graft.errors import NoLeader, NoQuorum
from graft.raft.node import RaftNode


def unreachable_voters(raft: RaftNode, connected: Collection[str]) -> tuple[list[str], int]:
    """The voters this node has no connection to (itself excluded), and how many voters a
    majority is."""
    voters = raft.membership.voters
    missing = sorted(v for v in voters if v != raft.id and v not in connected)
    return missing, len(voters) // 2 + 1


def quorum_lost(raft: RaftNode, connected: Collection[str]) -> NoQuorum | None:
    """A NoQuorum naming the voters out of reach when this node and the voters it reaches are
    fewer than a majority; None when a majority is within reach (or there are no voters)."""
    voters = raft.membership.voters
    if not voters:
        return None  # a joining node that knows no membership yet
    missing, majority = unreachable_voters(raft, connected)
    reachable = len(voters) - len(missing)
    if reachable >= majority:
        return None
    return NoQuorum(
        f"{raft.id} cannot reach a majority of the voters: it reaches {reachable} of "
        f"{len(voters)} ({majority} needed) and has no connection to {', '.join(missing)}; "
        "start those nodes or fix the network to them (`graft status` shows which are up)"
    )


def leaderless(raft: RaftNode, connected: Collection[str]) -> NoLeader:
    """The error for a request that found no leader to go to: NoQuorum when a majority of the
    voters is out of reach, else NoLeader (an election under way, or the leader out of reach)."""
    lost = quorum_lost(raft, connected)
    if lost is not None:
        return lost
    leader = raft.leader
    if leader is None or leader == raft.id:
        return NoLeader(
            f"no leader is known: an election is under way ({raft.id} is "
            f"{raft.role.value} in term {raft.term}); retry shortly"
        )
    return NoLeader(f"the leader {leader} cannot be reached from {raft.id}; retry shortly")
