"""The core's configuration, in ticks (the driver maps milliseconds to ticks).

The leader's lease and the followers' stickiness are derived here, from the same quantities,
so the whole safety margin is in one place (docs/architecture.md, "The lease", has the numbers).

Let E be election_ticks and P a tick period. A follower that heard from the leader ignores
votes for ``stickiness_ticks`` = E of its ticks. Its ticks are counted on a monotonic clock and
caught up before each message is handled, so the first of them may come right after the
heartbeat: it stays sticky for at least (E - 1) periods of its own clock after it received the
round. The leader counts its lease from the tick at which it sent that round, so a lease of L
ticks ends at most L periods of its own clock after the round was sent, plus the lateness of its
tick count when it checks (the driver refuses the lease once its last tick is more than
``LATE_TICKS`` periods old). The lease is safe while

    (L + LATE_TICKS) x P_leader  <=  (E - 1) x P_follower

and ``lease_ticks`` takes L = E - ceil(E x clock_drift) - QUANTUM_TICKS - LATE_TICKS, i.e.
E x (1 - clock_drift) - 1 - 2 ticks: then the inequality holds whenever the leader's tick
period is at most 1 / (1 - clock_drift) times a follower's (11 % slower for the default 0.1).
For 350/35 ms: 350 x 0.9 - 35 - 70 = 210 ms of lease against 350 ms of stickiness.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from graft.raft.types import Membership, NodeId

# Tick quantisation: a follower's first tick after a heartbeat may come at once.
QUANTUM_TICKS = 1
# How late the driver lets the leader's tick count be when it serves a lease read.
LATE_TICKS = 2
# The default bound on the relative rate of two nodes' clocks, as a fraction of E.
DEFAULT_CLOCK_DRIFT = 0.1
# Flow-control defaults for AppendEntries (graft.config's `raft` section starts from these).
DEFAULT_MAX_MSG_ENTRIES = 1024
DEFAULT_MAX_MSG_BYTES = 1 << 20
DEFAULT_MAX_INFLIGHT = 64


def lease_ticks(election_ticks: int, clock_drift: float) -> int:
    """The lease's length in ticks (0: no lease, every default read asks a quorum)."""
    drift = math.ceil(election_ticks * clock_drift - 1e-9)
    return max(0, election_ticks - drift - QUANTUM_TICKS - LATE_TICKS)


@dataclass(frozen=True, slots=True, kw_only=True)
class RaftConfig:
    id: NodeId
    # The membership of a brand-new cluster; ignored once storage holds one.
    bootstrap: Membership
    # Randomised election timeout is drawn from [election_ticks, 2 * election_ticks).
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    # Flow control for AppendEntries (per message, and messages in flight per follower).
    max_msg_entries: int = DEFAULT_MAX_MSG_ENTRIES
    max_msg_bytes: int = DEFAULT_MAX_MSG_BYTES
    max_inflight: int = DEFAULT_MAX_INFLIGHT
    pre_vote: bool = True
    check_quorum: bool = True
    # The bound on clock-rate drift between nodes the lease leaves room for (a fraction of the
    # election timeout); see the module docstring and lease_ticks.
    clock_drift: float = DEFAULT_CLOCK_DRIFT
    # The index the driver's state machine already reflects (it persists its own state): on a
    # restart, committed entries up to here are not handed out again.
    applied: int = 0

    @property
    def stickiness_ticks(self) -> int:
        """Ticks after a leader's message during which a follower ignores votes."""
        return self.election_ticks

    @property
    def lease_ticks(self) -> int:
        """Ticks after sending a quorum-acknowledged round during which the leader serves
        reads locally."""
        return lease_ticks(self.election_ticks, self.clock_drift)
