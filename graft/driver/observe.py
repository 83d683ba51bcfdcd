"""What the node measures for operators beyond its own counters: the sizes of its log and FSM,
its certificate's expiry, the leader's view of each follower, and the round-trip time of
heartbeats. The gauges are set when read (a scrape of /metrics, GET /status), so that nothing
on the hot path computes them."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from graft.metrics import NodeMetrics
from graft.raft.messages import Heartbeat, HeartbeatResponse, Message
from graft.raft.node import RaftNode
from graft.raft.ready import Role
from graft.waiters import ProposalWaiters

# How long a measured FSM size is reused: the kv FSM's takes a pass over its map, and GET
# /status may be polled many times a second.
FSM_SIZE_TTL = 1.0

# Heartbeat rounds remembered per peer while their answers are outstanding: a peer that does
# not answer must not make the table grow.
_ROUNDS_KEPT = 16


def log_bytes_of(storage: Any) -> int | None:
    """The log's size on disk when the storage can tell (DurableLog.log_bytes), else None."""
    size = getattr(storage, "log_bytes", None)
    return size if isinstance(size, int) else None


def fsm_bytes_of(fsm: Any) -> int | None:
    """The FSM's size when it can tell (an optional ``size_bytes()`` method), else None."""
    size_bytes = getattr(fsm, "size_bytes", None)
    if size_bytes is None:
        return None
    try:
        size = size_bytes()
    except OSError:  # a file replaced under us (a restore): the next read answers
        return None
    return size if isinstance(size, int) else None


class Observations:
    """See the module docstring. ``monotonic`` times the heartbeats."""

    def __init__(
        self,
        *,
        raft: RaftNode,
        storage: Any,
        fsm: Any,
        metrics: NodeMetrics,
        proposals: ProposalWaiters,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._raft = raft
        self._storage = storage
        self._fsm = fsm
        self._metrics = metrics
        self._proposals = proposals
        self._monotonic = monotonic
        self._rounds: dict[str, dict[int, float]] = {}  # peer -> heartbeat seq -> sent at
        self._followers: set[str] = set()  # peers with follower gauges set
        self._fsm_size: tuple[float, int | None] | None = None  # (measured at, size)
        # This node's peer certificate's notAfter (Unix time), when the service read it.
        self.certificate_not_after: float | None = None

    def set_certificate_expiry(self, not_after: float | None) -> None:
        self.certificate_not_after = not_after
        self._metrics.certificate_expiry.set(not_after or 0)

    def log_bytes(self) -> int | None:
        return log_bytes_of(self._storage)

    def fsm_bytes(self) -> int | None:
        """The FSM's size, measured at most once per FSM_SIZE_TTL seconds."""
        now = self._monotonic()
        cached = self._fsm_size
        if cached is None or not 0 <= now - cached[0] < FSM_SIZE_TTL:
            cached = self._fsm_size = (now, fsm_bytes_of(self._fsm))
        return cached[1]

    # -- heartbeats ----------------------------------------------------------------------------

    def sent(self, messages: Sequence[Message]) -> None:
        """Messages leaving for peers: note when each heartbeat round left."""
        for message in messages:
            if type(message) is Heartbeat:
                rounds = self._rounds.setdefault(message.to, {})
                if len(rounds) >= _ROUNDS_KEPT:
                    del rounds[min(rounds)]
                rounds.setdefault(message.seq, self._monotonic())

    def received(self, message: Message) -> None:
        """A message from a peer: a heartbeat's answer gives that peer's round-trip time."""
        if type(message) is not HeartbeatResponse:
            return
        rounds = self._rounds.get(message.sender)
        if not rounds:
            return
        sent_at = rounds.pop(message.seq, None)
        if sent_at is None:
            return
        for seq in [s for s in rounds if s < message.seq]:  # answered later or never
            del rounds[seq]
        seconds = max(0.0, self._monotonic() - sent_at)
        self._metrics.peer_round_trip.labels(peer=message.sender).observe(seconds)

    # -- gauges read on demand -------------------------------------------------------------------

    def refresh(self) -> None:
        """Set the gauges that are computed when read (before a scrape)."""
        m = self._metrics
        st = self._raft.status()
        m.has_leader.set(1 if st.leader is not None else 0)
        m.proposals_pending.set(len(self._proposals))
        size = self.log_bytes()
        if size is not None:
            m.log_bytes.set(size)
        size = self.fsm_bytes()
        if size is not None:
            m.fsm_bytes.set(size)
        followers: set[str] = set()
        if st.role is Role.LEADER:
            for peer, progress in st.progress.items():
                if peer == st.id:
                    continue
                followers.add(peer)
                m.follower_match_index.labels(peer=peer).set(progress.match)
                m.follower_lag_entries.labels(peer=peer).set(max(0, st.last_index - progress.match))
        for gone in self._followers - followers:  # no longer leader, or the peer left
            m.follower_match_index.remove(gone)
            m.follower_lag_entries.remove(gone)
        self._followers = followers
        for peer in [p for p in self._rounds if p not in st.progress]:
            del self._rounds[peer]
