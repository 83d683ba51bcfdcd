"""The node's Prometheus metrics, in one registry per node (so tests can run several nodes)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
        self.proposals = Counter(
            "graft_proposals", "Commands proposed on this node as leader.", registry=r
        )
        self.proposals_failed = Counter(
            "graft_proposals_failed",
            "Commands that failed (not leader, timeout, overwritten).",
            ["reason"],
            registry=r,
        )
        self.commit_latency = Histogram(
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
