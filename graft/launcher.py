"""How a Graft node process is started: the one argv for `twist graft`, and the one place that
runs Twisted's ``twist`` runner in this process.

``graft start`` runs twist here (signals reach the node directly, no wrapper process);
``graft dev``, the test harness and the fault harness start child processes with
:func:`node_command` (or put :func:`twist_args` behind their own wrapper), so every way of
starting a node passes the same arguments.

``python -m graft.launcher [--parent PID] <twist arguments>`` is the child's entry point.
``--parent PID`` ties the child's life to the process PID that started it (Linux only): when
that process dies, even by SIGKILL, the kernel sends the child SIGTERM, so a supervisor that
crashed leaves no nodes behind.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

# prctl(2) option: the signal the kernel sends this process when its parent dies.
_PR_SET_PDEATHSIG = 1


def twist_args(
    config: Path | str,
    node: str,
    *,
    log_format: str = "text",
    log_level: str | None = None,
    join: bool = False,
) -> list[str]:
    """The arguments after ``twist`` that run ``node`` of ``config``.

    The log format is explicit because twist switches to JSON whenever stdout is not a
    terminal. ``join``: the node starts with no membership and waits for the leader's log,
    rather than electing itself leader of the peers its own file lists.
    """
    options = [f"--log-format={log_format}"]
    if log_level is not None:
        options.append(f"--log-level={log_level}")
    node_args = ["graft", "--config", str(config), "--node", node]
    return [*options, *node_args, *(["--join"] if join else [])]


def node_command(
    config: Path | str, node: str, *, join: bool = False, die_with_parent: bool = False
) -> list[str]:
    """The argv of a child process that runs ``node`` with this interpreter (so the same
    virtualenv). ``die_with_parent``: the child gets SIGTERM when this process dies; only for
    a caller that starts it from its main thread (Linux ties it to the thread that forked)."""
    parent = ["--parent", str(os.getpid())] if die_with_parent else []
    return [
        sys.executable,
        "-m",
        "graft.launcher",
        *parent,
        *twist_args(config, node, join=join),
    ]


def run_twist(args: Sequence[str]) -> None:
    """Run twist with ``args`` (as after ``twist`` on a command line) in this process, until
    the node stops."""
    # The runner's only entry point lives in a private module; this is the one import of it.
    from twisted.application.twist._twist import Twist

    Twist.main(["twist", *args])


def die_with_parent(parent: int) -> None:
    """Have the kernel SIGTERM this process when ``parent`` dies; exit now if it already has
    (this process was re-parented before it could ask). No-op where prctl is missing."""
    library = ctypes.util.find_library("c")
    libc = ctypes.CDLL(library, use_errno=True) if library else None
    prctl = getattr(libc, "prctl", None)
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent:
        raise SystemExit(f"graft.launcher: parent {parent} is gone; not starting")


def main(argv: Sequence[str]) -> int:
    args = list(argv[1:])
    if len(args) >= 2 and args[0] == "--parent":
        die_with_parent(int(args[1]))
        args = args[2:]
    run_twist(args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
