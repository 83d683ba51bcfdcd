"""Growth, second by second: where Graft's tail latency comes from while the state grows.

    .venv/bin/python -m benchmarks.growth_timeline --seconds 180 [--prefill-seconds 60]
        [--fsm sqlite]

A developer's tool (issue 16), a cheaper cousin of `make bench SCENARIOS=growth`: a fresh
3-node cluster (kv, or SQLite with ``--fsm sqlite``), optionally pre-filled with batches of
100 new keys (``/commands``), then writes of new keys with 100-byte values at c=16 on the
leader in back-to-back wrk loads of ``--window`` seconds, each giving that window's
throughput and p50/p99/max. Every node runs with ``GRAFT_PAUSE_JOURNAL``
(graft.pause_journal) on, so each window's row also shows, per node (leader first), what
held its main thread: cyclic-GC passes (count and longest, by generation), late reactor
turns (longest), forks of the kv snapshot writer (os.fork time), and the snapshots and
compactions its log reports. From each node's /metrics it adds the window's log fsyncs
(count, mean ms, how many took over 50 ms: ``f120/1.9>50:2``), and from /proc/diskstats the
device's writes (MB written, mean ms per write, ms of queued I/O: ``disk 34MB w1.2 q800``).
The load average is printed per window: on a shared machine, read latency next to it.
``--json FILE`` keeps the rows.
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

_FSYNC = "graft_fsync_latency_seconds"
_SLOW_FSYNC_BUCKET = "0.05"


def _fsync_counters(system: GraftSystem, node: str) -> tuple[float, float, float]:
    """(count, sum in s, count over 50 ms) of the node's log fsyncs so far; zeros if unreadable."""
    cluster = system.cluster
    if cluster is None:
        return (0.0, 0.0, 0.0)
    try:
        text = cluster.request(node, "GET", "/metrics", timeout=5).body.decode()
    except OSError:
        return (0.0, 0.0, 0.0)
    count = total = fast = 0.0
    for line in text.splitlines():
        if line.startswith(_FSYNC + "_count "):
            count = float(line.split()[1])
        elif line.startswith(_FSYNC + "_sum "):
            total = float(line.split()[1])
        elif line.startswith(f'{_FSYNC}_bucket{{le="{_SLOW_FSYNC_BUCKET}"}} '):
            fast = float(line.split()[1])
    return (count, total, count - fast)


def _disk_counters(path: Path) -> tuple[float, float, float, float]:
    """(sectors written, writes, ms writing, weighted ms of I/O) of the device holding path."""
    dev = os.stat(path).st_dev
    major, minor = os.major(dev), os.minor(dev)
    for line in Path("/proc/diskstats").read_text().splitlines():
        f = line.split()
        if int(f[0]) == major and int(f[1]) == minor:
            return (float(f[9]), float(f[7]), float(f[10]), float(f[13]))
    return (0.0, 0.0, 0.0, 0.0)


def _fsync_cell(before: tuple[float, ...], after: tuple[float, ...]) -> str:
    count, total, slow = (a - b for a, b in zip(after, before, strict=True))
    mean = total / count * 1000 if count else 0.0
    return f"f{count:.0f}/{mean:.1f}>50:{slow:.0f}"


def _disk_cell(before: tuple[float, ...], after: tuple[float, ...]) -> str:
    sectors, writes, write_ms, queued_ms = (a - b for a, b in zip(after, before, strict=True))
    per_write = write_ms / writes if writes else 0.0
    return f"disk {sectors * 512 / 1e6:.0f}MB w{per_write:.1f} q{queued_ms:.0f}"


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
    parser.add_argument("--fsm", choices=("kv", "sqlite"), default="kv")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="graft-timeline-"))
    os.environ[ENVIRONMENT] = str(base / "journal-{pid}.jsonl")
    system = GraftSystem(base / "cluster", fsm=args.fsm)
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
        nodes = [leader] + [n for n in system.node_ids() if n != leader]
        fsyncs = {n: _fsync_counters(system, n) for n in nodes}
        disk = _disk_counters(base)
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
            now_disk = _disk_counters(base)
            row["disk"] = _disk_cell(disk, now_disk)
            disk = now_disk
            for n in nodes:
                now = _fsync_counters(system, n)
                row[f"fsync_{n}"] = _fsync_cell(fsyncs[n], now)
                fsyncs[n] = now
            rows.append(row)
        pids = {n: system.pid(n) for n in nodes}
    finally:
        system.close()
    journals = {n: _journal(base / f"journal-{pids[n]}.jsonl") for n in nodes}
    cluster = system.cluster
    logs = {n: _log_events(cluster.log_path(n)) if cluster else [] for n in nodes}
    print(f"leader {leader}; columns per node: {' | '.join(nodes)}")
    print(
        "  t(s)  req/s   p50    p99    max  load disk MB w-ms/write q-ms | "
        "fsyncs/mean-ms>50:slow gN:count/longest-ms cCPU-ms lagN/longest cCPU forkMS"
    )
    for row in rows:
        cells = []
        for n in nodes:
            events = [e for e in journals[n] if row["start"] <= e["at"] < row["end"]]
            lines = [x for x in logs[n] if row["start"] <= x[0] < row["end"]]
            row[n] = _node_cell(events, lines)
            cells.append(f"{row[f'fsync_{n}']} {row[n]}")
        print(
            f"{row['start'] - began:6.0f} {row['ok_per_s']:6.0f} {row['p50_ms']:6.1f} "
            f"{row['p99_ms']:6.1f} {row['max_ms']:6.0f} {row['load1']:5.2f} {row['disk']} | "
            + " | ".join(cells)
        )
    all_p99 = sorted(r["p99_ms"] for r in rows)
    print(f"windows {len(rows)}; median window p99 {all_p99[len(all_p99) // 2]:.1f} ms")
    if args.json:
        args.json.write_text(json.dumps({"nodes": nodes, "rows": rows, "journals": journals}))
    print(f"journals and logs under {base}")


if __name__ == "__main__":
    main()
