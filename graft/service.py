# mypy: disable-error-code="no-untyped-call"
"""The composition root: the one place where a node's service tree is built.

    GraftService (a MultiService)
      PeerTransport   mutual-TLS peer connections
      GraftNode       the Raft driver (graft.driver.wiring.build_node): storage, core, FSM
      API server      Klein app on ports.api
      SpaceMonitor    the data dir's space quota (graft.space)
      ReloadOnSignal  SIGHUP reloads certificates, keys and API tokens (graft.reload)
      ExpiryWarner    a daily warning from 30 days before the certificate expires

Children start in that order. On stop (SIGTERM or POST /shutdown), a leader first hands its
leadership to the most caught-up voter (GraftNode.hand_over); then the children stop in
reverse order: the space monitor, the API (no new requests), the driver (it fails what waits
in memory, finishes its in-flight fsync and closes the log), and last the peer connections,
which the hand-over and the driver's final messages needed.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, cast

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService
from twisted.internet import endpoints
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from graft import devtrace
from graft.agreement import cluster_settings
from graft.api import make_api_site
from graft.api.auth import TokenAuthority
from graft.certs import certificate_not_after
from graft.config import ClusterConfig, ConfigError
from graft.driver.clock import ReactorTime
from graft.driver.node import GraftNode
from graft.driver.settings import DriverSettings
from graft.driver.wiring import build_node
from graft.errors import ReloadFailed
from graft.exposure import open_api_warning
from graft.fsm import StateMachine, create_state_machine
from graft.metrics import NodeMetrics
from graft.raft.config import RaftConfig
from graft.raft.node import RaftNode
from graft.raft.types import MemberAddress, Membership
from graft.reload import (
    ExpiryWarner,
    NodeReloader,
    ReloadOnSignal,
    SwappableServerTLS,
    api_tls_options,
)
from graft.sessions.machine import with_sessions
from graft.space import SpaceMonitor, SpaceQuota
from graft.storage import DurableLog
from graft.storage.inline_fsync import InlineFsyncRule
from graft.storage.permissions import tighten_data_dir
from graft.storage.rejected import read_rejected
from graft.transport import ConnectionLimits, PeerTransport

log = Logger(namespace="graft.service")


def raft_config_for(cfg: ClusterConfig, node_id: str, *, join: bool = False) -> RaftConfig:
    """Millisecond timeouts to ticks: one tick per heartbeat interval.

    A fresh node's membership is the file's peers, except for a node joining a running
    cluster: it starts with none and learns the real one from the leader's log, so it can
    neither campaign nor form a cluster of its own with other newcomers.
    """
    election_ticks = max(2, round(cfg.election_ms / cfg.heartbeat_ms))
    return RaftConfig(
        id=node_id,
        bootstrap=Membership() if join else Membership(voters=frozenset(cfg.peers)),
        election_ticks=election_ticks,
        heartbeat_ticks=1,
        clock_drift=cfg.clock_drift,
        max_msg_entries=cfg.raft.max_msg_entries,
        max_msg_bytes=cfg.raft.max_msg_bytes,
        max_inflight=cfg.raft.max_inflight,
    )


# For the fault suite's teeth check only: time the driver on the reactor's wall clock again, as
# it was before ticks moved to the monotonic clock (clock steps must then break the lease).
WALL_CLOCK_TICKS_ENV = "GRAFT_TEST_WALL_CLOCK_TICKS"


def monotonic_ticks(reactor: ReactorTime) -> Callable[[], float]:
    """The driver's time source: time.monotonic(), with a thread that wakes the reactor for
    ticks whatever the wall clock (which times the reactor's own delayed calls) does."""
    if os.environ.get(WALL_CLOCK_TICKS_ENV) == "1":
        log.warn("{env}=1: the driver times its ticks on the wall clock", env=WALL_CLOCK_TICKS_ENV)
        return reactor.seconds
    return time.monotonic


def stop_reactor(reactor: Any) -> None:
    """Stop the process: the reactor, if it runs (a fatal error, the API's shutdown)."""
    if reactor.running:
        reactor.stop()


def make_service(
    cfg: ClusterConfig,
    node_id: str,
    *,
    reactor: Any = None,
    join: bool = False,
    fsm: StateMachine | None = None,
    fsm_name: str | None = None,
    http_api: bool = True,
) -> IService:
    """Build one node's service tree. Raises ConfigError or StorageError before anything starts.

    A program embedding a node (graft.embed) passes its own ``fsm`` (and the ``fsm_name`` its
    snapshots are recorded under) instead of the file's ``fsm`` section, and may leave the HTTP
    API out (``http_api=False``)."""
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    devtrace.watch_reactor(reactor)
    cfg.check_files(node_id)
    data_dir = cfg.data_dir(node_id)
    metrics = NodeMetrics()
    storage = DurableLog.open(
        data_dir,
        node_id=node_id,
        cluster=cfg.cluster,
        reactor=reactor,
        segment_bytes=cfg.snapshot.segment_bytes,
        on_fsync=metrics.fsync_latency.observe,
        inline_fsync=InlineFsyncRule(enabled=cfg.storage.inline_fsync),
    )
    metrics.watch_inline_fsync(lambda: storage.inline_fsync)
    for note in storage.notes:
        log.warn("storage repaired at open: {note}", note=note)
    if fsm is None:
        fsm = create_state_machine(cfg.fsm, data_dir=data_dir, base_dir=cfg.base_dir)
        fsm_name = cfg.fsm.factory
    fsm_name = fsm_name or type(fsm).__qualname__
    # Snapshots hold the session table beside the FSM's own (graft.sessions.machine).
    fsm = with_sessions(fsm)
    restore_fsm_from_snapshot(storage, fsm, fsm_name)
    secure_data_dir(data_dir)
    rng = random.Random()
    monotonic = monotonic_ticks(reactor)
    raft_config = raft_config_for(cfg, node_id, join=join)
    raft = RaftNode(raft_config, storage, rng)
    static_addresses = {
        peer.id: MemberAddress(host=peer.host, p2p_port=peer.p2p_port, api_port=peer.api_port)
        for peer in cfg.peers.values()
    }
    settings = DriverSettings(
        tick_seconds=cfg.heartbeat_ms / 1000,
        command_timeout=cfg.api.command_timeout_ms / 1000,
        query_timeout=cfg.api.query_timeout_ms / 1000,
        max_query_timeout=cfg.api.max_query_timeout_ms / 1000,
        api_urls={peer: cfg.api_url(peer) for peer in cfg.peers},
        election_seconds=cfg.election_ms / 1000,
        static_addresses=static_addresses,
        bootstrap=raft_config.bootstrap,
        api_scheme="https" if cfg.api.tls is not None else "http",
        snapshot_entries=cfg.snapshot.entries,
        snapshot_log_ratio=cfg.snapshot.log_ratio,
        snapshot_max_log_bytes=cfg.snapshot_max_log_bytes,
        snapshot_trailing=cfg.snapshot.trailing,
        fsm_name=fsm_name,
        tick_waker=monotonic is time.monotonic,
    )
    node = build_node(
        raft=raft,
        storage=storage,
        fsm=fsm,
        clock=reactor,
        settings=settings,
        monotonic=monotonic,
        stop_process=partial(stop_reactor, reactor),
        metrics=metrics,
        incoming_dir=data_dir,
    )
    node.skip_rejected_entries(read_rejected(data_dir))
    space = watch_space(cfg, node_id, node, metrics, reactor)
    # The members the core recovered from the log and snapshot, never the file's other peers:
    # a member removed at run time stays refused after any restart.
    transport = PeerTransport(
        reactor=reactor,
        node_id=node_id,
        cluster=cfg.cluster,
        peers=node.peer_addresses(),
        tls=cfg.tls_for(node_id),
        on_message=node.receive,
        on_request=node.handle_request,
        rng=rng,
        on_peer_lost=node.peer_lost,
        max_frame_bytes=cfg.max_frame_bytes,
        settings=hello_settings(cfg, fsm_name),
        limits=connection_limits(cfg),
        # None: the rule of graft.addresses on the node's own address in the membership.
        listen_interface=cfg.peer(node_id).listen_p2p,
    )
    node.attach_peers(transport)
    node.set_certificate_expiry(certificate_not_after(cfg.tls_for(node_id).cert))
    node.limit_waiters(
        commands=cfg.api.limits.max_pending_commands, reads=cfg.api.limits.max_read_waiters
    )
    node.admit_while_joining()

    rotation = Rotation.build(cfg, node_id, node, transport, reactor)

    top = GraftService(node)
    transport.setServiceParent(top)
    node.setServiceParent(top)
    if http_api:
        api_service(cfg, node_id, node, reactor, rotation).setServiceParent(top)
    space.setServiceParent(top)
    rotation.on_signal.setServiceParent(top)
    rotation.expiry.setServiceParent(top)
    return cast(IService, top)


def api_service(
    cfg: ClusterConfig, node_id: str, node: GraftNode, reactor: Any, rotation: Rotation
) -> StreamServerEndpointService:
    """The HTTP API on the node's api port (TLS when ``api.tls`` is set), with the tokens and
    API certificate a reload swaps (``rotation``)."""
    me = cfg.peers[node_id]
    warn_if_open_api(cfg, node_id)
    site = make_api_site(
        node, cfg.api, reactor=reactor, auth=rotation.tokens, reload=rotation.reloader.reload
    )
    if rotation.api_tls is None:
        endpoint: Any = endpoints.TCP4ServerEndpoint(
            reactor, me.api_port, interface=me.api_interface
        )
    else:
        endpoint = endpoints.SSL4ServerEndpoint(
            reactor, me.api_port, rotation.api_tls, interface=me.api_interface
        )
    api = StreamServerEndpointService(endpoint, site)
    api._raiseSynchronously = True  # a port already in use stops the node at start, loudly
    return api


def hello_settings(cfg: ClusterConfig, fsm_name: str) -> dict[str, str]:
    """The settings compared at the peer hello (graft.agreement), naming the FSM this node
    really runs: an embedded node's own state machine, not the file's ``fsm.factory``, so that
    nodes running different classes refuse each other rather than diverge."""
    settings = cluster_settings(cfg)
    settings["fsm.factory"] = fsm_name
    return settings


@dataclass(frozen=True, slots=True)
class Rotation:
    """What rotates certificates and tokens in a running node (graft.reload): the token
    authority and API TLS options a reload swaps, the reload itself (POST /reload and SIGHUP)
    and the daily warning before the certificate expires."""

    tokens: TokenAuthority
    api_tls: SwappableServerTLS | None
    reloader: NodeReloader
    on_signal: ReloadOnSignal
    expiry: ExpiryWarner

    @classmethod
    def build(
        cls,
        cfg: ClusterConfig,
        node_id: str,
        node: GraftNode,
        transport: PeerTransport,
        reactor: Any,
    ) -> Rotation:
        cert = cfg.tls_for(node_id).cert
        expiry = ExpiryWarner(node_id, cert, certificate_not_after(cert), reactor)

        def on_certificate(path: Path, not_after: float | None) -> None:
            node.set_certificate_expiry(not_after)
            expiry.update(path, not_after)

        api_files = cfg.api_tls_for(node_id)
        try:
            api_tls = None if api_files is None else SwappableServerTLS(api_tls_options(api_files))
        except ReloadFailed as e:
            raise ConfigError(f"{cfg.path}: api.tls: {e}") from None
        tokens = TokenAuthority(cfg.api.tokens)
        reloader = NodeReloader(
            config_path=cfg.path,
            node_id=node_id,
            transport=transport,
            tokens=tokens,
            api_tls=api_tls,
            on_certificate=on_certificate,
        )
        return cls(
            tokens=tokens,
            api_tls=api_tls,
            reloader=reloader,
            on_signal=ReloadOnSignal(reloader.reload, reactor),
            expiry=expiry,
        )


def warn_if_open_api(cfg: ClusterConfig, node_id: str) -> None:
    """Log, loudly, that the API is open to anyone on the network (graft.exposure)."""
    text = open_api_warning(cfg, node_id)
    if text is not None:
        log.warn("{text}", text=text)


class GraftService(MultiService):
    """The node's service tree; on stop, a leader first hands leadership over, so a rolling
    restart costs no election timeout, then children stop in reverse order."""

    def __init__(self, node: GraftNode) -> None:
        super().__init__()
        self.node = node

    def stopService(self) -> Deferred[None]:
        def stop_children(_: object) -> Deferred[None]:
            return cast(Deferred[None], MultiService.stopService(self))

        d: Deferred[Any] = self.node.hand_over()
        d.addCallback(stop_children)
        return d


def watch_space(
    cfg: ClusterConfig, node_id: str, node: GraftNode, metrics: NodeMetrics, reactor: Any
) -> SpaceMonitor:
    """The data dir's space quota (storage.quota_bytes), measured once now so that a node that
    starts over it refuses writes from the start."""
    data_dir = cfg.data_dir(node_id)
    quota = SpaceQuota(cfg.storage.quota_bytes, node_id=node_id, data_dir=data_dir)
    monitor = SpaceMonitor(quota, data_dir, clock=reactor, registry=metrics.registry)
    if quota.enabled:
        monitor.measure_now()
    node.watch_space(monitor)
    return monitor


def secure_data_dir(data_dir: Path) -> None:
    """Tighten a data dir left readable by others (an older version, a loose umask): 0700 for
    the directory, 0600 for its files, the FSM's included (it exists by now)."""
    for change in tighten_data_dir(data_dir):
        log.warn("{change}", change=change)


def connection_limits(cfg: ClusterConfig) -> ConnectionLimits:
    """The caps on inbound peer connections, from the file's `transport` section."""
    return ConnectionLimits(
        max_connections=cfg.transport.max_connections,
        max_connections_per_address=cfg.transport.max_connections_per_address,
        max_unauthenticated=cfg.transport.max_unauthenticated,
    )


def restore_fsm_from_snapshot(storage: DurableLog, fsm: StateMachine, fsm_name: str) -> None:
    """A node starts from its latest snapshot, then replays the log after it."""
    snapshot = storage.open_snapshot()
    if snapshot is None:
        return
    meta, data = snapshot
    info = storage.snapshot_info()
    if info is not None and info.fsm_name and info.fsm_name != fsm_name:
        data.close()
        raise ConfigError(
            f"fsm.factory: the data dir's snapshot was taken by {info.fsm_name}, not {fsm_name}; "
            "configure the FSM the cluster was created with"
        )
    with data:
        log.info("restoring the FSM from the snapshot at index {index}", index=meta.index)
        fsm.restore(data)
