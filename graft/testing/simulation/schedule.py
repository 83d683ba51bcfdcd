"""What a seeded schedule draws: its parameters and the operators' actions it takes at random.

``SimParams`` are one schedule's per-tick probabilities, ``draw_params`` draws them from a
seed and ``draw_features`` the features added later. ``NodeFaults`` (crashes, restarts, lost
connections), ``Clients`` (writes, markers, reads), ``MembershipOps`` (learners, promotions,
removals, the leader replaced), ``SlowDisks``, ``reconfigure`` and ``transfer_at_random`` are
what graft.testing.simulation.run does to the cluster each tick, each part drawing from its
named stream (graft.testing.simulation.streams); the network's part is
graft.testing.simulation.network.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass, replace

from graft.raft.errors import NotLeader, ProposalDropped, RaftError
from graft.raft.node import RaftNode
from graft.raft.rng import Rng
from graft.raft.types import Membership, NodeId
from graft.testing.simulation.cluster import Cluster
from graft.testing.simulation.sessions import SessionClients


@dataclass(frozen=True, slots=True, kw_only=True)
class SimParams:
    """Per-tick probabilities (and message fates) of one schedule."""

    nodes: int = 3
    pre_vote: bool = True
    check_quorum: bool = True
    max_msg_entries: int = 64
    max_inflight: int = 8
    chaos_ticks: int = 300
    calm_ticks: int = 150
    drop: float = 0.05
    duplicate: float = 0.03
    delay: float = 0.3  # probability a message is late
    max_delay: int = 4
    partition: float = 0.02
    heal: float = 0.08
    crash: float = 0.01
    crash_leader: float = 0.01
    # Probability that a newly elected leader is cut off (isolated or crashed) at once, which
    # strands its NOOP: the conflicting suffixes of Figure 8.
    strand_new_leader: float = 0.0
    restart: float = 0.15
    # Writes come in bursts with lulls between them (else a steady stream).
    bursty_writes: bool = True
    # Probability per tick that the leader proposes removing a voter or adding it back.
    reconfigure: float = 0.0
    # Probability per tick and node that it snapshots its state machine and compacts its log.
    compact: float = 0.0
    # Probability per tick that the leader is asked to hand leadership to a random voter.
    transfer: float = 0.0
    # Probability per tick of a step of MembershipOps (learners, promotion, removals).
    membership: float = 0.0
    propose: float = 0.5
    read: float = 0.3


def draw_params(seed: int, rng: Rng) -> SimParams:
    """Schedules differ in size, features and how hostile the network is."""

    def between(lo: float, hi: float) -> float:
        return lo + (hi - lo) * rng.random()

    if rng.random() < 0.4:
        # Leader churn: short, frequent isolations and crashes of whoever leads, so that
        # leaders of several terms leave conflicting uncommitted suffixes behind.
        return SimParams(
            nodes=3 if seed % 2 == 0 else 5,
            pre_vote=rng.random() < 0.5,
            check_quorum=rng.random() < 0.8,
            max_msg_entries=rng.randrange(1, 3),
            max_inflight=rng.randrange(1, 3),
            chaos_ticks=400,
            drop=between(0.0, 0.3),
            duplicate=between(0.0, 0.1),
            delay=between(0.0, 0.6),
            max_delay=rng.randrange(1, 8),
            partition=between(0.05, 0.2),
            heal=between(0.1, 0.5),
            crash=between(0.0, 0.03),
            crash_leader=between(0.02, 0.1),
            strand_new_leader=between(0.2, 0.7),
            bursty_writes=False,
            restart=between(0.1, 0.8),
            propose=between(0.5, 1.0),
            read=between(0.1, 0.5),
        )
    return SimParams(
        nodes=3 if seed % 2 == 0 else 5,
        pre_vote=rng.random() < 0.7,
        check_quorum=rng.random() < 0.8,
        max_msg_entries=rng.randrange(1, 8),
        max_inflight=rng.randrange(1, 6),
        drop=between(0.0, 0.2),
        duplicate=between(0.0, 0.1),
        delay=between(0.0, 0.6),
        max_delay=rng.randrange(1, 12),
        partition=between(0.0, 0.06),
        heal=between(0.03, 0.2),
        crash=between(0.0, 0.03),
        crash_leader=between(0.0, 0.04),
        restart=between(0.05, 0.5),
        reconfigure=between(0.01, 0.06) if rng.random() < 0.5 else 0.0,
        propose=between(0.2, 0.9),
        read=between(0.1, 0.5),
    )


def draw_features(p: SimParams, snap_rng: Rng, ops_rng: Rng) -> SimParams:
    """The features added after ``draw_params``, each drawn from its own stream so that a seed
    that gets none of them replays its earlier schedule: compaction (snapshots stream),
    leadership transfers and membership changes (ops stream)."""
    if snap_rng.random() < 0.6:
        p = replace(p, compact=0.01 + 0.15 * snap_rng.random())
    if ops_rng.random() < 0.6:
        p = replace(p, transfer=0.005 + 0.04 * ops_rng.random())
    if ops_rng.random() < 0.6:
        # These changes replace the older remove-and-re-add schedule.
        p = replace(p, membership=0.01 + 0.08 * ops_rng.random(), reconfigure=0.0)
    return p


def reconfigure(cluster: Cluster, ids: list[NodeId], rng: Rng) -> None:
    """Single-server membership change on the leader: remove a voter, or add one back."""
    leader = cluster.leader()
    if leader is None:
        return
    voters = leader.membership.voters
    if len(voters) == len(ids):
        change = ids[rng.randrange(0, len(ids))]
        new = Membership(voters=voters - {change})
    else:
        change = min(set(ids) - voters)
        new = Membership(voters=voters | {change})
    try:
        leader.propose_membership(new)
    except RaftError:
        return
    cluster.note(f"{leader.id} proposes voters {sorted(new.voters)}")
    cluster.process(leader.id)


class MembershipOps:
    """Membership changes as an operator and the driver make them, through the core's API.

    Each ``step`` looks at the current leader's membership and does one thing: promote a
    learner once the leader sees it caught up; add a learner (a brand-new node from
    ``spares`` or a removed one coming back); remove a voter; or replace the leader, either
    as the driver does (transfer leadership first, then the new leader removes the old one)
    or by the leader proposing its own removal (the core keeps leading until that commits,
    then steps down). Voters stay between 2 and 5.

    With ``non_voter_rng`` (the non_voters stream), a joiner is sometimes added as a
    non-voter, which is never promoted as a joiner is; now and then a non-voter is promoted
    or dropped, or a voter (the leader too) demoted to non-voter; and ``non_voter_reads``
    reads from non-voters through ReadIndex.

    With ``cut_rng``, a leader of four voters sometimes proposes its own removal and is then
    cut off with one voter: first it stops hearing the other two (they still get the entry, it
    cannot commit it), a few ticks later the cut is whole, and it holds (heals undone) for a
    few election timeouts. The two are a quorum of the new voters and may elect a leader and
    commit while the old one still leads, no voter of its own membership (its read shortcut
    must not count it). (Not from two voters: if the one
    voter left misses the entry, neither node can be elected, as in any Raft.)
    """

    def __init__(
        self,
        cluster: Cluster,
        ids: list[NodeId],
        spares: list[NodeId],
        rng: Rng,
        cut_rng: Rng | None = None,
        non_voter_rng: Rng | None = None,
    ):
        self.cluster = cluster
        self.ids = ids  # the schedule's node list: joiners are appended, so faults reach them
        self.spares = spares
        self.rng = rng
        self.cut_rng = cut_rng
        self.non_voter_rng = non_voter_rng
        self.non_voter_changes = 0  # proposed: non-voters added, promoted, removed; demotions
        self.retiring: NodeId | None = None
        # A cut begun by _cut_off: (ticks one-way, ticks whole, the leader's side).
        self.cut_pending: tuple[int, int, set[NodeId]] | None = None

    def tick(self) -> None:
        """Every chaos tick: keep up a cut begun by ``_cut_off`` (one-way, then whole)."""
        if self.cut_pending is None:
            return
        one_way, whole, side = self.cut_pending
        others = set(self.cluster.nodes) - side
        if one_way > 0:
            self.cut_pending = (one_way - 1, whole, side)
            self.cluster.blocked |= {(o, s) for o in others for s in side if s != o}
            self.cluster.blocked -= {(s, o) for o in others for s in side}
        elif whole > 0:
            if whole == self.cut_pending[1] and one_way == 0:
                self.cluster.note(f"partition {sorted(side)} (the leader leaving)")
            self.cut_pending = (-1, whole - 1, side)
            self.cluster.blocked |= {(a, b) for a in side for b in others}
            self.cluster.blocked |= {(b, a) for a in side for b in others}
            # The voter cut off with the leaving leader reads: through that leader, whose
            # answer must not miss what the other side commits meanwhile.
            live = {n.id for n in self.cluster.alive()}
            for nid in sorted(side & live):
                self.cluster.read(nid, f"cut:{nid}:{self.cluster.now}".encode())
        else:
            self.cut_pending = None

    def _propose(self, leader: RaftNode, new: Membership, why: str) -> bool:
        try:
            leader.propose_membership(new)
        except RaftError:
            return False
        non_voters = f" non-voters {sorted(new.non_voters)}" if new.non_voters else ""
        self.cluster.note(
            f"{leader.id} proposes {why}: voters {sorted(new.voters)} learners "
            f"{sorted(new.learners)}{non_voters}"
        )
        self.cluster.process(leader.id)
        return True

    def _most_caught_up(self, leader: RaftNode) -> NodeId | None:
        progress = leader.status().progress
        others = sorted(v for v in leader.membership.voters if v != leader.id)
        if not others:
            return None
        return max(others, key=lambda v: progress[v].match if v in progress else -1)

    def step(self) -> None:
        leader = self.cluster.leader()
        if leader is None:
            return
        m = leader.membership
        rng = self.rng
        if self.retiring is not None:
            old = self.retiring
            if old not in m.voters:
                self.retiring = None
            elif leader.id != old:
                self._propose(leader, replace(m, voters=m.voters - {old}), "removal")
            else:
                target = self._most_caught_up(leader)
                if target is not None:
                    self.cluster.transfer(leader.id, target)  # the handover timed out: again
            return
        joining = m.learners - m.non_voters  # learners on their way to become voters
        if joining:
            learner = sorted(joining)[rng.randrange(0, len(joining))]
            pr = leader.status().progress.get(learner)
            if pr is not None and pr.match >= leader.log.committed:
                new = replace(m, voters=m.voters | {learner}, learners=m.learners - {learner})
                self._propose(leader, new, f"promotion of {learner}")
            elif rng.random() < 0.05:
                new = replace(m, learners=m.learners - {learner})
                self._propose(leader, new, f"dropping learner {learner}")
            return
        if self.non_voter_rng is not None and self._non_voter_step(leader, m):
            return
        cut = self.cut_rng
        if cut is not None and len(m.voters) == 4 and cut.random() < 0.7:
            new = replace(m, voters=m.voters - {leader.id})
            if self._propose(leader, new, f"removal of itself ({leader.id}), then a cut"):
                self._cut_off(leader.id, sorted(new.voters))
            return
        choice = rng.random()
        outside = [n for n in self.ids if n not in m.members] + self.spares[:1]
        if choice < 0.4 and len(m.voters) < 5 and outside:
            joiner = outside[rng.randrange(0, len(outside))]
            new = replace(m, learners=m.learners | {joiner})
            nv = self.non_voter_rng
            what = f"learner {joiner}"
            if nv is not None and nv.random() < 0.5:
                new = replace(new, non_voters=m.non_voters | {joiner})
                what = f"non-voter {joiner}"
            if joiner not in self.cluster.nodes:
                self.cluster.add_node(joiner)
                self.spares.remove(joiner)
                self.ids.append(joiner)
            if self._propose(leader, new, what) and new.non_voters != m.non_voters:
                self.non_voter_changes += 1
        elif len(m.voters) < 3:
            return
        elif choice < 0.7:
            others = sorted(m.voters - {leader.id})
            victim = others[rng.randrange(0, len(others))]
            new = replace(m, voters=m.voters - {victim})
            self._propose(leader, new, f"removal of {victim}")
        elif choice < 0.85:
            target = self._most_caught_up(leader)
            if target is not None and self.cluster.transfer(leader.id, target):
                self.retiring = leader.id
                self.cluster.note(f"replacing leader {leader.id}: hand over to {target} first")
        else:
            new = replace(m, voters=m.voters - {leader.id})
            self._propose(leader, new, f"removal of itself ({leader.id})")

    def _non_voter_step(self, leader: RaftNode, m: Membership) -> bool:
        """From the non_voters stream, now and then: promote a caught-up non-voter, drop one,
        or demote a voter (the leader itself among them: it leads until the change commits,
        then steps down and stays a non-voter). Voters stay between 2 and 5. Whether it did
        something (then the step is over)."""
        nv = self.non_voter_rng
        assert nv is not None
        if nv.random() >= 0.5:
            return False
        if m.non_voters and nv.random() < 0.6:
            member = sorted(m.non_voters)[nv.randrange(0, len(m.non_voters))]
            pr = leader.status().progress.get(member)
            caught_up = pr is not None and pr.match >= leader.log.committed
            if caught_up and len(m.voters) < 5 and nv.random() < 0.7:
                new = replace(
                    m,
                    voters=m.voters | {member},
                    learners=m.learners - {member},
                    non_voters=m.non_voters - {member},
                )
                return self._note_non_voter(
                    self._propose(leader, new, f"promotion of non-voter {member}")
                )
            if nv.random() < 0.2:
                new = replace(m, learners=m.learners - {member}, non_voters=m.non_voters - {member})
                return self._note_non_voter(
                    self._propose(leader, new, f"removal of non-voter {member}")
                )
            return False
        if len(m.voters) < 3 or self.retiring is not None:
            return False
        voters = sorted(m.voters)
        member = voters[nv.randrange(0, len(voters))]
        new = replace(
            m,
            voters=m.voters - {member},
            learners=m.learners | {member},
            non_voters=m.non_voters | {member},
        )
        return self._note_non_voter(self._propose(leader, new, f"demotion of {member}"))

    def _note_non_voter(self, proposed: bool) -> bool:
        self.non_voter_changes += proposed
        return proposed

    def non_voter_reads(self) -> None:
        """From the non_voters stream: now and then a ReadIndex read on a live non-voter,
        which must see every write committed before it (checked like any read)."""
        nv = self.non_voter_rng
        if nv is None or nv.random() >= 0.05:
            return
        leader = self.cluster.leader()
        if leader is None or not leader.membership.non_voters:
            return
        members = sorted(leader.membership.non_voters)
        nid = members[nv.randrange(0, len(members))]
        if any(n.id == nid for n in self.cluster.alive()):
            self.cluster.read(nid, f"nv:{nid}:{self.cluster.now}".encode())

    def _cut_off(self, leader: NodeId, voters: list[NodeId]) -> None:
        """Cut the leader off with one of the voters it leaves (the others are a quorum)."""
        cut = self.cut_rng
        assert cut is not None
        side = {leader, voters[cut.randrange(0, len(voters))]}
        self.cluster.note(f"{sorted(side)} hear nothing from {sorted(set(voters) - side)}")
        self.cut_pending = (cut.randrange(1, 6), cut.randrange(20, 60), side)
        self.tick()


class SlowDisks:
    """Fsyncs that take long: now and then one node's disk (often the leader's) completes no
    write for 3 to 30 ticks (0.1 to 1 s at 35 ms a tick), while the node keeps ticking and
    receiving. Its queued Readies wait; heartbeats, their answers and read-index traffic
    still flow (Cluster._send_between_readies). Only with the pipelined driver model."""

    def __init__(self, cluster: Cluster, ids: list[NodeId], rng: Rng, rate: float) -> None:
        self.cluster = cluster
        self.ids = ids
        self.rng = rng
        self.rate = rate

    @classmethod
    def draw(cls, cluster: Cluster, ids: list[NodeId], rng: Rng, drawn: bool) -> SlowDisks:
        """Half the seeds with the pipelined model get slow disks (their own random source, so
        the other seeds' schedules stay as they were)."""
        rate = 0.0
        if drawn and cluster.pipeline > 1 and rng.random() < 0.5:
            rate = 0.01 + 0.05 * rng.random()
        return cls(cluster, ids, rng, rate)

    def step(self) -> None:
        if not self.rate or self.rng.random() >= self.rate:
            return
        leader = self.cluster.leader()
        if leader is not None and self.rng.random() < 0.5:
            victim = leader.id
        else:
            victim = self.ids[self.rng.randrange(0, len(self.ids))]
        self.cluster.stall_disk(victim, self.rng.randrange(3, 31))


def transfer_at_random(cluster: Cluster, rng: Rng) -> None:
    """Ask the leader to hand over to any other voter: caught up, lagging, crashed or cut off."""
    leader = cluster.leader()
    if leader is None:
        return
    others = sorted(leader.membership.voters - {leader.id})
    if others:
        cluster.transfer(leader.id, others[rng.randrange(0, len(others))])


class NodeFaults:
    """Crashes of any node or of the leader, restarts, and, from the flaps stream at rate
    ``flap``, connections that drop while both ends live (a reset, a dialer's restart): a node
    is told a live peer, most often its leader, is unreachable. ``down`` holds the crashed."""

    def __init__(
        self,
        cluster: Cluster,
        ids: list[NodeId],
        params: SimParams,
        rng: Rng,
        flap_rng: Rng,
        flap: float,
    ) -> None:
        self.cluster = cluster
        self.ids = ids
        self.p = params
        self.rng = rng
        self.flap_rng = flap_rng
        self.flap = flap
        self.down: set[NodeId] = set()

    def step(self) -> None:
        cluster, ids, rng, p, down = self.cluster, self.ids, self.rng, self.p, self.down
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
        flap_rng = self.flap_rng
        if self.flap and flap_rng.random() < self.flap:
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


class Clients:
    """Client requests each tick: writes (in bursts with lulls, unless the schedule writes
    steadily), markers from the markers stream at rate ``markers``, and reads (lease or
    ReadIndex, sometimes a burst in one turn). Nodes in ``down`` take no requests."""

    def __init__(
        self,
        cluster: Cluster,
        ids: list[NodeId],
        params: SimParams,
        seed: int,
        rng: Rng,
        marker_rng: Rng,
        markers: float,
        down: set[NodeId],
    ) -> None:
        self.cluster = cluster
        self.ids = ids
        self.p = params
        self.seed = seed
        self.rng = rng
        self.marker_rng = marker_rng
        self.markers = markers
        self.down = down
        self.writing = True
        self.proposals = 0
        self.reads = 0
        # Clients with sessions (graft.testing.simulation.sessions): they turn some writes
        # into session operations, changing the entries' data only, never the schedule.
        self.sessions: SessionClients | None = None

    def _target(self, leader_share: float) -> NodeId:
        """Clients mostly find a leader (any node that believes it leads)."""
        rng, leaders = self.rng, self.cluster.leaders()
        if leaders and rng.random() < leader_share:
            return leaders[rng.randrange(0, len(leaders))].id
        return self.ids[rng.randrange(0, len(self.ids))]

    def step(self) -> None:
        cluster, rng, p, seed = self.cluster, self.rng, self.p, self.seed
        if p.bursty_writes and rng.random() < 0.05:
            # Lulls let a lagging node be up to date enough to win an election, which a lease
            # must survive.
            self.writing = not self.writing
        if self.writing and rng.random() < p.propose:
            nid = self._target(0.8)
            if nid not in self.down:
                count = rng.randrange(1, 4)
                datas = [f"{seed}:{self.proposals + k}".encode() for k in range(count)]
                if self.sessions is not None:
                    datas = self.sessions.wrap(datas, cluster.now)
                try:
                    cluster.propose(nid, datas)
                    self.proposals += count
                except (NotLeader, ProposalDropped):
                    pass
        marker_rng = self.marker_rng
        if self.markers and marker_rng.random() < self.markers:
            leaders = cluster.leaders()
            if leaders:
                leader = leaders[marker_rng.randrange(0, len(leaders))]
                with suppress(NotLeader, ProposalDropped):
                    cluster.propose_marker(leader.id, f"marker:{seed}:{cluster.now}".encode())
        if rng.random() < p.read:
            nid = self._target(0.5)
            if nid not in self.down:
                self.read(nid)

    def read(self, nid: NodeId) -> None:
        rng = self.rng
        self.reads += 1
        if rng.random() < 0.5:
            self.cluster.lease_read(nid)
            return
        # Sometimes a burst in one turn, which a follower forwards as one.
        burst = 1 if rng.random() < 0.7 else rng.randrange(2, 4)
        for k in range(burst):
            if k:
                self.reads += 1
            self.cluster.read(nid, f"r{self.reads}".encode(), process=k == burst - 1)
