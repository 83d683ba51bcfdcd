"""A kv state of --keys unique keys (100-byte values): the leader's snapshot of it (reactor
pause, duration, size, memory) and a stopped follower's catch-up from it (restore included).

3 nodes, kv FSM, fsync and mutual TLS on, default election/heartbeat. One follower is stopped,
the state written through /commands batches of 1,000, a snapshot taken so the follower's
missing log is compacted away, and the follower restarted while one client keeps writing.
The follower's /health is polled every 20 ms meanwhile: its longest answer and longest gap
between answers show how long its reactor stalled (installing the snapshot included).
Exits non-zero if the follower did not catch up by a snapshot or the nodes' data differ. Run:

    python -m benchmarks.kv_catchup_bench [--keys 500000]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from graft.testing.cluster import LocalCluster

BATCH = 1000


def put(key: str, value: str) -> str:
    return json.dumps({"op": "put", "key": key, "value": value}, separators=(",", ":"))


def status(cluster: LocalCluster, node: str) -> dict[str, Any]:
    st = cluster.status(node, timeout=10)
    if st is None:
        raise SystemExit(f"{node} did not answer /status")
    return st


def metric(cluster: LocalCluster, node: str, name: str) -> float:
    try:
        return cluster.metric(node, name)
    except KeyError:
        return float("nan")


def rss_mib(cluster: LocalCluster, node: str) -> float:
    return metric(cluster, node, "process_resident_memory_bytes") / 2**20


class HealthProbe:
    """Asks a node's /health every 20 ms from a thread: once it first answers, the longest
    answer and the longest gap between two answers show how long its reactor stalled (a
    snapshot's restore on the reactor thread shows as one long gap)."""

    def __init__(self, cluster: LocalCluster, node: str) -> None:
        self._cluster, self._node = cluster, node
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.answers = 0
        self.longest_answer = 0.0
        self.longest_gap = 0.0

    def _run(self) -> None:
        last: float | None = None
        while not self._stop.is_set():
            t = time.monotonic()
            try:
                ok = self._cluster.request(self._node, "GET", "/health", timeout=30).status == 200
            except OSError:
                ok = False
            now = time.monotonic()
            if ok:
                self.answers += 1
                self.longest_answer = max(self.longest_answer, now - t)
                if last is not None:
                    self.longest_gap = max(self.longest_gap, now - last)
                last = now
            time.sleep(0.02)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)


def run(cluster: LocalCluster, args: argparse.Namespace) -> int:
    cluster.start()
    leader, _ = cluster.wait_for_leader(timeout=30)
    follower = next(n for n in cluster.node_ids if n != leader)
    print(f"stopped {follower}, exit code {cluster.stop(follower)}")
    value = "v" * 100
    t0 = time.monotonic()
    elections = 0
    for start in range(0, args.keys, BATCH):
        batch = json.dumps([put(f"key-{i:012d}", value) for i in range(start, start + BATCH)])
        for _ in range(20):  # a leader change under load: find the new one, send again
            resp = cluster.request(leader, "POST", "/commands", batch.encode(), timeout=60)
            if resp.status == 200:
                break
            if resp.status not in (503, 504):
                raise SystemExit(f"batch at {start} failed: {resp.status} {resp.body[:200]!r}")
            elections += 1
            leader, _ = cluster.wait_for_leader(timeout=120)
        else:
            raise SystemExit(f"batch at {start} failed: {resp.status} {resp.body[:200]!r}")
    fill = time.monotonic() - t0
    taken_auto = metric(cluster, leader, "graft_snapshots_taken_total")
    t0 = time.monotonic()
    resp = cluster.request(leader, "POST", "/cluster/snapshot", timeout=300)
    if resp.status != 200:
        raise SystemExit(f"snapshot failed: {resp.status} {resp.body[:200]!r}")
    snap_wall = time.monotonic() - t0
    pause = metric(cluster, leader, "graft_snapshot_last_pause_seconds")
    duration = metric(cluster, leader, "graft_snapshot_last_duration_seconds")
    size = metric(cluster, leader, "graft_snapshot_last_bytes")
    if size != size:  # an older Graft without the gauge: the largest snapshot file
        files = [f for f in cluster.data_dir(leader).rglob("*.snap*") if f.is_file()]
        size = max((f.stat().st_size for f in files), default=0)
    leader_rss = rss_mib(cluster, leader)
    for i in range(200):  # new segments, so compaction drops the follower's missing ones
        cluster.request(leader, "POST", "/command", put(f"after-{i}", value).encode())
    st = status(cluster, leader)

    stop = threading.Event()
    outcomes: list[tuple[float, bool]] = []

    def load() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            t = time.monotonic()
            try:
                ok = (
                    cluster.request(
                        leader, "POST", "/command", put(f"load-{i}", "x").encode(), timeout=10
                    ).status
                    == 200
                )
            except OSError:
                ok = False
            outcomes.append((time.monotonic() - t, ok))

    writer = threading.Thread(target=load, daemon=True)
    writer.start()
    time.sleep(1.0)
    target = status(cluster, leader)["commit"]
    t_start = time.monotonic()
    cluster.start(follower)
    probe = HealthProbe(cluster, follower)
    probe.start()
    while True:
        fst = cluster.status(follower, timeout=2)
        if fst and fst["applied"] >= target:
            break
        if time.monotonic() - t_start > args.timeout:
            raise SystemExit(f"{follower} not caught up in {args.timeout}s: {fst}")
        time.sleep(0.05)
    catchup = time.monotonic() - t_start
    probe.stop()
    stop.set()
    writer.join(30)
    install = metric(cluster, follower, "graft_snapshot_install_duration_seconds_sum")
    follower_rss = rss_mib(cluster, follower)
    installed = "installed snapshot" in cluster.logs(follower)
    answers = {
        n: cluster.request(
            n,
            "POST",
            "/query?consistency=weak",
            b'{"op":"get","key":"key-%012d"}' % (args.keys - 1),
        ).body
        for n in cluster.node_ids
    }
    latencies = sorted(lat for lat, ok in outcomes if ok)
    failed = sum(1 for _, ok in outcomes if not ok)
    print(f"cores {os.cpu_count()}, loadavg {os.getloadavg()}")
    print(f"leader term         {status(cluster, leader)['term']} (1 + elections since start)")
    print(
        f"filled {args.keys} keys in {fill:.1f} s ({elections} batches retried after a leader "
        f"change); automatic snapshots on the leader {taken_auto:.0f}"
    )
    print(f"snapshot            {size / 2**20:.1f} MiB, reactor pause {pause * 1e3:.1f} ms,")
    print(f"                    written in {duration:.2f} s ({snap_wall:.2f} s request)")
    print(f"leader RSS          {leader_rss:.0f} MiB after the snapshot")
    print(f"leader log          first_index {st['first_index']}, snapshot {st['snapshot']}")
    print(f"catch-up            {catchup:.2f} s (restore/install {install:.2f} s)")
    print(f"follower RSS        {follower_rss:.0f} MiB after catching up")
    print(
        f"follower /health    {probe.answers} answers while catching up; longest answer "
        f"{probe.longest_answer * 1e3:.0f} ms, longest gap between answers "
        f"{probe.longest_gap * 1e3:.0f} ms (polled every 20 ms)"
    )
    if latencies:
        print(
            f"writes during       {len(latencies)} ok, {failed} failed, median "
            f"{latencies[len(latencies) // 2] * 1e3:.1f} ms, max {latencies[-1] * 1e3:.1f} ms"
        )
    bad = []
    if not installed:
        bad.append(f"{follower} did not install a snapshot")
    if len(set(answers.values())) != 1:
        bad.append(f"answers differ: {answers}")
    for problem in bad:
        print("FAIL:", problem)
    return 1 if bad else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, default=500_000)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="graft-kv-catchup-") as tmp:
        cluster = LocalCluster(
            Path(tmp),
            fsm="graft.fsm.kv:KeyValueStateMachine",
            extra={
                "api": {"command_timeout_ms": 60_000, "query_timeout_ms": 60_000},
                "snapshot": {"trailing": 5, "segment_bytes": 1 << 20},
            },
        )
        try:
            code = run(cluster, args)
        finally:
            cluster.close()
    raise SystemExit(code)


if __name__ == "__main__":
    main()
