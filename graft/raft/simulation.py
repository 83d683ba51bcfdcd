"""A deterministic in-memory cluster, a safety checker, and seeded random schedules.

``Cluster`` runs N RaftNodes over MemoryStorage with a network the caller controls: the
driver loop persists each Ready into the node's storage (the "disk"), then queues its
messages, applies its committed entries and records its read states, as a real driver would.
A crash throws the RaftNode away and keeps only its storage.

``SafetyChecker`` watches every Ready and checks, incrementally: Election Safety, Leader
Append-Only, Log Matching (via a hash chain over each durable log), Leader Completeness,
State Machine Safety, that each read answered through ReadIndex or the lease covers
every write committed before the read was issued, and that no leader is still able to commit
once a leader of a later term has been elected (``stale_leaders``).

``simulate_seed`` drives a Cluster with a schedule drawn from a seeded random source: message
drops, delays, duplicates and reordering, partitions that heal, crashes and restarts, random
proposals and reads, snapshots, leadership transfers to any voter (lagging, crashed or cut
off), and membership changes (learners that catch up and are promoted, voter removal, removal
of the leader itself, sometimes followed by a cut that leaves it with one voter, which reads
through it while the others may elect and commit), then a calm phase that must elect a leader
and commit (liveness).

This module never builds a random source (the core may not import one); its caller passes a
factory, and ``python -m graft.simulate`` is the command line.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field, replace

from graft.raft.config import LATE_TICKS, RaftConfig
from graft.raft.errors import NotLeader, ProposalDropped, RaftError
from graft.raft.log import RaftLog
from graft.raft.memory import MemoryStorage
from graft.raft.messages import InstallSnapshot, Message, TimeoutNow
from graft.raft.node import RaftNode
from graft.raft.ready import Ready, Role, leaves_before_write, leaves_between_readies
from graft.raft.rng import Rng
from graft.raft.types import Entry, EntryKind, Membership, NodeId, SnapshotMeta, decode_membership

RngFactory = Callable[[int], Rng]


class Violation(Exception):
    """A safety property failed; the message names the property and the evidence."""


# -- the checker ------------------------------------------------------------------------------


class SafetyChecker:
    def __init__(self) -> None:
        self.leaders_by_term: dict[int, NodeId] = {}
        # (index, term) -> hash of the whole log prefix ending there (Log Matching).
        self._chain_at: dict[tuple[int, int], int] = {}
        self._chains: dict[NodeId, list[int]] = {}
        # node -> (index, chain hash) of the snapshot its durable log starts after.
        self._chain_base: dict[NodeId, tuple[int, int]] = {}
        # The snapshot "files": index -> (term, hash of the state machine there).
        self.snapshots: dict[int, tuple[int, int]] = {}
        self.snapshots_installed = 0
        # index -> (term, hash of data) of what the state machines applied there.
        self.applied_at: dict[int, tuple[int, int]] = {}
        # index -> a term by which that index was certainly committed (the lowest term of a
        # node seen applying it). Leader Completeness binds the leaders of later terms only:
        # an entry committed in term 16 may be missing from a leader of term 15.
        self.committed_by: dict[int, int] = {}
        self._applied_index: dict[NodeId, int] = {}
        # Highest commit index any node has reported: every write acknowledged to a client
        # lies at or below it.
        self.known_commit = 0
        # node -> (term, last index, term of last index) while it is leader.
        self._leader_log: dict[NodeId, tuple[int, int, int]] = {}
        self.read_issued: dict[bytes, int] = {}
        self.reads_checked = 0
        # The highest term in which any node has become leader, and how often a leader of an
        # older term was seen alive beside it (each such sighting is checked by stale_leaders).
        self.max_leader_term = 0
        self.stale_leaders_checked = 0
        self.memberships_committed = 0

    def persisted(self, node: NodeId, entries: tuple[Entry, ...]) -> None:
        chain = self._chains.setdefault(node, [])
        base, base_hash = self._chain_base.get(node, (0, 0))
        first = entries[0].index
        if first <= base:
            raise Violation(f"log matching: {node} wrote {first}, inside its snapshot at {base}")
        del chain[first - 1 - base :]
        if len(chain) != first - 1 - base:
            raise Violation(f"log matching: {node} appended at {first} past a gap")
        prev = chain[-1] if chain else base_hash
        for entry in entries:
            prev = hash((prev, entry.term, entry.kind, entry.data))
            chain.append(prev)
            key = (entry.index, entry.term)
            seen = self._chain_at.setdefault(key, prev)
            if seen != prev:
                raise Violation(
                    f"log matching: {node} holds index {entry.index} term {entry.term} with a "
                    "different prefix than another node"
                )

    def restarted(self, node: NodeId, applied: int = 0) -> None:
        # The state machine is in memory: it starts again from its snapshot (or index 0).
        self._applied_index[node] = applied
        self._leader_log.pop(node, None)

    def snapshot_taken(self, node: NodeId, index: int, term: int, state: int) -> None:
        """``node`` wrote a snapshot of its state machine at ``index`` (which it applied)."""
        if self._applied_index.get(node, 0) != index:
            applied = self._applied_index.get(node, 0)
            raise Violation(f"snapshot: {node} snapshotted {index} but applied {applied}")
        seen = self.snapshots.setdefault(index, (term, state))
        if seen != (term, state):
            raise Violation(
                f"state machine safety: {node}'s snapshot at {index} differs from another's"
            )

    def given_snapshot(self, node: NodeId, meta: SnapshotMeta) -> None:
        """A test started ``node`` from a storage holding a snapshot nobody took here."""
        self._chain_at.setdefault((meta.index, meta.term), hash(("given", meta.index)))
        self.snapshots.setdefault(meta.index, (meta.term, hash(("state", meta.index))))
        self._chain_base[node] = (meta.index, self._chain_at[(meta.index, meta.term)])
        self._chains[node] = []

    def snapshot_installed(self, node: NodeId, meta: SnapshotMeta) -> int:
        """``node`` replaced its log and state machine by a received snapshot; returns the
        state machine's hash (the "file" contents)."""
        if meta.index <= self._applied_index.get(node, 0):
            raise Violation(
                f"snapshot: {node} installed {meta.index} after applying "
                f"{self._applied_index.get(node, 0)}"
            )
        chain_hash = self._chain_at.get((meta.index, meta.term))
        state = self.snapshots.get(meta.index)
        if chain_hash is None or state is None or state[0] != meta.term:
            raise Violation(
                f"snapshot: {node} installed index {meta.index} term {meta.term}, which no "
                "node ever snapshotted"
            )
        self._chain_base[node] = (meta.index, chain_hash)
        self._chains[node] = []
        self._applied_index[node] = meta.index
        self.snapshots_installed += 1
        return state[1]

    @staticmethod
    def _holds(log: RaftLog, index: int, term: int) -> bool:
        """Whether ``log`` holds (index, term), counting entries its snapshot covers."""
        found = log.term_or_none(index)
        if found is None and index < log.snapshot_meta().index:
            return True  # compacted: part of a snapshot checked against the state machines
        return found == term

    def applied(
        self, node: NodeId, term: int, entries: tuple[Entry, ...], leaders: list[RaftNode]
    ) -> None:
        at = self._applied_index.get(node, 0)
        for entry in entries:
            if entry.index != at + 1:
                raise Violation(f"state machine safety: {node} applied {entry.index} after {at}")
            at = entry.index
            fingerprint = (entry.term, hash((entry.kind, entry.data)))
            seen = self.applied_at.get(entry.index)
            if seen is None:
                seen = self.applied_at[entry.index] = fingerprint
                if entry.kind is EntryKind.MEMBERSHIP:
                    self.memberships_committed += 1
            if seen != fingerprint:
                raise Violation(
                    f"state machine safety: {node} applied term {entry.term} at {entry.index}, "
                    f"another node applied term {seen[0]} there"
                )
            by = min(term, self.committed_by.get(entry.index, term))
            self.committed_by[entry.index] = by
            for leader in leaders:
                if leader.term > by and not self._holds(leader.log, entry.index, entry.term):
                    raise Violation(
                        f"leader completeness: leader {leader.id} of term {leader.term} lacks "
                        f"committed index {entry.index} of term {entry.term}"
                    )
        self._applied_index[node] = at

    def observe(self, node: RaftNode) -> None:
        """After each Ready of ``node``: roles, commit and the leader's log."""
        if node.log.committed > self.known_commit:
            self.known_commit = node.log.committed
        if node.role is not Role.LEADER:
            self._leader_log.pop(node.id, None)
            return
        term = node.term
        holder = self.leaders_by_term.setdefault(term, node.id)
        if holder != node.id:
            raise Violation(f"election safety: {holder} and {node.id} both lead term {term}")
        if term > self.max_leader_term:
            self.max_leader_term = term
        log = node.log
        prev = self._leader_log.get(node.id)
        if prev is None or prev[0] != term:
            # A new leader: it must hold every entry known to be committed.
            for index, (entry_term, _) in self.applied_at.items():
                if term > self.committed_by[index] and not self._holds(log, index, entry_term):
                    raise Violation(
                        f"leader completeness: new leader {node.id} of term {term} lacks "
                        f"committed index {index} of term {entry_term}"
                    )
        else:
            _, last, last_term = prev
            if log.last_index() < last or log.term_or_none(last) != last_term:
                raise Violation(
                    f"leader append-only: leader {node.id} of term {term} lost or replaced "
                    f"index {last}"
                )
        last = log.last_index()
        self._leader_log[node.id] = (term, last, log.term(last))

    def stale_leaders(
        self,
        leaders: Iterable[tuple[NodeId, int, Collection[NodeId]]],
        term_of: Callable[[NodeId], int],
    ) -> None:
        """No two leaders can both commit: given live ``leaders`` as (id, term, voters of its
        membership) and every node's current (durable) term, fail if a leader of a term older
        than the newest elected one could still gather a commit quorum.

        Why this check. Two leaders of different terms may coexist (a deposed one that has
        not heard of the newer term yet); what Raft forbids is that both can commit. A leader
        of term t commits an entry once a quorum of the voters of its own membership
        acknowledges it in term t, and a node acknowledges term t exactly while its current
        term is at most t (a lower term is raised to t by the AppendEntries itself; a higher
        term rejects it, and terms never go down). So "a quorum of the leader's voters has
        term <= t" is precisely "this leader can still commit", whatever the network does
        next. If a leader of a later term T > t has been elected, such a commit would put an
        entry of term t in the log that the term-T leader lacks, which Leader Completeness
        forbids: correct Raft has, at every instant, a quorum of the stale leader's voters
        already in a term above t (those that voted in T or learnt of it). So the check raises
        no false alarm on correct Raft, and it fires on the very step that makes two commit
        quorums possible, before anything is committed through the second one (a quorum size
        that lets two disjoint halves elect, a vote counted from a non-voter, a membership
        whose majorities do not overlap the previous one's, a term lost on restart). The
        newest leader itself is not checked: it is the one entitled to commit. Same-term
        pairs are Election Safety's, checked in observe.
        """
        top = self.max_leader_term
        for nid, term, voters in leaders:
            if term >= top:
                continue
            self.stale_leaders_checked += 1
            able = sorted(v for v in voters if term_of(v) <= term)
            if len(able) >= len(voters) // 2 + 1:
                raise Violation(
                    f"two commit quorums: {nid} leads term {term} and its voters {able} (of "
                    f"{sorted(voters)}) are all still at or below term {term}, though "
                    f"{self.leaders_by_term[top]} was elected in term {top}"
                )

    def read_issued_now(self, context: bytes) -> None:
        self.read_issued[context] = self.known_commit

    def read_answered(self, node: NodeId, context: bytes, index: int | None, how: str) -> None:
        issued = self.read_issued.pop(context, None)
        if index is None or issued is None:
            return
        self.reads_checked += 1
        if index < issued:
            raise Violation(
                f"linearizability: {how} read on {node} got index {index}, but index {issued} "
                "was committed before the read was issued"
            )


# -- the cluster ------------------------------------------------------------------------------


@dataclass(slots=True)
class SimNode:
    id: NodeId
    storage: MemoryStorage
    node: RaftNode | None
    applied: list[Entry] = field(default_factory=list)
    read_answers: dict[bytes, int | None] = field(default_factory=dict)
    # The state machine model: a hash chain over what it applied, its index, and the
    # membership as of that index (None: the cluster's initial one).
    state: int = 0
    state_index: int = 0
    state_membership: Membership | None = None
    # Readies taken from the core whose writes have not reached the disk yet, oldest first.
    pending: deque[Ready] = field(default_factory=deque)
    # A slow disk: no write completes before this tick (see Cluster.stall_disk).
    disk_stalled_until: int = 0


@dataclass(slots=True)
class InFlight:
    due: int
    order: int
    msg: Message


class Cluster:
    """N nodes over an in-memory network the caller drives (tests and the simulation)."""

    def __init__(
        self,
        ids: Iterable[NodeId],
        rng_factory: RngFactory,
        *,
        config: RaftConfig | None = None,
        learners: Iterable[NodeId] = (),
        seed: int = 0,
        storages: Mapping[NodeId, MemoryStorage] | None = None,
    ) -> None:
        self.ids = sorted(ids)
        membership = Membership(voters=frozenset(self.ids), learners=frozenset(learners))
        base = config if config is not None else RaftConfig(id="", bootstrap=membership)
        self._base_config = replace(base, bootstrap=membership)
        self._rng_factory = rng_factory
        self._seed = seed
        self._restarts = 0
        self._joiners: set[NodeId] = set()
        self.checker = SafetyChecker()
        self.nodes: dict[NodeId, SimNode] = {}
        self.now = 0
        self.in_flight: list[InFlight] = []
        self._order = 0
        # Directed links that drop everything: (sender, receiver).
        self.blocked: set[tuple[NodeId, NodeId]] = set()
        # Hook deciding, per sent message, its delays (empty list: dropped).
        self.delays: Callable[[Message], list[int]] = lambda _msg: [0]
        self.trace: deque[str] = deque(maxlen=80)
        self.lease_probe = False
        # Whether the leader hears report_snapshot(ok=True) once an InstallSnapshot arrived.
        self.report_snapshots = True
        # Called when a node has just become leader, before its first messages leave.
        self.on_new_leader: Callable[[RaftNode], None] = lambda _node: None
        self.tracing = False
        # The driver model: how many Readies a node may have taken whose writes are not done
        # (graft.node keeps up to two), and the source deciding when a write completes. With
        # one, every Ready is carried out at once, as a synchronous driver would.
        self.pipeline = 1
        self.disk: Rng | None = None
        # The rules deciding which messages leave before their writes (graft.raft.ready's, as
        # graft.node uses them); a test plants a broken rule here to see the checker catch it.
        self.leaves_before_write: Callable[[Message, int], bool] = leaves_before_write
        self.leaves_between_readies: Callable[[Message, int], bool] = leaves_between_readies
        # Leadership transfers asked for: target -> (the old leader's term, tick asked).
        self._transfers: dict[NodeId, tuple[int, int]] = {}
        self.transfers_asked = 0
        self.transfers_done = 0
        # Per-node tick clocks (drift, lateness, stalls); None: every node ticks once a step.
        self.clocks: ClockModel | None = None
        for nid in sorted({*self.ids, *learners}):
            storage = storages.get(nid) if storages is not None else None
            if storage is None:
                storage = MemoryStorage()
            else:
                snap = storage.snapshot_meta()
                if snap.index > 0:
                    self.checker.given_snapshot(nid, snap)
                if storage.last_index() > snap.index:
                    # A log given by a test: the checker must know it to compare later appends.
                    self.checker.persisted(
                        nid, tuple(storage.entries(snap.index + 1, storage.last_index() + 1))
                    )
            self.nodes[nid] = SimNode(id=nid, storage=storage, node=None)
            self.start(nid)

    # -- node life --------------------------------------------------------------------------

    def config_for(self, nid: NodeId) -> RaftConfig:
        if nid in self._joiners:
            # A node joining a running cluster knows no membership until the leader's log
            # reaches it, so it cannot campaign.
            return replace(self._base_config, id=nid, bootstrap=Membership())
        return replace(self._base_config, id=nid)

    def add_node(self, nid: NodeId) -> RaftNode:
        """Start a brand-new, empty node (to be added with propose_membership)."""
        self._joiners.add(nid)
        self.nodes[nid] = SimNode(id=nid, storage=MemoryStorage(), node=None)
        return self.start(nid)

    def start(self, nid: NodeId) -> RaftNode:
        sim = self.nodes[nid]
        if sim.pending:  # restarted while writes were queued: they are a crash's to settle
            self.crash(nid)
        self._restarts += 1
        rng = self._rng_factory(self._seed * 1_000_003 + self._restarts)
        sim.node = RaftNode(self.config_for(nid), sim.storage, rng)
        sim.applied = []
        # The state machine comes back from the snapshot file on disk, if any.
        snap = sim.storage.snapshot_meta()
        sim.state_index = snap.index
        sim.state = self.checker.snapshots[snap.index][1] if snap.index > 0 else 0
        sim.state_membership = snap.membership if snap.index > 0 else None
        self.checker.restarted(nid, snap.index)
        self.note(f"start {nid}")
        return sim.node

    def crash(self, nid: NodeId) -> None:
        sim = self.nodes[nid]
        # Writes queued behind an fsync reach the disk in order: a crash keeps some prefix of
        # them (never past a snapshot install, which the driver does alone) and sends nothing.
        keep = self.disk.randrange(0, len(sim.pending) + 1) if self.disk and sim.pending else 0
        for ready in list(sim.pending)[:keep]:
            if ready.snapshot is not None:
                break
            self._write(sim, ready)
        sim.pending.clear()
        sim.node = None
        if self.clocks is not None:
            self.clocks.crashed(nid)
        self.note(f"crash {nid}" + (f" ({keep} queued writes reached the disk)" if keep else ""))
        # A dead process's sockets close, and the peers' transports say so at once.
        for other in self.alive():
            other.report_unreachable(nid)

    def node(self, nid: NodeId) -> RaftNode:
        node = self.nodes[nid].node
        if node is None:
            raise RaftError(f"{nid} is crashed; start it first")
        return node

    def alive(self) -> list[RaftNode]:
        return [s.node for s in self.nodes.values() if s.node is not None]

    def leaders(self) -> list[RaftNode]:
        return [n for n in self.alive() if n.role is Role.LEADER]

    def leader(self) -> RaftNode | None:
        """The leader of the highest term among live nodes, if any."""
        leaders = self.leaders()
        return max(leaders, key=lambda n: n.term) if leaders else None

    def term_of(self, nid: NodeId) -> int:
        """A node's current term: in memory if it runs, else on its disk (0: never started)."""
        sim = self.nodes.get(nid)
        if sim is None:
            return 0
        if sim.node is not None:
            return sim.node.term
        return sim.storage.hard_state().term

    def check_leaders(self) -> None:
        """The two-commit-quorums check over every live leader (SafetyChecker.stale_leaders)."""
        top = self.checker.max_leader_term
        stale = [
            (n.id, n.term, n.membership.voters)
            for s in self.nodes.values()
            if (n := s.node) is not None and n.role is Role.LEADER and n.term < top
        ]
        if stale:
            self.checker.stale_leaders(stale, self.term_of)

    def transfer(self, nid: NodeId, target: NodeId) -> bool:
        """Ask leader ``nid`` to hand leadership to ``target``; False if it refused."""
        node = self.node(nid)
        try:
            node.transfer_leadership(target)
        except RaftError:
            return False
        self.transfers_asked += 1
        self._transfers[target] = (node.term, self.now)
        self.note(f"{nid} transfers leadership to {target}")
        self.process(nid)
        return True

    def note(self, text: str) -> None:
        if self.tracing:
            print(f"[{self.now:5}] {text}")
        self.trace.append(f"[{self.now:5}] {text}")

    # -- the driver -------------------------------------------------------------------------

    def process(self, nid: NodeId) -> None:
        """Carry out every Ready the node has, as a driver would, checking as we go.

        With ``pipeline`` > 1 a node takes the next Ready while earlier ones still wait for
        their writes, as graft.node does: a leader's appends and heartbeats, heartbeat answers
        and read-index traffic of its durable term leave at once; everything else of a Ready
        (append answers, votes, applying, reads, advance) waits until its writes and those of
        every Ready before it are done. While the node may take no Ready, the core's messages
        that wait on no write still leave (``take_messages``), as graft.node sends them.
        """
        sim = self.nodes[nid]
        node = sim.node
        if node is None or (self.clocks is not None and self.clocks.stalled(nid, self.now)):
            return
        while True:
            progressed = False
            while (
                node.has_ready()
                and len(sim.pending) < self.pipeline
                and not (sim.pending and sim.pending[-1].snapshot is not None)
            ):
                ready = node.ready()
                if self.pipeline > 1:
                    ready = self._send_early(sim, ready)
                sim.pending.append(ready)
                progressed = True
            if not progressed and sim.pending and self.pipeline > 1:
                self._send_between_readies(sim, node)
            if (
                sim.pending
                and sim.disk_stalled_until <= self.now
                and (self.disk is None or self.disk.random() < 0.3)
            ):
                self._complete(sim, node, sim.pending.popleft())
                progressed = True
            if not progressed:
                return

    def _send_between_readies(self, sim: SimNode, node: RaftNode) -> None:
        """The node may take no Ready (its pipeline is full): send what waits on no write."""
        durable_term = sim.storage.hard_state().term
        accept = self.leaves_between_readies
        for msg in node.take_messages(lambda m: accept(m, durable_term)):
            self.send(msg)

    def stall_disk(self, nid: NodeId, ticks: int) -> None:
        """A slow disk (an fsync that takes long): none of the node's writes completes for
        ``ticks`` ticks; queued ones then complete at the disk's usual random moments."""
        sim = self.nodes[nid]
        sim.disk_stalled_until = max(sim.disk_stalled_until, self.now + ticks)
        self.note(f"{nid}'s disk stalls for {ticks} ticks")

    def settle_disks(self) -> None:
        """Writes held by stalled disks complete: a node with queued writes finishes them."""
        for sim in self.nodes.values():
            if sim.disk_stalled_until > self.now:
                sim.disk_stalled_until = self.now
            self.process(sim.id)

    def _send_early(self, sim: SimNode, ready: Ready) -> Ready:
        """Send what does not wait for the Ready's writes; the rest stays in the Ready."""
        durable_term = sim.storage.hard_state().term
        later = []
        for msg in ready.messages:
            if self.leaves_before_write(msg, durable_term):
                self.send(msg)
            else:
                later.append(msg)
        return replace(ready, messages=tuple(later))

    def _write(self, sim: SimNode, ready: Ready) -> None:
        """A Ready's writes reach the disk (storage)."""
        nid = sim.id
        if ready.snapshot is not None:
            # As the driver does: adopt the received file, then the Ready's other writes.
            meta = ready.snapshot
            sim.state = self.checker.snapshot_installed(nid, meta)
            sim.state_index = meta.index
            sim.state_membership = meta.membership
            sim.storage.apply_snapshot(meta)
            self.note(f"{nid} installed snapshot {meta.index} term {meta.term}")
        if ready.hard_state is not None:
            sim.storage.set_hard_state(ready.hard_state)
        if ready.entries:
            sim.storage.append(ready.entries)
            self.checker.persisted(nid, ready.entries)

    def _complete(self, sim: SimNode, node: RaftNode, ready: Ready) -> None:
        """The oldest pending Ready's writes are done: carry out the rest of it."""
        nid = sim.id
        checker = self.checker
        self._write(sim, ready)
        if ready.soft_state is not None and ready.soft_state.role is Role.LEADER:
            asked = self._transfers.pop(nid, None)
            if (
                asked is not None
                and node.term > asked[0]
                and self.now - asked[1] <= 2 * self._base_config.election_ticks
            ):
                self.transfers_done += 1
            self.on_new_leader(node)
        for msg in ready.messages:
            self.send(msg)
        if ready.committed_entries:
            sim.applied.extend(ready.committed_entries)
            checker.applied(nid, node.term, ready.committed_entries, self.leaders())
            for entry in ready.committed_entries:
                sim.state = hash((sim.state, entry.index, entry.term, entry.kind, entry.data))
                if entry.kind is EntryKind.MEMBERSHIP:
                    sim.state_membership = decode_membership(entry.data)
            sim.state_index = ready.committed_entries[-1].index
        for rs in ready.read_states:
            sim.read_answers[rs.context] = rs.index
            checker.read_answered(nid, rs.context, rs.index, "ReadIndex")
        if ready.soft_state is not None:
            s = ready.soft_state
            self.note(f"{nid} is {s.role.value} term {s.term} leader {s.leader}")
        node.advance(ready)
        checker.observe(node)
        self.check_leaders()

    def process_all(self) -> None:
        for nid in self.nodes:
            self.process(nid)

    def send(self, msg: Message) -> None:
        for delay in self.delays(msg):
            self._order += 1
            self.in_flight.append(InFlight(due=self.now + delay, order=self._order, msg=msg))

    def compact(self, nid: NodeId) -> bool:
        """Snapshot ``nid``'s state machine at its applied index and compact its log there."""
        sim = self.nodes[nid]
        index = sim.state_index
        storage = sim.storage
        if sim.node is None or index <= storage.snapshot_meta().index:
            return False
        if index > storage.last_index():
            return False
        term = storage.term(index)
        self.checker.snapshot_taken(nid, index, term, sim.state)
        membership = sim.state_membership or self._base_config.bootstrap
        storage.compact(index, membership)
        self.note(f"{nid} compacted to {index}")
        return True

    def deliver(self, item: InFlight) -> None:
        msg = item.msg
        sim = self.nodes.get(msg.to)
        if sim is None or sim.node is None or (msg.sender, msg.to) in self.blocked:
            return
        if self.clocks is not None and not self.clocks.before_message(self, item):
            return  # held by a stalled node until its stall ends
        if self.tracing:
            self.note(f"deliver {msg}")
        sim.node.step(msg)
        self.process(msg.to)
        if isinstance(msg, InstallSnapshot) and self.report_snapshots:
            # The whole file arrived: the leader's driver reports success.
            sender = self.nodes[msg.sender].node
            if sender is not None:
                sender.report_snapshot(msg.to, True)
                self.process(msg.sender)
        if self.lease_probe:
            # A lease read on every leader after every delivery: a deposed leader that does
            # not know it yet is where a broken lease would show.
            for other in self.nodes.values():
                if other.node is not None and other.node.role is Role.LEADER:
                    self.lease_read(other.id, note=False)

    def take_due(self) -> list[InFlight]:
        due = [m for m in self.in_flight if m.due <= self.now]
        if due:
            self.in_flight = [m for m in self.in_flight if m.due > self.now]
        return due

    def deliver_due(self, order: Callable[[list[InFlight]], None] | None = None) -> int:
        """Deliver everything due now, including what that triggers with no delay."""
        delivered = 0
        for _ in range(1000):
            due = self.take_due()
            if not due:
                break
            if order is not None:
                order(due)
            for item in due:
                self.deliver(item)
                delivered += 1
        return delivered

    def stabilize(self) -> None:
        """Deliver messages (ignoring their delays) until the network is quiet."""
        self.process_all()
        for _ in range(1000):
            if not self.in_flight:
                return
            pending = sorted(self.in_flight, key=lambda m: m.order)
            self.in_flight = []
            for item in pending:
                self.deliver(item)

    def tick(self, nids: Iterable[NodeId] | None = None) -> None:
        self.now += 1
        for nid in self.nodes if nids is None else nids:
            node = self.nodes[nid].node
            if node is not None:
                if self.clocks is None:
                    node.tick()
                else:
                    self.clocks.step(self, nid)
                self.process(nid)

    def run(self, ticks: int, nids: Iterable[NodeId] | None = None) -> None:
        """Tick and deliver (in order, no delays beyond the hook's) ``ticks`` times."""
        chosen = list(nids) if nids is not None else None
        for _ in range(ticks):
            self.tick(chosen)
            self.deliver_due()

    def elect(self, nid: NodeId) -> RaftNode:
        """Make ``nid`` the leader now, as a leadership transfer would (TimeoutNow)."""
        node = self.node(nid)
        if node.role is not Role.LEADER:
            node.step(TimeoutNow(term=node.term, sender=nid, to=nid))
            self.process(nid)
        self.stabilize()
        if node.role is not Role.LEADER:
            raise RaftError(f"{nid} could not win an election; check its log is up to date")
        return node

    def isolate(self, nid: NodeId) -> None:
        for other in self.nodes:
            if other != nid:
                self.blocked.add((nid, other))
                self.blocked.add((other, nid))

    def partition(self, *groups: Iterable[NodeId]) -> None:
        sets = [set(g) for g in groups]
        self.blocked = set()
        for a in self.nodes:
            for b in self.nodes:
                if a != b and not any(a in g and b in g for g in sets):
                    self.blocked.add((a, b))

    def heal(self) -> None:
        self.blocked = set()
        self.note("heal")

    def propose(self, nid: NodeId, datas: list[bytes]) -> list[int]:
        if self.clocks is not None and self.clocks.stalled(nid, self.now):
            raise ProposalDropped(f"{nid} is stalled")
        indexes = self.node(nid).propose_batch(datas)
        self.note(f"{nid} proposed {len(datas)} at {indexes[0]}")
        self.process(nid)
        return indexes

    def propose_marker(self, nid: NodeId, data: bytes) -> int:
        index = self.node(nid).propose_marker(data)
        self.note(f"{nid} proposed a marker at {index}")
        self.process(nid)
        return index

    def read(self, nid: NodeId, context: bytes, *, process: bool = True) -> None:
        """A ReadIndex read, checked for linearizability when answered. ``process=False``
        leaves the Ready for a later read of the same turn (a follower batches them)."""
        if self.clocks is not None and self.clocks.stalled(nid, self.now):
            return  # a frozen process takes no requests
        self.checker.read_issued_now(context)
        self.note(f"{nid} read_index {context!r}")
        self.node(nid).read_index(context)
        if process:
            self.process(nid)

    def lease_read(self, nid: NodeId, *, note: bool = True) -> int | None:
        node = self.node(nid)
        if self.clocks is not None and self.clocks.stalled(nid, self.now):
            return None  # a frozen process serves no reads
        index = node.lease_read_index()
        if index is not None:
            context = b"lease"
            self.checker.read_issued_now(context)
            self.checker.read_answered(nid, context, index, "lease")
            if note:
                self.note(f"{nid} lease read at {index}")
        return index


# -- clocks: drift, lateness, stalls ------------------------------------------------------------


class ClockModel:
    """Each node's tick clock, as the driver (graft.node) makes it from its monotonic clock.

    A simulation step is one tick period of real time. A node's clock runs at ``rate`` ticks
    per step, within the configured drift bound: rates lie in [1 - clock_drift, 1], so one
    node's tick period is at most 1 / (1 - clock_drift) times another's (the bound the lease
    is derived for, graft.raft.config). Ticks due are run each step, except that a busy
    driver may run them up to LATE_TICKS late (the lateness the driver tolerates while it
    still serves lease reads); before a message is handled the ticks due are run, as the
    driver's receive() does. A stalled node (a paused process, a long GC) runs no ticks,
    handles no messages and no requests for a while; then its ticks catch up in a burst and
    the messages that waited are handled in order.

    ``wall_step`` plants the wall-clock driver's bug for the checker to catch: with that
    probability per step a node's wall clock steps, and its ticks follow it as a driver that
    counted wall-clock intervals did: a step back stops them for a while (the node still
    handles messages and reads; the missed ticks never come), a step forward runs an election
    timeout of ticks at once that no time backs.
    """

    def __init__(
        self,
        rng: Rng,
        rates: Mapping[NodeId, float],
        *,
        late: float = 0.0,
        stall: float = 0.0,
        max_stall: int = 20,
        wall_step: float = 0.0,
        step_ticks: int = 10,
    ) -> None:
        self.rng = rng
        self.rates = dict(rates)
        self.late = late
        self.stall = stall
        self.max_stall = max_stall
        self.wall_step = wall_step
        self.step_ticks = step_ticks
        self.frozen_until: dict[NodeId, int] = {}  # planted: a wall clock stepped back
        self.elapsed: dict[NodeId, float] = {}  # ticks' worth of time passed, per node
        self.done: dict[NodeId, int] = {}  # ticks run
        self.stalled_until: dict[NodeId, int] = {}
        self.held: dict[NodeId, list[InFlight]] = {}
        self.stalls = 0
        self.wall_steps = 0

    def stalled(self, nid: NodeId, now: int) -> bool:
        return self.stalled_until.get(nid, -1) > now

    def crashed(self, nid: NodeId) -> None:
        self.stalled_until.pop(nid, None)
        self.held.pop(nid, None)

    def _owed(self, nid: NodeId, now: int) -> int:
        owed = int(self.elapsed.get(nid, 0.0) + 1e-9) - self.done.get(nid, 0)
        if self.frozen_until.get(nid, -1) > now:
            self.done[nid] = self.done.get(nid, 0) + owed  # stepped back: never to come
            return 0
        return owed

    def _run(self, cluster: Cluster, nid: NodeId, count: int) -> None:
        node = cluster.nodes[nid].node
        if node is None or count <= 0:
            return
        self.done[nid] = self.done.get(nid, 0) + count
        for _ in range(count):
            node.tick()

    def step(self, cluster: Cluster, nid: NodeId) -> None:
        """One step of real time for ``nid``: run the ticks its clock says are due."""
        now = cluster.now
        self.elapsed[nid] = self.elapsed.get(nid, 0.0) + self.rates.get(nid, 1.0)
        if self.stalled(nid, now):
            return
        if nid in self.stalled_until:
            self._wake(cluster, nid)
            return
        if self.stall and self.rng.random() < self.stall:
            self.stalled_until[nid] = now + self.rng.randrange(1, self.max_stall + 1)
            self.stalls += 1
            cluster.note(f"{nid} stalls until {self.stalled_until[nid]}")
            return
        if self.wall_step:
            node = cluster.nodes[nid].node
            # Most often the leader's: a leader whose ticks stop is where the lease breaks.
            leading = node is not None and node.role is Role.LEADER
            if self.rng.random() < self.wall_step * (5 if leading else 1):
                self._step_wall_clock(cluster, nid)
        owed = self._owed(nid, cluster.now)
        if self.late and self.rng.random() < self.late:
            owed = max(0, owed - self.rng.randrange(0, LATE_TICKS + 1))
            # The driver refuses the lease once a tick is more than LATE_TICKS late: run the
            # rest, so no more than LATE_TICKS ever wait.
            owed = max(owed, self._owed(nid, cluster.now) - LATE_TICKS)
        self._run(cluster, nid, owed)

    def _step_wall_clock(self, cluster: Cluster, nid: NodeId) -> None:
        """Planted bug: ticks that follow a stepped wall clock."""
        self.wall_steps += 1
        if self.rng.random() < 0.5:
            until = cluster.now + self.rng.randrange(self.step_ticks, 3 * self.step_ticks + 1)
            self.frozen_until[nid] = until
            cluster.note(f"{nid}'s wall clock steps back: no ticks until {until} (planted bug)")
            return
        cluster.note(f"{nid}'s wall clock steps forward: {self.step_ticks} ticks (planted bug)")
        self._run(cluster, nid, self.step_ticks)
        self.done[nid] -= self.step_ticks  # not due: the clock stays where it was

    def _wake(self, cluster: Cluster, nid: NodeId) -> None:
        """The stall ends: the ticks that came due catch up first, then the waiting messages."""
        del self.stalled_until[nid]
        cluster.note(f"{nid} wakes from its stall")
        self._run(cluster, nid, self._owed(nid, cluster.now))
        cluster.process(nid)
        for item in self.held.pop(nid, []):
            cluster.deliver(item)

    def before_message(self, cluster: Cluster, item: InFlight) -> bool:
        """Whether the message is handled now (ticks due run first); else it is held."""
        nid = item.msg.to
        if self.stalled(nid, cluster.now):
            self.held.setdefault(nid, []).append(item)
            return False
        if nid in self.stalled_until:
            self._wake(cluster, nid)  # its stall ended this step: what waited goes first
        self._run(cluster, nid, self._owed(nid, cluster.now))
        return True


def clock_model_for(rng: Rng, ids: list[NodeId], plant: str) -> ClockModel:
    """The schedule's clocks, drifting within the default bound (with a planted bug)."""
    model = draw_clock_model(rng, ids, RaftConfig(id="", bootstrap=Membership()).clock_drift)
    if plant == "wall_clock":
        model.wall_step = 0.03
    elif plant:
        raise ValueError(f"unknown planted bug {plant!r}; expected wall_clock")
    return model


def draw_clock_model(rng: Rng, ids: list[NodeId], clock_drift: float) -> ClockModel:
    """Most schedules give the nodes clocks at the two ends of the drift bound or between,
    ticks that run late, and occasional stalls of up to two election timeouts."""
    rates: dict[NodeId, float] = {}
    for nid in ids:
        pick = rng.random()
        if pick < 0.35:
            rates[nid] = 1.0 - clock_drift  # the slowest clock the bound allows
        elif pick < 0.7:
            rates[nid] = 1.0
        else:
            rates[nid] = 1.0 - clock_drift * rng.random()
    return ClockModel(
        rng,
        rates,
        late=0.3 * rng.random() if rng.random() < 0.7 else 0.0,
        stall=0.01 * rng.random() if rng.random() < 0.5 else 0.0,
        max_stall=rng.randrange(2, 21),
    )


# -- random schedules -------------------------------------------------------------------------


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
    ):
        self.cluster = cluster
        self.ids = ids  # the schedule's node list: joiners are appended, so faults reach them
        self.spares = spares
        self.rng = rng
        self.cut_rng = cut_rng
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
        self.cluster.note(
            f"{leader.id} proposes {why}: voters {sorted(new.voters)} learners "
            f"{sorted(new.learners)}"
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
                self._propose(
                    leader, Membership(voters=m.voters - {old}, learners=m.learners), "removal"
                )
            else:
                target = self._most_caught_up(leader)
                if target is not None:
                    self.cluster.transfer(leader.id, target)  # the handover timed out: again
            return
        if m.learners:
            learner = sorted(m.learners)[rng.randrange(0, len(m.learners))]
            pr = leader.status().progress.get(learner)
            if pr is not None and pr.match >= leader.log.committed:
                new = Membership(voters=m.voters | {learner}, learners=m.learners - {learner})
                self._propose(leader, new, f"promotion of {learner}")
            elif rng.random() < 0.05:
                new = Membership(voters=m.voters, learners=m.learners - {learner})
                self._propose(leader, new, f"dropping learner {learner}")
            return
        cut = self.cut_rng
        if cut is not None and len(m.voters) == 4 and cut.random() < 0.7:
            new = Membership(voters=m.voters - {leader.id}, learners=m.learners)
            if self._propose(leader, new, f"removal of itself ({leader.id}), then a cut"):
                self._cut_off(leader.id, sorted(new.voters))
            return
        choice = rng.random()
        outside = [n for n in self.ids if n not in m.members] + self.spares[:1]
        if choice < 0.4 and len(m.voters) < 5 and outside:
            joiner = outside[rng.randrange(0, len(outside))]
            new = Membership(voters=m.voters, learners=m.learners | {joiner})
            if joiner not in self.cluster.nodes:
                self.cluster.add_node(joiner)
                self.spares.remove(joiner)
                self.ids.append(joiner)
            self._propose(leader, new, f"learner {joiner}")
        elif len(m.voters) < 3:
            return
        elif choice < 0.7:
            others = sorted(m.voters - {leader.id})
            victim = others[rng.randrange(0, len(others))]
            new = Membership(voters=m.voters - {victim}, learners=m.learners)
            self._propose(leader, new, f"removal of {victim}")
        elif choice < 0.85:
            target = self._most_caught_up(leader)
            if target is not None and self.cluster.transfer(leader.id, target):
                self.retiring = leader.id
                self.cluster.note(f"replacing leader {leader.id}: hand over to {target} first")
        else:
            new = Membership(voters=m.voters - {leader.id}, learners=m.learners)
            self._propose(leader, new, f"removal of itself ({leader.id})")

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


def main() -> None:
    """``python -m graft.raft.simulation`` is ``python -m graft.simulate``."""
    from graft.simulate import main as cli_main

    raise SystemExit(cli_main())


if __name__ == "__main__":
    main()
