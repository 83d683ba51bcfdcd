"""Where one write's time goes: the stages of a c=1 write, stamped in every node, as medians.

    .venv/bin/python -m benchmarks.trace_write --writes 3000
    .venv/bin/python -m benchmarks.trace_write --config '{"storage": {"inline_fsync": true}}'

A developer's tool (issue 16, c=1 latency). It starts a 3-node kv cluster on this machine with
``GRAFT_TRACE`` set (graft.devtrace: each process stamps the stages of the write path with
``time.monotonic_ns()``, one clock for every process of the machine), sends sequential writes
of new 24-byte keys with 100-byte values to the leader over one kept-alive connection, stops
the nodes, and lines the stamps up per write by log index: the leader's HTTP parse, proposal,
Ready, AppendEntries sent, its own write and fsync on the writer thread; the first follower
to answer's frame received, Ready, write, fsync, answer sent; the leader's answer received,
commit, apply and HTTP answer written. It prints each stage's median time since the client
sent the request, the median step from the stage before, the reactor turns (iterations of the
node's reactor loop) begun since that node's previous stage, and the CPU time the stamping
thread (reactor or storage writer) spent since its previous stage: CPU time holds on a loaded
machine, where the wall-clock steps also hold the waits for a core, the GIL or a wake-up.
"""

from __future__ import annotations

import argparse
import bisect
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from benchmarks.profile_latency import _summarise_profile
from graft.testing.cluster import LocalCluster

VALUE_BYTES = 100


@dataclass
class NodeTrace:
    """One process's stamps: by (stage, index) the first time, and by stage every time."""

    first: dict[tuple[str, int], int] = field(default_factory=dict)
    times: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    cpu: dict[int, int] = field(default_factory=dict)  # stamp time -> its thread's CPU time

    @classmethod
    def read(cls, path: Path) -> NodeTrace:
        trace = cls()
        for line in path.read_text(encoding="ascii").splitlines():
            ns_text, stage, index_text, cpu_text = line.split(" ")
            ns, index = int(ns_text), int(index_text)
            trace.times[stage].append(ns)
            trace.cpu[ns] = int(cpu_text)
            if index >= 0:
                trace.first.setdefault((stage, index), ns)
        for times in trace.times.values():
            times.sort()
        # The followers' answers by arrival: inbox.resp.1 the first for an index, .2 the next.
        answers: dict[int, list[int]] = defaultdict(list)
        for (stage, index), ns in trace.first.items():
            if stage.startswith("inbox.resp."):
                answers[index].append(ns)
        for index, times in answers.items():
            for rank, ns in enumerate(sorted(times), 1):
                trace.first[(f"inbox.resp.{rank}", index)] = ns
        return trace

    def at(self, stage: str, index: int) -> int | None:
        return self.first.get((stage, index))

    def after(self, stage: str, ns: int) -> int | None:
        """The first ``stage`` stamp at or after ``ns``."""
        times = self.times.get(stage, [])
        i = bisect.bisect_left(times, ns)
        return times[i] if i < len(times) else None

    def before(self, stage: str, ns: int) -> int | None:
        """The last ``stage`` stamp at or before ``ns``."""
        times = self.times.get(stage, [])
        i = bisect.bisect_right(times, ns)
        return times[i - 1] if i else None

    def turns(self, start: int, end: int) -> int:
        times = self.times.get("turn", [])
        return bisect.bisect_left(times, end) - bisect.bisect_left(times, start)


# (label, node: "L" the leader, "F" the follower whose answer was written first, how to find
# the stamp, stage). How: "index" the stamp of this write's log index; "after:<label>" the first
# stamp at or after that stage's; "before:<stage>" the last stamp at or before that stage's
# stamp of this index (e.g. the read that brought a frame in).
STAGES: list[tuple[str, str, str, str]] = [
    ("L http data received", "L", "after:client sent", "api.data"),
    ("L request routed (parsed)", "L", "after:L http data received", "api.render"),
    ("L proposed into core", "L", "index", "propose"),
    ("L Ready taken", "L", "index", "ready.entries"),
    ("L AppendEntries written", "L", "index", "ae.sent"),
    ("L log write queued", "L", "index", "persist.submit"),
    ("L writer thread woke", "L", "before:fsync.start", "writer.woke"),
    ("L fsync start", "L", "index", "fsync.start"),
    ("L fsync end", "L", "index", "fsync.end"),
    ("L persisted (reactor)", "L", "index", "persisted"),
    ("F frame received", "F", "before:inbox.ae", "peer.data"),
    ("F AppendEntries stepped", "F", "index", "inbox.ae"),
    ("F Ready taken", "F", "index", "ready.entries"),
    ("F log write queued", "F", "index", "persist.submit"),
    ("F writer thread woke", "F", "before:fsync.start", "writer.woke"),
    ("F fsync start", "F", "index", "fsync.start"),
    ("F fsync end", "F", "index", "fsync.end"),
    ("F persisted (reactor)", "F", "index", "persisted"),
    ("F answer written", "F", "index", "resp.sent"),
    ("L answer frame received", "L", "before:inbox.resp.1", "peer.data"),
    ("L 1st answer stepped", "L", "index", "inbox.resp.1"),
    ("L 2nd answer stepped", "L", "index", "inbox.resp.2"),
    ("L commit Ready", "L", "index", "ready.commit"),
    ("L apply", "L", "index", "apply"),
    ("L http answer written", "L", "after:L apply", "api.written"),
]


# Stages stamped on the storage writer thread (the others: the reactor thread).
WRITER_THREAD = ("writer thread woke", "fsync start", "fsync end")


def timeline(
    index: int, sent: int, answered: int, leader: NodeTrace, followers: Sequence[NodeTrace]
) -> dict[str, tuple[int, str]] | None:
    """Label -> (ns, node "L"/"F"/"C") of one write's stages, or None if one is missing."""
    answers = [(f.at("resp.sent", index), f) for f in followers]
    known = [(ns, f) for ns, f in answers if ns is not None]
    if not known:
        return None
    follower = min(known, key=lambda pair: pair[0])[1]
    out: dict[str, tuple[int, str]] = {"client sent": (sent, "C")}
    for label, role, how, stage in STAGES:
        node = leader if role == "L" else follower
        ns: int | None
        if how == "index":
            ns = node.at(stage, index)
        elif how.startswith("after:"):
            ns = node.after(stage, out[how[6:]][0])
        else:
            anchor = node.at(how[7:], index)
            ns = None if anchor is None else node.before(stage, anchor)
        if stage == "writer.woke":
            # A write fsynced inline (graft.storage.inline_fsync) wakes no thread: the step
            # is then empty, at the fsync's start.
            queued = out[label.replace("writer thread woke", "log write queued")][0]
            if ns is None or ns < queued:
                ns = node.at("fsync.start", index)
        if ns is None:
            return None
        out[label] = (ns, role)
    out["client answered"] = (answered, "C")
    return out


def run(
    writes: int, warmup: int, extra: dict[str, Any], workdir: Path, profile: Path | None = None
) -> dict[str, Any]:
    trace_dir = workdir / "trace"
    os.environ["GRAFT_TRACE"] = str(trace_dir)
    try:
        cluster = LocalCluster(workdir / "cluster", extra=extra)
        cluster.start()
    finally:
        del os.environ["GRAFT_TRACE"]
    try:
        leader, _term = cluster.wait_for_leader(timeout=30)
        url = urlparse(cluster.api_url(leader))
        conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=10)
        client: list[tuple[int, int, int]] = []  # (sent, answered, index)
        load_before = os.getloadavg()
        spies = []
        for i in range(warmup + writes):
            if i == warmup and profile is not None:
                spies = [
                    (node, _spy(cluster.processes[node].pid, workdir / f"{node}.spy"))
                    for node in cluster.node_ids
                ]
            key = f"trace-{i:018d}"  # 24 bytes
            body = json.dumps(
                {"op": "put", "key": key, "value": f"{i:010d}".ljust(VALUE_BYTES, "v")}
            )
            sent = time.monotonic_ns()
            conn.request("POST", "/command", body=body.encode())
            response = conn.getresponse()
            response.read()
            answered = time.monotonic_ns()
            index = int(response.getheader("Graft-Index") or -1)
            if response.status != 200:
                raise RuntimeError(f"write {i} answered {response.status}")
            if i >= warmup:
                client.append((sent, answered, index))
        load_after = os.getloadavg()
        conn.close()
        for node, spy in spies:
            spy.send_signal(signal.SIGINT)  # py-spy writes its samples and exits
            spy.wait(30)
            assert profile is not None
            role = "leader" if node == leader else "follower"
            text = _summarise_profile(workdir / f"{node}.spy")
            (profile.parent / f"{profile.name}.{node}-{role}.txt").write_text(text)
        pids = {node: proc.pid for node, proc in cluster.processes.items()}
        for node in cluster.node_ids:
            cluster.stop(node)
    finally:
        cluster.close()
    traces = {node: NodeTrace.read(trace_dir / f"{pid}.trace") for node, pid in pids.items()}
    followers = [traces[n] for n in cluster.node_ids if n != leader]
    complete = []
    follower_of = []
    for sent, answered, index in client:
        line = timeline(index, sent, answered, traces[leader], followers)
        if line is not None:
            complete.append(line)
            first = min(followers, key=lambda f: f.at("resp.sent", index) or 1 << 62)
            follower_of.append(first)
    start, end = client[0][0], client[-1][1]
    return {
        "writes": writes,
        "complete": len(complete),
        "cpu_per_write": {
            ("leader " if node == leader else "follower ") + node: reactor_cpu(trace, start, end)
            / len(client)
            for node, trace in traces.items()
        },
        "load": (load_before, load_after),
        "timelines": complete,
        "turns": count_turns(complete, traces[leader], follower_of),
    }


def _spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy (a dev-time tool: ``pip install py-spy``) sampling ``pid`` until SIGINT."""
    spy = str(Path(sys.executable).with_name("py-spy"))
    return subprocess.Popen(
        [
            *(spy, "record", "-p", str(pid), "-r", "250", "--format", "raw"),
            *("-o", str(out), "--threads", "--nonblocking"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def summarise(result: dict[str, Any], traces: dict[str, NodeTrace] | None = None) -> str:
    """The stages in the order of their median time since the client sent, each with the
    median step from the stage before in that order and the median reactor turns its node
    began since its own previous stage."""
    timelines: list[dict[str, tuple[int, str]]] = result["timelines"]
    if not timelines:
        return "no complete timeline (is Graft-Index answered? did the nodes flush?)"
    labels = list(timelines[0])
    since = {
        label: statistics.median((t[label][0] - t["client sent"][0]) / 1000 for t in timelines)
        for label in labels
    }
    order = sorted(labels, key=lambda label: since[label])
    out = [
        f"{result['complete']} of {result['writes']} writes traced; load average "
        f"{result['load'][0][0]:.2f} before, {result['load'][1][0]:.2f} after",
        f"{'stage':30} {'since sent us':>13} {'step us':>8} {'turns':>6} {'cpu us':>7}",
    ]
    turns_of: dict[str, list[int]] = result.get("turns", {})
    for k, label in enumerate(order):
        step = (
            0.0
            if k == 0
            else statistics.median((t[label][0] - t[order[k - 1]][0]) / 1000 for t in timelines)
        )
        turns = turns_of.get(label)
        shown = f"{statistics.median(turns):6.1f}" if turns else f"{'':6}"
        cpu = turns_of.get("cpu:" + label)
        shown += f" {statistics.median(cpu) / 1000:7.0f}" if cpu else ""
        out.append(f"{label:30} {since[label]:13.0f} {step:8.0f} {shown}")
    total = [(t["client answered"][0] - t["client sent"][0]) / 1000 for t in timelines]
    out.append(
        f"client round trip: p50 {statistics.median(total):.0f} us, "
        f"p90 {statistics.quantiles(total, n=10)[-1] if len(total) > 1 else total[0]:.0f} us"
    )
    for node, cpu in sorted(result.get("cpu_per_write", {}).items()):
        out.append(f"reactor CPU per write, {node}: {cpu:.0f} us")
    return "\n".join(out)


def reactor_cpu(trace: NodeTrace, start: int, end: int) -> float:
    """The reactor thread's CPU microseconds between its first and last turn in the span."""
    turns = trace.times.get("turn", [])
    i, j = bisect.bisect_left(turns, start), bisect.bisect_right(turns, end) - 1
    if j <= i:
        return 0.0
    return (trace.cpu[turns[j]] - trace.cpu[turns[i]]) / 1000


def count_turns(
    timelines: list[dict[str, tuple[int, str]]],
    leader: NodeTrace,
    follower_of: list[NodeTrace],
) -> dict[str, list[int]]:
    """Per stage, the reactor turns its node began since that node's previous stage ("turns"),
    and the CPU time its thread spent since that thread's previous stage ("cpu:" + label)."""
    result: dict[str, list[int]] = defaultdict(list)
    for t, follower in zip(timelines, follower_of, strict=True):
        last: dict[str, int] = {}
        for label, (ns, role) in sorted(t.items(), key=lambda item: item[1][0]):
            if role == "C":
                continue
            node = leader if role == "L" else follower
            if role in last:
                result[label].append(node.turns(last[role], ns))
            last[role] = ns
            thread = (role, label.endswith(WRITER_THREAD))
            key = f"{thread}"
            if key in last:
                result["cpu:" + label].append(node.cpu[ns] - node.cpu[last[key]])
            last[key] = ns
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--config", default="{}", help="extra config sections, as JSON")
    parser.add_argument("--json", type=Path, help="also write the per-write timelines here")
    parser.add_argument(
        "--profile",
        type=Path,
        help="sample every node with py-spy during the traced writes; writes "
        "PROFILE.<node>-<role>.txt (self and inclusive time per function)",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="graft-trace-") as tmp:
        result = run(args.writes, args.warmup, json.loads(args.config), Path(tmp), args.profile)
    print(summarise(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
