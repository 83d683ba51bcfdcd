"""The fsync-stall nemesis: a slow disk on one node, on every fsync the node makes.

The harness starts every node with ``GRAFT_FAULTS_FSYNC_STALL`` naming a control file in the
run directory (``FaultCluster.node_env``). ``node_main`` then wraps ``os.fsync`` and
``os.fdatasync`` in the node process (all of Graft's own fsyncs go through them: the log, the
hard state, snapshots, received snapshot files): while the control file holds a number of
seconds, each call sleeps that long before it syncs. The nemesis writes the file to start a
stall and removes it to heal. Without the variable nothing is wrapped, so a node outside the
fault suite pays nothing. (SQLite's own fsyncs, in C, are not reached; the suite runs kv.)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from graft.testing.faults.history import NemesisEvent, StatusSample

ENV = "GRAFT_FAULTS_FSYNC_STALL"
KIND = "fsync-stall"
STALL_SECONDS = (0.2, 1.0)  # added to every fsync while a stall lasts


def install_fsync_stall(
    environ: Mapping[str, str] | None = None, *, target: Any = os, sleep: Any = time.sleep
) -> bool:
    """In a node process: make every fsync wait while the harness's control file says so.
    True if installed (the variable is set). ``target`` and ``sleep`` are for tests."""
    control = (os.environ if environ is None else environ).get(ENV)
    if not control:
        return False
    path = Path(control)

    def stalled(real: Callable[[Any], None]) -> Callable[[Any], None]:
        def sync(fd: Any) -> None:
            delay = stall_seconds(path)
            if delay > 0:
                sleep(delay)
            real(fd)

        return sync

    target.fsync = stalled(target.fsync)
    if hasattr(target, "fdatasync"):
        target.fdatasync = stalled(target.fdatasync)
    return True


def stall_seconds(path: Path) -> float:
    """The delay the control file asks for (0 when it is absent or unreadable)."""
    try:
        text = path.read_text()
    except OSError:
        return 0.0
    try:
        value = float(text.strip() or 0)
    except ValueError:
        return 0.0
    return min(max(value, 0.0), 10.0)


def set_stall(path: Path, seconds: float | None) -> None:
    """Start (a number of seconds per fsync) or end (None) a stall: written atomically."""
    if seconds is None:
        path.unlink(missing_ok=True)
        return
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(f"{seconds:.3f}\n")
    os.replace(temp, path)


def elections_during_stalls(
    events: Sequence[NemesisEvent], samples: Sequence[StatusSample], after: float = 1.0
) -> list[dict[str, Any]]:
    """For each fsync stall: whom it hit (the leader or a follower, as the nemesis saw it when
    it started), and whether any node's term rose between its start and ``after`` seconds past
    its end (an election it may have caused)."""
    ordered = sorted(samples, key=lambda s: s.t)
    found: list[dict[str, Any]] = []
    for e in events:
        if e.kind != KIND:
            continue
        end = (e.end if e.end is not None else e.start) + after
        before = [s.term for s in ordered if s.t <= e.start and s.term is not None]
        during = [s.term for s in ordered if e.start < s.t <= end and s.term is not None]
        term = max(before, default=0)
        found.append(
            {
                "node": e.nodes[0] if e.nodes else None,
                "role": "leader" if "(leader)" in e.detail else "follower",
                "detail": e.detail,
                "term_before": term,
                "election": max(during, default=term) > term,
            }
        )
    return found
