"""One lock fault run (``--workload lock``), executed inside its network namespace.

Three processes each run examples/lock.py's Lock embedded (graft.testing.faults.lock_node) with
two lock clients; the guarded resource (lock_resource) is a thread of this driver. Order: start
the resource and the nodes, wait for a leader; inject the suite's faults (nemesis.py: kills,
partitions, pauses, clock steps, fsync stalls, slow and lossy links) for ``duration`` seconds;
heal; let the clients run on the healed cluster for a quiet period; read the lock's last token
at ``strong``; check that the replicas agree (GET /cluster/check); stop everything and judge the
history with lock_checker. Writes verdict.json, the clients' histories (lock/<node>.jsonl),
resource.jsonl, nemesis.jsonl and status.jsonl into the run directory.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from graft.testing.faults.checker import Anomaly
from graft.testing.faults.cluster import FaultCluster
from graft.testing.faults.disk import elections_during_stalls
from graft.testing.faults.history import write_jsonl
from graft.testing.faults.lock_checker import (
    LockRecord,
    check_final_token,
    check_lock_history,
)
from graft.testing.faults.lock_resource import GuardedResource
from graft.testing.faults.nemesis import Nemesis, StatusPoller
from graft.testing.faults.netns import HarnessError, NetworkFaults
from graft.testing.faults.run import longest_leaderless, replica_check, wait_for_leader

QUIET_SECONDS = 5.0
CLIENTS_PER_NODE = 2
# The lock's last token, read through the HTTP API as a replicated-object query.
HOLDER_QUERY = json.dumps({"args": [], "kwargs": {}, "method": "holder_now"}).encode()


class LockCluster(FaultCluster):
    """The suite's cluster, with examples/lock.py's Lock as every node's process."""

    def __init__(
        self, base: Path, size: int, *, resource: str, epoch: float, seed: int, clients: int
    ) -> None:
        super().__init__(base, size)
        self.resource = resource
        self.epoch = epoch
        self.seed = seed
        self.clients = clients
        (self.base / "lock").mkdir(exist_ok=True)

    def history_path(self, node: str) -> Path:
        return self.base / "lock" / f"{node}.jsonl"

    def node_command(self, node: str) -> list[str]:
        cmd = [sys.executable, "-m", "graft.testing.faults.lock_node", "--bind"]
        cmd += [self.addresses[node], "--clock-file", str(self.clock_file(node))]
        cmd += ["--config", str(self.config_path), "--node", node]
        cmd += ["--history", str(self.history_path(node)), "--resource", self.resource]
        cmd += ["--epoch", repr(self.epoch), "--clients", str(self.clients)]
        return [*cmd, "--seed", str(self.seed)]

    def histories(self) -> list[LockRecord]:
        records = []
        for node in self.node_ids:
            path = self.history_path(node)
            if not path.exists():
                continue
            for line in path.read_text().splitlines():
                try:
                    records.append(LockRecord(**json.loads(line)))
                except (ValueError, TypeError):
                    continue  # a line cut short by a SIGKILL: that call's answer was not seen
        return sorted(records, key=lambda r: r.invoke)


def final_token(cluster: FaultCluster, clock: Any) -> tuple[int | None, float, list[Anomaly]]:
    """The lock's last token read at ``strong`` on the healed cluster, and when it was asked."""
    leader = wait_for_leader(cluster, 30)
    if leader is None:
        message = "30 s after every fault was healed the nodes still did not agree on a leader"
        return None, clock(), [Anomaly(kind="no_leader_after_heal", message=message)]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        asked = clock()
        try:
            reply = cluster.request(leader, "POST", "/query?consistency=strong", HOLDER_QUERY)
        except OSError:
            reply = None
        if reply is not None and reply.status == 200:
            return int(reply.json()["token"]), asked, []
        time.sleep(0.2)
    message = f"the healed cluster did not answer a strong read through {leader} within 20 s"
    return None, clock(), [Anomaly(kind="unavailable_after_heal", message=message)]


def run_lock_once(out: Path, seed: int, duration: float, size: int = 3) -> dict[str, Any]:
    epoch = time.monotonic()

    def clock() -> float:
        return time.monotonic() - epoch

    rng = random.Random(seed)
    resource = GuardedResource(clock)
    cluster = LockCluster(
        out, size, resource=resource.address, epoch=epoch, seed=seed, clients=CLIENTS_PER_NODE
    )
    network = NetworkFaults(cluster.addresses)
    poller = StatusPoller(cluster, clock)
    nemesis = Nemesis(cluster, network, poller, rng, clock)
    anomalies: list[Anomaly] = []
    check: dict[str, Any] | None = None
    last_token: int | None = None
    asked = 0.0
    started = time.time()
    try:
        resource.start()
        network.setup()
        cluster.start_all()
        if wait_for_leader(cluster, 30) is None:
            raise HarnessError(f"the fresh cluster elected no leader within 30 s; see {out}/logs/")
        poller.start()
        nemesis.run(duration)
        nemesis.final_heal()
        time.sleep(QUIET_SECONDS)
        last_token, asked, final_anomalies = final_token(cluster, clock)
        anomalies += final_anomalies
        check, check_anomalies = replica_check(cluster)
        anomalies += check_anomalies
        for node, code in cluster.exit_codes().items():
            if code is not None:
                message = f"{node} exited by itself with code {code}; see logs/{node}.log"
                anomalies.append(Anomaly(kind="node_exited", message=message))
    finally:
        poller.stop()
        network.heal()
        cluster.close()
        resource.stop()
        write_jsonl(out / "resource.jsonl", resource.decisions())
        write_jsonl(out / "nemesis.jsonl", nemesis.events)
        write_jsonl(out / "status.jsonl", poller.samples)
    records = cluster.histories()
    history_anomalies, counts = check_lock_history(records, resource.decisions())
    anomalies += history_anomalies
    if last_token is not None:
        anomalies += check_final_token(records, last_token, asked)
    counts.update(
        {
            "operations": len(records),
            "unknown": sum(1 for r in records if r.outcome == "error"),
            "faults": len([e for e in nemesis.events if e.kind != "final-heal"]),
            "final_token": last_token,
            "longest_leaderless_ms": round(longest_leaderless(poller.samples) * 1000),
        }
    )
    faults: dict[str, int] = {}
    for e in nemesis.events:
        faults[e.kind] = faults.get(e.kind, 0) + 1
    verdict = {
        "workload": "lock",
        "seed": seed,
        "duration": duration,
        "nodes": size,
        "clients": size * CLIENTS_PER_NODE,
        "ok": not anomalies,
        "anomalies": [a.as_dict() for a in anomalies],
        "undecided_keys": [],
        "counts": counts,
        "faults": faults,
        "network_delay": "netem" if network.netem else "tbf (netem unavailable)",
        "wall_seconds": round(time.time() - started, 1),
        "replica_check": check,
        "fsync_stalls": elections_during_stalls(nemesis.events, poller.samples),
    }
    (out / "verdict.json").write_text(json.dumps(verdict, indent=2) + "\n")
    return verdict
