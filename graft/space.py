# mypy: disable-error-code="no-untyped-call"
"""The space quota of a node's data dir (etcd's NOSPACE alarm).

A data dir that fills its disk stops the node: the log's next fsync fails and the node must
not go on. Worse, one client writing fast fills every replica's disk at about the same time,
since they all hold the same log and the same state. So each node has a quota
(``storage.quota_bytes``) well below its disk: while its data dir is at or over it, the node
refuses new writes with 507 ``no_space``. Reads, snapshots, log compaction and membership
changes go on, so the operator can free space, and the alarm clears by itself once usage is
below ``CLEAR_FRACTION`` of the quota (the margin keeps it from flapping on every write).

How usage is known: ``SpaceMonitor`` sums the sizes of the files in the data dir every
``interval`` seconds on a worker thread (a directory listing: the log's segments, snapshots,
the FSM's files), never on the reactor thread. Between two scans the node adds the bytes of
the commands it proposes, so a fast writer cannot run far past the quota before the next scan
sees it.

Where the alarm is checked: ``GraftNode.submit``. A leader refuses to propose while its own
data dir is over the quota or while a follower has reported that its own is (followers report
their alarm to the leader at each scan while it lasts: ``SpaceQuota.peer_report``); a follower
refuses to forward while its own data dir is over the quota.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure

from graft.errors import NoSpace
from graft.wire.commands import COMMANDS, Command

log = Logger(namespace="graft.space")

# The alarm clears once usage is below this fraction of the quota.
CLEAR_FRACTION = 0.95
# How often the data dir is measured, in seconds.
SCAN_INTERVAL = 1.0
# How long a follower's report keeps the leader refusing writes without a new one: a few scans,
# so one lost report does not clear it, and a follower that stopped or cleared is forgotten.
PEER_REPORT_SECONDS = 3 * SCAN_INTERVAL + 1.0


# A follower tells the leader its data dir is over its quota (``over``), or no longer is.
SPACE_REPORT = COMMANDS.register(
    Command(
        name="space_report",
        arguments={"usage": int, "quota": int, "over": bool},
        response={},
    )
)


def data_dir_bytes(data_dir: Path) -> int:
    """The total size of the regular files under ``data_dir`` (symbolic links not followed).

    Blocking (a directory walk): run it on a worker thread. Files that vanish while it runs
    (a segment deleted by compaction) are skipped.
    """
    total = 0
    pending = [str(data_dir)]
    while pending:
        directory = pending.pop()
        try:
            listing = os.scandir(directory)
        except (FileNotFoundError, NotADirectoryError):
            continue
        with listing:
            for item in listing:
                try:
                    info = item.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(info.st_mode):
                    total += info.st_size
                elif stat.S_ISDIR(info.st_mode):
                    pending.append(item.path)
    return total


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


class SpaceQuota:
    """The alarm's state: pure logic, no I/O and no clock of its own (``now`` is passed in)."""

    def __init__(self, quota_bytes: int, *, node_id: str = "", data_dir: Path | str = "") -> None:
        self.quota = max(0, quota_bytes)
        self.clear_below = int(self.quota * CLEAR_FRACTION)
        self.node_id = node_id
        self.data_dir = str(data_dir)
        self.measured: int | None = None  # bytes at the last scan
        self.since_scan = 0  # bytes of commands proposed since that scan started
        self.alarm = False
        # Followers over their quota, as they reported: id -> (usage, quota, valid until).
        self._peers: dict[str, tuple[int, int, float]] = {}

    @property
    def enabled(self) -> bool:
        return self.quota > 0

    @property
    def usage(self) -> int:
        """The best estimate of the data dir's size now."""
        return (self.measured or 0) + self.since_scan

    def observe(self, measured: int, *, proposed_during_scan: int = 0) -> str | None:
        """A scan found ``measured`` bytes; ``proposed_during_scan`` of the bytes counted by
        ``note_proposed`` were counted before the scan began (the scan saw them, or will
        next time: either way they no longer need estimating). Returns "raised", "cleared" or
        None."""
        self.measured = measured
        self.since_scan = max(0, self.since_scan - proposed_during_scan)
        return self._update()

    def note_proposed(self, size: int) -> str | None:
        """This node proposed ``size`` bytes of commands (they will reach its disk)."""
        self.since_scan += size
        return self._update()

    def _update(self) -> str | None:
        if not self.enabled:
            return None
        usage = self.usage
        if not self.alarm and usage >= self.quota:
            self.alarm = True
            return "raised"
        if self.alarm and usage < self.clear_below:
            self.alarm = False
            return "cleared"
        return None

    def peer_report(self, peer: str, usage: int, quota: int, over: bool, now: float) -> None:
        """A follower reported its own alarm (``over``) or its end."""
        if over:
            self._peers[peer] = (usage, quota, now + PEER_REPORT_SECONDS)
        else:
            self._peers.pop(peer, None)

    def peers_over(self, now: float) -> dict[str, tuple[int, int]]:
        """The followers whose recent report says they are over their quota."""
        for peer in [p for p, (_, _, until) in self._peers.items() if until <= now]:
            del self._peers[peer]
        return {p: (usage, quota) for p, (usage, quota, _) in self._peers.items()}

    def refusal(self, now: float, *, leader: bool) -> NoSpace | None:
        """The error a write gets now, or None if it may go ahead. A leader also refuses while
        a follower is over its quota."""
        if not self.alarm and not (leader and self._peers):
            return None  # the common case, on every write: no clock, no allocation
        if self.alarm:
            return NoSpace(
                f"node {self.node_id}: its data dir {self.data_dir} holds {_mib(self.usage)}, "
                f"over its space quota of {_mib(self.quota)} (storage.quota_bytes); writes "
                f"are refused until it is below {_mib(self.clear_below)}, reads go on. Free "
                "space: take a snapshot on each node to compact its log (graft snapshot take "
                "--url NODE-API-URL), or raise storage.quota_bytes (and restart the node) to "
                "delete data you no longer need, then snapshot"
            )
        if leader:
            over = self.peers_over(now)
            if over:
                peer, (usage, quota) = sorted(over.items())[0]
                return NoSpace(
                    f"node {peer}: its data dir holds {_mib(usage)}, over its space quota "
                    f"of {_mib(quota)} (storage.quota_bytes); the leader {self.node_id} "
                    "refuses writes until it is below again, reads go on. Free space on "
                    f"{peer}: take a snapshot there (graft snapshot take --url with its API "
                    "URL), or raise its storage.quota_bytes and restart it"
                )
        return None

    def status(self, now: float) -> dict[str, Any]:
        """For GET /status."""
        return {
            "quota_bytes": self.quota,
            "usage_bytes": self.usage,
            "alarm": self.alarm,
            "peers_over_quota": sorted(self.peers_over(now)),
        }


class SpaceMonitor(Service):
    """Measures the data dir every ``interval`` seconds off the reactor thread, keeps the
    quota's alarm and the gauges up to date, logs the alarm's changes, and (through
    ``report``) tells the leader about this node's alarm while it lasts."""

    def __init__(
        self,
        quota: SpaceQuota,
        data_dir: Path,
        *,
        clock: Any,
        registry: CollectorRegistry | None = None,
        interval: float = SCAN_INTERVAL,
        measure: Callable[[Path], int] = data_dir_bytes,
        run_in_thread: Callable[..., Deferred[Any]] | None = None,
    ) -> None:
        self.quota = quota
        self._dir = Path(data_dir)
        self._clock = clock
        self._interval = interval
        self._measure = measure
        self._run_in_thread = run_in_thread or deferToThread
        self._scanning = False
        self._loop: LoopingCall | None = None
        # Called after each scan with the quota: the node reports its alarm to the leader.
        self.report: Callable[[SpaceQuota], None] | None = None
        registry = registry if registry is not None else CollectorRegistry()
        self._usage = Gauge(
            "graft_data_dir_bytes",
            "Size of the files in this node's data dir, measured every second (plus the "
            "commands proposed during the measurement).",
            registry=registry,
        )
        self._quota_gauge = Gauge(
            "graft_data_dir_quota_bytes",
            "The data dir's space quota (storage.quota_bytes); 0 when off.",
            registry=registry,
        )
        self._alarm = Gauge(
            "graft_space_alarm",
            "1 while this node's data dir is over its quota and it refuses writes.",
            registry=registry,
        )
        self._quota_gauge.set(quota.quota)

    def measure_now(self) -> None:
        """Measure on this thread (at start, before the reactor runs)."""
        self._record(self.quota.observe(self._measure(self._dir)))

    def startService(self) -> None:
        super().startService()
        if not self.quota.enabled:
            return
        self._loop = LoopingCall(self._scan)
        self._loop.clock = self._clock
        self._loop.start(self._interval, now=False)

    def stopService(self) -> Any:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        return super().stopService()

    def note_proposed(self, size: int) -> None:
        """On every batch the node proposes: cheap unless the alarm goes on (the gauges are
        updated at each scan)."""
        quota = self.quota
        if quota.enabled:
            change = quota.note_proposed(size)
            if change is not None:
                self._record(change)

    def _scan(self) -> None:
        if self._scanning:
            return  # a slow disk: the previous scan is still running
        self._scanning = True
        counted = self.quota.since_scan
        d = self._run_in_thread(self._measure, self._dir)

        def measured(size: int) -> None:
            self._record(self.quota.observe(size, proposed_during_scan=counted))
            if self.report is not None:
                self.report(self.quota)

        def failed(failure: Failure) -> None:
            log.failure("measuring the data dir {dir} failed", failure, dir=str(self._dir))

        def done(_: object) -> None:
            self._scanning = False

        d.addCallbacks(measured, failed)
        d.addBoth(done)

    def _record(self, change: str | None) -> None:
        quota = self.quota
        self._usage.set(quota.usage)
        self._alarm.set(1 if quota.alarm else 0)
        if change == "raised":
            log.warn(
                "space alarm: the data dir {dir} holds {usage} bytes, at or over its quota of "
                "{quota} (storage.quota_bytes): writes are refused until it is below {clear}; "
                "take a snapshot (graft snapshot take) or free space",
                dir=str(self._dir),
                usage=quota.usage,
                quota=quota.quota,
                clear=quota.clear_below,
            )
        elif change == "cleared":
            log.info(
                "space alarm cleared: the data dir {dir} holds {usage} bytes, below {clear}; "
                "writes are accepted again",
                dir=str(self._dir),
                usage=quota.usage,
                clear=quota.clear_below,
            )
