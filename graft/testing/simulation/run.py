"""One seeded schedule run on a simulated cluster: ``simulate_seed``.

``simulate_seed`` drives a Cluster with a schedule drawn from a seeded random source: message
drops, delays, duplicates and reordering, partitions that heal, crashes and restarts, random
proposals and reads, snapshots, leadership transfers to any voter (lagging, crashed or cut
off), and membership changes (learners that catch up and are promoted, voter removal, removal
of the leader itself, sometimes followed by a cut that leaves it with one voter, which reads
through it while the others may elect and commit), then a calm phase that must elect a leader
and commit (liveness).

It never builds a random source itself: the caller passes a factory (``random.Random``), and
``python -m graft.testing.simulation`` is the command line.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass, replace

from graft.raft.config import RaftConfig
from graft.raft.errors import NotLeader, ProposalDropped
from graft.raft.messages import InstallSnapshot, Message
from graft.raft.node import RaftNode
from graft.raft.types import Membership, NodeId
from graft.testing.simulation.checker import Violation
from graft.testing.simulation.clocks import clock_model_for
from graft.testing.simulation.cluster import Cluster, InFlight, RngFactory
from graft.testing.simulation.schedule import (
    MembershipOps,
    SimParams,
    SlowDisks,
    draw_params,
    reconfigure,
    transfer_at_random,
)


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


def simulate_seed(
    seed: int,
    rng_factory: RngFactory,
    *,
    params: SimParams | None = None,
    trace: bool = False,
    plant: str = "",
) -> SimResult:
    """Run one seeded schedule; a violation is reported, never raised.

    ``plant="wall_clock"`` plants a known bug for the checker to catch: ticks that follow
    wall-clock steps, as the driver's did before it timed them on a monotonic clock.
    """
    rng = rng_factory(seed)
    p = params if params is not None else draw_params(seed, rng)
    # Snapshots draw from their own source, so the rest of a seed's schedule stays as it was.
    snap_rng = rng_factory(seed * 7_919 + 17)
    if params is None and snap_rng.random() < 0.6:
        p = replace(p, compact=0.01 + 0.15 * snap_rng.random())
    # Transfers and membership changes draw from a third source; a seed that gets neither
    # replays its earlier schedule exactly.
    ops_rng = rng_factory(seed * 104_729 + 29)
    if params is None:
        if ops_rng.random() < 0.6:
            p = replace(p, transfer=0.005 + 0.04 * ops_rng.random())
        if ops_rng.random() < 0.6:
            # These changes replace the older remove-and-re-add schedule.
            p = replace(p, membership=0.01 + 0.08 * ops_rng.random(), reconfigure=0.0)
    # Connections that drop while both ends live (resets, restarts of a dialer) draw from a
    # fourth source: a node is told a live peer, often its leader, is unreachable.
    flap_rng = rng_factory(seed * 7_907 + 41)
    flap = 0.02 * flap_rng.random() if params is None else 0.0
    # Markers (NOOP entries with data: the consistency check's) draw from a fifth source.
    marker_rng = rng_factory(seed * 7_883 + 53)
    markers = 0.04 * marker_rng.random() if params is None and marker_rng.random() < 0.6 else 0.0
    ids = [f"n{k}" for k in range(1, p.nodes + 1)]
    membership = Membership(voters=frozenset(ids))
    config = RaftConfig(
        id="",
        bootstrap=membership,
        pre_vote=p.pre_vote,
        check_quorum=p.check_quorum,
        max_msg_entries=p.max_msg_entries,
        max_inflight=p.max_inflight,
    )
    cluster = Cluster(ids, rng_factory, config=config, seed=seed)
    # The nodes' tick clocks draw from a sixth source.
    cluster.clocks = clock_model_for(rng_factory(seed * 7_877 + 67), ids, plant)
    if params is None:
        # The driver model draws from its own source too: most schedules let each node queue
        # a second Ready behind an unfinished write, as graft.node does.
        disk_rng = rng_factory(seed * 104_729 + 5)
        cluster.pipeline = 2 if disk_rng.random() < 0.7 else 1
        if cluster.pipeline > 1:
            cluster.disk = disk_rng
    slow_disks = SlowDisks.draw(cluster, ids, rng_factory(seed * 7_877 + 61), params is None)
    cluster.note(f"params {p}, pipeline {cluster.pipeline}")
    cluster.tracing = trace
    chaos = True

    def delays(msg: Message) -> list[int]:
        if not chaos:
            return [0]
        if rng.random() < p.drop:
            if isinstance(msg, InstallSnapshot) and snap_rng.random() < 0.5:
                # The leader's driver noticed the transfer failed (else its timeout retries).
                cluster.node(msg.sender).report_snapshot(msg.to, False)
            return []
        out = [rng.randrange(1, p.max_delay + 1) if rng.random() < p.delay else 0]
        if rng.random() < p.duplicate:
            out.append(rng.randrange(0, p.max_delay + 1))
        return out

    def shuffle(items: list[InFlight]) -> None:
        for k in range(len(items) - 1, 0, -1):
            j = rng.randrange(0, k + 1)
            items[k], items[j] = items[j], items[k]

    cluster.delays = delays
    proposals = 0
    reads = 0
    down: set[NodeId] = set()

    def on_new_leader(node: RaftNode) -> None:
        if chaos and rng.random() < p.strand_new_leader:
            cluster.isolate(node.id)
            cluster.note(f"isolate new leader {node.id}")

    cluster.on_new_leader = on_new_leader
    cluster.lease_probe = True
    writing = True
    spares = [f"n{k}" for k in range(p.nodes + 1, p.nodes + 3)]
    # The cut after a leader's self-removal draws from a sixth source (other seeds unchanged).
    members = MembershipOps(cluster, ids, spares, ops_rng, rng_factory(seed * 7_877 + 61))
    try:
        for _ in range(p.chaos_ticks):
            if rng.random() < p.partition:
                if rng.random() < 0.5:
                    # Isolating the leader strands its newest entries: old-term entries for
                    # the next leaders to deal with (paper Figure 8).
                    leader = cluster.leader()
                    if leader is not None and rng.random() < 0.7:
                        victim = leader.id
                    else:
                        victim = ids[rng.randrange(0, len(ids))]
                    cluster.isolate(victim)
                    cluster.note(f"isolate {victim}")
                elif rng.random() < 0.5:
                    side = {n for n in ids if rng.random() < 0.5}
                    cluster.partition(side, set(ids) - side)
                    cluster.note(f"partition {sorted(side)}")
                else:
                    # One-way link failures: a hears nothing from b, b still hears a.
                    for _ in range(rng.randrange(1, 4)):
                        a = ids[rng.randrange(0, len(ids))]
                        b = ids[rng.randrange(0, len(ids))]
                        if a != b:
                            cluster.blocked.add((b, a))
                            cluster.note(f"cut link {b} -> {a}")
            elif cluster.blocked and rng.random() < p.heal:
                cluster.heal()
            if rng.random() < p.crash:
                victim = ids[rng.randrange(0, len(ids))]
                if victim not in down:
                    cluster.crash(victim)
                    down.add(victim)
            if rng.random() < p.crash_leader:
                leader = cluster.leader()
                if leader is not None:
                    cluster.crash(leader.id)
                    down.add(leader.id)
            if flap and flap_rng.random() < flap:
                live = cluster.alive()
                if live:
                    node = live[flap_rng.randrange(0, len(live))]
                    peer = node.leader if flap_rng.random() < 0.7 else None
                    peer = peer or ids[flap_rng.randrange(0, len(ids))]
                    node.report_unreachable(peer)
                    cluster.note(f"{node.id} lost its connection to {peer}")
            for nid in sorted(down):
                if rng.random() < p.restart:
                    cluster.start(nid)
                    down.discard(nid)
            if rng.random() < p.reconfigure:
                reconfigure(cluster, ids, rng)
            if p.transfer and ops_rng.random() < p.transfer:
                transfer_at_random(cluster, ops_rng)
            if p.membership and ops_rng.random() < p.membership:
                members.step()
            members.tick()
            if p.compact:
                for nid in ids:
                    if snap_rng.random() < p.compact:
                        cluster.compact(nid)
            slow_disks.step()
            if p.bursty_writes and rng.random() < 0.05:
                # Clients write in bursts: lulls let a lagging node be up to date enough to
                # win an election, which a lease must survive.
                writing = not writing
            if writing and rng.random() < p.propose:
                # Clients mostly find a leader (any node that believes it leads).
                leaders = cluster.leaders()
                if leaders and rng.random() < 0.8:
                    nid = leaders[rng.randrange(0, len(leaders))].id
                else:
                    nid = ids[rng.randrange(0, len(ids))]
                if nid not in down:
                    count = rng.randrange(1, 4)
                    datas = [f"{seed}:{proposals + k}".encode() for k in range(count)]
                    try:
                        cluster.propose(nid, datas)
                        proposals += count
                    except (NotLeader, ProposalDropped):
                        pass
            if markers and marker_rng.random() < markers:
                leaders = cluster.leaders()
                if leaders:
                    leader = leaders[marker_rng.randrange(0, len(leaders))]
                    with suppress(NotLeader, ProposalDropped):
                        cluster.propose_marker(leader.id, f"marker:{seed}:{cluster.now}".encode())
            if rng.random() < p.read:
                leaders = cluster.leaders()
                if leaders and rng.random() < 0.5:
                    nid = leaders[rng.randrange(0, len(leaders))].id
                else:
                    nid = ids[rng.randrange(0, len(ids))]
                if nid not in down:
                    reads += 1
                    if rng.random() < 0.5:
                        cluster.lease_read(nid)
                    else:
                        # Sometimes a burst in one turn, which a follower forwards as one.
                        burst = 1 if rng.random() < 0.7 else rng.randrange(2, 4)
                        for k in range(burst):
                            if k:
                                reads += 1
                            last = k == burst - 1
                            cluster.read(nid, f"r{reads}".encode(), process=last)
            cluster.tick()
            cluster.deliver_due(shuffle)
        # Calm: everyone up, network whole and reliable. A leader must emerge and commit.
        chaos = False
        cluster.disk = None  # and the disk keeps up: queued writes complete at once
        cluster.settle_disks()
        cluster.heal()
        for nid in sorted(down):
            cluster.start(nid)
        start_commit = cluster.checker.known_commit
        committed_new = False
        target = 0
        # Without pre-vote, a node whose stale membership cannot elect it still raises its term
        # on every timeout and can keep the electable node a term behind for many rounds until
        # the randomised timeouts break the tie (seed 7110: about 1,000 ticks). That is Raft's
        # probabilistic liveness, not a stall; Graft always runs with pre-vote, where 150 holds.
        calm_ticks = p.calm_ticks if p.pre_vote else 8 * p.calm_ticks
        for _ in range(calm_ticks):
            leader = cluster.leader()
            if (
                leader is not None
                and target == 0
                and leader.log.committed >= leader.log.last_index()
            ):
                # During a transfer the proposal is dropped: the next leader gets it.
                with suppress(ProposalDropped):
                    target = cluster.propose(leader.id, [f"{seed}:calm".encode()])[0]
            cluster.tick()
            cluster.deliver_due()
            if target and cluster.checker.known_commit >= target:
                committed_new = True
                break
        if not committed_new:
            raise Violation(
                f"liveness: no new entry committed within {calm_ticks} calm ticks "
                f"(commit stayed at {start_commit}, leader {cluster.leader()})"
            )
    except Violation as exc:
        cluster.note(f"VIOLATION {exc}")
        return sim_result(seed, cluster, str(exc))
    return sim_result(seed, cluster, None)


def sim_result(seed: int, cluster: Cluster, violation: str | None) -> SimResult:
    """What a run checked and exercised (the trace only with a violation, to replay it)."""
    checker = cluster.checker
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
    )
