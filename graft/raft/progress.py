"""The leader's bookkeeping for one follower (etcd calls it Progress).

A follower is in one of three states:

- PROBE: the leader does not know where the follower's log matches its own. It sends one
  AppendEntries at a time and waits for the answer (or the next heartbeat answer) before
  sending another, moving ``next`` back on each rejection.
- REPLICATE: the logs match up to ``match``; the leader streams entries optimistically,
  advancing ``next`` as it sends, with at most ``max_inflight`` unacknowledged messages.
- SNAPSHOT: the follower needs entries the leader has compacted; it waits for a snapshot.
"""

from __future__ import annotations

import enum
from collections import deque


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Progress:
    __slots__ = (
        "acked_seq",
        "commit_sent",
        "inflights",
        "learner",
        "match",
        "max_inflight",
        "next",
        "probe_sent",
        "recent_active",
        "snapshot_elapsed",
        "snapshot_index",
        "state",
    )

    def __init__(self, *, next_index: int, max_inflight: int, learner: bool = False) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        # Last index carried by each unacknowledged AppendEntries, oldest first.
        self.inflights: deque[int] = deque()
        self.max_inflight = max_inflight
        # Set by any message from the follower; check-quorum reads and clears it.
        self.recent_active = False
        self.learner = learner
        # Highest heartbeat round the follower answered (ReadIndex and lease).
        self.acked_seq = 0
        self.snapshot_index = 0
        # Leader ticks since the snapshot was sent (a lost one is retried).
        self.snapshot_elapsed = 0
        # Highest commit index told to the follower (it must learn each commit promptly).
        self.commit_sent = 0

    def become_probe(self) -> None:
        if self.state is ProgressState.SNAPSHOT:
            self.next = max(self.match + 1, self.snapshot_index + 1)
        else:
            self.next = self.match + 1
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.inflights.clear()

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.probe_sent = False
        self.inflights.clear()

    def become_snapshot(self, index: int) -> None:
        self.state = ProgressState.SNAPSHOT
        self.snapshot_index = index
        self.snapshot_elapsed = 0
        self.inflights.clear()

    def snapshot_failed(self) -> None:
        """The snapshot did not arrive: probe from match again, once the follower answers a
        heartbeat (so an unreachable follower is not sent snapshot after snapshot)."""
        self.snapshot_index = 0
        self.become_probe()
        self.probe_sent = True

    def is_paused(self) -> bool:
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return len(self.inflights) >= self.max_inflight
        return True

    def sent(self, last_index: int) -> None:
        """An AppendEntries ending at ``last_index`` (or empty, when equal to next - 1) left."""
        if self.state is ProgressState.REPLICATE:
            if last_index >= self.next:
                self.next = last_index + 1
                self.inflights.append(last_index)
        else:
            self.probe_sent = True

    def maybe_update(self, index: int) -> bool:
        """The follower matches up to ``index``; True when that is news."""
        updated = False
        if index > self.match:
            self.match = index
            updated = True
            self.probe_sent = False
        if index + 1 > self.next:
            self.next = index + 1
        inflights = self.inflights
        while inflights and inflights[0] <= index:
            inflights.popleft()
        return updated

    def maybe_decrease_to(self, rejected: int, next_probe: int) -> bool:
        """A rejection of prev_index ``rejected``; False when it is stale."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.become_probe()
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, next_probe + 1), self.match + 1)
        self.probe_sent = False
        return True

    def free_one(self) -> None:
        """A heartbeat answer proves the link works: let one more message go when full."""
        if self.state is ProgressState.REPLICATE and len(self.inflights) >= self.max_inflight:
            self.inflights.popleft()
