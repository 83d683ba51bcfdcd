"""The one load generator for every system: wrk, driven by wrk_driver.lua.

A load is a method, a URL and a list of request bodies (one per line in a file, cycled). A body
may hold key placeholders (KEY_SLOT, KEY64_SLOT in benchmarks.suite.system) that the driver
fills with keys no request sent before: every wrk process gets its own key prefix
(new_key_prefix), so keys stay unique across processes, repetitions and scenarios. Several wrk
processes may run at once (reads spread over three nodes); their latency histograms are merged
exactly, so percentiles over the whole load are true percentiles.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.suite.errors import BenchmarkSetupError

LUA_SCRIPT = Path(__file__).with_name("wrk_driver.lua")
# Keys are a 12-character prefix and a 12-digit counter: 24 bytes (a multiple of 3, so their
# base64 has no padding). The prefix: "u", this run's random token, a process counter, "-".
KEY_BYTES = 24
_RUN_TOKEN = os.urandom(3).hex()
_PROCESSES = itertools.count()


def new_key_prefix() -> str:
    """A key prefix no other wrk process of this run (or, almost surely, of another) uses."""
    return f"u{_RUN_TOKEN}{next(_PROCESSES) % 0x10000:04x}-"


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise BenchmarkSetupError("wrk is not installed: run `apt-get install -y wrk`")
    return found


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """One wrk process: this URL, at this many connections."""

    url: str
    connections: int


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadResult:
    """What one load (one or several wrk processes run together) measured."""

    requests: int  # every response, good or bad
    failures: int  # non-2xx/3xx responses, socket errors and timeouts
    seconds: float
    histogram: dict[int, int]  # latency in microseconds -> count

    @property
    def ok_per_second(self) -> float:
        return max(self.requests - self.failures, 0) / self.seconds if self.seconds else 0.0

    def percentile_ms(self, p: float) -> float:
        total = sum(self.histogram.values())
        if total == 0:
            return float("nan")
        rank = p / 100 * total
        seen = 0
        for value in sorted(self.histogram):
            seen += self.histogram[value]
            if seen >= rank:
                return value / 1000
        return max(self.histogram) / 1000

    def summary(self) -> dict[str, float | int]:
        return {
            "ok_per_s": round(self.ok_per_second, 1),
            "p50_ms": round(self.percentile_ms(50), 3),
            "p99_ms": round(self.percentile_ms(99), 3),
            "requests": self.requests,
            "failures": self.failures,
            "seconds": round(self.seconds, 3),
        }


def write_bodies(bodies: Sequence[str], directory: Path) -> Path:
    """The bodies file wrk_driver.lua reads: one single-line body per line."""
    with tempfile.NamedTemporaryFile(
        "w", dir=directory, prefix="bodies-", suffix=".txt", delete=False
    ) as f:
        for body in bodies:
            if "\n" in body:
                raise ValueError("a request body must be a single line for wrk_driver.lua")
            f.write(body + "\n")
        return Path(f.name)


def wrk_command(
    target: Target,
    *,
    seconds: float,
    method: str,
    bodies_file: Path,
    timeout_s: float = 10,
    key_prefix: str | None = None,
) -> list[str]:
    # -t1 always: each wrk thread has its own Lua state and so its own key counter.
    return [
        wrk_binary(),
        "-t1",
        f"-c{target.connections}",
        f"-d{max(round(seconds), 1)}s",
        f"--timeout={int(timeout_s)}s",
        "-s",
        str(LUA_SCRIPT),
        target.url,
        "--",
        method,
        str(bodies_file),
        key_prefix or new_key_prefix(),
    ]


def start_load(
    targets: Sequence[Target], *, seconds: float, method: str, bodies_file: Path
) -> list[subprocess.Popen[str]]:
    """Start one wrk per target; collect() waits for them."""
    return [
        subprocess.Popen(
            wrk_command(t, seconds=seconds, method=method, bodies_file=bodies_file),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for t in targets
    ]


def collect(processes: Sequence[subprocess.Popen[str]]) -> LoadResult:
    requests = failures = 0
    seconds = 0.0
    histogram: dict[int, int] = {}
    for proc in processes:
        out, err = proc.communicate()
        if proc.returncode != 0 or "@@totals" not in out:
            raise BenchmarkSetupError(f"wrk failed ({proc.returncode}): {err.strip() or out}")
        for line in out.splitlines():
            if line.startswith("@@totals "):
                fields = [int(x) for x in line.split()[1:]]
                requests += fields[0]
                seconds = max(seconds, fields[1] / 1e6)
                failures += sum(fields[2:])
            elif line.startswith("@@hist "):
                for pair in line.split()[1:]:
                    value, count = pair.split(":")
                    key = int(float(value))
                    histogram[key] = histogram.get(key, 0) + int(float(count))
    return LoadResult(requests=requests, failures=failures, seconds=seconds, histogram=histogram)


def run_load(
    targets: Sequence[Target], *, seconds: float, method: str, bodies_file: Path
) -> LoadResult:
    return collect(start_load(targets, seconds=seconds, method=method, bodies_file=bodies_file))


def spread(urls: Sequence[str], connections: int) -> list[Target]:
    """Split `connections` over the URLs as evenly as possible (16 over 3 -> 6, 5, 5)."""
    base, extra = divmod(connections, len(urls))
    return [
        Target(url=url, connections=base + (1 if i < extra else 0))
        for i, url in enumerate(urls)
        if base + (1 if i < extra else 0) > 0
    ]
