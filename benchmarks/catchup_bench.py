"""A follower that was down long enough to need a snapshot catches up from a ~100 MB SQLite
database while the cluster keeps committing; no election may happen meanwhile.

3 nodes, SQLite FSM, election 350 ms / heartbeat 35 ms, fsync and mutual TLS on. One follower
is stopped, the database grown to --mb MB, a snapshot taken so the follower's missing log is
compacted away, and the follower restarted under a steady write load. Exits non-zero if an
election happened, a write failed, or the nodes' data differ. Run:

    python -m benchmarks.catchup_bench [--mb 100]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from graft.testing.cluster import LocalCluster

ROWS = 10_000  # per growth command, ~1,000 bytes each: ~10 MB


def grow(k: int) -> bytes:
    return (
        f"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<{ROWS}) "
        f"INSERT INTO t(v) SELECT printf('%01000d', x + {k}) FROM c;"
    ).encode()


def counters(cluster: LocalCluster, nodes: list[str]) -> dict[str, tuple[float, float]]:
    return {
        n: (cluster.metric(n, "graft_election_timeouts"), cluster.metric(n, "graft_elections"))
        for n in nodes
    }


class Load:
    """One thread writing small INSERTs to the leader, timestamping each outcome."""

    def __init__(self, cluster: LocalCluster, leader: str) -> None:
        self.cluster = cluster
        self.leader = leader
        self.ok: list[tuple[float, float]] = []  # (finished at, latency)
        self.failed: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            body = f"INSERT INTO w(v) VALUES ('load-{i}');".encode()
            t0 = time.monotonic()
            try:
                resp = self.cluster.request(self.leader, "POST", "/command", body, timeout=10)
                outcome = "" if resp.status == 200 else f"{resp.status} {resp.body[:120]!r}"
            except OSError as e:
                outcome = repr(e)
            t1 = time.monotonic()
            if outcome:
                self.failed.append((t1, outcome))
                time.sleep(0.05)
            else:
                self.ok.append((t1, t1 - t0))

    def window(self, start: float, end: float) -> tuple[float, int, float, float]:
        """(writes/s, failures, median ms, max ms) of the outcomes in [start, end)."""
        lat = [lat for t, lat in self.ok if start <= t < end]
        fails = sum(1 for t, _ in self.failed if start <= t < end)
        span = max(end - start, 1e-9)
        if not lat:
            return 0.0, fails, 0.0, 0.0
        return len(lat) / span, fails, statistics.median(lat) * 1e3, max(lat) * 1e3


def snapshot_bytes(cluster: LocalCluster, node: str) -> int:
    files = [f for f in cluster.data_dir(node).rglob("*") if f.is_file() and "snap" in str(f)]
    return max((f.stat().st_size for f in files), default=0)


def status(cluster: LocalCluster, node: str) -> dict[str, Any]:
    st = cluster.status(node)
    if st is None:
        raise SystemExit(f"{node} did not answer /status")
    return st


def run(cluster: LocalCluster, args: argparse.Namespace) -> int:
    cluster.start()
    leader, _ = cluster.wait_for_leader(timeout=20)
    follower = next(n for n in cluster.node_ids if n != leader)
    setup = b"CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); CREATE TABLE w(v TEXT);"
    if cluster.request(leader, "POST", "/command", setup).status != 200:
        raise SystemExit("schema failed")
    time.sleep(0.5)
    print(f"stopped {follower} (SIGTERM), exit code {cluster.stop(follower)}")
    stopped_last = status(cluster, leader)["progress"][follower]["match"]
    t0 = time.monotonic()
    for k in range(args.mb // 10 + 1):
        resp = cluster.request(leader, "POST", "/command", grow(k * ROWS), timeout=120)
        if resp.status != 200:
            raise SystemExit(f"growth command {k} failed: {resp.status} {resp.body[:200]!r}")
    grow_s = time.monotonic() - t0
    # Enough small entries to fill a few 4 KiB segments, so compaction can drop whole ones.
    for i in range(100):
        cluster.request(leader, "POST", "/command", f"INSERT INTO w VALUES ('f{i}');".encode())
    if cluster.request(leader, "POST", "/cluster/snapshot", timeout=120).status != 200:
        raise SystemExit("snapshot failed")
    for i in range(20):
        cluster.request(leader, "POST", "/command", f"INSERT INTO w VALUES ('x{i}');".encode())
    st = status(cluster, leader)
    if st["first_index"] <= stopped_last + 1:
        raise SystemExit(f"log not compacted past {stopped_last}: {st['first_index']}")
    snap = snapshot_bytes(cluster, leader)
    print(
        f"grew to {snap / 1e6:.1f} MB snapshot in {grow_s:.1f}s; {follower} stopped at "
        f"{stopped_last}, leader first_index {st['first_index']}, snapshot {st['snapshot']}"
    )

    load = Load(cluster, leader)
    load.start()
    time.sleep(args.before)
    live = [n for n in cluster.node_ids if n != follower]
    before = counters(cluster, live)
    term_before = status(cluster, leader)["term"]
    load_before = load.window(time.monotonic() - args.before, time.monotonic())
    t_start = time.monotonic()
    target = status(cluster, leader)["commit"]
    cluster.start(follower)
    while True:
        fst = cluster.status(follower, timeout=1)
        if fst and fst["applied"] >= target:
            break
        if time.monotonic() - t_start > args.timeout:
            load.stop()
            raise SystemExit(f"{follower} not caught up in {args.timeout}s: {fst}")
        time.sleep(0.05)
    t_end = time.monotonic()
    catchup = t_end - t_start
    load_during = load.window(t_start, t_end)
    time.sleep(args.before)
    load.stop()
    after = counters(cluster, cluster.node_ids)
    term_after = status(cluster, leader)["term"]

    # Data equal once every node applied the same index.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        applied = {n: status(cluster, n)["applied"] for n in cluster.node_ids}
        if len(set(applied.values())) == 1:
            break
        time.sleep(0.1)
    q = b"SELECT (SELECT count(*) FROM t), (SELECT sum(length(v)) FROM t), (SELECT count(*) FROM w)"
    data = {
        n: cluster.request(n, "POST", "/query?consistency=weak", q, timeout=60).body.decode()
        for n in cluster.node_ids
    }

    elections = {
        n: (after[n][0] - before.get(n, (0, 0))[0], after[n][1] - before.get(n, (0, 0))[1])
        for n in live
    }
    print(f"cores {os.cpu_count()}, loadavg {os.getloadavg()}")
    print(f"snapshot            {snap:,} B")
    print(
        f"catch-up            {catchup:.2f} s  ({snap / 1e6 / catchup:.1f} MB/s), to index {target}"
    )
    for name, (rate, fails, med, mx) in (("before", load_before), ("during", load_during)):
        print(
            f"writes {name:<12} {rate:.1f}/s, {fails} failed, median {med:.1f} ms, max {mx:.1f} ms"
        )
    print(f"writes total        {len(load.ok)} ok, {len(load.failed)} failed")
    print(f"leader term         {term_before} -> {term_after}")
    for n in cluster.node_ids:
        delta = elections.get(n, ("restarted", "restarted"))
        print(f"{n} timeouts/elections delta {delta}  (after: {after[n]})")
    print(f"restarted {follower} own counters after: {after[follower]}")
    for n, d in data.items():
        print(f"data {n}: {d}")
    bad = []
    if (
        term_after != term_before
        or any(t or e for t, e in elections.values())
        or any(after[follower])
    ):
        bad.append("an election happened")
    if load.failed:
        bad.append(f"writes failed: {load.failed[:3]}")
    if len(set(data.values())) != 1 or "error" in next(iter(data.values())):
        bad.append("data differ")
    installed = "installed snapshot" in cluster.logs(follower)
    print(f"{follower} installed the leader's snapshot: {installed}")
    if not installed:
        bad.append(f"{follower} did not catch up through a snapshot")
    for problem in bad:
        print("FAIL:", problem)
    return 1 if bad else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--before", type=float, default=3.0, help="seconds of load before/after")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="graft-catchup-") as tmp:
        cluster = LocalCluster(
            Path(tmp),
            fsm="graft.fsm.sqlite:SQLiteStateMachine",
            extra={
                "api": {"command_timeout_ms": 120_000, "query_timeout_ms": 60_000},
                # Few trailing entries and small segments: the stopped node needs the snapshot.
                "snapshot": {"entries": 10_000, "trailing": 5, "segment_bytes": 4096},
            },
        )
        try:
            code = run(cluster, args)
        finally:
            cluster.close()
            if os.environ.get("CATCHUP_LOGS"):
                for n in cluster.node_ids:
                    print(f"--- {n}\n{cluster.logs(n)[-3000:]}")
    raise SystemExit(code)


if __name__ == "__main__":
    main()
