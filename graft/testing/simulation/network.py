"""The simulated network: messages on their way, and the hostility a schedule puts on them.

``InFlight`` is a sent message and the step it is due (the cluster delivers it then, unless
its link is cut or its receiver is down). ``HostileNetwork`` is what a seeded schedule does to
the network while it is hostile, drawing from the schedule's stream: every message is dropped,
delayed or duplicated (``fate``, the cluster's ``delays`` hook); what falls due in one step is
delivered in random order (``shuffle``); each tick may cut links (isolate a node, most often
the leader; split the cluster in two; cut one-way links) or heal them all (``step``); and a
newly elected leader may be isolated at once (``on_new_leader``), stranding its entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from graft.raft.messages import InstallSnapshot, Message
from graft.raft.node import RaftNode
from graft.raft.rng import Rng
from graft.raft.types import NodeId

if TYPE_CHECKING:
    from graft.testing.simulation.cluster import Cluster
    from graft.testing.simulation.schedule import SimParams


@dataclass(slots=True)
class InFlight:
    due: int
    order: int
    msg: Message


class HostileNetwork:
    """Drops, delays, duplicates, reordering and cut links, while ``hostile`` is set.

    ``ids`` is the schedule's node list, shared with the other parts (joiners are appended),
    so faults reach nodes added later. ``snap_rng`` decides whether a lost InstallSnapshot is
    reported to its sender (the snapshot stream, as compaction)."""

    def __init__(
        self, cluster: Cluster, ids: list[NodeId], params: SimParams, rng: Rng, snap_rng: Rng
    ) -> None:
        self.cluster = cluster
        self.ids = ids
        self.p = params
        self.rng = rng
        self.snap_rng = snap_rng
        self.hostile = True
        cluster.delays = self.fate
        cluster.on_new_leader = self.on_new_leader

    def fate(self, msg: Message) -> list[int]:
        """The delays of the copies of ``msg`` that arrive (none: it is lost)."""
        if not self.hostile:
            return [0]
        p, rng = self.p, self.rng
        if rng.random() < p.drop:
            if isinstance(msg, InstallSnapshot) and self.snap_rng.random() < 0.5:
                # The leader's driver noticed the transfer failed (else its timeout retries).
                self.cluster.node(msg.sender).report_snapshot(msg.to, False)
            return []
        out = [rng.randrange(1, p.max_delay + 1) if rng.random() < p.delay else 0]
        if rng.random() < p.duplicate:
            out.append(rng.randrange(0, p.max_delay + 1))
        return out

    def shuffle(self, items: list[InFlight]) -> None:
        """Messages due in the same step arrive in any order."""
        rng = self.rng
        for k in range(len(items) - 1, 0, -1):
            j = rng.randrange(0, k + 1)
            items[k], items[j] = items[j], items[k]

    def on_new_leader(self, node: RaftNode) -> None:
        if self.hostile and self.rng.random() < self.p.strand_new_leader:
            self.cluster.isolate(node.id)
            self.cluster.note(f"isolate new leader {node.id}")

    def step(self) -> None:
        """One tick: maybe cut links, else maybe heal every cut."""
        cluster, ids, rng, p = self.cluster, self.ids, self.rng, self.p
        if rng.random() < p.partition:
            if rng.random() < 0.5:
                # Isolating the leader strands its newest entries: old-term entries for the
                # next leaders to deal with (paper Figure 8).
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
