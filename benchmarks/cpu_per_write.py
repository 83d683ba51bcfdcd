"""CPU per write on each Graft node: a developer's measure that holds on a shared machine.

    .venv/bin/python -m benchmarks.cpu_per_write --seconds 10 --rounds 3
    .venv/bin/python -m benchmarks.cpu_per_write --connections 64 \
        --graft-config '{"snapshot": {"entries": 100000000}}'
    .venv/bin/python -m benchmarks.cpu_per_write --profile-dir /tmp/spy   # py-spy on every node

Three nodes and the load generator share the CPU, so on a small machine throughput is bounded by
the CPU each write costs summed over the three node processes. This starts a kv cluster, then
per round runs wrk (unique 24-byte keys, 100-byte values, POST /command on the leader) and reads
utime+stime of each node from /proc/PID/stat before and after, plus the CPU of waited-for
children (the kv snapshot's forked writer). It prints milliseconds of CPU per acknowledged
write for the leader and each follower, with the load average: wall-clock rates move with
other load on the machine, CPU per write much less. What the nodes spend with no load at all
(ticks, heartbeats; measured for ``--idle-seconds`` first) weighs on each write more when
other load slows the rate down, so the sum is also given without it ("above idle").
``--profile-dir`` samples every node with py-spy in the first round (`pip install py-spy`; a
dev-time tool) and prints its top frames.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time
from pathlib import Path

from benchmarks.profile_latency import TunedGraft, _profile_leader, _summarise_profile, call_text
from benchmarks.suite.loadgen import Target, collect, start_load, write_bodies

_TICKS = os.sysconf("SC_CLK_TCK")


def log_writes(url: str) -> float:
    """The node's log writes so far (graft_log_writes_total, inline and threaded): one per
    Ready that had entries or state to persist, so writes per log write is the batch size."""
    text = call_text(url + "/metrics")
    return sum(float(v) for v in re.findall(r"^graft_log_writes_total\{[^}]*\} (\S+)$", text, re.M))


def cpu_seconds(pid: int) -> tuple[float, float, float]:
    """(utime, stime, waited-for children's cutime+cstime) of a process, in seconds."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    # After the command name: state is field 3, utime 14, stime 15, cutime 16, cstime 17.
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return utime / _TICKS, stime / _TICKS, (cutime + cstime) / _TICKS


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cpu_per_write")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--graft-config", default="{}", help="extra config sections, JSON")
    parser.add_argument("--profile-dir", type=Path, default=None)
    parser.add_argument("--idle-seconds", type=float, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="graft-cpu-") as tmp:
        system = TunedGraft(Path(tmp) / "graft", json.loads(args.graft_config))
        system.start()
        try:
            leader = system.leader()
            nodes = [leader, *sorted(n for n in system.node_ids() if n != leader)]
            pids = {n: system.pid(n) for n in nodes}
            bodies = write_bodies(system.put_shape(unique=True).bodies, Path(tmp))
            target = Target(url=system.base_url(leader) + "/command", connections=args.connections)
            # What the nodes spend with no load (ticks, heartbeats): at a low rate it would
            # weigh on every write, so each round also reports CPU per write without it.
            idle_start = {n: cpu_seconds(p) for n, p in pids.items()}
            time.sleep(args.idle_seconds)
            idle_rate = {
                n: sum(cpu_seconds(p)[:2]) - sum(idle_start[n][:2]) for n, p in pids.items()
            }
            idle_rate = {n: v / args.idle_seconds for n, v in idle_rate.items()}
            print(
                "idle CPU ms/s: " + ", ".join(f"{n} {v * 1000:.1f}" for n, v in idle_rate.items())
            )
            for round_ in range(args.rounds):
                spies = []
                if args.profile_dir is not None and round_ == 0:
                    args.profile_dir.mkdir(parents=True, exist_ok=True)
                    spies = [
                        (n, _profile_leader(pids[n], args.seconds, args.profile_dir / f"{n}.txt"))
                        for n in nodes
                    ]
                urls = {n: system.base_url(n) for n in nodes}
                batches = {n: log_writes(u) for n, u in urls.items()}
                before = {n: cpu_seconds(p) for n, p in pids.items()}
                started = time.monotonic()
                result = collect(
                    start_load([target], seconds=args.seconds, method="POST", bodies_file=bodies)
                )
                after = {n: cpu_seconds(p) for n, p in pids.items()}
                elapsed = time.monotonic() - started
                batches = {n: log_writes(u) - batches[n] for n, u in urls.items()}
                writes = max(result.requests - result.failures, 1)
                parts = []
                total = 0.0
                marginal = 0.0
                for n in nodes:
                    marginal -= idle_rate[n] * elapsed * 1000 / writes
                    user, system_, child = (
                        (a - b) * 1000 / writes for a, b in zip(after[n], before[n], strict=True)
                    )
                    total += user + system_ + child
                    marginal += user + system_ + child
                    role = "leader" if n == leader else "follower"
                    per_batch = writes / max(batches[n], 1)
                    parts.append(
                        f"{n}({role}) {user:.3f}u+{system_:.3f}s+{child:.3f}c "
                        f"[{per_batch:.1f} writes/log write]"
                    )
                print(
                    f"round {round_}: {writes} writes {result.ok_per_second:.0f}/s "
                    f"p99 {result.percentile_ms(99):.1f} ms failures {result.failures}; "
                    f"CPU ms/write (user+sys+children) {', '.join(parts)}; sum {total:.3f}, "
                    f"above idle {marginal:.3f}; "
                    f"load {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
                for n, spy in spies:
                    spy.wait(60)
                    print(f"--- py-spy {n} ({'leader' if n == leader else 'follower'})")
                    print(_summarise_profile(args.profile_dir / f"{n}.txt"))
        finally:
            system.close()


if __name__ == "__main__":
    main()
