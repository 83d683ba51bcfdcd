"""The simulation's clocks: per-node tick rates within the drift bound, late ticks, stalls."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from graft.raft.config import LATE_TICKS, RaftConfig
from graft.raft.ready import Role
from graft.raft.rng import Rng
from graft.raft.types import Membership, NodeId

if TYPE_CHECKING:
    from graft.testing.simulation.cluster import Cluster
    from graft.testing.simulation.network import InFlight


class ClockModel:
    """Each node's tick clock, as the driver (graft.driver) makes it from its monotonic clock.

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
