"""The fault suite's register workload in SQL, for a cluster running the SQLite FSM.

The checker's model (graft.testing.linearizability) is a register per key with put, cas and
get; these are the same operations expressed as requests in the SQLite FSM's JSON form
(docs/sql.md), one row per key in ``registers``:

- put K V: ``SELECT v`` of K, then an upsert of (K, V), in one command (one transaction). The
  SELECT's row is the model's ``prev`` (no row: null); the upsert must affect exactly 1 row.
- cas K E V: the conditional write, then ``SELECT v`` of K, in one command. With E a value:
  ``UPDATE ... WHERE k = K AND v = E``; with E null (the model's "key absent"): ``INSERT ...
  ON CONFLICT(k) DO NOTHING``. ``ok`` is the write's ``rows_affected`` (1: applied, 0: not;
  anything else is a malformed answer) and the SELECT's row is the model's ``value``, the
  key's value after the command, which the model checks on success and on failure alike.
  Both statements run in the command's one transaction, so the value read is the one the
  conditional write left, not a later one.
- get K: the query ``SELECT v`` of K (no row: null), at the consistency the client picked.
  A ``weak`` read may be answered from a state older than the table (a follower that has not
  applied the setup command yet, a restarted node before it replays it): its "no such table:
  registers" is that state's answer, every register absent, so null, which the weak-read
  check accepts as it does kv's null. At ``strong`` and ``default`` it is an anomaly.

No statement writes a NULL ``v`` and there is no delete, so "no row" and the model's null are
the same thing. Values travel as bound parameters, never in SQL text.

Each row carries a ``pad`` of PAD_BYTES (``zeroblob``), so a 4 KiB page holds only a few
rows and the keys a run creates spread over several B-tree pages, which split as keys are
added; ``ballast`` (filled with the table, never written again) makes the database a few
hundred KiB. A delta snapshot then holds a few changed pages of a much larger file, and the
fold must keep every page it does not carry intact: the replica check after the heal compares
every node's whole database.

An answer of any other shape (a statement's error, a row count other than 0 or 1, several
rows, a value that is not text) raises MalformedAnswer; the run reports it as an anomaly.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "BALLAST_ROWS",
    "PAD_BYTES",
    "SETUP",
    "SQLITE_FSM",
    "MalformedAnswer",
    "SqlRequests",
]

SQLITE_FSM = "graft.fsm.sqlite:SQLiteStateMachine"
PAD_BYTES = 700
BALLAST_ROWS = 384  # of 1 KiB each

_SELECT = "SELECT v FROM registers WHERE k = ?"
_UPSERT = (
    "INSERT INTO registers(k, v, pad) VALUES (?, ?, zeroblob(?)) "
    "ON CONFLICT(k) DO UPDATE SET v = excluded.v"
)
_CAS_UPDATE = "UPDATE registers SET v = ? WHERE k = ? AND v = ?"
_CAS_INSERT = (
    "INSERT INTO registers(k, v, pad) VALUES (?, ?, zeroblob(?)) ON CONFLICT(k) DO NOTHING"
)

# The one command sent before the history starts (graft.testing.faults.run), through /command.
SETUP = json.dumps(
    {
        "statements": [
            {
                "sql": "CREATE TABLE IF NOT EXISTS registers "
                "(k TEXT PRIMARY KEY, v TEXT NOT NULL, pad BLOB NOT NULL)"
            },
            {"sql": "CREATE TABLE IF NOT EXISTS ballast (n INTEGER PRIMARY KEY, b BLOB NOT NULL)"},
            {
                "sql": "INSERT OR IGNORE INTO ballast(n, b) WITH RECURSIVE c(n) AS "
                "(SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < ?) SELECT n, zeroblob(1024) "
                "FROM c",
                "params": [BALLAST_ROWS],
            },
        ]
    }
).encode()


# A query's answer from a state in which the table does not exist yet.
_BEFORE_THE_TABLE = {"results": [{"error": "no such table: registers"}]}


class MalformedAnswer(ValueError):
    """A 200 answer that is not the shape the request's statements must produce."""


def _statement(sql: str, *params: Any) -> dict[str, Any]:
    return {"sql": sql, "params": list(params)}


class SqlRequests:
    """Request bodies and the translation of answers, for graft.testing.faults.workload."""

    fsm = "sqlite"
    setup: bytes | None = SETUP

    def body(self, kind: str, key: str, *, value: str | None, expect: str | None) -> bytes:
        if kind == "get":
            statements = [_statement(_SELECT, key)]
        elif kind == "put":
            statements = [_statement(_SELECT, key), _statement(_UPSERT, key, value, PAD_BYTES)]
        elif kind == "cas":
            if expect is None:
                write = _statement(_CAS_INSERT, key, value, PAD_BYTES)
            else:
                write = _statement(_CAS_UPDATE, value, key, expect)
            statements = [write, _statement(_SELECT, key)]
        else:
            raise ValueError(f"unknown operation kind {kind!r}; expected put, cas or get")
        return json.dumps({"statements": statements}).encode()

    def output(self, kind: str, answer: Any, *, weak: bool = False) -> dict[str, Any]:
        """The register model's output (graft.testing.faults.checker.to_operations reads
        ``prev``, ``ok`` and ``value``) for the FSM's ``answer`` to ``kind``'s request;
        ``weak``: the answer is a weak read's (module docstring)."""
        if weak and kind == "get" and answer == _BEFORE_THE_TABLE:
            return {"value": None}
        results = _results(answer, 1 if kind == "get" else 2)
        if kind == "get":
            return {"value": _value(results[0])}
        if kind == "put":
            if _rows_affected(results[1]) != 1:
                raise MalformedAnswer(f"the put's upsert affected {results[1]!r}, not 1 row")
            return {"prev": _value(results[0])}
        if kind == "cas":
            affected = _rows_affected(results[0])
            return {"ok": affected == 1, "value": _value(results[1])}
        raise ValueError(f"unknown operation kind {kind!r}; expected put, cas or get")


def _results(answer: Any, count: int) -> list[dict[str, Any]]:
    results = answer.get("results") if isinstance(answer, dict) else None
    if not isinstance(results, list) or len(results) != count:
        raise MalformedAnswer(f"expected {count} statement results, got {answer!r}")
    for result in results:
        if not isinstance(result, dict) or "error" in result:
            raise MalformedAnswer(f"a statement failed or is not an object: {result!r}")
    return results


def _rows_affected(result: dict[str, Any]) -> int:
    affected = result.get("rows_affected")
    if type(affected) is not int or affected not in (0, 1):
        raise MalformedAnswer(f"rows_affected must be 0 or 1 for one key, got {result!r}")
    return affected


def _value(result: dict[str, Any]) -> str | None:
    """The one column of at most one row: the register's value, or None without a row."""
    rows = result.get("values")
    if result.get("columns") != ["v"] or not isinstance(rows, list) or len(rows) > 1:
        raise MalformedAnswer(f"expected at most one row of column v, got {result!r}")
    if not rows:
        return None
    row = rows[0]
    if not isinstance(row, list) or len(row) != 1 or not isinstance(row[0], str):
        raise MalformedAnswer(f"expected one text value, got the row {row!r}")
    return row[0]
