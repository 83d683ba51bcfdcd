"""Latency side by side: Graft (kv) and etcd, unique keys and 100-byte values, one run.

    .venv/bin/python -m benchmarks.profile_latency --seconds 10 --scenarios c1,c16,c64,batch
    .venv/bin/python -m benchmarks.profile_latency --profile c64   # py-spy on Graft's leader

A developer's tool for the write path (issue 16): every request writes a key never written
before, with a 100-byte value, so the state grows as users' would; `batch` sends 100 such
puts per request (Graft's /commands, etcd's txn). Each scenario runs against each system in
turn on the same machine; the output gives the figures and Graft's ratios to etcd, with the
load average. `--profile SCENARIO` samples Graft's leader with py-spy (`pip install py-spy`;
a dev-time tool, not a dependency) while that scenario runs and prints where the time went.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.suite.etcd_system import EtcdSystem
from benchmarks.suite.graft_system import GraftSystem
from benchmarks.suite.loadgen import LoadResult, Target, collect, run_load, start_load
from benchmarks.suite.system import ReplicatedSystem
from graft.testing.cluster import LocalCluster

VALUE_BYTES = 100
BATCH = 100
CONCURRENCY = {"c1": 1, "c16": 16, "c64": 64, "batch": 16}
# Graft's configurations to compare (``--systems graft,graft-threaded,etcd``): config sections
# over --graft-config.
VARIANTS: dict[str, dict[str, Any]] = {
    "graft": {},
    "graft-inline": {"storage": {"inline_fsync": True}},  # followers may fsync inline
    "graft-nosnap": {"snapshot": {"entries": 100_000_000}},  # no snapshot during the run
}


def _value(i: int) -> str:
    return f"{i:010d}".ljust(VALUE_BYTES, "v")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _bodies(system: str, scenario: str, prefix: str, count: int) -> Iterator[str]:
    per = BATCH if scenario == "batch" else 1
    for b in range(count):
        keys = [(f"{prefix}-{b * per + j:09d}", _value(b * per + j)) for j in range(per)]
        if system == "graft":
            puts = [
                json.dumps({"op": "put", "key": k, "value": v}, separators=(",", ":"))
                for k, v in keys
            ]
            yield json.dumps(puts, separators=(",", ":")) if per > 1 else puts[0]
        else:
            etcd = [{"key": _b64(k), "value": _b64(v)} for k, v in keys]
            body = {"success": [{"requestPut": p} for p in etcd]} if per > 1 else etcd[0]
            yield json.dumps(body, separators=(",", ":"))


def _path(system: str, scenario: str) -> str:
    if system == "graft":
        return "/commands" if scenario == "batch" else "/command"
    return "/v3/kv/txn" if scenario == "batch" else "/v3/kv/put"


def _count(scenario: str, seconds: float) -> int:
    # More bodies than requests at rates well above what this machine reaches: wrk cycles them.
    rate = 600 if scenario == "batch" else {"c1": 2000, "c16": 8000, "c64": 10000}[scenario]
    return int(rate * seconds)


def _profile_leader(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return subprocess.Popen(
        [
            *(spy, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "200"),
            *("--format", "raw", "-o", str(out), "--threads", "--nonblocking"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _summarise_profile(path: Path, top: int = 25) -> str:
    """Self time and inclusive time per function, per thread, from py-spy's raw output."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        count = int(n)
        total += count
        threads[frames[0]] += count
        own[frames[-1]] += count
        for frame in set(frames[1:]):
            inclusive[frame] += count
    lines = [f"samples {total}"]
    lines += [f"  thread {t}: {c / total:6.1%}" for t, c in threads.most_common(6)]
    lines.append("self:")
    lines += [f"  {c / total:6.1%} {f}" for f, c in own.most_common(top)]
    lines.append("inclusive:")
    lines += [f"  {c / total:6.1%} {f}" for f, c in inclusive.most_common(top)]
    return "\n".join(lines)


class TunedGraft(GraftSystem):
    """Graft with extra config sections (e.g. ``{"storage": {"inline_fsync": false}}``)."""

    def __init__(self, base: Path, extra: dict[str, Any]) -> None:
        super().__init__(base)
        self._extra = extra

    def start(self) -> None:
        self.cluster = LocalCluster(self._base, extra=self._extra)
        self.cluster.start()
        self.leader(timeout=30)


def run_scenario(
    system: ReplicatedSystem,
    name: str,
    scenario: str,
    seconds: float,
    workdir: Path,
    prefix: str,
    profile: Path | None,
) -> LoadResult:
    leader = system.leader()
    bodies = workdir / f"{name}-{scenario}.txt"
    with bodies.open("w") as f:
        for body in _bodies(name, scenario, prefix, _count(scenario, seconds)):
            f.write(body + "\n")
    url = system.base_url(leader) + _path(name, scenario)
    targets = [Target(url=url, connections=CONCURRENCY[scenario])]
    spy = None
    if profile is not None and isinstance(system, GraftSystem):
        spy = _profile_leader(system.pid(leader), seconds, profile)
    try:
        if spy is None:
            return run_load(targets, seconds=seconds, method="POST", bodies_file=bodies)
        result = collect(start_load(targets, seconds=seconds, method="POST", bodies_file=bodies))
        spy.wait(30)
        print(_summarise_profile(profile))  # type: ignore[arg-type]
        return result
    finally:
        bodies.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_latency")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--scenarios", default="c1,c16,c64,batch")
    parser.add_argument(
        "--systems", default="graft,etcd", help=f"etcd and any of {', '.join(VARIANTS)}"
    )
    parser.add_argument("--profile", default="", help="scenarios to sample Graft's leader in")
    parser.add_argument("--repetitions", type=int, default=1)
    parser.add_argument(
        "--profile-dir", type=Path, default=None, help="keep py-spy's raw samples here"
    )
    parser.add_argument("--graft-config", default="{}", help="extra config sections, JSON")
    args = parser.parse_args(argv)
    scenarios = args.scenarios.split(",")
    profiled = set(filter(None, args.profile.split(",")))
    results: dict[tuple[str, str], list[LoadResult]] = {}
    names = args.systems.split(",")
    with tempfile.TemporaryDirectory(prefix="graft-latency-") as tmp:
        workdir = Path(tmp)
        for name in names:
            base = workdir / name
            system: ReplicatedSystem
            if name.startswith("graft"):
                extra = {**json.loads(args.graft_config), **VARIANTS[name]}
                system = TunedGraft(base, extra)
            else:
                system = EtcdSystem(base)
            system.start()
            try:
                for rep in range(args.repetitions):
                    for scenario in scenarios:
                        result = run_scenario(
                            system,
                            "graft" if name.startswith("graft") else name,
                            scenario,
                            args.seconds,
                            workdir,
                            f"{scenario}{rep}",
                            (args.profile_dir or workdir) / f"profile-{name}-{scenario}.txt"
                            if scenario in profiled and rep == 0
                            else None,
                        )
                        results.setdefault((name, scenario), []).append(result)
                        if isinstance(system, GraftSystem):
                            print(f"  log writes: {_log_writes(system)}")
                        per = BATCH if scenario == "batch" else 1
                        print(
                            f"{name:14} {scenario:6} {result.ok_per_second * per:9.0f} ops/s "
                            f"p50 {result.percentile_ms(50):7.2f} ms "
                            f"p99 {result.percentile_ms(99):7.2f} ms "
                            f"failures {result.failures}  load {os.getloadavg()[0]:.2f}",
                            flush=True,
                        )
            finally:
                system.close()
    if "etcd" in names:
        _print_ratios(results, [n for n in names if n != "etcd"], scenarios)


def _log_writes(system: GraftSystem) -> str:
    """Each node's log writes so far, inline/threaded (graft_log_writes_total)."""
    cluster = system.cluster
    assert cluster is not None
    parts = []
    for node in cluster.alive():
        text = call_text(cluster.api_url(node) + "/metrics")
        found = dict(re.findall(r'graft_log_writes_total\{path="(\w+)"\} ([0-9.e+]+)', text))
        parts.append(f"{node} {found.get('inline', '?')}/{found.get('threaded', '?')}")
    return ", ".join(parts)


def call_text(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return ""


def _median(results: list[LoadResult], what: str) -> float:
    values = sorted(
        r.ok_per_second if what == "rate" else r.percentile_ms(float(what)) for r in results
    )
    return values[len(values) // 2]


def _print_ratios(
    results: dict[tuple[str, str], list[LoadResult]], names: list[str], scenarios: list[str]
) -> None:
    print("ratio to etcd (medians; throughput: higher is better, latency: lower is better):")
    for name in names:
        for scenario in scenarios:
            g, e = results[(name, scenario)], results[("etcd", scenario)]
            rate, p50, p99 = (_median(g, w) / _median(e, w) for w in ("rate", "50", "99"))
            print(
                f"  {name:14} {scenario:6} throughput {rate:5.2f}x  p50 {p50:5.2f}x  "
                f"p99 {p99:5.2f}x"
            )


if __name__ == "__main__":
    main()
