"""The kv FSM's snapshot cost at a given size: how long the applying thread (the reactor) is
held, how many commands it still applies while the snapshot is written, the total time, the
restore time and the memory.

    python -m benchmarks.kv_snapshot_bench --keys 500000 --value-bytes 100
    python -m benchmarks.kv_snapshot_bench --fsm-module /tmp/old_kv.py   # another kv.py

The main thread plays the reactor: it applies unique-key puts in a loop and records the
longest gap between two applies, while a worker thread runs the snapshot writer into a file
(as the driver does); the puts overwrite 10,000 existing keys, so the map keeps its size. A
writer that competes for the GIL shows as fewer applies and longer
gaps.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import resource
import tempfile
import threading
import time
from pathlib import Path
from typing import Any


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _private_mib(pid: int) -> float:
    """The memory a process does not share (its copied pages), from smaps_rollup."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            lines = f.read().splitlines()
    except OSError:
        return 0.0
    kib = sum(int(line.split()[1]) for line in lines if line.startswith("Private_"))
    return kib / 1024


def _load_class(path: str | None) -> Any:
    if path is None:
        from graft.fsm.kv import KeyValueStateMachine

        return KeyValueStateMachine
    spec = importlib.util.spec_from_file_location("kv_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.KeyValueStateMachine


def _put(key: str, value: str) -> bytes:
    return f'{{"op":"put","key":"{key}","value":"{value}"}}'.encode()


def run(keys: int, value_bytes: int, fsm_module: str | None) -> dict[str, Any]:
    cls = _load_class(fsm_module)
    fsm = cls()
    value = "v" * value_bytes
    started = time.perf_counter()
    for i in range(keys):
        fsm.apply(_put(f"key-{i:012d}", value), i + 1)
    out: dict[str, Any] = {
        "keys": keys,
        "value_bytes": value_bytes,
        "fill_s": round(time.perf_counter() - started, 2),
        "rss_before_mib": round(_rss_mib(), 1),
    }
    # The long-lived map out of the collector's way (as graft does after start-up): a full
    # collection of millions of objects would otherwise show as a gap of its own.
    gc.collect()
    gc.freeze()
    # Applies per second with no snapshot running, over one second.
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 1.0:
        fsm.apply(_put(f"key-{n % 10_000:012d}", value), keys + 1 + n)
        n += 1
    out["applies_per_s_idle"] = round(n / (time.perf_counter() - t0))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "snap"
        t0, cpu0 = time.perf_counter(), time.thread_time()
        write = fsm.begin_snapshot()
        out["begin_ms"] = round((time.perf_counter() - t0) * 1000, 2)
        out["begin_cpu_ms"] = round((time.thread_time() - cpu0) * 1000, 2)
        done = threading.Event()
        writer_cpu: list[float] = []

        def writer() -> None:
            cpu = time.thread_time()
            with open(path, "wb") as sink:
                write(sink)
            writer_cpu.append(time.thread_time() - cpu)
            done.set()

        thread = threading.Thread(target=writer)
        thread.start()
        applied, longest, last = 0, 0.0, time.perf_counter()
        child_private = 0.0
        pid = getattr(write, "pid", None)
        while not done.is_set():
            if pid is not None and applied % 20_000 == 0:
                child_private = max(child_private, _private_mib(pid))
            fsm.apply(_put(f"key-{applied % 10_000:012d}", value), 10**9 + applied)
            applied += 1
            now = time.perf_counter()
            longest = max(longest, now - last)
            last = now
        thread.join()
        total = time.perf_counter() - t0
        out["snapshot_total_s"] = round(total, 2)
        # CPU the node's own interpreter spent writing (GIL time taken from the reactor), and
        # the forked child's CPU (another process: no GIL shared).
        out["writer_thread_cpu_s"] = round(writer_cpu[0], 3)
        out["child_cpu_s"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime, 3)
        out["applies_per_s_during"] = round(applied / total)
        out["longest_apply_gap_ms"] = round(longest * 1000, 1)
        out["child_private_mib"] = round(child_private, 1)
        out["rss_after_snapshot_mib"] = round(_rss_mib(), 1)
        out["snapshot_mib"] = round(path.stat().st_size / 2**20, 1)
        fresh = cls()
        base = _rss_mib()
        t0 = time.perf_counter()
        with open(path, "rb") as source:
            fresh.restore(source)
        out["restore_s"] = round(time.perf_counter() - t0, 2)
        out["restore_rss_growth_mib"] = round(_rss_mib() - base, 1)
    out["max_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    # The forked writer's peak (its pages shared with the node count too).
    out["child_max_rss_mib"] = round(
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1
    )
    out["loadavg"] = os.getloadavg()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=500_000)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--fsm-module", help="a kv.py file to measure instead of graft's")
    args = parser.parse_args()
    print(json.dumps(run(args.keys, args.value_bytes, args.fsm_module), indent=2))


if __name__ == "__main__":
    main()
