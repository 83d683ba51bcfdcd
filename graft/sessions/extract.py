"""Copy the state machine's own snapshot out of a Graft snapshot file.

    python -m graft.sessions.extract SNAPSHOT OUT

A snapshot (`graft snapshot save`, GET /cluster/snapshot) holds the client-session table
beside the state machine's snapshot (graft.sessions.machine); OUT gets the latter alone: for
the SQLite FSM, a plain database file that the ``sqlite3`` tool opens. A file written before
sessions existed is copied whole.
"""

from __future__ import annotations

import sys
from pathlib import Path

from graft.sessions.machine import SnapshotContainerError, extract_fsm


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m graft.sessions.extract SNAPSHOT OUT", file=sys.stderr)
        return 2
    source, target = Path(argv[0]), Path(argv[1])
    try:
        with source.open("rb") as container, target.open("xb") as sink:
            extract_fsm(container, sink)
    except FileExistsError:
        print(f"{target} exists: name a new file", file=sys.stderr)
        return 1
    except (OSError, SnapshotContainerError) as e:
        target.unlink(missing_ok=True)
        print(f"cannot extract {source}: {e}", file=sys.stderr)
        return 1
    print(f"wrote the state machine's snapshot from {source} to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
