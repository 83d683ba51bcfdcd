"""The data dir's space quota as the driver sees it (graft.space): refusing writes while this
node, or on the leader a follower, is over its quota; a follower reports its alarm to the
leader after each scan."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, succeed

from graft.driver.clock import ReactorTime
from graft.driver.lifecycle import Lifecycle
from graft.driver.peers import PeerPort
from graft.errors import GraftError
from graft.metrics import NodeMetrics
from graft.raft.node import RaftNode
from graft.raft.ready import Role
from graft.space import SPACE_REPORT, SpaceMonitor, SpaceQuota


class SpaceReporting:
    def __init__(
        self,
        *,
        raft: RaftNode,
        clock: ReactorTime,
        peers: PeerPort,
        lifecycle: Lifecycle,
        metrics: NodeMetrics,
        tick_seconds: float,
    ) -> None:
        self._raft = raft
        self._clock = clock
        self._peers = peers
        self._lifecycle = lifecycle
        self._metrics = metrics
        self._tick_seconds = tick_seconds
        self._monitor: SpaceMonitor | None = None  # the data dir's quota (see watch)
        self._reported_over = False  # the alarm this node last reported to the leader

    def watch(self, monitor: SpaceMonitor) -> None:
        self._monitor = monitor
        monitor.report = self._report

    def refusal(self) -> GraftError | None:
        """Why a write must be refused now, if it must."""
        if self._monitor is None:
            return None
        leader = self._raft.role is Role.LEADER
        refused = self._monitor.quota.refusal(self._clock.seconds(), leader=leader)
        if refused is not None:
            self._metrics.proposals_failed.labels(reason="no_space").inc()
        return refused

    def note_proposed(self, commands: Sequence[bytes]) -> None:
        if self._monitor is not None:
            self._monitor.note_proposed(sum(map(len, commands)))

    def status(self) -> dict[str, Any] | None:
        """The quota's part of /status, None when no quota is watched."""
        if self._monitor is None:
            return None
        return self._monitor.quota.status(self._clock.seconds())

    def _report(self, quota: SpaceQuota) -> None:
        """After a scan: a follower over its quota tells the leader (again at every scan while
        it lasts, since a leader forgets a report after a few seconds), and once more when it
        is below again."""
        leader = self._raft.leader
        over = quota.alarm
        if leader is None or leader == self._raft.id or self._lifecycle.stopping:
            self._reported_over = over
            return
        if not over and not self._reported_over:
            return
        self._reported_over = over
        args = {"usage": quota.usage, "quota": quota.quota, "over": over}
        d = self._peers.call(leader, SPACE_REPORT.name, args, timeout=self._tick_seconds * 20)
        d.addErrback(lambda _: None)  # the next scan reports again

    def reported(self, peer: str, args: dict[str, Any]) -> Deferred[dict[str, Any]]:
        """space_report: a follower's alarm, on the leader. Only members count: a removed node
        still connected for a while must not hold up the cluster's writes."""
        if self._monitor is not None and peer in self._raft.membership.members:
            self._monitor.quota.peer_report(
                peer,
                max(0, int(args["usage"])),
                max(0, int(args["quota"])),
                bool(args["over"]),
                self._clock.seconds(),
            )
        return succeed({})
