"""One fault run, executed inside its network namespace (started by graft.testing.faults.__main__).

    python -m graft.testing.faults.run --seed S --duration D --out DIR [--nodes N] [--clients C]
        [--workload kv|lock] [--fsm kv|sqlite]

Order: start the nodes and wait for a leader; start the status poller and the clients; inject
faults for `duration` seconds; heal everything; let the clients run on a healthy cluster for a
quiet period; stop them; then the final checks (every key read at `strong` through the leader
and at `weak` with min_index on every node; then the replica consistency check, GET
/cluster/check: digests that differ fail the run); write the run directory; exit 0 when the verdict
is clean, 1 on an anomaly, 2 when the harness itself failed.

``--fsm sqlite`` runs the same workload on the SQLite FSM, in SQL (graft.testing.faults.
sql_registers; its table is created through /command before the clients start), with
snapshots every SQLITE_SNAPSHOT["entries"] entries so that whole snapshots, delta snapshots and
installs on lagging nodes all happen within the run; the verdict's ``snapshots`` counts them
from the node logs (graft.testing.faults.snapshot_counts) and a run without a delta snapshot
fails.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from graft.testing.faults.checker import (
    UNKNOWN,
    Anomaly,
    check_linearizability,
    check_weak_reads,
    classify,
)
from graft.testing.faults.cluster import FaultCluster
from graft.testing.faults.disk import elections_during_stalls
from graft.testing.faults.history import OpRecord, StatusSample, write_jsonl
from graft.testing.faults.nemesis import Nemesis, StatusPoller
from graft.testing.faults.netns import HarnessError, NetworkFaults
from graft.testing.faults.report import write_timeline
from graft.testing.faults.snapshot_counts import coverage_anomalies, snapshot_counts
from graft.testing.faults.sql_registers import SQLITE_FSM, SqlRequests
from graft.testing.faults.workload import (
    MALFORMED,
    KvRequests,
    Requests,
    Workload,
    WorkloadConfig,
    monotonic_clock,
)

QUIET_SECONDS = 5.0
REPLICA_CHECK_SECONDS = 60.0
# Longer than this without an answer from any node is time the status poll knows nothing of:
# each node is polled every 0.1 s with a 0.3 s timeout.
SILENT_SECONDS = 0.5
FINAL_CLIENT = "final"
# kv: clients put/cas/get on the kv FSM over HTTP (this module); lock: examples/lock.py's Lock
# embedded in three processes, with a guarded resource (lock_run).
WORKLOADS = ("kv", "lock")
# The FSM the kv workload runs on: kv's own commands, or the same operations in SQL.
FSMS = ("kv", "sqlite")
# The SQLite run's snapshot settings: a snapshot every 50 applied entries whatever the log's
# size (log_ratio 0), so each node takes one every second or so (each chain's first whole, the
# rest deltas); no entries kept below a snapshot, and log segments of 4 KiB (about 15 entries;
# compaction frees whole segments, and at the default 64 MiB it frees none in a minute), so
# that a node killed, paused or cut off is sent the leader's snapshot instead of the log, also
# while it is alive and may be in the middle of a delta of its own.
SQLITE_SNAPSHOT: dict[str, Any] = {
    "entries": 50,
    "log_ratio": 0,
    "trailing": 0,
    "segment_bytes": 4096,
}
SETUP_SECONDS = 20.0


def wait_for_leader(cluster: FaultCluster, timeout: float) -> str | None:
    """A leader every node agrees on, or None after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = {n: cluster.status(n) for n in cluster.node_ids}
        leaders = {s["id"] for s in seen.values() if s and s["role"] == "leader"}
        if len(leaders) == 1:
            leader = str(leaders.pop())
            if all(s and s["leader"] == leader for s in seen.values()):
                return leader
        time.sleep(0.1)
    return None


def final_checks(cluster: FaultCluster, workload: Workload) -> list[Anomaly]:
    """After the heal: a leader, every key readable, every replica equal to the leader."""
    leader = wait_for_leader(cluster, 30)
    if leader is None:
        return [
            Anomaly(
                kind="no_leader_after_heal",
                message="30 s after every fault was healed the nodes still did not agree on "
                "a leader; see the status timeline and node logs",
            )
        ]
    marker: OpRecord | None = None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        marker = workload.invoke(FINAL_CLIENT, leader, "put", "marker", value="final")
        if marker.status == 200:
            break
        time.sleep(0.2)
    if marker is None or marker.status != 200 or marker.index is None:
        return [
            Anomaly(
                kind="unavailable_after_heal",
                message=f"the healed cluster did not commit a write through {leader} within 20 s",
            )
        ]
    anomalies: list[Anomaly] = []
    final_values: dict[str, Any] = {}
    for key in workload.keys.all_keys:
        for _ in range(20):
            read = workload.invoke(FINAL_CLIENT, leader, "get", key, consistency="strong")
            if read.status == 200:
                final_values[key] = (read.output or {}).get("value")
                break
            time.sleep(0.1)
        else:
            anomalies.append(
                Anomaly(kind="unavailable_after_heal", message=f"strong read of {key} failed")
            )
    for node in cluster.node_ids:
        for key, expected in final_values.items():
            read = workload.invoke(
                FINAL_CLIENT, node, "get", key, consistency="weak", min_index=marker.index
            )
            got = (read.output or {}).get("value") if read.status == 200 else None
            if read.status != 200 or got != expected:
                anomalies.append(
                    Anomaly(
                        kind="replicas_diverge",
                        message=f"{node} at index >= {marker.index} has {key}={got!r} "
                        f"(status {read.status}, {read.error}); the leader {leader} has "
                        f"{expected!r}",
                        key=key,
                        ops=(read.id,),
                    )
                )
    return anomalies


def replica_check(
    cluster: FaultCluster,
    timeout: float = REPLICA_CHECK_SECONDS,
    pause: float = 1.0,
    during: str = "",
) -> tuple[dict[str, Any] | None, list[Anomaly]]:
    """GET /cluster/check on the healed cluster (graft.consistency): every node's FSM digest at
    one log index. Digests that differ are an anomaly (the replicas diverged). A check that
    cannot complete (no leader yet, a member still catching up through a snapshot past the
    check's index) is retried until ``timeout``; the last result is returned either way.
    ``during`` says when it ran, in the anomaly's message."""
    deadline = time.monotonic() + timeout
    result: dict[str, Any] | None = None
    while True:
        for node in cluster.node_ids:
            try:
                reply = cluster.request(node, "GET", "/cluster/check", timeout=max(1.0, timeout))
            except OSError:
                continue
            if reply.status == 200:
                result = reply.json()
                break
        if result is not None and result.get("mismatch"):
            odd = ", ".join(result["mismatch"])
            return result, [
                Anomaly(
                    kind="replica_digest_mismatch",
                    message=f"the replica check at index {result.get('index')}{during} "
                    f"found that the FSM state of {odd} differs from the other nodes': the "
                    "replicas diverged",
                )
            ]
        if (result is not None and result.get("complete")) or time.monotonic() >= deadline:
            return result, []
        result = None
        time.sleep(pause)


def send_setup(cluster: FaultCluster, requests: Requests, timeout: float = SETUP_SECONDS) -> None:
    """Send the workload's setup command (the SQL table) through the leader, before the history
    starts, and wait until every node has applied it; HarnessError if it is not applied without
    error within ``timeout``. The command is idempotent, so retrying after an unknown outcome is
    safe."""
    if requests.setup is None:
        return
    deadline = time.monotonic() + timeout
    index = _commit_setup(cluster, requests.setup, deadline)
    while time.monotonic() < deadline:
        applied = [(cluster.status(n) or {}).get("applied") or 0 for n in cluster.node_ids]
        if min(applied) >= index:
            return
        time.sleep(0.1)
    raise HarnessError(f"not every node applied the setup command (index {index}) in {timeout} s")


def _commit_setup(cluster: FaultCluster, setup: bytes, deadline: float) -> int:
    """The log index of the setup command, committed and applied through the leader."""
    last = "no answer"
    while time.monotonic() < deadline:
        leader = wait_for_leader(cluster, max(0.1, deadline - time.monotonic()))
        if leader is None:
            break
        try:
            reply = cluster.request(leader, "POST", "/command", setup, timeout=4.0)
        except OSError as e:
            last = f"{type(e).__name__}: {e}"
            continue
        if reply.status == 200:
            results = reply.json().get("results", [])
            failed = [r for r in results if "error" in r]
            if failed:
                raise HarnessError(f"the workload's setup command failed: {failed}")
            return int(reply.headers["graft-index"])
        last = f"{reply.status} {reply.body[:200]!r}"
        time.sleep(0.2)
    raise HarnessError(f"the workload's setup command did not commit in time: {last}")


def malformed_answers(records: list[OpRecord]) -> list[Anomaly]:
    """An answer the workload could not read as the model's output (graft.testing.faults.
    sql_registers: a statement's error, a row count no single-key write can have, ...)."""
    bad = [r for r in records if (r.error or "").startswith(MALFORMED)]
    if not bad:
        return []
    first = bad[0]
    return [
        Anomaly(
            kind="malformed_answer",
            message=f"{len(bad)} answers with status 200 have no meaning for the register "
            f"model; the first: #{first.id} {first.kind} {first.key} on {first.node}: "
            f"{first.error} (the FSM answered {first.answer!r})",
            key=first.key,
            ops=tuple(r.id for r in bad[:10]),
        )
    ]


def longest_leaderless(samples: list[StatusSample]) -> float:
    """The longest stretch (seconds) from a leader's answer to /status to the next leader's
    answer, less the time in which no node answered at all for more than SILENT_SECONDS. A
    poll that got no answer tells nothing either way: under the slow-network fault every poll
    can time out while the leader keeps its term, which is not time without a leader."""
    longest = 0.0
    start: float | None = None  # the last leader's answer
    answered: float | None = None  # the last answer from any node
    silent = 0.0  # time since ``start`` in which no node answered
    for sample in sorted(samples, key=lambda s: s.t):
        if sample.role == "down":
            continue
        if start is not None and answered is not None and sample.t - answered > SILENT_SECONDS:
            silent += sample.t - answered
        answered = sample.t
        if sample.role == "leader":
            if start is not None:
                longest = max(longest, sample.t - start - silent)
            start, silent = sample.t, 0.0
    return longest


def run_once(
    out: Path, seed: int, duration: float, size: int, clients: int = 10, fsm: str = "kv"
) -> dict[str, Any]:
    clock = monotonic_clock()
    rng = random.Random(seed)
    requests: Requests
    if fsm == "sqlite":
        cluster = FaultCluster(out, size, fsm=SQLITE_FSM, snapshot=SQLITE_SNAPSHOT)
        requests = SqlRequests()
    else:
        cluster = FaultCluster(out, size)
        requests = KvRequests()
    network = NetworkFaults(cluster.addresses)
    poller = StatusPoller(cluster, clock)
    workload = Workload(cluster, WorkloadConfig(clients=clients), seed, clock, requests)
    nemesis = Nemesis(cluster, network, poller, rng, clock)
    anomalies: list[Anomaly] = []
    check: dict[str, Any] | None = None
    started = time.time()
    try:
        network.setup()
        cluster.start_all()
        if wait_for_leader(cluster, 30) is None:
            raise HarnessError(f"the fresh cluster elected no leader within 30 s; see {out}/logs/")
        send_setup(cluster, requests)
        poller.start()
        workload.start()
        nemesis.run(duration)
        nemesis.final_heal()
        time.sleep(QUIET_SECONDS)
        # Once while the clients still write: a follower then applies the marker in a batch
        # with the commands after it, and its digest must still be of the state at the marker.
        loaded, loaded_anomalies = replica_check(cluster, during=" under write load")
        anomalies += loaded_anomalies
        workload.stop()
        anomalies += final_checks(cluster, workload)
        check, check_anomalies = replica_check(cluster)
        anomalies += check_anomalies
        for node, code in cluster.exit_codes().items():
            if code is not None:
                anomalies.append(
                    Anomaly(
                        kind="node_exited",
                        message=f"{node} exited by itself with code {code}; see logs/{node}.log",
                    )
                )
    finally:
        poller.stop()
        network.heal()
        cluster.close()
        history = sorted(workload.history, key=lambda r: r.invoke)
        write_jsonl(out / "history.jsonl", history)
        write_jsonl(out / "nemesis.jsonl", nemesis.events)
        write_jsonl(out / "status.jsonl", poller.samples)
    lin, undecided = check_linearizability(history)
    anomalies += lin
    anomalies += check_weak_reads(history, nemesis.events)
    anomalies += malformed_answers(history)
    snapshots = None
    if fsm == "sqlite":
        snapshots = snapshot_counts({n: cluster.log_path(n) for n in cluster.node_ids})
        anomalies += coverage_anomalies(snapshots)
    counts = {
        "operations": sum(1 for r in history if r.client != FINAL_CLIENT),
        "ok": sum(1 for r in history if r.status == 200),
        "unknown": sum(1 for r in history if classify(r) == UNKNOWN),
        "no_leader_503": sum(1 for r in history if r.status == 503),
        "failed_reads": sum(1 for r in history if r.kind == "get" and r.status != 200),
        "keys": len(workload.keys.all_keys),
        "faults": len([e for e in nemesis.events if e.kind != "final-heal"]),
        "longest_leaderless_ms": round(longest_leaderless(poller.samples) * 1000),
    }
    faults: dict[str, int] = {}
    for e in nemesis.events:
        faults[e.kind] = faults.get(e.kind, 0) + 1
    verdict = {
        "seed": seed,
        "fsm": fsm,
        "duration": duration,
        "nodes": size,
        "clients": clients,
        "ok": not anomalies,
        "anomalies": [a.as_dict() for a in anomalies],
        "undecided_keys": undecided,
        "counts": counts,
        "faults": faults,
        "network_delay": "netem" if network.netem else "tbf (netem unavailable)",
        "wall_seconds": round(time.time() - started, 1),
        "replica_check": check,
        "replica_check_under_load": loaded,
        "fsync_stalls": elections_during_stalls(nemesis.events, poller.samples),
    }
    if snapshots is not None:
        verdict["snapshots"] = snapshots
    (out / "verdict.json").write_text(json.dumps(verdict, indent=2) + "\n")
    write_timeline(out / "timeline.html", history, nemesis.events, poller.samples, verdict)
    return verdict


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m graft.testing.faults.run")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--workload", choices=WORKLOADS, default="kv")
    parser.add_argument("--fsm", choices=FSMS, default="kv")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        if args.workload == "lock":
            from graft.testing.faults.lock_run import run_lock_once  # it imports this module

            verdict = run_lock_once(args.out, args.seed, args.duration)
        else:
            verdict = run_once(
                args.out, args.seed, args.duration, args.nodes, args.clients, args.fsm
            )
    except HarnessError as e:
        print(f"harness error: {e}", file=sys.stderr)
        return 2
    except Exception:
        traceback.print_exc()
        (args.out / "harness-error.txt").write_text(traceback.format_exc())
        return 2
    return 0 if verdict["ok"] else 1


if __name__ == "__main__":
    threading.current_thread().name = "driver"
    sys.exit(main())
