"""`python -m graft.testing.faults`: a campaign of seeded fault runs; exit 1 on any anomaly.

This process stays outside the network namespace: for each run it creates a fresh namespace,
runs graft.testing.faults.run inside it under ``ip netns exec``, and always kills whatever is
left in the namespace and deletes it afterwards, also on Ctrl-C or a crash (try/finally plus
atexit).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from graft.testing.faults.netns import HarnessError, Namespace

SKIP_ENV = "GRAFT_SKIP_FAULTS"
_live: list[Namespace] = []


def _cleanup() -> None:
    for ns in list(_live):
        try:
            ns.delete()
        except HarnessError as e:
            print(f"warning: {e}", file=sys.stderr)
        _live.remove(ns)


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def preflight() -> str | None:
    """Why the suite cannot run here, or None."""
    if os.geteuid() != 0:
        return (
            "the fault suite needs root for network namespaces; run it as root (sudo make "
            f"faults) or skip it with {SKIP_ENV}=1"
        )
    for tool in ("ip", "iptables", "tc"):
        if shutil.which(tool) is None:
            return (
                f"the fault suite needs `{tool}`; install it (apt-get install -y iproute2 "
                f"iptables) or skip the suite with {SKIP_ENV}=1"
            )
    return None


def run_one(
    index: int,
    seed: int,
    duration: float,
    nodes: int,
    clients: int,
    out: Path,
    workload: str = "kv",
    fsm: str = "kv",
) -> dict[str, Any]:
    """One run in its own namespace; its verdict (or a harness-error verdict)."""
    run_dir = out / f"run-{index:02d}-seed-{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    last_error = ""
    for attempt in range(2):  # a setup hiccup (netns, iptables lock) gets one more try
        if attempt:
            shutil.rmtree(run_dir, ignore_errors=True)
            run_dir.mkdir(parents=True)
        ns = Namespace(f"graft-faults-{os.getpid()}-{index}-{attempt}")
        _live.append(ns)
        try:
            ns.create()
            cmd = [*ns.exec_prefix(), sys.executable, "-m", "graft.testing.faults.run"]
            cmd += ["--seed", str(seed), "--duration", str(duration), "--out", str(run_dir)]
            cmd += ["--nodes", str(nodes), "--clients", str(clients), "--workload", workload]
            cmd += ["--fsm", fsm]
            with (run_dir / "driver.log").open("a") as log:
                code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
        except HarnessError as e:
            code, last_error = 2, str(e)
        finally:
            ns.delete()
            _live.remove(ns)
        verdict_path = run_dir / "verdict.json"
        if code in (0, 1) and verdict_path.exists():
            verdict: dict[str, Any] = json.loads(verdict_path.read_text())
            verdict["dir"] = str(run_dir)
            return verdict
        if not last_error:
            last_error = f"the run driver exited with code {code}; see {run_dir}/driver.log"
        time.sleep(1)
    return {"seed": seed, "ok": False, "harness_error": last_error, "dir": str(run_dir)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m graft.testing.faults",
        description="Run seeded fault-injection runs against a real 5-node Graft cluster.",
    )
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--duration", type=float, default=60, help="seconds of faults per run")
    parser.add_argument("--seed", type=int, default=None, help="first seed (default: random)")
    parser.add_argument("--nodes", type=int, default=5, choices=(3, 5))
    parser.add_argument("--clients", type=int, default=10, help="concurrent client threads")
    parser.add_argument("--out", type=Path, default=None, help="where the run directories go")
    parser.add_argument(
        "--workload",
        choices=("kv", "lock"),
        default="kv",
        help="kv: HTTP clients on the kv FSM, checked for linearizability; lock: three "
        "processes running examples/lock.py, checked for fencing (--nodes/--clients unused)",
    )
    parser.add_argument(
        "--fsm",
        choices=("kv", "sqlite"),
        default="kv",
        help="the kv workload's FSM: kv (its JSON commands) or sqlite (the same operations in "
        "SQL, with frequent whole and delta snapshots; docs/faults.md)",
    )
    args = parser.parse_args(argv)
    if args.workload == "lock" and args.fsm != "kv":
        parser.error("--fsm applies to the kv workload; the lock workload has its own FSM")
    if os.environ.get(SKIP_ENV):
        print(f"fault suite skipped ({SKIP_ENV} is set)")
        return 0
    problem = preflight()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(3), "big")
    out = args.out or Path(tempfile.mkdtemp(prefix="graft-faults-"))
    out.mkdir(parents=True, exist_ok=True)
    atexit.register(_cleanup)
    # Started in the background by a non-interactive shell, SIGINT is ignored and SIGTERM would
    # end the process without cleaning up: make both unwind through the finally blocks.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    verdicts = []
    try:
        for i in range(args.runs):
            started = time.monotonic()
            v = run_one(
                i, seed + i, args.duration, args.nodes, args.clients, out, args.workload, args.fsm
            )
            verdicts.append(v)
            print(_summary_line(i, v, time.monotonic() - started), flush=True)
    except KeyboardInterrupt:
        print("interrupted; the namespace and its processes were removed", file=sys.stderr)
        return 130
    finally:
        _cleanup()
    totals = _totals(verdicts)
    (out / "campaign.json").write_text(json.dumps({"totals": totals, "runs": verdicts}, indent=2))
    if args.workload == "lock":
        print(_lock_totals_line(verdicts, out))
    if args.fsm == "sqlite":
        print(_snapshot_totals_line(verdicts))
    print(
        f"{totals['runs']} runs, {totals['operations']} operations, {totals['faults']} faults, "
        f"{totals['unknown']} unknown outcomes, {totals['anomalies']} anomalies, "
        f"{totals['harness_errors']} harness errors; results in {out}"
    )
    if totals["anomalies"]:
        return 1
    return 2 if totals["harness_errors"] else 0


def _summary_line(index: int, v: dict[str, Any], seconds: float) -> str:
    if "harness_error" in v:
        return f"run {index} seed {v['seed']}: HARNESS ERROR {v['harness_error']}"
    if v.get("workload") == "lock":
        return _lock_summary_line(index, v, seconds)
    c = v["counts"]
    state = "ok" if v["ok"] else f"{len(v['anomalies'])} ANOMALIES"
    line = (
        f"run {index} seed {v['seed']}: {state}; {c['operations']} ops ({c['ok']} ok, "
        f"{c['unknown']} unknown), {c['faults']} faults, {c['keys']} keys, "
        f"longest leaderless {c.get('longest_leaderless_ms', '?')} ms, {seconds:.0f}s; "
        f"{v['dir']}/timeline.html"
    )
    if "replica_check_under_load" in v:
        line += _replica_check_note(v["replica_check_under_load"], " under load")
    line += _replica_check_note(v.get("replica_check"))
    if "snapshots" in v:
        line += "; " + _snapshot_note(v["snapshots"])
    for a in v.get("anomalies", [])[:5]:
        line += f"\n  {a['kind']}: {a['message']}"
    return line


def _snapshot_note(s: dict[str, Any]) -> str:
    """The SQLite run's snapshot counts (graft.testing.faults.snapshot_counts)."""
    dropped = f", {s['delta_dropped']} deltas dropped" if s["delta_dropped"] else ""
    return (
        f"snapshots: {s['taken']} taken ({s['whole']} whole, {s['delta']} deltas{dropped}), "
        f"{s['installed']} installed from the leader ({s.get('installed_live', 0)} on a node "
        f"amid its own deltas), {s['restored_at_start']} restored at a restart"
    )


def _snapshot_totals_line(verdicts: list[dict[str, Any]]) -> str:
    done = [v["snapshots"] for v in verdicts if "snapshots" in v]
    keys = (
        "taken",
        "whole",
        "delta",
        "delta_dropped",
        "installed",
        "installed_live",
        "restored_at_start",
    )
    return "sqlite " + _snapshot_note({k: sum(s.get(k, 0) for s in done) for k in keys})


def _lock_summary_line(index: int, v: dict[str, Any], seconds: float) -> str:
    c = v["counts"]
    state = "ok" if v["ok"] else f"{len(v['anomalies'])} ANOMALIES"
    line = (
        f"run {index} seed {v['seed']}: {state}; {c['grants']} grants of {c['acquires']} "
        f"acquires, last token {c['final_token']}; writes {c['writes_accepted']} accepted, "
        f"{c['writes_fenced']} fenced; {c['overlaps']} overlapping holds "
        f"({c['overlaps_fenced']} fenced); {c['faults']} faults, {seconds:.0f}s; {v['dir']}"
    )
    line += _replica_check_note(v.get("replica_check"))
    for a in v.get("anomalies", [])[:5]:
        line += f"\n  {a['kind']}: {a['message']}"
    return line


def _lock_totals_line(verdicts: list[dict[str, Any]], out: Path) -> str:
    done = [v["counts"] for v in verdicts if "counts" in v]
    keys = ("grants", "writes_accepted", "writes_fenced", "overlaps", "overlaps_fenced")
    total = {k: sum(c.get(k, 0) for c in done) for k in keys}
    return (
        f"lock: {total['grants']} grants, {total['writes_accepted']} writes accepted, "
        f"{total['writes_fenced']} fenced, {total['overlaps']} overlapping holds "
        f"({total['overlaps_fenced']} with the older holder fenced)"
    )


def _replica_check_note(check: dict[str, Any] | None, when: str = "") -> str:
    """How a replica consistency check after the heal went, for the summary line."""
    if check is None:
        return f"; replica check{when}: no answer"
    at = f"at {check.get('index')}{when}"
    if check.get("mismatch"):
        return f"; replica check {at}: DIGESTS DIFFER"
    if not check.get("complete"):
        missing = sorted(n for n, m in check.get("members", {}).items() if not m.get("digest"))
        return f"; replica check {at}: no digest from {', '.join(missing)}"
    return f"; replicas equal {at}"


def _totals(verdicts: list[dict[str, Any]]) -> dict[str, int]:
    done = [v for v in verdicts if "counts" in v]
    return {
        "runs": len(verdicts),
        "operations": sum(v["counts"]["operations"] for v in done),
        "faults": sum(v["counts"]["faults"] for v in done),
        "unknown": sum(v["counts"]["unknown"] for v in done),
        "anomalies": sum(len(v["anomalies"]) for v in done),
        "undecided_keys": sum(len(v["undecided_keys"]) for v in done),
        "harness_errors": len(verdicts) - len(done),
    }


if __name__ == "__main__":
    sys.exit(main())
