"""How many snapshots a fault run's nodes took, as deltas or whole, and installed.

The counters are the nodes' own (graft.metrics): ``graft_snapshots_taken`` (snapshots of its
FSM a node wrote), ``graft_snapshots_delta`` (of those begun, the ones begun as a delta, SQLite)
and ``graft_snapshots_installed`` (snapshots received from the leader and installed). A
process's counters start at 0, and the nemesis kills and restarts nodes, so a poller thread
reads every node's ``/metrics`` about twice a second and keeps, per node, the sum over its
finished process lifetimes (told apart by the harness's process id) plus the current one.
What a node counted in the last half second before a SIGKILL is lost, so the totals are lower
bounds; the final reading, after the heal, is complete for the processes still running.

The node logs add what metrics do not hold: ``restored_at_start``, the restarts that restored
the FSM from the node's own (folded) snapshot file ("restoring the FSM from the snapshot at
index N", graft.service), and ``delta_dropped``, deltas storage refused ("delta snapshot
dropped", graft.driver.snapshots; the next one is whole). ``whole`` is taken - (delta -
delta_dropped): the snapshots written whole, the first of each chain.

A run of the SQLite FSM that took no delta snapshot did not cover what it is for, so it fails
(``coverage_anomalies``).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from graft.testing.faults.checker import Anomaly

__all__ = [
    "COUNTERS",
    "SnapshotCounter",
    "coverage_anomalies",
    "log_counts",
    "parse_counters",
    "summarize",
]

# counter key -> the Prometheus sample name (prometheus_client adds _total to a Counter).
COUNTERS = {
    "taken": "graft_snapshots_taken_total",
    "delta": "graft_snapshots_delta_total",
    "installed": "graft_snapshots_installed_total",
}
_SAMPLE = re.compile(r"^(graft_snapshots_[a-z]+_total) ([0-9.e+]+)$", re.MULTILINE)
# Log lines -> counter key (graft.service, graft.driver.snapshots).
LOG_LINES = {
    "restored_at_start": "restoring the FSM from the snapshot at index",
    "delta_dropped": "delta snapshot dropped",
}


def parse_counters(text: str) -> dict[str, int]:
    """The three snapshot counters of a /metrics page (0 for one it lacks)."""
    found = {name: int(float(value)) for name, value in _SAMPLE.findall(text)}
    return {key: found.get(name, 0) for key, name in COUNTERS.items()}


class SnapshotCounter:
    """Per node: counters summed over process lifetimes (module docstring)."""

    def __init__(
        self,
        nodes: list[str],
        scrape: Callable[[str], str | None],
        process_id: Callable[[str], int | None],
        interval: float = 0.5,
    ) -> None:
        self.nodes = nodes
        self._scrape = scrape  # node -> its /metrics text, or None when it did not answer
        self._process_id = process_id  # node -> the id of its current process, or None
        self.interval = interval
        self._lock = threading.Lock()
        self._finished: dict[str, dict[str, int]] = {n: dict.fromkeys(COUNTERS, 0) for n in nodes}
        self._current: dict[str, tuple[int | None, dict[str, int]]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll_once(self) -> None:
        for node in self.nodes:
            pid = self._process_id(node)
            text = self._scrape(node)
            if text is None or pid is None or pid != self._process_id(node):
                continue  # no answer, or the process changed while it was asked
            self.record(node, pid, parse_counters(text))

    def record(self, node: str, pid: int, counts: dict[str, int]) -> None:
        with self._lock:
            last = self._current.get(node)
            if last is not None and last[0] != pid:  # a new process: the old one's are final
                for key, value in last[1].items():
                    self._finished[node][key] += value
            self._current[node] = (pid, counts)

    def totals(self) -> dict[str, dict[str, int]]:
        """Per node, each counter over all of that node's processes seen so far."""
        with self._lock:
            out = {}
            for node in self.nodes:
                current = self._current.get(node, (None, {}))[1]
                out[node] = {k: v + current.get(k, 0) for k, v in self._finished[node].items()}
            return out

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="snapshot-counter", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll_once()
            self._stop.wait(self.interval)

    def stop(self) -> None:
        """Stop polling, after one last reading of every node."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.poll_once()


def log_counts(log_paths: dict[str, Path]) -> dict[str, dict[str, int]]:
    """Per node, how many times each LOG_LINES message appears in its log."""
    out: dict[str, dict[str, int]] = {}
    for node, path in log_paths.items():
        text = path.read_text(errors="replace") if path.exists() else ""
        out[node] = {key: text.count(line) for key, line in LOG_LINES.items()}
    return out


def summarize(
    metrics: dict[str, dict[str, int]], logs: dict[str, dict[str, int]]
) -> dict[str, Any]:
    """The verdict's ``snapshots``: totals, and the same per node."""
    per_node: dict[str, dict[str, int]] = {}
    for node in sorted(set(metrics) | set(logs)):
        counts = {**dict.fromkeys(COUNTERS, 0), **metrics.get(node, {})}
        counts.update({**dict.fromkeys(LOG_LINES, 0), **logs.get(node, {})})
        kept_deltas = counts["delta"] - counts["delta_dropped"]
        counts["whole"] = max(0, counts["taken"] - kept_deltas)
        per_node[node] = counts
    keys = ("taken", "whole", "delta", "delta_dropped", "installed", "restored_at_start")
    totals = {k: sum(c[k] for c in per_node.values()) for k in keys}
    return {**totals, "per_node": per_node}


def coverage_anomalies(snapshots: dict[str, Any]) -> list[Anomaly]:
    """A run of the SQLite FSM must have taken at least one delta snapshot."""
    if snapshots.get("delta", 0) > 0:
        return []
    return [
        Anomaly(
            kind="no_delta_snapshots",
            message=f"no node took a delta snapshot ({snapshots.get('taken', 0)} snapshots "
            "taken in all): the run did not exercise delta snapshots; lower snapshot.entries "
            "in graft.testing.faults.run.SQLITE_SNAPSHOT, or see the node logs",
        )
    ]
