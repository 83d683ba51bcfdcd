"""Running the `graft` command as a user would, in a child process, for process tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# The same entry point as the installed `graft` script, without relying on PATH.
_COMMAND = [sys.executable, "-c", "import sys; from graft.cli.app import main; sys.exit(main())"]


def graft_cli(
    *args: str, cwd: Path | None = None, env_token: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``graft ARGS`` and return what it printed and its exit code. ``env_token`` sets
    GRAFT_TOKEN for the child (the token a user would export)."""
    env = None if env_token is None else {**os.environ, "GRAFT_TOKEN": env_token}
    return subprocess.run(
        [*_COMMAND, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env
    )
