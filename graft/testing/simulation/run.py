"""One seeded schedule run on a simulated cluster: ``simulate_seed``.

``simulate_seed`` drives a Cluster with a schedule drawn from a seeded random source: message
drops, delays, duplicates and reordering, partitions that heal, crashes and restarts, random
proposals and reads, snapshots, leadership transfers to any voter (lagging, crashed or cut
off), and membership changes (learners that catch up and are promoted, voter removal, removal
of the leader itself, sometimes followed by a cut that leaves it with one voter, which reads
through it while the others may elect and commit; non-voters added, read from, promoted, and
voters demoted, the leader among them), then a calm phase that must elect a leader
and commit (liveness).

It never builds a random source itself: the caller passes a factory (``random.Random``), and
``python -m graft.testing.simulation`` is the command line.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass

from graft.raft.config import RaftConfig
from graft.raft.errors import ProposalDropped
from graft.raft.types import Membership, NodeId
from graft.testing.simulation.checker import Violation
from graft.testing.simulation.clocks import clock_model_for
from graft.testing.simulation.cluster import Cluster
from graft.testing.simulation.network import HostileNetwork
from graft.testing.simulation.schedule import (
    Clients,
    MembershipOps,
    NodeFaults,
    SimParams,
    SlowDisks,
    draw_features,
    draw_params,
    reconfigure,
    transfer_at_random,
)
from graft.testing.simulation.sessions import SessionClients, SessionModel
from graft.testing.simulation.streams import RngFactory, stream


@dataclass(frozen=True, slots=True, kw_only=True)
class SimResult:
    seed: int
    violation: str | None
    ticks: int
    commit: int
    reads: int
    trace: tuple[str, ...] = ()
    snapshots_installed: int = 0
    transfers_asked: int = 0
    transfers_done: int = 0
    memberships_committed: int = 0
    stale_leaders_checked: int = 0
    non_voter_changes: int = 0
    # Client sessions: numbered commands applied, duplicates answered, commands resent.
    session_commands: int = 0
    session_duplicates: int = 0
    session_resent: int = 0


# The share of drawn schedules whose clients use sessions (graft.testing.simulation.sessions).
SESSION_SHARE = 0.6


def simulate_seed(
    seed: int,
    rng_factory: RngFactory,
    *,
    params: SimParams | None = None,
    trace: bool = False,
    plant: str = "",
) -> SimResult:
    """Run one seeded schedule; a violation is reported, never raised.

    With ``params`` the schedule's probabilities are given and the features drawn on top of
    ``draw_params`` (compaction, transfers, membership changes, lost connections, markers, the
    pipelined driver, slow disks) stay off unless the params ask for them.

    ``plant="wall_clock"`` plants a known bug for the checker to catch: ticks that follow
    wall-clock steps, as the driver's did before it timed them on a monotonic clock.
    """
    rng = stream(rng_factory, seed, "schedule")
    snap_rng = stream(rng_factory, seed, "snapshots")
    ops_rng = stream(rng_factory, seed, "ops")
    flap_rng = stream(rng_factory, seed, "flaps")
    marker_rng = stream(rng_factory, seed, "markers")
    if params is None:
        p = draw_features(draw_params(seed, rng), snap_rng, ops_rng)
        flap = 0.02 * flap_rng.random()
        markers = 0.04 * marker_rng.random() if marker_rng.random() < 0.6 else 0.0
    else:
        p, flap, markers = params, 0.0, 0.0
    ids = [f"n{k}" for k in range(1, p.nodes + 1)]
    cluster = build_cluster(seed, rng_factory, p, ids, plant, drawn=params is None)
    slow_disks = SlowDisks.draw(
        cluster, ids, stream(rng_factory, seed, "slow_disks"), params is None
    )
    cluster.note(f"params {p}, pipeline {cluster.pipeline}")
    cluster.tracing = trace
    # Every part shares ``ids``: MembershipOps appends the nodes it adds, so faults reach them.
    net = HostileNetwork(cluster, ids, p, rng, snap_rng)
    faults = NodeFaults(cluster, ids, p, rng, flap_rng, flap)
    clients = Clients(cluster, ids, p, seed, rng, marker_rng, markers, faults.down)
    sessions_rng = stream(rng_factory, seed, "sessions")
    if params is None and sessions_rng.random() < SESSION_SHARE:
        cluster.sessions = SessionModel()
        cluster.sessions.clients = clients.sessions = SessionClients(seed, sessions_rng)
    cluster.lease_probe = True
    spares = [f"n{k}" for k in range(p.nodes + 1, p.nodes + 3)]
    cut_rng = stream(rng_factory, seed, "cut")
    # Half the schedules with membership changes also add non-voters, promote and demote
    # (a stream of their own: the other schedules stay as they were). The upper half, which
    # leaves the seeds named in tests (74, 401, 4288) as they were.
    nv_rng = stream(rng_factory, seed, "non_voters")
    use_non_voters = params is None and p.membership > 0 and nv_rng.random() >= 0.5
    members = MembershipOps(
        cluster, ids, spares, ops_rng, cut_rng, nv_rng if use_non_voters else None
    )
    try:
        for _ in range(p.chaos_ticks):
            # The order of the parts is part of the schedule: each draws from a stream some
            # other part shares, so reordering them changes every seed.
            net.step()
            faults.step()
            if rng.random() < p.reconfigure:
                reconfigure(cluster, ids, rng)
            if p.transfer and ops_rng.random() < p.transfer:
                transfer_at_random(cluster, ops_rng)
            if p.membership and ops_rng.random() < p.membership:
                members.step()
            members.tick()
            members.non_voter_reads()
            if p.compact:
                for nid in ids:
                    if snap_rng.random() < p.compact:
                        cluster.compact(nid)
            slow_disks.step()
            clients.step()
            cluster.tick()
            cluster.deliver_due(net.shuffle)
        net.hostile = False
        calm(cluster, p, seed, faults.down)
    except Violation as exc:
        cluster.note(f"VIOLATION {exc}")
        return sim_result(seed, cluster, str(exc), members.non_voter_changes)
    return sim_result(seed, cluster, None, members.non_voter_changes)


def build_cluster(
    seed: int,
    rng_factory: RngFactory,
    p: SimParams,
    ids: list[NodeId],
    plant: str,
    *,
    drawn: bool,
) -> Cluster:
    """The schedule's cluster: its Raft settings, its clocks and (if ``drawn``) its driver."""
    config = RaftConfig(
        id="",
        bootstrap=Membership(voters=frozenset(ids)),
        pre_vote=p.pre_vote,
        check_quorum=p.check_quorum,
        max_msg_entries=p.max_msg_entries,
        max_inflight=p.max_inflight,
    )
    cluster = Cluster(ids, rng_factory, config=config, seed=seed)
    cluster.clocks = clock_model_for(stream(rng_factory, seed, "clocks"), ids, plant)
    if drawn:
        # Most schedules let each node queue a second Ready behind an unfinished write, as
        # graft.driver does.
        disk_rng = stream(rng_factory, seed, "disk")
        cluster.pipeline = 2 if disk_rng.random() < 0.7 else 1
        if cluster.pipeline > 1:
            cluster.disk = disk_rng
    return cluster


def calm(cluster: Cluster, p: SimParams, seed: int, down: set[NodeId]) -> None:
    """Everyone up, the network whole and reliable, the disks keeping up: a leader must emerge
    and commit a new entry (liveness), else Violation."""
    cluster.disk = None  # queued writes complete at once
    cluster.settle_disks()
    cluster.heal()
    for nid in sorted(down):
        cluster.start(nid)
    start_commit = cluster.checker.known_commit
    target = 0
    # Without pre-vote, a node whose stale membership cannot elect it still raises its term
    # on every timeout and can keep the electable node a term behind for many rounds until
    # the randomised timeouts break the tie (seed 7110: about 1,000 ticks). That is Raft's
    # probabilistic liveness, not a stall; Graft always runs with pre-vote, where 150 holds.
    calm_ticks = p.calm_ticks if p.pre_vote else 8 * p.calm_ticks
    for _ in range(calm_ticks):
        leader = cluster.leader()
        if leader is not None and target == 0 and leader.log.committed >= leader.log.last_index():
            # During a transfer the proposal is dropped: the next leader gets it.
            with suppress(ProposalDropped):
                target = cluster.propose(leader.id, [f"{seed}:calm".encode()])[0]
        cluster.tick()
        cluster.deliver_due()
        if target and cluster.checker.known_commit >= target:
            return
    raise Violation(
        f"liveness: no new entry committed within {calm_ticks} calm ticks "
        f"(commit stayed at {start_commit}, leader {cluster.leader()})"
    )


def sim_result(
    seed: int, cluster: Cluster, violation: str | None, non_voter_changes: int = 0
) -> SimResult:
    """What a run checked and exercised (the trace only with a violation, to replay it)."""
    checker = cluster.checker
    sessions = cluster.sessions
    clients = sessions.clients if sessions is not None else None
    return SimResult(
        seed=seed,
        violation=violation,
        ticks=cluster.now,
        commit=checker.known_commit,
        reads=checker.reads_checked,
        trace=tuple(cluster.trace) if violation is not None else (),
        snapshots_installed=checker.snapshots_installed,
        transfers_asked=cluster.transfers_asked,
        transfers_done=cluster.transfers_done,
        memberships_committed=checker.memberships_committed,
        stale_leaders_checked=checker.stale_leaders_checked,
        session_commands=sessions.applied_commands if sessions is not None else 0,
        session_duplicates=sessions.duplicates if sessions is not None else 0,
        session_resent=clients.resent if clients is not None else 0,
        non_voter_changes=non_voter_changes,
    )
