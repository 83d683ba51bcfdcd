"""The core's configuration, in ticks (the driver maps milliseconds to ticks)."""

from __future__ import annotations

from dataclasses import dataclass

from graft.raft.types import Membership, NodeId


@dataclass(frozen=True, slots=True, kw_only=True)
class RaftConfig:
    id: NodeId
    # The membership of a brand-new cluster; ignored once storage holds one.
    bootstrap: Membership
    # Randomised election timeout is drawn from [election_ticks, 2 * election_ticks).
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    # Flow control for AppendEntries (per message, and messages in flight per follower).
    max_msg_entries: int = 1024
    max_msg_bytes: int = 1 << 20
    max_inflight: int = 64
    pre_vote: bool = True
    check_quorum: bool = True
    # The lease is valid for election_ticks - lease_drift_ticks after a quorum acknowledged a
    # heartbeat round, counted from when that round was sent.
    lease_drift_ticks: int = 2
    # The index the driver's state machine already reflects (it persists its own state): on a
    # restart, committed entries up to here are not handed out again.
    applied: int = 0
