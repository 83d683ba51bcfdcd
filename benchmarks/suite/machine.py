"""The machine the run measured: cores, memory, kernel, and the disk's fsync latency."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return 0.0


def _filesystem(path: Path) -> str:
    out = subprocess.run(
        ["df", "--output=source,fstype", str(path)], capture_output=True, text=True
    ).stdout.splitlines()
    return " ".join(out[-1].split()) if len(out) > 1 else "unknown"


def fsync_latency(directory: Path, *, seconds: float = 2.0, block: int = 4096) -> dict[str, Any]:
    """Append `block` bytes and fsync, again and again, for `seconds`: the latency in ms.

    This is the cost a durable log pays per group commit, in the directory the servers use.
    """
    path = directory / "fsync-probe.bin"
    data = os.urandom(block)
    samples: list[float] = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline or len(samples) < 20:
            os.write(fd, data)
            started = time.perf_counter()
            os.fsync(fd)
            samples.append((time.perf_counter() - started) * 1000)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    samples.sort()
    return {
        "block_bytes": block,
        "samples": len(samples),
        "p50_ms": round(statistics.median(samples), 3),
        "p99_ms": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))], 3),
        "mean_ms": round(statistics.fmean(samples), 3),
        "per_second": round(len(samples) / (sum(samples) / 1000), 1),
    }


def describe(directory: Path) -> dict[str, Any]:
    load1, load5, _ = os.getloadavg()
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "data_filesystem": _filesystem(directory),
        "load_average_at_start": [round(load1, 2), round(load5, 2)],
        "fsync": fsync_latency(directory),
    }
