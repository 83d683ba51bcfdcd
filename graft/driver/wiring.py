"""Builds a GraftNode from its parts: the driver's composition, called by the process's
composition root (graft.service) and by tests. Every part gets the parts it uses here, once;
the transport is attached afterwards (GraftNode.attach_peers), as it needs the node's
callbacks."""

from __future__ import annotations

import random
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThread, deferToThreadPool

from graft.consistency import DigestBook
from graft.driver.apply import Applier
from graft.driver.apply_thread import ApplyThread, FromThreads
from graft.driver.checks import ReplicaChecks
from graft.driver.clock import ReactorTime
from graft.driver.forwarding import (
    AdminRequests,
    Forwarder,
    PeerRequests,
    as_is,
    members_to_wire,
)
from graft.driver.fsm_work import FsmWork
from graft.driver.lifecycle import Lifecycle
from graft.driver.member_roles import MemberRoles
from graft.driver.membership import MembershipManager
from graft.driver.node import DriverParts, GraftNode
from graft.driver.observe import Observations
from graft.driver.peers import PeerChannel, PeerPort
from graft.driver.pipeline import DurableStorage, Inbox, ReadyPipeline, Stages
from graft.driver.proposals import Proposer
from graft.driver.reads import Reads, RunQuery, query_pool
from graft.driver.settings import DriverSettings
from graft.driver.snapshot_transfer import SnapshotReceiver
from graft.driver.snapshots import RunInThread, Snapshots
from graft.driver.space import SpaceReporting
from graft.driver.stamps import Stamper
from graft.driver.ticks import Ticks
from graft.fsm import StateMachine, begin_digest
from graft.metrics import NodeMetrics
from graft.raft.node import RaftNode
from graft.sessions.machine import with_sessions
from graft.space import SPACE_REPORT
from graft.waiters import IndexWaiters, ProposalWaiters
from graft.wire.commands import (
    ADMIN_ADD_MEMBER,
    ADMIN_ADD_NON_VOTER,
    ADMIN_CHECK,
    ADMIN_DEMOTE_MEMBER,
    ADMIN_PROMOTE_MEMBER,
    ADMIN_REMOVE_MEMBER,
    ADMIN_TRANSFER_LEADERSHIP,
    ADMIN_UPDATE_MEMBER,
    FORWARD_ADMIN,
    FORWARD_QUERY,
    FORWARD_QUERY_WITHIN,
    FORWARD_SESSION_SUBMIT,
    FORWARD_SUBMIT,
    INSTALL_SNAPSHOT_CHUNK,
    REPLICA_DIGEST,
)


def build_node(
    *,
    raft: RaftNode,
    storage: DurableStorage,
    fsm: StateMachine,
    clock: ReactorTime,
    settings: DriverSettings,
    monotonic: Callable[[], float] | None = None,
    stop_process: Callable[[], None] | None = None,
    metrics: NodeMetrics | None = None,
    peers: PeerChannel | None = None,
    incoming_dir: Path | None = None,
    run_in_thread: RunInThread | None = None,
    run_apply: RunInThread | None = None,
    run_query: RunQuery | None = None,
    seeds: Callable[[], int] | None = None,
    wall_ns: Callable[[], int] | None = None,
) -> GraftNode:
    """``monotonic`` times the ticks (time.monotonic in production; the clock's seconds when
    None, for tests on a fake clock); ``stop_process`` stops the process on a fatal error or
    the API's shutdown (nothing when None); ``incoming_dir`` receives the leader's snapshots
    (none are accepted when None); ``run_apply`` runs an FSM's commands that ask for a worker
    thread (graft.driver.apply_thread when None); ``seeds`` gives the random seeds of the
    stamps this node writes as leader (a generator seeded from the OS when None), ``wall_ns``
    their time (the clock's seconds when None: the reactor's is the wall clock)."""
    metrics = metrics or NodeMetrics()
    # The session layer (graft.sessions) sits between the driver and the FSM: every part sees
    # it as the FSM, so snapshots, restores and digests carry the session table too.
    fsm = with_sessions(fsm)
    lifecycle = Lifecycle(stop_process or _nothing)
    port = PeerPort()
    if peers is not None:
        port.attach(peers)
    run_in_thread = run_in_thread or _defer_to_thread
    pool = query_pool(settings.query_threads)
    if run_query is None:
        run_query = partial(deferToThreadPool, cast(IReactorFromThreads, clock), pool)
    proposals = ProposalWaiters(clock)
    applied = IndexWaiters(clock, applied=raft.status().applied)
    pipeline = ReadyPipeline(
        raft=raft,
        storage=storage,
        clock=clock,
        peers=port,
        lifecycle=lifecycle,
        metrics=metrics,
        readies_in_flight=settings.readies_in_flight,
    )
    ticks = Ticks(
        raft=raft,
        clock=clock,
        monotonic=monotonic or clock.seconds,
        tick_seconds=settings.tick_seconds,
        election_seconds=settings.election,
        lifecycle=lifecycle,
        pipeline=pipeline,
        waker=settings.tick_waker,
    )
    forwarder = Forwarder(
        raft=raft, clock=clock, peers=port, lifecycle=lifecycle, settings=settings
    )
    digests = DigestBook(
        node_id=raft.id, begin=partial(begin_digest, fsm), run_in_thread=run_in_thread
    )
    snapshot = storage.snapshot_meta()
    applier = Applier(
        raft=raft,
        fsm=fsm,
        clock=clock,
        proposals=proposals,
        applied=applied,
        digests=digests,
        metrics=metrics,
        lifecycle=lifecycle,
        applied_membership=(
            snapshot.membership if snapshot.index > 0 else (settings.bootstrap or raft.membership)
        ),
    )
    space = SpaceReporting(
        raft=raft,
        clock=clock,
        peers=port,
        lifecycle=lifecycle,
        metrics=metrics,
        tick_seconds=settings.tick_seconds,
    )
    stamper = Stamper(
        wall_ns=wall_ns or (lambda: int(clock.seconds() * 1_000_000_000)),
        seed=seeds or partial(random.Random().getrandbits, 64),
    )
    stamper.saw_log(storage)
    applier.stamp_floor_ns = snapshot.stamp_floor_ns
    proposer = Proposer(
        raft=raft,
        clock=clock,
        proposals=proposals,
        applier=applier,
        space=space,
        forwarder=forwarder,
        pipeline=pipeline,
        lifecycle=lifecycle,
        metrics=metrics,
        command_timeout=settings.command_timeout,
        stamper=stamper,
    )
    fsm_work = FsmWork(
        lifecycle=lifecycle,
        run_in_thread=run_in_thread,
        run_apply=run_apply or ApplyThread(cast(FromThreads, clock)),
    )
    reads = Reads(
        raft=raft,
        fsm=fsm,
        clock=clock,
        ticks=ticks,
        pipeline=pipeline,
        applied=applied,
        forwarder=forwarder,
        lifecycle=lifecycle,
        metrics=metrics,
        settings=settings,
        run_query=run_query,
        fsm_work=fsm_work,
    )
    inbox = Inbox(raft=raft, ticks=ticks, reads=reads, pipeline=pipeline)
    receiver = (
        SnapshotReceiver(
            incoming_dir=incoming_dir,
            current_term=lambda: raft.term,
            current_leader=lambda: raft.leader,
            deliver=inbox.receive,
            node_id=raft.id,
        )
        if incoming_dir is not None
        else None
    )
    snapshots = Snapshots(
        raft=raft,
        storage=storage,
        fsm=fsm,
        clock=clock,
        peers=port,
        applier=applier,
        applied=applied,
        pipeline=pipeline,
        settings=settings,
        run_in_thread=run_in_thread,
        receiver=receiver,
        fsm_work=fsm_work,
        metrics=metrics,
    )
    membership = MembershipManager(
        raft=raft,
        clock=clock,
        peers=port,
        proposals=proposals,
        forwarder=forwarder,
        pipeline=pipeline,
        lifecycle=lifecycle,
        settings=settings,
    )
    member_roles = MemberRoles(membership)
    checks = ReplicaChecks(
        raft=raft,
        clock=clock,
        peers=port,
        proposals=proposals,
        applied=applied,
        digests=digests,
        forwarder=forwarder,
        pipeline=pipeline,
        metrics=metrics,
        members=membership,
        command_timeout=settings.command_timeout,
        check_timeout=settings.check_timeout,
    )
    admin = AdminRequests(
        raft,
        [
            (ADMIN_ADD_MEMBER, membership.add_here, members_to_wire),
            (ADMIN_REMOVE_MEMBER, membership.remove_here, members_to_wire),
            (ADMIN_TRANSFER_LEADERSHIP, membership.transfer_here, as_is),
            (ADMIN_CHECK, checks.check_here, as_is),
            (ADMIN_ADD_NON_VOTER, member_roles.add_non_voter_here, members_to_wire),
            (ADMIN_PROMOTE_MEMBER, member_roles.promote_here, members_to_wire),
            (ADMIN_DEMOTE_MEMBER, member_roles.demote_here, members_to_wire),
            (ADMIN_UPDATE_MEMBER, member_roles.update_here, members_to_wire),
        ],
    )
    requests = PeerRequests(
        [
            (FORWARD_SUBMIT, proposer.forwarded),
            (FORWARD_SESSION_SUBMIT, proposer.forwarded_operations),
            (FORWARD_QUERY, reads.forwarded),
            (FORWARD_QUERY_WITHIN, reads.forwarded),
            (INSTALL_SNAPSHOT_CHUNK, snapshots.receive_chunk),
            (SPACE_REPORT, space.reported),
            (FORWARD_ADMIN, admin.handle),
            (REPLICA_DIGEST, checks.digest_asked),
        ]
    )
    observations = Observations(
        raft=raft,
        storage=storage,
        fsm=fsm,
        metrics=metrics,
        proposals=proposals,
        monotonic=monotonic or clock.seconds,
    )
    port.on_sent = observations.sent
    pipeline.connect(
        Stages(
            applier=applier,
            reads=reads,
            membership=membership,
            snapshots=snapshots,
            stamper=stamper,
        )
    )
    return GraftNode(
        DriverParts(
            raft=raft,
            storage=storage,
            fsm=fsm,
            clock=clock,
            metrics=metrics,
            lifecycle=lifecycle,
            peers=port,
            proposals=proposals,
            applied=applied,
            query_pool=pool,
            pipeline=pipeline,
            ticks=ticks,
            inbox=inbox,
            applier=applier,
            proposer=proposer,
            reads=reads,
            membership=membership,
            member_roles=member_roles,
            snapshots=snapshots,
            checks=checks,
            space=space,
            requests=requests,
            observations=observations,
        )
    )


def _nothing() -> None:
    pass


def _defer_to_thread(f: Callable[..., Any], *args: Any) -> Deferred[Any]:
    return deferToThread(f, *args)
