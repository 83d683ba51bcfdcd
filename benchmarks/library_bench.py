# mypy: disable-error-code="no-untyped-call"
"""Calls per second of a replicated counter: Graft as a library against PySyncObj, same run.

    python -m benchmarks.library_bench [--seconds 10] [--rounds 2] [--concurrency 32]

Each system runs three processes on 127.0.0.1, each embedding one node of a 3-node cluster with
the same counter (``add(amount)`` adds and answers the new value): Graft through
``graft.start_node`` with a ``@command`` class, PySyncObj as a ``SyncObj`` subclass with a
``@replicated`` method. The process that holds the leadership (the first to see itself leader
for a second) measures, calling its own node: sequential (one call at a time, each waiting for
its answer) and concurrent (``--concurrency`` calls in flight: that many coroutines awaiting
their Deferreds on Graft, calls with a callback on PySyncObj, and for PySyncObj also as many
threads making blocking ``sync=True`` calls), after a one-second warm-up each. Rounds
alternate the order of the systems (ABBA), so a change in the machine's load lands on all.
Election 350 ms, heartbeat 35 ms for all.
PySyncObj runs twice: ``pysyncobj`` tuned for latency (``appendEntriesUseBatch=False``: a
command wakes its thread at once, as in docs/benchmarks.md) and ``pysyncobj-defaults`` (its
default batching, on a 50 ms tick).

What a call means differs, and the results say so: Graft answers once a majority has the
entry fsynced in its log (mutual TLS between nodes, JSON encoding); PySyncObj answers once a
majority has it in memory, its journal (a memory-mapped file) never fsynced, entries pickled,
no encryption. Writes to the results file (default benchmarks/results/DATE-library.json) and
prints a table. PySyncObj is a benchmark peer only: ``.venv/bin/pip install pysyncobj``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import yaml

HOST = "127.0.0.1"
# name -> (worker, extra worker arguments). PySyncObj twice: tuned for latency
# (appendEntriesUseBatch=False) and with its defaults (batching on a 50 ms tick).
SYSTEMS: dict[str, tuple[str, list[str]]] = {
    "graft": ("graft", []),
    "pysyncobj": ("pysyncobj", []),
    "pysyncobj-defaults": ("pysyncobj", ["--batch", "--system-name", "pysyncobj-defaults"]),
}
RESULTS = Path(__file__).resolve().parent / "results"
SETTLE_CHECKS = 5  # a measurer must have been leader this many polls (0.2 s apart) running
ELECTION_MS, HEARTBEAT_MS = 350, 35


# --- measuring, shared ---------------------------------------------------------------------


def summary(mode: str, latencies: list[float], errors: int, seconds: float) -> dict[str, Any]:
    ordered = sorted(latencies)

    def pct(p: float) -> float | None:
        return (
            round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 2)
            if ordered
            else None
        )

    return {
        "mode": mode,
        "calls": len(latencies),
        "errors": errors,
        "seconds": round(seconds, 2),
        "calls_per_s": round(len(latencies) / seconds, 1),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def claim(path: Path) -> bool:
    """Only one process of a cluster measures: the first to create the claim file."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


# --- Graft -----------------------------------------------------------------------------------


def graft_worker(args: argparse.Namespace) -> None:
    from twisted.internet import reactor as global_reactor
    from twisted.internet import task
    from twisted.internet.defer import ensureDeferred, gatherResults

    from graft import command, query, start_node

    reactor: Any = global_reactor

    class Counter:
        def __init__(self) -> None:
            self.value = 0

        @command
        def add(self, amount: int) -> int:
            self.value += amount
            return self.value

        @query
        def get(self) -> int:
            return self.value

    node = start_node(args.config, args.node, Counter())
    counter = node.replica

    async def phase(mode: str, callers: int) -> dict[str, Any]:
        latencies: list[float] = []
        errors = 0

        async def caller(until: float, record: bool) -> None:
            nonlocal errors
            while time.monotonic() < until:
                started = time.monotonic()
                try:
                    await counter.add(1)
                except Exception:
                    errors += record
                    continue
                if record:
                    latencies.append(time.monotonic() - started)

        for record, seconds in ((False, 1.0), (True, args.seconds)):
            started = time.monotonic()
            until = started + seconds
            await gatherResults([ensureDeferred(caller(until, record)) for _ in range(callers)])
        return summary(mode, latencies, errors, time.monotonic() - started)

    async def measure() -> None:
        result = {"system": "graft", "node": args.node, "phases": []}
        result["phases"].append(await phase("sequential", 1))
        result["phases"].append(await phase(f"concurrent-{args.concurrency}", args.concurrency))
        result["final_value"] = await counter.get(consistency="strong")
        result["leader_at_end"] = node.is_leader()
        args.result.write_text(json.dumps(result))

    led = 0

    def poll() -> None:
        nonlocal led
        led = led + 1 if node.is_leader() else 0
        if led >= SETTLE_CHECKS and claim(args.claim):
            watch.stop()
            ensureDeferred(measure()).addErrback(
                lambda f: args.result.write_text(
                    json.dumps({"system": "graft", "error": f.getErrorMessage()})
                )
            )

    watch = task.LoopingCall(poll)
    watch.start(0.2)
    reactor.run()


# --- PySyncObj -------------------------------------------------------------------------------


def pysyncobj_worker(args: argparse.Namespace) -> None:
    from pysyncobj import SyncObj, SyncObjConf, replicated

    class Counter(SyncObj):  # type: ignore[misc]
        def __init__(self, me: str, partners: list[str], conf: SyncObjConf) -> None:
            super().__init__(me, partners, conf)
            self.value = 0

        @replicated  # type: ignore[untyped-decorator]
        def add(self, amount: int) -> int:
            self.value += amount
            return self.value

    conf = SyncObjConf(
        journalFile=str(args.journal),
        raftMinTimeout=ELECTION_MS / 1000,
        raftMaxTimeout=2 * ELECTION_MS / 1000,
        appendEntriesPeriod=HEARTBEAT_MS / 1000,
        commandsWaitLeader=True,
        # False: each command wakes PySyncObj's thread at once instead of waiting for its next
        # 50 ms tick (its best latency, as in docs/benchmarks.md); True is its default.
        appendEntriesUseBatch=args.batch,
    )
    me, partners = args.raft[0], args.raft[1:]
    counter = Counter(me, partners, conf)

    def phase(mode: str, callers: int, threads: bool) -> dict[str, Any]:
        """``callers`` calls in flight: callbacks (PySyncObj's asynchronous form, the match of
        Graft's Deferreds) or as many threads each making blocking ``sync=True`` calls."""
        latencies: list[float] = []
        errors = 0
        lock = threading.Lock()
        slots = threading.Semaphore(callers)

        def done(record: bool, t0: float, error: Any) -> None:
            nonlocal errors
            with lock:
                if error != 0:  # pysyncobj.FAIL_REASON.SUCCESS is 0
                    errors += record
                elif record:
                    latencies.append(time.monotonic() - t0)

        def blocking_caller(until: float, record: bool) -> None:
            while time.monotonic() < until:
                t0 = time.monotonic()
                try:
                    counter.add(1, sync=True, timeout=5)
                except Exception:
                    done(record, t0, 1)
                    continue
                done(record, t0, 0)

        def callback_caller(until: float, record: bool) -> None:
            while time.monotonic() < until:
                slots.acquire()
                t0 = time.monotonic()

                def answered(result: Any, error: Any, t0: float = t0) -> None:
                    done(record, t0, error)
                    slots.release()

                counter.add(1, callback=answered)
            for _ in range(callers):  # every call in flight answered
                slots.acquire()
            for _ in range(callers):
                slots.release()

        for record, seconds in ((False, 1.0), (True, args.seconds)):
            started = time.monotonic()
            if threads or callers == 1:
                pool = [
                    threading.Thread(target=blocking_caller, args=(started + seconds, record))
                    for _ in range(callers)
                ]
                for t in pool:
                    t.start()
                for t in pool:
                    t.join()
            else:
                callback_caller(started + seconds, record)
        return summary(mode, latencies, errors, time.monotonic() - started)

    led = 0
    while True:
        status = counter.getStatus()
        is_leader = status.get("leader") is not None and str(status["leader"]) == str(
            status["self"]
        )
        led = led + 1 if is_leader else 0
        if led >= SETTLE_CHECKS and claim(args.claim):
            break
        time.sleep(0.2)
    result: dict[str, Any] = {"system": args.system_name, "node": me, "phases": []}
    n = args.concurrency
    result["phases"].append(phase("sequential", 1, threads=False))
    result["phases"].append(phase(f"concurrent-{n}", n, threads=False))
    result["phases"].append(phase(f"threads-{n}", n, threads=True))
    result["final_value"] = counter.value  # the leader's copy, all calls answered
    args.result.write_text(json.dumps(result))
    signal.pause()  # keep the node up until the driver stops every process


# --- the driver ------------------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    from graft.testing.cluster import free_ports as ports

    return ports(count)


def graft_cluster(base: Path) -> list[list[str]]:
    """A 3-node cluster config (fsync and mutual TLS on, as `twist graft`) and its certs."""
    from graft.certs import generate_certificates
    from graft.config import load_config

    ports = free_ports(6)
    config = {
        "cluster": "library-bench",
        "timeouts": {"election": ELECTION_MS, "heartbeat": HEARTBEAT_MS},
        "peers": {
            f"n{i}": {"host": HOST, "ports": {"p2p": ports[2 * i - 2], "api": ports[2 * i - 1]}}
            for i in (1, 2, 3)
        },
        "data_dir": str(base / "data" / "{id}"),
        "tls": {
            "ca": str(base / "certs" / "ca.pem"),
            "cert": str(base / "certs" / "{id}.pem"),
            "key": str(base / "certs" / "{id}.key"),
        },
    }
    path = base / "cluster.yaml"
    path.write_text(yaml.safe_dump(config))
    generate_certificates(load_config(path))
    return [["--config", str(path), "--node", f"n{i}"] for i in (1, 2, 3)]


def pysyncobj_cluster(base: Path) -> list[list[str]]:
    addresses = [f"{HOST}:{p}" for p in free_ports(3)]
    return [
        ["--journal", str(base / f"p{i}.journal"), "--raft", addresses[i - 1]]
        + [a for j, a in enumerate(addresses, 1) if j != i]
        for i in (1, 2, 3)
    ]


def run_system(system: str, base: Path, args: argparse.Namespace) -> dict[str, Any]:
    base.mkdir(parents=True)
    worker, extra_args = SYSTEMS[system]
    per_node = graft_cluster(base) if worker == "graft" else pysyncobj_cluster(base)
    result, claim_path = base / "result.json", base / "claim"
    common = ["--seconds", str(args.seconds), "--concurrency", str(args.concurrency)]
    common += ["--result", str(result), "--claim", str(claim_path)]
    procs = []
    for i, extra in enumerate(per_node, 1):
        cmd = [sys.executable, "-m", "benchmarks.library_bench", "--worker", worker, *extra_args]
        log = open(base / f"node{i}.log", "wb")  # noqa: SIM115 (closed with the process)
        procs.append(
            (subprocess.Popen(cmd + common + extra, stdout=log, stderr=subprocess.STDOUT), log)
        )
    try:
        deadline = time.monotonic() + 60 + 3 * args.seconds
        while not result.exists() and time.monotonic() < deadline:
            if any(p.poll() is not None for p, _ in procs):
                raise RuntimeError(f"a {system} node exited; see {base}/node*.log")
            time.sleep(0.2)
        time.sleep(0.2)  # written whole by now: the writer's one write_text
        if not result.exists():
            raise RuntimeError(f"{system}: no result within the deadline; see {base}/node*.log")
        return dict(json.loads(result.read_text()))
    finally:
        for p, _ in procs:
            if p.poll() is None:
                p.terminate()
        for p, log in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            log.close()


def median_table(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """system -> mode -> the median calls/s over the rounds."""
    seen: dict[str, dict[str, list[float]]] = {}
    for res in runs:
        for ph in res.get("phases", []):
            seen.setdefault(res["system"], {}).setdefault(ph["mode"], []).append(ph["calls_per_s"])
    return {
        system: {mode: round(statistics.median(v), 1) for mode, v in modes.items()}
        for system, modes in seen.items()
    }


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )
        return out.stdout.strip()
    except OSError:
        return "unknown"


def driver(args: argparse.Namespace) -> int:
    base = Path(tempfile.mkdtemp(prefix="graft-library-bench-"))
    order = args.systems.split(",")
    runs = []
    load_before = os.getloadavg()
    for r in range(args.rounds):
        for system in order if r % 2 == 0 else order[::-1]:
            print(f"round {r + 1}: {system} ...", flush=True)
            res = run_system(system, base / f"round{r + 1}-{system}", args)
            res["round"] = r + 1
            runs.append(res)
            for ph in res.get("phases", []):
                print(
                    f"  {ph['mode']:>14}: {ph['calls_per_s']:>8} calls/s, p50 {ph['p50_ms']} ms, "
                    f"p99 {ph['p99_ms']} ms, {ph['errors']} errors, load {ph['load_avg_1m']}"
                )
    table = median_table(runs)
    report = {
        "benchmark": "library_bench",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "conditions": {
            "cpus": os.cpu_count(),
            "load_avg_before": [round(x, 2) for x in load_before],
            "load_avg_after": [round(x, 2) for x in os.getloadavg()],
            "shared": "the machine's cores are shared with other sessions' work",
            "python": sys.version.split()[0],
            "pysyncobj": version("pysyncobj"),
            "seconds_per_phase": args.seconds,
            "rounds": args.rounds,
            "concurrency": args.concurrency,
            "election_ms": ELECTION_MS,
            "heartbeat_ms": HEARTBEAT_MS,
            "disk": str(base),
        },
        "guarantees": {
            "graft": "answered once a majority has the entry fsynced; mutual TLS; JSON",
            "pysyncobj": "answered once a majority has it in memory; journal mmapped, never "
            "fsynced; pickle; no encryption; appendEntriesUseBatch=False",
            "pysyncobj-defaults": "the same, with PySyncObj's default appendEntriesUseBatch=True",
        },
        "median_calls_per_s": table,
        "runs": runs,
    }
    out = args.out or RESULTS / f"{datetime.now(UTC).date().isoformat()}-library.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(table, indent=2))
    print(f"results in {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.library_bench")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per phase")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"some of {list(SYSTEMS)}")
    worker = parser.add_argument_group("worker (started by the driver)")
    worker.add_argument("--worker", choices=("graft", "pysyncobj"))
    worker.add_argument("--config", type=Path)
    worker.add_argument("--node")
    worker.add_argument("--journal", type=Path)
    worker.add_argument("--raft", nargs="+")
    worker.add_argument("--result", type=Path)
    worker.add_argument("--claim", type=Path)
    worker.add_argument("--batch", action="store_true", help="PySyncObj: appendEntriesUseBatch")
    worker.add_argument("--system-name", default="pysyncobj")
    args = parser.parse_args(argv)
    if args.worker == "graft":
        graft_worker(args)
        return 0
    if args.worker == "pysyncobj":
        pysyncobj_worker(args)
        return 0
    return driver(args)


if __name__ == "__main__":
    sys.exit(main())
