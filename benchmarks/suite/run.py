"""`python -m benchmarks` (what `make bench` runs): every system, every scenario, one report.

Order: the machine (with an fsync probe), the Klein ceiling, the load generator's own ceiling
against etcd's trivial /version handler, then Graft, etcd and PySyncObj one after another (each
alone on the machine while it is measured), then the report.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from benchmarks.suite import report
from benchmarks.suite.errors import BenchmarkError
from benchmarks.suite.etcd_system import EtcdSystem, etcd_binary
from benchmarks.suite.graft_system import GraftSystem
from benchmarks.suite.klein_ceiling import KleinCeiling
from benchmarks.suite.loadgen import Target, wrk_binary
from benchmarks.suite.machine import describe
from benchmarks.suite.pysyncobj_system import PySyncObjSystem, ensure_pysyncobj
from benchmarks.suite.scenarios import WRITE_CONCURRENCY, Recorder, run_system, warm_up
from benchmarks.suite.system import ReplicatedSystem, RequestShape

SYSTEMS = ("graft", "etcd", "pysyncobj")
SCENARIOS = ("writes", "reads", "batch", "failover")
RESULTS = Path(__file__).resolve().parent.parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Graft beside etcd and PySyncObj under one load generator (wrk).",
    )
    parser.add_argument("--seconds", type=float, default=10, help="length of each load (10)")
    parser.add_argument("--repetitions", type=int, default=3, help="runs per figure (3)")
    parser.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help=f"comma-separated subset of {','.join(SYSTEMS)}",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of {','.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--no-ceiling", action="store_true", help="skip the Klein and load-generator ceilings"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    parser.add_argument(
        "--install-peers",
        action="store_true",
        help="pip install PySyncObj into this environment if it is missing",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (data, logs)")
    return parser.parse_args(argv)


def _versions(systems: list[ReplicatedSystem]) -> dict[str, str]:
    wrk = subprocess.run([wrk_binary(), "-v"], capture_output=True, text=True)
    out = {
        "python": sys.version.split()[0],
        "twisted": version("twisted"),
        "klein": version("klein"),
        "wrk": (wrk.stdout + wrk.stderr).splitlines()[0].strip(),
    }
    git = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent,
    )
    if git.returncode == 0:
        out["graft_commit"] = git.stdout.strip()
    for system in systems:
        out[system.name] = system.version()
    return out


def _load_average() -> list[float]:
    """1- and 5-minute load averages: how much else was running on the cores."""
    load1, load5, _ = os.getloadavg()
    return [round(load1, 2), round(load5, 2)]


def _ceilings(recorder: Recorder, klein: KleinCeiling, workdir: Path, with_etcd: bool) -> None:
    # bodies the size of Graft's kv puts (the Klein endpoint reads and ignores them)
    shape = GraftSystem(workdir / "unused").put_shape()
    recorder.load("klein", "warm-up", [Target(url=klein.url, connections=16)], shape, repetitions=1)
    recorder.runs["klein"].pop("warm-up")
    for c in WRITE_CONCURRENCY:
        recorder.load("klein", f"ceiling_c{c}", [Target(url=klein.url, connections=c)], shape)
    if with_etcd:
        # The load generator's own ceiling: wrk against a trivial handler in Go (etcd's
        # /version), which answers faster than any Python server here.
        etcd = EtcdSystem(workdir / "etcd-ceiling")
        try:
            etcd.start()
            get = RequestShape(method="GET", path="/version", bodies=("",))
            for c in (16, 64):
                url = etcd.base_url(etcd.leader()) + "/version"
                recorder.load(
                    "wrk", f"ceiling_c{c}", [Target(url=url, connections=c)], get, repetitions=1
                )
        finally:
            etcd.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wanted = [s for s in args.systems.split(",") if s]
    scenarios = {s for s in args.scenarios.split(",") if s}
    unknown = (set(wanted) - set(SYSTEMS)) | (scenarios - set(SCENARIOS))
    if unknown:
        print(f"unknown system or scenario {sorted(unknown)}; see --help", file=sys.stderr)
        return 2
    try:
        wrk_binary()
        if "etcd" in wanted or not args.no_ceiling:
            etcd_binary()
        if "pysyncobj" in wanted:
            ensure_pysyncobj(args.install_peers)
    except BenchmarkError as error:
        print(error, file=sys.stderr)
        return 2
    started = datetime.datetime.now(datetime.UTC)
    workdir = Path(tempfile.mkdtemp(prefix="graft-bench-"))
    print(f"work dir {workdir}")
    recorder = Recorder(seconds=args.seconds, repetitions=args.repetitions, workdir=workdir)
    machine = describe(workdir)
    print(f"machine: {machine['cores']} cores, fsync p50 {machine['fsync']['p50_ms']} ms")
    makers = {"graft": GraftSystem, "etcd": EtcdSystem, "pysyncobj": PySyncObjSystem}
    used: list[ReplicatedSystem] = []
    settings: dict[str, Any] = {}
    phase_load: dict[str, dict[str, list[float]]] = {}
    errors: dict[str, str] = {}
    clock = time.monotonic()
    klein_log = open(workdir / "klein.log", "ab")  # noqa: SIM115 (closed below)
    klein = KleinCeiling(klein_log)
    try:
        if not args.no_ceiling:
            print("ceilings")
            klein.start()  # and it stays up: Graft's loads are paired with it rep by rep
            recorder.ceiling_url = klein.url
            _ceilings(recorder, klein, workdir, with_etcd=True)
        for name in wanted:
            system = makers[name](workdir / name)
            print(f"{name}: starting")
            used.append(system)
            phase_load[name] = {"start": _load_average()}
            try:
                system.start()
                settings[name] = system.settings()
                run_system(system, recorder, scenarios)
            except (BenchmarkError, TimeoutError) as error:
                # One system failing (a peer that never settles) must not cost the figures
                # already measured: the run is recorded with what it has and the error.
                errors[name] = str(error)
                print(f"{name}: stopped early: {error}")
            finally:
                system.close()
                phase_load[name]["end"] = _load_average()
    finally:
        klein.close()
        klein_log.close()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    machine["load_average_at_end"] = _load_average()
    machine["load_average_by_phase"] = phase_load
    med = report.medians(recorder.runs)
    result: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "wall_seconds": round(time.monotonic() - clock, 1),
        "command": shlex.join([sys.executable, "-m", "benchmarks", *(argv or sys.argv[1:])]),
        "settings": {
            "seconds": args.seconds,
            "repetitions": args.repetitions,
            "systems": wanted,
            "scenarios": sorted(scenarios),
            "per_system": settings,
            "notes": [
                "wrk -t1 (one load-generator thread); latency is per request, wrk's own clock",
                "strong reads spread the connections over all three nodes (6/5/5)",
                "Graft's write (c=16, 64) and default-read loads are each followed by the same "
                "load on the Klein endpoint (klein/paired_graft_*); the targets use those pairs",
                "default/serializable reads and writes go to the leader",
                "PySyncObj's journal is never fsynced: its writes are not durable",
                "etcd members talk plain HTTP to each other; Graft peers use mutual TLS",
            ],
        },
        "machine": machine,
        "versions": _versions(used),
        "commands": recorder.commands,
        "runs": recorder.runs,
        "medians": med,
        "targets": report.as_dicts(report.targets(med)),
        "errors": errors,
    }
    stem = started.strftime("%Y-%m-%d")
    for path in report.write_files(result, args.out, stem):
        print(f"wrote {path}")
    print(report.markdown(result))
    return 0


__all__ = ["main", "warm_up"]
