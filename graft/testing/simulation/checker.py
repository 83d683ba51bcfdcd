"""The simulation's safety checker: the Raft invariants, checked incrementally on every Ready.

``SafetyChecker`` checks Election Safety, Leader Append-Only, Log Matching (via a hash chain
over each durable log), Leader Completeness, State Machine Safety, that each read answered
through ReadIndex or the lease covers every write committed before the read was issued, and
that no leader is still able to commit once a leader of a later term has been elected
(``stale_leaders``). The cluster (graft.testing.simulation.cluster) feeds it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable

from graft.raft.log import RaftLog
from graft.raft.node import RaftNode
from graft.raft.ready import Role
from graft.raft.types import Entry, EntryKind, NodeId, SnapshotMeta


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
