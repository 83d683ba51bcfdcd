# mypy: disable-error-code="no-untyped-call"
"""The composition root: the one place where a node's service tree is built.

    MultiService
      PeerTransport   mutual-TLS peer connections (started first, stopped last)
      GraftNode       the Raft driver: storage, core, FSM, timers
      API server      Klein app on ports.api (started last, stopped first)

MultiService starts children in this order and stops them in reverse, so on SIGTERM the API
stops taking requests, then the driver finishes its in-flight fsync and closes the log, then
peer connections close.
"""

from __future__ import annotations

import random
from typing import Any, cast

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService
from twisted.internet import endpoints, ssl

from graft.api import make_api_site
from graft.config import ClusterConfig
from graft.fsm import create_state_machine
from graft.metrics import NodeMetrics
from graft.node import GraftNode
from graft.raft.config import RaftConfig
from graft.raft.node import RaftNode
from graft.raft.types import Membership
from graft.storage import DurableLog
from graft.transport import PeerTransport


def raft_config_for(cfg: ClusterConfig, node_id: str) -> RaftConfig:
    """Millisecond timeouts to ticks: one tick per heartbeat interval."""
    election_ticks = max(2, round(cfg.election_ms / cfg.heartbeat_ms))
    return RaftConfig(
        id=node_id,
        bootstrap=Membership(voters=frozenset(cfg.peers)),
        election_ticks=election_ticks,
        heartbeat_ticks=1,
        max_msg_entries=cfg.raft.max_msg_entries,
        max_msg_bytes=cfg.raft.max_msg_bytes,
        max_inflight=cfg.raft.max_inflight,
    )


def make_service(cfg: ClusterConfig, node_id: str, *, reactor: Any = None) -> IService:
    """Build one node's service tree. Raises ConfigError or StorageError before anything starts."""
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    cfg.check_files(node_id)
    data_dir = cfg.data_dir(node_id)
    metrics = NodeMetrics()
    storage = DurableLog.open(
        data_dir,
        node_id=node_id,
        cluster=cfg.cluster,
        reactor=reactor,
        on_fsync=metrics.fsync_latency.observe,
    )
    fsm = create_state_machine(cfg.fsm, data_dir=data_dir, base_dir=cfg.base_dir)
    rng = random.Random()
    raft = RaftNode(raft_config_for(cfg, node_id), storage, rng)
    node = GraftNode(
        raft=raft,
        storage=storage,
        fsm=fsm,
        clock=reactor,
        tick_seconds=cfg.heartbeat_ms / 1000,
        command_timeout=cfg.api.command_timeout_ms / 1000,
        query_timeout=cfg.api.query_timeout_ms / 1000,
        api_urls={peer: cfg.api_url(peer) for peer in cfg.peers},
        metrics=metrics,
    )
    transport = PeerTransport(
        reactor=reactor,
        node_id=node_id,
        cluster=cfg.cluster,
        peers=cfg.peers,
        tls=cfg.tls_for(node_id),
        on_message=node.receive,
        on_request=node.handle_request,
        rng=rng,
        max_frame_bytes=cfg.max_frame_bytes,
    )
    node.peers = transport

    me = cfg.peers[node_id]
    site = make_api_site(node, cfg.api, reactor=reactor)
    api_tls = cfg.api_tls_for(node_id)
    if api_tls is None:
        endpoint: Any = endpoints.TCP4ServerEndpoint(reactor, me.api_port, interface=me.host)
    else:
        endpoint = endpoints.SSL4ServerEndpoint(
            reactor, me.api_port, _api_tls_context(api_tls), interface=me.host
        )
    api = StreamServerEndpointService(endpoint, site)
    api._raiseSynchronously = True  # a port already in use stops the node at start, loudly

    top = MultiService()
    transport.setServiceParent(top)
    node.setServiceParent(top)
    api.setServiceParent(top)
    return cast(IService, top)


def _api_tls_context(files: Any) -> Any:
    cert = ssl.PrivateCertificate.loadPEM(files.cert.read_text() + files.key.read_text())
    if files.client_ca is None:
        return cert.options()
    ca = ssl.Certificate.loadPEM(files.client_ca.read_text())
    return cert.options(ca)
