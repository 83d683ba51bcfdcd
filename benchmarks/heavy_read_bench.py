"""How much a query that never ends delays the node it runs on: /health and write latency on
the leader of a 3-node SQLite cluster, idle and then while endless queries fill both of its
query threads.

3 nodes, SQLite FSM, election 350 ms / heartbeat 35 ms, fsync and mutual TLS on. Each phase
sends --n /health requests and --n small INSERTs to the leader, one at a time. Exits non-zero
if the leader changed or a request failed. Run:

    python -m benchmarks.heavy_read_bench [--n 300]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import threading
import time
from pathlib import Path

from graft.testing.cluster import LocalCluster

ENDLESS = b"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT max(x) FROM c"


def endless(cluster: LocalCluster, node: str) -> None:
    with contextlib.suppress(OSError):  # the cluster is closed under it
        cluster.request(node, "POST", "/query?timeout=600s", ENDLESS, timeout=700)


def timed(cluster: LocalCluster, node: str, method: str, path: str, body: bytes | None) -> float:
    started = time.perf_counter()
    response = cluster.request(node, method, path, body, timeout=10)
    if response.status != 200:
        raise SystemExit(f"{method} {path} answered {response.status}: {response.body[:200]!r}")
    return time.perf_counter() - started


def summary(latencies: list[float]) -> str:
    ms = sorted(x * 1000 for x in latencies)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return f"median {statistics.median(ms):.2f} ms, p99 {p99:.2f} ms, max {ms[-1]:.2f} ms"


def phase(cluster: LocalCluster, leader: str, n: int, first: int) -> tuple[str, str]:
    health = [timed(cluster, leader, "GET", "/health", None) for _ in range(n)]
    writes = [
        timed(cluster, leader, "POST", "/command", b"INSERT INTO t VALUES (%d);" % (first + i))
        for i in range(n)
    ]
    return summary(health), summary(writes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="requests of each kind per phase")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cluster = LocalCluster(
            Path(tmp),
            fsm="graft.fsm.sqlite:SQLiteStateMachine",
            extra={"api": {"max_query_timeout_ms": 600_000}},
        )
        try:
            cluster.start()
            leader, term = cluster.wait_for_leader(timeout=15)
            timed(cluster, leader, "POST", "/command", b"CREATE TABLE t (n INTEGER);")
            idle = phase(cluster, leader, args.n, 0)
            queries = [
                threading.Thread(target=endless, args=(cluster, leader), daemon=True)
                for _ in range(2)
            ]
            for thread in queries:
                thread.start()
            while cluster.metric(leader, "graft_queries_in_threads") < 2:
                time.sleep(0.02)
            busy = phase(cluster, leader, args.n, args.n)
            running = cluster.metric(leader, "graft_queries_in_threads")
            status = cluster.status(leader) or {}
            print(f"idle:                 /health {idle[0]}; writes {idle[1]}")
            print(f"2 endless queries:    /health {busy[0]}; writes {busy[1]}")
            print(f"queries still running afterwards: {running:.0f}")
            if (status.get("role"), status.get("term")) != ("leader", term):
                raise SystemExit(f"the leader changed: {status}")
        finally:
            cluster.close()


if __name__ == "__main__":
    main()
