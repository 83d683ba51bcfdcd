"""Failover: SIGKILL the leader under load; time until the first write that succeeds after it.

Load: wrk at c=16 writes through one surviving node (a follower, which forwards to whoever
leads). Probes: several threads send one put at a time through both survivors, each with a
short client timeout, so a request stuck on the dead leader does not blind the measurement.
Unavailability = (completion of the first probe write *sent after* the kill that succeeded)
- (the kill). The killed node is restarted and the cluster settles before the next trial.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.suite.loadgen import Target, collect, start_load, write_bodies
from benchmarks.suite.system import ReplicatedSystem

PROBE_THREADS = 8
PROBE_TIMEOUT_S = 1.0
GIVE_UP_S = 15.0


@dataclass(frozen=True, slots=True, kw_only=True)
class FailoverTrial:
    killed: str
    unavailable_ms: float | None  # None: no write succeeded within GIVE_UP_S
    new_leader: str | None
    load_ok_per_s: float
    # The killed node was restarted and every node agreed on a leader again in time; when
    # not, the trial's figures stand but the cluster is in no state for another trial.
    settled: bool = True


def _probe(
    system: ReplicatedSystem,
    nodes: list[str],
    kill_at: list[float],
    first_ok: list[float],
    stop: threading.Event,
    sequence: itertools.count[int],
    offset: int,
) -> None:
    turn = offset
    while not stop.is_set():
        node = nodes[turn % len(nodes)]
        turn += 1
        started = time.monotonic()
        ok = system.probe_write(node, next(sequence), PROBE_TIMEOUT_S)
        finished = time.monotonic()
        if ok and kill_at and started >= kill_at[0]:
            first_ok.append(finished)
            return
        if not ok:
            time.sleep(0.005)


def run_trial(
    system: ReplicatedSystem, workdir: Path, *, load_seconds: float = 6.0
) -> FailoverTrial:
    leader = system.leader()
    survivors = [n for n in system.node_ids() if n != leader]
    shape = system.put_shape()
    bodies = write_bodies(shape.bodies, workdir)
    load = start_load(
        [Target(url=system.base_url(survivors[0]) + shape.path, connections=16)],
        seconds=load_seconds,
        method=shape.method,
        bodies_file=bodies,
    )
    kill_at: list[float] = []
    first_ok: list[float] = []
    stop = threading.Event()
    sequence = itertools.count()
    threads = [
        threading.Thread(
            target=_probe,
            args=(system, survivors, kill_at, first_ok, stop, sequence, i),
            daemon=True,
        )
        for i in range(PROBE_THREADS)
    ]
    for t in threads:
        t.start()
    time.sleep(1.5)  # the load and the probes are running steadily
    kill_at.append(time.monotonic())
    system.kill(leader)
    deadline = kill_at[0] + GIVE_UP_S
    while not first_ok and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    for t in threads:
        t.join(PROBE_TIMEOUT_S + 1)
    result = collect(load)
    bodies.unlink(missing_ok=True)
    unavailable = (min(first_ok) - kill_at[0]) * 1000 if first_ok else None
    try:
        new_leader: str | None = system.leader(timeout=10)
    except TimeoutError:
        new_leader = None
    system.restart(leader)
    try:
        system.leader(timeout=30)  # every node, the restarted one included, agrees again
        settled = True
    except TimeoutError:
        settled = False
    return FailoverTrial(
        killed=leader,
        unavailable_ms=None if unavailable is None else round(unavailable, 1),
        new_leader=new_leader,
        load_ok_per_s=round(result.ok_per_second, 1),
        settled=settled,
    )
