"""Nemeses: faults injected at random (from the run's seed), each healed after a few seconds.

The scheduler cycles through a shuffled deck of every kind, so a run of a dozen faults sees
each kind at least once; the order, the victims and the durations all come from the seed (the
cluster's own timing does not, so a seed fixes the schedule, not the interleaving).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from graft.testing.faults import disk
from graft.testing.faults.cluster import FaultCluster
from graft.testing.faults.history import NemesisEvent, StatusSample
from graft.testing.faults.netns import NetworkFaults

DISK_KINDS = (disk.KIND,)

KINDS: tuple[str, ...] = (
    "partition-halves",
    "isolate-leader",
    "bridge",
    "kill",
    "kill-leader",
    "pause",
    "pause-leader",
    "slow-network",
    "packet-loss",
    "clock-step",
)
KINDS = (*KINDS, *DISK_KINDS)
# A comma-separated subset of KINDS to draw from instead of all (e.g. a teeth check).
KINDS_ENV = "GRAFT_FAULT_KINDS"


def deck_kinds() -> list[str]:
    """The kinds a deck holds: KINDS, or the subset named in $GRAFT_FAULT_KINDS."""
    chosen = [k.strip() for k in os.environ.get(KINDS_ENV, "").split(",") if k.strip()]
    unknown = [k for k in chosen if k not in KINDS]
    if unknown:
        raise ValueError(f"{KINDS_ENV}: unknown kinds {unknown}; expected some of {list(KINDS)}")
    return chosen or list(KINDS)


class StatusPoller:
    """Polls every node's /status about every 100 ms (one thread per node) and keeps samples."""

    def __init__(
        self, cluster: FaultCluster, clock: Callable[[], float], interval: float = 0.1
    ) -> None:
        self.cluster = cluster
        self.clock = clock
        self.interval = interval
        self.samples: list[StatusSample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._latest: dict[str, StatusSample] = {}

    def start(self) -> None:
        for node in self.cluster.node_ids:
            t = threading.Thread(target=self._poll, args=(node,), name=f"poll-{node}", daemon=True)
            self._threads.append(t)
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)

    def _poll(self, node: str) -> None:
        while not self._stop.is_set():
            st = self.cluster.status(node, timeout=0.3)
            now = self.clock()
            if st is None:
                sample = StatusSample(t=now, node=node, role="down")
            else:
                sample = StatusSample(
                    t=now,
                    node=node,
                    role=str(st.get("role")),
                    term=st.get("term"),
                    leader=st.get("leader"),
                    applied=st.get("applied"),
                )
            with self._lock:
                self.samples.append(sample)
                self._latest[node] = sample
            self._stop.wait(self.interval)

    def leader(self) -> str | None:
        """The node that most recently claimed leadership in the highest term, if recent."""
        now = self.clock()
        with self._lock:
            fresh = [s for s in self._latest.values() if s.role == "leader" and now - s.t < 1.0]
        if not fresh:
            return None
        return max(fresh, key=lambda s: (s.term or 0, s.t)).node


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleConfig:
    quiet: tuple[float, float] = (0.5, 2.0)  # seconds between faults
    hold: tuple[float, float] = (2.0, 5.0)  # how long a fault lasts
    pause: tuple[float, float] = (1.0, 3.0)  # SIGSTOP length; the election timeout is 0.35 s
    clock_step: float = 2.0  # seconds a clock-step nemesis moves one node's wall clock


class Nemesis:
    def __init__(
        self,
        cluster: FaultCluster,
        network: NetworkFaults,
        poller: StatusPoller,
        rng: random.Random,
        clock: Callable[[], float],
        config: ScheduleConfig | None = None,
    ) -> None:
        self.cluster = cluster
        self.network = network
        self.poller = poller
        self.rng = rng
        self.clock = clock
        self.config = config or ScheduleConfig()
        self.events: list[NemesisEvent] = []
        self._deck: list[str] = []

    def next_kind(self) -> str:
        if not self._deck:
            self._deck = deck_kinds()
            self.rng.shuffle(self._deck)
        return self._deck.pop()

    def run(self, duration: float, stop: threading.Event | None = None) -> None:
        """Inject faults one after another until `duration` seconds of the run clock pass."""
        end = self.clock() + duration
        stop = stop or threading.Event()
        while self.clock() < end and not stop.is_set():
            stop.wait(self.rng.uniform(*self.config.quiet))
            if self.clock() >= end:
                break
            kind = self.next_kind()
            hold_for = self.rng.uniform(
                *(self.config.pause if kind.startswith("pause") else self.config.hold)
            )
            start = self.clock()
            nodes, detail, heal = self.inject(kind)
            stop.wait(min(hold_for, max(0.0, end - self.clock()) + 0.5))
            heal()
            self.events.append(
                NemesisEvent(start=start, end=self.clock(), kind=kind, nodes=nodes, detail=detail)
            )

    def final_heal(self) -> None:
        start = self.clock()
        self.network.heal()
        self._heal_disks()
        for node in self.cluster.node_ids:
            self.cluster.resume(node)
            if not self.cluster.running(node):
                self.cluster.start(node)
        self.events.append(
            NemesisEvent(start=start, end=self.clock(), kind="final-heal", detail="all healed")
        )

    def _victim(self, leader: bool) -> str:
        if leader:
            found = self.poller.leader()
            if found is not None and self.cluster.running(found):
                return found
        return self.rng.choice(self.cluster.node_ids)

    def _inject_disk(self, kind: str) -> tuple[tuple[str, ...], str, Callable[[], None]]:
        """fsync-stall: every fsync of one node (the leader half the time) takes 0.2-1 s more
        until healed (graft.testing.faults.disk)."""
        leader = self.poller.leader()
        victim = self._victim(self.rng.random() < 0.5)
        seconds = round(self.rng.uniform(*disk.STALL_SECONDS), 3)
        self.cluster.stall_fsync(victim, seconds)
        role = "leader" if victim == leader else "follower"
        detail = f"+{seconds:.2f} s on every fsync of {victim} ({role})"
        return (victim,), detail, lambda: self.cluster.stall_fsync(victim, None)

    def _heal_disks(self) -> None:
        for node in self.cluster.node_ids:
            self.cluster.stall_fsync(node, None)

    def inject(self, kind: str) -> tuple[tuple[str, ...], str, Callable[[], None]]:
        """Start one fault: (nodes involved, description, the function that heals it)."""
        if kind in DISK_KINDS:
            return self._inject_disk(kind)
        nodes = list(self.cluster.node_ids)
        if kind == "partition-halves":
            self.rng.shuffle(nodes)
            minority, majority = nodes[: (len(nodes) - 1) // 2], nodes[(len(nodes) - 1) // 2 :]
            self.network.partition([minority, majority])
            return tuple(minority), f"{sorted(minority)} | {sorted(majority)}", self.network.heal
        if kind == "isolate-leader":
            leader = self._victim(True)
            rest = [n for n in nodes if n != leader]
            self.network.partition([[leader], rest])
            return (leader,), f"[{leader}] | {sorted(rest)}", self.network.heal
        if kind == "bridge":
            self.rng.shuffle(nodes)
            bridge, rest = nodes[0], nodes[1:]
            left, right = rest[: len(rest) // 2], rest[len(rest) // 2 :]
            self.network.cut(left, right)
            detail = f"{sorted(left)} <-> {bridge} <-> {sorted(right)}"
            return (bridge,), detail, self.network.heal
        if kind in ("kill", "kill-leader"):
            if kind == "kill":
                count = self.rng.randint(1, (len(nodes) - 1) // 2)
                victims = self.rng.sample(nodes, count)
            else:
                victims = [self._victim(True)]
            for v in victims:
                self.cluster.kill(v)

            def restart() -> None:
                for v in victims:
                    self.cluster.start(v)

            return tuple(victims), f"SIGKILL {sorted(victims)}, restart", restart
        if kind in ("pause", "pause-leader"):
            victim = self._victim(kind == "pause-leader")
            self.cluster.pause(victim)
            return (victim,), f"SIGSTOP {victim}, SIGCONT", lambda: self.cluster.resume(victim)
        if kind == "slow-network":
            detail = self.network.slow(delay_ms=50, jitter_ms=20)
            return (), detail, self.network.heal
        if kind == "packet-loss":
            p = self.rng.choice((0.05, 0.1, 0.2))
            self.network.loss(p)
            return (), f"drop {p:.0%} of node-to-node packets", self.network.heal
        if kind == "clock-step":
            return self._clock_step()
        raise ValueError(f"unknown nemesis {kind!r}; expected one of {', '.join(KINDS)}")

    def _clock_step(self) -> tuple[tuple[str, ...], str, Callable[[], None]]:
        """Step one node's wall clock (not its monotonic clock) by +/-2 s, as NTP does.

        Half the time the victim is the leader; a leader stepped back is also cut off from the
        others, whose wall clocks step forward as much (issue 15's scenario: a lease timed on
        the wall clock outlives the followers' stickiness, which ends early). The heal steps
        every clock back to true time (the opposite step)."""
        step = self.config.clock_step * self.rng.choice((-1.0, 1.0))
        on_leader = self.rng.random() < 0.5
        victim = self._victim(on_leader)
        self.cluster.set_wall_clock_offset(victim, step)
        detail = f"{victim}'s wall clock {step:+.0f} s"
        cut = on_leader and step < 0
        rest = [n for n in self.cluster.node_ids if n != victim]
        if cut:
            self.network.partition([[victim], rest])
            for node in rest:
                self.cluster.set_wall_clock_offset(node, -step)
            detail += f", [{victim}] | {sorted(rest)} with theirs {-step:+.0f} s"

        def heal() -> None:
            self.cluster.set_wall_clock_offset(victim, 0.0)
            if cut:
                for node in rest:
                    self.cluster.set_wall_clock_offset(node, 0.0)
                self.network.heal()

        return (victim,), detail, heal


def sleep_until(clock: Callable[[], float], t: float) -> None:
    while clock() < t:
        time.sleep(min(0.05, t - clock()))
