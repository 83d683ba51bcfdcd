"""Growth, second by second: where Graft kv's tail latency comes from while the state grows.

    .venv/bin/python -m benchmarks.growth_timeline --seconds 180 [--prefill-seconds 60]

A developer's tool (issue 16), a cheaper cousin of `make bench SCENARIOS=growth`: a fresh
3-node kv cluster, optionally pre-filled with batches of 100 new keys (``/commands``), then
writes of new keys with 100-byte values at c=16 on the leader in back-to-back wrk loads of
``--window`` seconds, each giving that window's throughput and p50/p99/max. Every node runs
with ``GRAFT_PAUSE_JOURNAL`` (graft.pause_journal) on, so each window's row also shows, per
node (leader first), what held its main thread: cyclic-GC passes (count and longest, by
generation), late reactor turns (longest), forks of the kv snapshot writer (os.fork time),
and the snapshots and compactions its log reports. The load average is printed per window:
on a shared machine, read latency next to it. ``--json FILE`` keeps the rows.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import threading
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.suite.graft_system import GraftSystem
from benchmarks.suite.loadgen import Target, run_load, write_bodies
from benchmarks.suite.scenarios import warm_up
from graft.pause_journal import ENVIRONMENT
from graft.testing.cluster import LocalCluster

_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}) ")
_LOG_EVENTS = {
    "snapshot at index": "snap",
    "compact": "compact",
    "installed snapshot": "install",
    "sending snapshot": "send",
    "became leader": "leader",
}


def _log_events(path: Path) -> list[tuple[float, str]]:
    """(time, short name) of the node log's lines that matter here (second resolution)."""
    out: list[tuple[float, str]] = []
    if not path.exists():
        return out
    for line in path.read_text(errors="replace").splitlines():
        match = _LOG_TIME.match(line)
        if match is None:
            continue
        lower = line.lower()
        for text, name in _LOG_EVENTS.items():
            if text in lower:
                at = datetime.strptime(match[1], "%Y-%m-%dT%H:%M:%S%z").timestamp()
                out.append((at + 0.5, name))
    return out


def _journal(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def _node_cell(events: list[dict[str, Any]], logs: list[tuple[float, str]]) -> str:
    parts = []
    by_gen: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        if e["event"] == "gc":
            by_gen[e["gen"]].append(e)
    for gen in sorted(by_gen):
        worst = max(by_gen[gen], key=lambda e: e["ms"])
        parts.append(f"g{gen}:{len(by_gen[gen])}/{worst['ms']:.0f}c{worst.get('cpu', 0):.0f}")
    lags = [e for e in events if e["event"] == "lag"]
    if lags:
        worst = max(lags, key=lambda e: e["ms"])
        parts.append(f"lag{len(lags)}/{worst['ms']:.0f}c{worst.get('cpu', 0):.0f}")
    parts += [f"fork{e['ms']:.0f}" for e in events if e["event"] == "fork"]
    parts += [
        f"{e['event']}{e.get('ms', 0):.0f}"
        for e in events
        if e["event"] not in ("gc", "lag", "fork", "start")
    ]
    parts += sorted({name for _, name in logs})
    return " ".join(parts)


def _snapshot_later(cluster: LocalCluster, nodes: list[str], delay: float) -> None:
    """Ask every node for a snapshot at once, ``delay`` seconds from now (threads)."""

    def take(node: str) -> None:
        time.sleep(delay)
        cluster.request(node, "POST", "/cluster/snapshot", timeout=120)

    for node in nodes:
        threading.Thread(target=take, args=(node,), daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=180)
    parser.add_argument("--window", type=int, default=2)
    parser.add_argument("--prefill-seconds", type=int, default=0)
    parser.add_argument(
        "--snapshot-at",
        type=float,
        help="seconds into the timed load at which every node is asked for a snapshot "
        "(POST /cluster/snapshot), to see one without waiting for the snapshot rule",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="graft-timeline-"))
    os.environ[ENVIRONMENT] = str(base / "journal-{pid}.jsonl")
    system = GraftSystem(base / "cluster")
    system.start()
    rows: list[dict[str, Any]] = []
    try:
        warm_up(system, base)
        leader = system.leader()
        url = system.base_url(leader)
        if args.prefill_seconds:
            batch = system.batch_shape()
            bodies = write_bodies(batch.bodies, base)
            load = run_load(
                [Target(url=url + batch.path, connections=16)],
                seconds=args.prefill_seconds,
                method=batch.method,
                bodies_file=bodies,
            )
            print(f"prefill: {load.ok_per_second * 100:.0f} keys/s for {load.seconds:.0f} s")
        shape = system.put_shape()
        bodies = write_bodies(shape.bodies, base)
        began = time.time()
        if args.snapshot_at is not None and system.cluster is not None:
            _snapshot_later(system.cluster, system.node_ids(), args.snapshot_at)
        while time.time() - began < args.seconds:
            start = time.time()
            load = run_load(
                [Target(url=url + shape.path, connections=16)],
                seconds=args.window,
                method=shape.method,
                bodies_file=bodies,
            )
            end = time.time()
            row: dict[str, Any] = dict(load.summary())
            row["max_ms"] = max(load.histogram, default=0) / 1000
            row.update(start=start, end=end, load1=os.getloadavg()[0])
            rows.append(row)
        nodes = [leader] + [n for n in system.node_ids() if n != leader]
        pids = {n: system.pid(n) for n in nodes}
    finally:
        system.close()
    journals = {n: _journal(base / f"journal-{pids[n]}.jsonl") for n in nodes}
    cluster = system.cluster
    logs = {n: _log_events(cluster.log_path(n)) if cluster else [] for n in nodes}
    print(f"leader {leader}; columns per node: {' | '.join(nodes)}")
    print(
        "  t(s)  req/s   p50    p99    max  load | "
        "gN:count/longest-ms cCPU-ms lagN/longest cCPU forkMS"
    )
    for row in rows:
        cells = []
        for n in nodes:
            events = [e for e in journals[n] if row["start"] <= e["at"] < row["end"]]
            lines = [x for x in logs[n] if row["start"] <= x[0] < row["end"]]
            row[n] = _node_cell(events, lines)
            cells.append(row[n])
        print(
            f"{row['start'] - began:6.0f} {row['ok_per_s']:6.0f} {row['p50_ms']:6.1f} "
            f"{row['p99_ms']:6.1f} {row['max_ms']:6.0f} {row['load1']:5.2f} | " + " | ".join(cells)
        )
    all_p99 = sorted(r["p99_ms"] for r in rows)
    print(f"windows {len(rows)}; median window p99 {all_p99[len(all_p99) // 2]:.1f} ms")
    if args.json:
        args.json.write_text(json.dumps({"nodes": nodes, "rows": rows, "journals": journals}))
    print(f"journals and logs under {base}")


if __name__ == "__main__":
    main()
