"""A deterministic in-memory cluster: N RaftNodes, their disks and the network between them.

``Cluster`` runs N RaftNodes over MemoryStorage with a network the caller controls: the
driver loop persists each Ready into the node's storage (the "disk"), then queues its
messages, applies its committed entries and records its read states, as a real driver would.
A crash throws the RaftNode away and keeps only its storage. Every Ready goes through the
SafetyChecker (graft.testing.simulation.checker). Tests drive it by hand; the seeded
schedules (graft.testing.simulation.run) drive it at random. (About 500 lines: one class
whose node life, driver model and delivery share the same per-node state.)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from graft.raft.config import RaftConfig
from graft.raft.errors import ProposalDropped, RaftError
from graft.raft.memory import MemoryStorage
from graft.raft.messages import InstallSnapshot, Message, TimeoutNow
from graft.raft.node import RaftNode
from graft.raft.ready import Ready, Role, leaves_before_write, leaves_between_readies
from graft.raft.rng import Rng
from graft.raft.types import Entry, EntryKind, Membership, NodeId, decode_membership
from graft.testing.simulation.checker import SafetyChecker
from graft.testing.simulation.clocks import ClockModel
from graft.testing.simulation.network import InFlight
from graft.testing.simulation.sessions import SessionModel
from graft.testing.simulation.streams import RngFactory, stream


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
        # (graft.driver keeps up to two), and the source deciding when a write completes. With
        # one, every Ready is carried out at once, as a synchronous driver would.
        self.pipeline = 1
        self.disk: Rng | None = None
        # The rules deciding which messages leave before their writes (graft.raft.ready's, as
        # graft.driver uses them); a test plants a broken rule here to see the checker catch it.
        self.leaves_before_write: Callable[[Message, int], bool] = leaves_before_write
        self.leaves_between_readies: Callable[[Message, int], bool] = leaves_between_readies
        # Leadership transfers asked for: target -> (the old leader's term, tick asked).
        self._transfers: dict[NodeId, tuple[int, int]] = {}
        self.transfers_asked = 0
        self.transfers_done = 0
        # Per-node tick clocks (drift, lateness, stalls); None: every node ticks once a step.
        self.clocks: ClockModel | None = None
        # The replicas' client-session tables (graft.testing.simulation.sessions), if the
        # schedule has session clients.
        self.sessions: SessionModel | None = None
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
        rng = stream(self._rng_factory, self._seed, "node", self._restarts)
        sim.node = RaftNode(self.config_for(nid), sim.storage, rng)
        sim.applied = []
        # The state machine comes back from the snapshot file on disk, if any.
        snap = sim.storage.snapshot_meta()
        sim.state_index = snap.index
        sim.state = self.checker.snapshots[snap.index][1] if snap.index > 0 else 0
        sim.state_membership = snap.membership if snap.index > 0 else None
        self.checker.restarted(nid, snap.index)
        if self.sessions is not None:
            self.sessions.restored(nid, snap.index)
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
        their writes, as graft.driver does: a leader's appends and heartbeats, heartbeat answers
        and read-index traffic of its durable term leave at once; everything else of a Ready
        (append answers, votes, applying, reads, advance) waits until its writes and those of
        every Ready before it are done. While the node may take no Ready, the core's messages
        that wait on no write still leave (``take_messages``), as graft.driver sends them.
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
            if self.sessions is not None:
                self.sessions.restored(nid, meta.index)
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
            sessions = self.sessions
            for entry in ready.committed_entries:
                sim.state = hash((sim.state, entry.index, entry.term, entry.kind, entry.data))
                if entry.kind is EntryKind.MEMBERSHIP:
                    sim.state_membership = decode_membership(entry.data)
                elif sessions is not None:
                    sessions.apply(nid, entry)
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
        if self.sessions is not None:
            self.sessions.snapshot_taken(nid, index)
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
