"""How many snapshots a fault run's nodes wrote, whole or as deltas, installed and restored.

Counted from the node logs, which the harness appends to across restarts (the nodes' metrics,
``graft_snapshots_taken``/``_delta``/``_installed``, start at 0 in each process, and a SIGKILL
loses what the last process counted):

- ``whole`` and ``delta``: "snapshot at index I (term T) written in S s, whole" / ", a delta"
  (graft.driver.snapshots): snapshots of the node's own FSM on disk, the first of each chain
  whole, the others the WAL pages changed since, folded into the store's full copy;
- ``installed``: "installed snapshot I from the leader": a node that was behind the leader's
  log received the leader's (folded) file and restored its FSM from it; ``installed_live``
  counts those on a node that had written a snapshot of its own since it started ("node N
  starting in term"): a node paused or cut off in the middle of its own chain of deltas, not
  one just restarted;
- ``restored_at_start``: "restoring the FSM from the snapshot at index I" (graft.service): a
  restarted node restored from its own snapshot file;
- ``delta_dropped``: "delta snapshot dropped": a delta storage refused (the next is whole).

A run of the SQLite FSM that wrote no delta snapshot did not cover what it is for, so it fails
(``coverage_anomalies``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from graft.testing.faults.checker import Anomaly

__all__ = ["KEYS", "LOG_LINES", "count_lines", "coverage_anomalies", "snapshot_counts"]

# counter -> the text of its log line (a line counts when it holds this text).
LOG_LINES = {
    "whole": ") written in ",  # and ends with ", whole"
    "delta": ") written in ",  # and ends with ", a delta"
    "installed": " from the leader (FSM restored in ",
    "restored_at_start": "restoring the FSM from the snapshot at index ",
    "delta_dropped": "delta snapshot dropped",
}
_ENDINGS = {"whole": ", whole", "delta": ", a delta"}
_STARTING = "] node "  # and " starting in term " (graft.driver: a process starts)
KEYS = ("taken", *LOG_LINES, "installed_live")


def count_lines(text: str) -> dict[str, int]:
    """Each counter over one node's log text; ``taken`` is whole + delta."""
    counts = dict.fromkeys(KEYS, 0)
    own_since_start = False  # a snapshot of its own written since the process started
    for line in text.splitlines():
        line = line.rstrip()
        if _STARTING in line and " starting in term " in line:
            own_since_start = False
        for key, needle in LOG_LINES.items():
            if needle in line and line.endswith(_ENDINGS.get(key, "")):
                counts[key] += 1
                if key in _ENDINGS:
                    own_since_start = True
                elif key == "installed" and own_since_start:
                    counts["installed_live"] += 1
    counts["taken"] = counts["whole"] + counts["delta"]
    return counts


def snapshot_counts(log_paths: dict[str, Path]) -> dict[str, Any]:
    """The verdict's ``snapshots``: the totals, and ``per_node`` the same for each node."""
    per_node = {
        node: count_lines(path.read_text(errors="replace") if path.exists() else "")
        for node, path in sorted(log_paths.items())
    }
    totals = {key: sum(counts[key] for counts in per_node.values()) for key in KEYS}
    return {**totals, "per_node": per_node}


def coverage_anomalies(snapshots: dict[str, Any]) -> list[Anomaly]:
    """A run of the SQLite FSM must have written at least one delta snapshot."""
    if snapshots.get("delta", 0) > 0:
        return []
    return [
        Anomaly(
            kind="no_delta_snapshots",
            message=f"no node wrote a delta snapshot ({snapshots.get('whole', 0)} whole ones): "
            "the run did not exercise delta snapshots; see the node logs, and "
            "graft.testing.faults.run.SQLITE_SNAPSHOT for the settings",
        )
    ]
