# mypy: disable-error-code="no-untyped-call"
"""GraftNode: the driver's face to the rest of the process, a thin facade over its parts.

The parts (graft.driver.wiring builds them): the Ready pipeline and ticks, applying entries,
proposals, reads, forwarding to the leader and the peer requests, membership, snapshots,
replica checks and space reporting. GraftNode is the service the composition root
(graft.service) starts and stops, implements the port the HTTP API calls
(graft.driver.port), and hands the transport its callbacks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from prometheus_client import CollectorRegistry
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from graft.driver.apply import Applier
from graft.driver.checks import ReplicaChecks
from graft.driver.clock import ReactorTime
from graft.driver.forwarding import PeerRequests
from graft.driver.lifecycle import Lifecycle
from graft.driver.member_roles import MemberRoles
from graft.driver.membership import MembershipManager
from graft.driver.observe import Observations
from graft.driver.peers import PeerChannel, PeerPort
from graft.driver.pipeline import DurableStorage, Inbox, ReadyPipeline
from graft.driver.port import (
    ClusterAdmin,
    ClusterBackend,
    CommandResult,
    Consistency,
    MemberList,
    NodeStatus,
    PeerProgress,
    QueryResult,
)
from graft.driver.proposals import Proposer
from graft.driver.reads import Reads
from graft.driver.snapshots import Snapshots
from graft.driver.space import SpaceReporting
from graft.driver.ticks import Ticks
from graft.errors import Timeout, shutting_down
from graft.fsm import StateMachine
from graft.metrics import NodeMetrics
from graft.raft.messages import Message
from graft.raft.node import RaftNode
from graft.raft.ready import Role
from graft.raft.types import MemberAddress
from graft.space import SpaceMonitor
from graft.storage.rejected import RejectedEntry
from graft.waiters import IndexWaiters, ProposalWaiters

log = Logger(namespace="graft.node")


@dataclass(frozen=True, slots=True, kw_only=True)
class DriverParts:
    """Everything GraftNode delegates to, built once by graft.driver.wiring.build_node."""

    raft: RaftNode
    storage: DurableStorage
    fsm: StateMachine
    clock: ReactorTime
    metrics: NodeMetrics
    lifecycle: Lifecycle
    peers: PeerPort
    proposals: ProposalWaiters
    applied: IndexWaiters
    query_pool: ThreadPool
    pipeline: ReadyPipeline
    ticks: Ticks
    inbox: Inbox
    applier: Applier
    proposer: Proposer
    reads: Reads
    membership: MembershipManager
    member_roles: MemberRoles
    snapshots: Snapshots
    checks: ReplicaChecks
    space: SpaceReporting
    requests: PeerRequests
    observations: Observations


class GraftNode(Service, ClusterBackend, ClusterAdmin):
    """A Raft node on the reactor; implements the driver's port (graft.driver.port)."""

    def __init__(self, parts: DriverParts) -> None:
        self._parts = parts
        self._raft = parts.raft
        self._metrics = parts.metrics

    # -- service ---------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        st = self._raft.status()
        log.info(
            "node {id} starting in term {term}: log {first}..{last}, commit {commit}, "
            "members {members}",
            id=st.id,
            term=st.term,
            first=st.first_index,
            last=st.last_index,
            commit=st.commit,
            members=",".join(sorted(st.membership.voters)),
        )
        self._parts.ticks.start()
        self._parts.query_pool.start()
        self._parts.pipeline.schedule()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        p = self._parts
        p.lifecycle.stopping = True
        p.ticks.stop()
        p.pipeline.stop()
        p.membership.stop()
        # A proposal already in the log may still commit (under another leader): unknown.
        p.proposals.fail_all(
            lambda: Timeout(
                "the node stopped before the command was applied; its outcome is unknown: it "
                "may still commit. Check with a query before retrying a non-idempotent command"
            )
        )
        p.applied.fail_all(shutting_down)
        p.reads.fail_all()
        pending: Deferred[None] = Deferred()
        p.pipeline.finished.addBoth(pending.callback)

        def close(_: object) -> Deferred[None]:
            p.snapshots.fsm_work.close()
            p.fsm.close()  # also stops the queries running in the query threads
            if not p.query_pool.joined:  # stopService may run twice (a fatal error, then stop)
                p.query_pool.stop()
            return p.storage.close()

        # A restore in its thread cannot be interrupted: the FSM closes after it.
        pending.addBoth(lambda _: p.snapshots.fsm_work.idle())
        pending.addBoth(close)
        return pending

    @property
    def stopping(self) -> bool:
        """Stopped, or stopping (after stopService or a fatal error)."""
        return self._parts.lifecycle.stopping

    # -- the peer plane --------------------------------------------------------------------

    def attach_peers(self, channel: PeerChannel) -> None:
        """The transport, built after the node (it needs the callbacks below): the one step
        that connects it."""
        self._parts.peers.attach(channel)

    @property
    def peers(self) -> PeerChannel | None:
        return self._parts.peers.channel

    @peers.setter
    def peers(self, channel: PeerChannel) -> None:  # tests attach their channel this way
        self.attach_peers(channel)

    def receive(self, message: Message) -> None:
        """A message from a peer (the transport's on_message)."""
        self._parts.observations.received(message)
        self._parts.inbox.receive(message)

    def peer_lost(self, peer: str) -> None:
        """An authenticated connection to ``peer`` closed (the transport's on_peer_lost)."""
        self._parts.inbox.peer_lost(peer)

    def handle_request(
        self, peer: str, command: str, args: dict[str, Any]
    ) -> Deferred[dict[str, Any]]:
        """An RPC from a peer (the transport's on_request)."""
        return self._parts.requests.handle(peer, command, args)

    def peer_addresses(self) -> dict[str, MemberAddress]:
        return self._parts.membership.peer_addresses()

    def admit_while_joining(self) -> None:
        self._parts.membership.admit_while_joining()

    # -- settings made after construction ----------------------------------------------------

    def skip_rejected_entries(self, rejected: Mapping[int, RejectedEntry]) -> None:
        """Treat these entries (``graft skip-entry``, read from the data dir) as commands the
        FSM refused, if the log still holds them when they are applied. Call before start."""
        self._parts.applier.skip_rejected(rejected)

    def set_certificate_expiry(self, not_after: float | None) -> None:
        """This node's peer certificate's notAfter (Unix time), for /status and /metrics."""
        self._parts.observations.set_certificate_expiry(not_after)

    def watch_space(self, monitor: SpaceMonitor) -> None:
        """Refuse writes while the data dir (or, on the leader, a follower's) is over its
        quota (graft.space); this node reports its own alarm to the leader after each scan."""
        self._parts.space.watch(monitor)

    def limit_waiters(self, *, commands: int, reads: int) -> None:
        """api.limits: at most ``commands`` proposals waiting to be applied, and at most
        ``reads`` reads waiting for a quorum's confirmation (and as many for an index); more
        are refused with Overloaded (503) instead of held."""
        self._parts.proposals.limit = commands
        self._parts.applied.limit = reads

    # -- ClusterBackend ----------------------------------------------------------------------

    @property
    def node_id(self) -> str:
        return self._raft.id

    @property
    def content_type(self) -> str:
        return self._parts.fsm.content_type

    @property
    def metrics(self) -> CollectorRegistry:
        connected = self._parts.peers.connected_peers()
        for peer in self._parts.membership.api_members():
            if peer != self.node_id:
                self._metrics.peer_connected.labels(peer=peer).set(peer in connected)
        self._parts.observations.refresh()
        return self._metrics.registry

    def leader_id(self) -> str | None:
        return self._raft.leader

    def is_leader(self) -> bool:
        return self._raft.role is Role.LEADER

    def api_url(self, node_id: str) -> str | None:
        return self._parts.membership.api_url(node_id)

    def submit(self, commands: Sequence[bytes]) -> Deferred[list[CommandResult]]:
        return self._parts.proposer.submit(commands)

    def submit_operations(self, operations: Sequence[bytes]) -> Deferred[list[CommandResult]]:
        return self._parts.proposer.submit(operations, sessioned=True)

    def query(
        self,
        query: bytes,
        consistency: Consistency,
        *,
        min_index: int | None = None,
        max_lag_ms: int | None = None,
        timeout: float | None = None,
    ) -> Deferred[QueryResult]:
        return self._parts.reads.query(
            query, consistency, min_index=min_index, max_lag_ms=max_lag_ms, timeout=timeout
        )

    def status(self) -> NodeStatus:
        p = self._parts
        st = self._raft.status()
        progress = None
        if st.role is Role.LEADER:
            progress = {
                peer: PeerProgress(
                    match=pr.match,
                    next=pr.next,
                    state=pr.state,
                    lag=max(0, st.last_index - pr.match),
                    active=pr.recent_active,
                )
                for peer, pr in st.progress.items()
            }
        return NodeStatus(
            id=st.id,
            role=st.role.value,
            term=st.term,
            leader=st.leader,
            leader_api=p.membership.api_url(st.leader) if st.leader else None,
            commit=st.commit,
            applied=self._applied_index(st.applied),
            first_index=st.first_index,
            last_index=st.last_index,
            snapshot_index=st.snapshot.index,
            snapshot_term=st.snapshot.term,
            voters=tuple(sorted(st.membership.voters)),
            learners=tuple(sorted(st.membership.learners)),
            non_voters=tuple(sorted(st.membership.non_voters)),
            peers_connected=tuple(sorted(p.peers.connected_peers())),
            last_check=p.checks.last,
            space=p.space.status(),
            progress=progress,
            log_bytes=p.observations.log_bytes(),
            fsm_bytes=p.observations.fsm_bytes(),
            certificate_not_after=p.observations.certificate_not_after,
        )

    def is_ready(self) -> bool:
        st = self._raft.status()
        return st.leader is not None and self._applied_index(st.applied) >= st.commit

    def _applied_index(self, core_applied: int) -> int:
        """What the FSM holds: the core counts a received snapshot, and the entries after
        it, as applied once handed over, but the FSM holds them only after the snapshot's
        restore (graft.driver.fsm_work), which the driver's applied index follows."""
        return min(core_applied, self._parts.applied.applied)

    # -- ClusterAdmin ------------------------------------------------------------------------

    def members(self) -> MemberList:
        return self._parts.membership.members()

    def add_member(
        self, node_id: str, host: str, p2p_port: int, api_port: int
    ) -> Deferred[MemberList]:
        return self._parts.membership.add_member(node_id, host, p2p_port, api_port)

    def remove_member(self, node_id: str) -> Deferred[MemberList]:
        return self._parts.membership.remove_member(node_id)

    # -- non-voters, promotion, demotion, addresses (graft.driver.member_roles) -------------

    def add_non_voter(
        self, node_id: str, host: str, p2p_port: int, api_port: int
    ) -> Deferred[MemberList]:
        return self._parts.member_roles.add_non_voter(node_id, host, p2p_port, api_port)

    def promote_member(self, node_id: str) -> Deferred[MemberList]:
        return self._parts.member_roles.promote_member(node_id)

    def demote_member(self, node_id: str) -> Deferred[MemberList]:
        return self._parts.member_roles.demote_member(node_id)

    def update_member(
        self, node_id: str, host: str, p2p_port: int | None, api_port: int | None
    ) -> Deferred[MemberList]:
        return self._parts.member_roles.update_member(node_id, host, p2p_port, api_port)

    def transfer_leadership(self, target: str | None) -> Deferred[dict[str, Any]]:
        return self._parts.membership.transfer_leadership(target)

    def hand_over(self) -> Deferred[None]:
        """Before stopping: a leader hands leadership to the most caught-up voter."""
        return self._parts.membership.hand_over()

    def take_snapshot(self) -> Deferred[dict[str, Any]]:
        return self._parts.snapshots.take()

    def latest_snapshot(self) -> tuple[dict[str, Any], BinaryIO] | None:
        return self._parts.snapshots.latest()

    def check_replicas(self) -> Deferred[dict[str, Any]]:
        return self._parts.checks.check_replicas()

    def shutdown(self) -> None:
        log.info("shutdown requested through the API")
        self._parts.clock.callLater(0, self._parts.lifecycle.stop_process)
