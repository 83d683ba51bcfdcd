"""The settings every node of a cluster must share, compared at the peer hello.

Replicas apply the same commands and must reach the same state: a different state machine, a
different SQLite build (its functions' results and its VM step counts differ between versions
and compile options) or different FSM limits would let replicas diverge without a word. So
each node sends ``cluster_settings`` in its hello and the receiver compares them with its own
(``compare_settings``): a difference in one of these refuses the connection, and a difference
in the timeouts (which cost only availability) is a warning.

Settings are flat ``name -> string`` maps so that nodes can compare names they do not know.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from graft.fsm.limits import determinism_settings

if TYPE_CHECKING:
    from graft.config import ClusterConfig

__all__ = [
    "SQLITE_FACTORY",
    "Difference",
    "cluster_settings",
    "compare_settings",
    "sqlite_settings",
]

SQLITE_FACTORY = "graft.fsm.sqlite:SQLiteStateMachine"
# Differences under these names only cost availability (elections, lease timing): a warning.
_WARN_ONLY = ("timeouts.",)
# Names that matter only when both nodes run the SQLite state machine.
_SQLITE_ONLY = ("sqlite.",)


@functools.cache
def sqlite_settings() -> dict[str, str]:
    """The SQLite library's version and its compile options, sorted (read once per process)."""
    connection = sqlite3.connect(":memory:")
    try:
        options = sorted(str(row[0]) for row in connection.execute("PRAGMA compile_options"))
    finally:
        connection.close()
    return {"sqlite.version": sqlite3.sqlite_version, "sqlite.compile_options": " ".join(options)}


@functools.cache
def fsm_limits() -> str:
    """The limits that decide the bundled FSMs' answers (graft.fsm.limits), as compact JSON:
    two nodes whose limits differ would refuse different commands from one log."""
    limits = determinism_settings()
    del limits["sqlite_version"], limits["sqlite_compile_options"]  # compared on their own
    return json.dumps(limits, sort_keys=True, separators=(",", ":"))


def cluster_settings(config: ClusterConfig) -> dict[str, str]:
    """The settings this node sends in its hello: its FSM factory and the limits the bundled
    FSMs decide by, the SQLite build when that FSM is the SQLite one, and its timeouts."""
    settings = {
        "fsm.factory": config.fsm.factory,
        "fsm.limits": fsm_limits(),
        "timeouts.election_ms": str(config.election_ms),
        "timeouts.heartbeat_ms": str(config.heartbeat_ms),
    }
    if config.fsm.factory == SQLITE_FACTORY:
        settings.update(sqlite_settings())
    return settings


@dataclass(frozen=True, slots=True)
class Difference:
    """One setting that differs: ``fatal`` ones refuse the connection, others are warned of."""

    name: str
    mine: str | None  # None: this node does not report the setting
    theirs: str | None
    fatal: bool

    def describe(self, peer: str) -> str:
        mine = "not set" if self.mine is None else repr(self.mine)
        theirs = "not set" if self.theirs is None else repr(self.theirs)
        return f"{self.name} is {mine} on this node but {theirs} on {peer}"


def compare_settings(mine: Mapping[str, str], theirs: Mapping[str, str]) -> list[Difference]:
    """Every setting whose value differs between the two maps, sorted by name.

    A name only one side reports is a warning (the other side runs a version without it);
    SQLite's settings count only when both sides run the SQLite state machine (otherwise the
    factories already differ, or SQLite decides nothing).
    """
    both_sqlite = mine.get("fsm.factory") == theirs.get("fsm.factory") == SQLITE_FACTORY
    differences = []
    for name in sorted(mine.keys() | theirs.keys()):
        a, b = mine.get(name), theirs.get(name)
        if a == b:
            continue
        if name.startswith(_SQLITE_ONLY) and not both_sqlite:
            continue
        fatal = a is not None and b is not None and not name.startswith(_WARN_ONLY)
        differences.append(Difference(name=name, mine=a, theirs=b, fatal=fatal))
    return differences
