"""The node's Prometheus metrics, in one registry per node (so tests can run several nodes)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from graft.reactor_metrics import ReactorCounter, ReactorHistogram

# Snapshots take from milliseconds (a small state) to minutes (gigabytes over the network).
_SNAPSHOT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.term = Gauge("graft_term", "Current Raft term.", registry=r)
        self.is_leader = Gauge("graft_is_leader", "1 if this node is the leader.", registry=r)
        self.commit_index = Gauge("graft_commit_index", "Highest committed index.", registry=r)
        self.applied_index = Gauge("graft_applied_index", "Highest applied index.", registry=r)
        self.last_index = Gauge("graft_last_index", "Last index in the local log.", registry=r)
        # Updated on every write: without prometheus_client's lock (graft.reactor_metrics).
        self.proposals = ReactorCounter(
            "graft_proposals", "Commands proposed on this node as leader.", registry=r
        )
        self.proposals_failed = Counter(
            "graft_proposals_failed",
            "Commands refused before they were proposed, by reason (not_leader, transfer, "
            "overloaded, no_space).",
            ["reason"],
            registry=r,
        )
        self.commit_latency = ReactorHistogram(
            "graft_commit_latency_seconds",
            "From proposal to applied, for commands proposed on this node.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.fsync_latency = Histogram(
            "graft_fsync_latency_seconds",
            "Duration of one group-commit write and fsync of the log.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.elections = Counter(
            "graft_elections", "Elections this node started as a candidate.", registry=r
        )
        self.election_timeouts = Counter(
            "graft_election_timeouts",
            "Times this node's election timer fired and it started a pre-vote (a leadership "
            "transfer does not count).",
            registry=r,
        )
        self.leader_changes = Counter(
            "graft_leader_changes", "Times this node saw the leader change.", registry=r
        )
        self.reads = Counter(
            "graft_reads", "Queries served, by consistency.", ["consistency"], registry=r
        )
        self.queries_in_threads = Gauge(
            "graft_queries_in_threads",
            "Queries handed to the query threads and not finished (running or waiting).",
            registry=r,
        )
        self.query_timeouts = Counter(
            "graft_query_timeouts", "Queries stopped at their time limit.", registry=r
        )
        self.peer_connected = Gauge(
            "graft_peer_connected",
            "1 if the outbound connection to a peer is up.",
            ["peer"],
            registry=r,
        )
        # The replica consistency check (graft.consistency): the last one this node ran or was
        # asked for.
        self.replica_digest_mismatch = Gauge(
            "graft_replica_digest_mismatch",
            "1 if the last replica consistency check found members whose FSM digests differ "
            "(the replicas diverged), 0 if it found none.",
            registry=r,
        )
        self.replica_check_index = Gauge(
            "graft_replica_check_index",
            "The log index of the last replica consistency check (0: none ran).",
            registry=r,
        )
        self._add_operator_metrics(r)
        self._add_snapshot_policy_metrics(r)
        # The standard process_* and python_* series every Prometheus exporter has.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)

    def _add_operator_metrics(self, r: CollectorRegistry) -> None:
        """What an operator of a replicated store watches: leadership, followers' progress,
        peers' round-trip time, snapshots, sizes, durations (docs/operations.md has the table
        and example alerts)."""
        self.has_leader = Gauge(
            "graft_has_leader", "1 if this node knows a leader (itself included).", registry=r
        )
        self.follower_match_index = Gauge(
            "graft_follower_match_index",
            "On the leader: the highest log index known to be on each follower.",
            ["peer"],
            registry=r,
        )
        self.follower_lag_entries = Gauge(
            "graft_follower_lag_entries",
            "On the leader: how many entries of the leader's log each follower lacks.",
            ["peer"],
            registry=r,
        )
        self.peer_round_trip = Histogram(
            "graft_peer_round_trip_seconds",
            "From sending a heartbeat to a peer to its answer arriving (on the leader).",
            ["peer"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.proposals_pending = Gauge(
            "graft_proposals_pending",
            "Commands proposed on this node and waiting to be applied.",
            registry=r,
        )
        self.apply_duration = ReactorHistogram(
            "graft_apply_duration_seconds",
            "Duration of applying one batch of committed entries to the FSM.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.log_bytes = Gauge(
            "graft_log_bytes",
            "Size of the log on disk (its segment files), as of the scrape.",
            registry=r,
        )
        self.fsm_bytes = Gauge(
            "graft_fsm_bytes",
            "Size of the FSM's state (the SQLite files; the kv FSM's keys and values), as of "
            "the scrape.",
            registry=r,
        )
        self.snapshots_taken = Counter(
            "graft_snapshots_taken", "Snapshots this node took of its own FSM.", registry=r
        )
        self.snapshots_delta = Counter(
            "graft_snapshots_delta",
            "Snapshots this node began as a delta (the SQLite FSM's WAL since its previous "
            "one) to fold into its full copy.",
            registry=r,
        )
        self.snapshot_take_duration = Histogram(
            "graft_snapshot_take_duration_seconds",
            "From starting a snapshot of this node's FSM to the snapshot being on disk.",
            buckets=_SNAPSHOT_BUCKETS,
            registry=r,
        )
        self.snapshots_installed = Counter(
            "graft_snapshots_installed",
            "Snapshots received from the leader and installed (the FSM restored from them).",
            registry=r,
        )
        self.snapshot_install_duration = Histogram(
            "graft_snapshot_install_duration_seconds",
            "Duration of installing a snapshot received from the leader.",
            buckets=_SNAPSHOT_BUCKETS,
            registry=r,
        )
        self.snapshots_sent = Counter(
            "graft_snapshots_sent",
            "Snapshots this node streamed to a follower, by result (ok, failed).",
            ["result"],
            registry=r,
        )
        self.snapshot_send_duration = Histogram(
            "graft_snapshot_send_duration_seconds",
            "Duration of streaming a snapshot to a follower.",
            buckets=_SNAPSHOT_BUCKETS,
            registry=r,
        )
        self.certificate_expiry = Gauge(
            "graft_certificate_expiry_timestamp_seconds",
            "When this node's peer certificate expires (notAfter, Unix time); 0 if unknown.",
            registry=r,
        )

    def _add_snapshot_policy_metrics(self, r: CollectorRegistry) -> None:
        """The inputs of the snapshot rule (graft.driver.snapshot_policy) and the last
        snapshot's cost."""
        self.snapshot_log_bytes = Gauge(
            "graft_snapshot_log_bytes",
            "Bytes of log applied since this node's latest snapshot.",
            registry=r,
        )
        self.snapshot_threshold_bytes = Gauge(
            "graft_snapshot_threshold_bytes",
            "graft_snapshot_log_bytes at which the next snapshot is taken (snapshot.log_ratio "
            "x the latest snapshot's size; snapshot.entries entries must also have passed).",
            registry=r,
        )
        self.snapshot_last_bytes = Gauge(
            "graft_snapshot_last_bytes", "Size of this node's latest snapshot file.", registry=r
        )
        self.snapshot_last_duration = Gauge(
            "graft_snapshot_last_duration_seconds",
            "How long this node's latest own snapshot took to write, in all.",
            registry=r,
        )
        self.snapshot_last_pause = Gauge(
            "graft_snapshot_last_pause_seconds",
            "How long this node's latest own snapshot held the reactor thread (pinning the "
            "state, e.g. the kv FSM's fork).",
            registry=r,
        )

    def watch_inline_fsync(self, stats: Callable[[], InlineFsyncStats | None]) -> None:
        """Show the adaptive inline fsync (graft.storage.inline_fsync) at each scrape: where
        the log's writes went, the current mode, its switches and the stalls that caused them."""
        register_inline_fsync(self.registry, stats)


def register_inline_fsync(
    registry: CollectorRegistry, stats: Callable[[], InlineFsyncStats | None]
) -> None:
    """The inline fsync's series in ``registry`` (NodeMetrics.watch_inline_fsync)."""
    registry.register(_InlineFsyncCollector(stats))


class InlineFsyncStats(Protocol):
    inline: bool
    inline_writes: int
    threaded_writes: int
    switches: int
    stalls: int


class _InlineFsyncCollector(Collector):
    def __init__(self, stats: Callable[[], InlineFsyncStats | None]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        writes = CounterMetricFamily(
            "graft_log_writes",
            "Log writes by where they were fsynced: inline (on the reactor thread, while the "
            "disk is fast) or threaded (the writer thread).",
            labels=["path"],
        )
        mode = GaugeMetricFamily(
            "graft_inline_fsync_mode",
            "1 while the disk is fast enough for a follower's small writes to fsync on the "
            "reactor thread, 0 while every write goes to the writer thread (slow or stalling "
            "disk, or storage.inline_fsync off).",
        )
        switches = CounterMetricFamily(
            "graft_inline_fsync_switches", "Times the inline fsync mode changed."
        )
        stalls = CounterMetricFamily(
            "graft_fsync_stalls",
            "Log fsyncs of 50 ms or more; each keeps writes on the writer thread for 300 s.",
        )
        if stats is not None:
            writes.add_metric(["inline"], stats.inline_writes)
            writes.add_metric(["threaded"], stats.threaded_writes)
            mode.add_metric([], 1 if stats.inline else 0)
            switches.add_metric([], stats.switches)
            stalls.add_metric([], stats.stalls)
        else:
            mode.add_metric([], 0)
        yield from (writes, mode, switches, stalls)
