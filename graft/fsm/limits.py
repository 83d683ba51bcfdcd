"""The limits that decide whether a state machine accepts a command, in one place.

A command's outcome (applied, or refused with CommandRejected) must be the same on every
replica, so everything that decides it is fixed here, in code, rather than read from a node's
YAML: the input checks of the kv FSM, the work budget and size limits of the SQLite FSM, and the
SQLite library itself (VM step counts and some function results differ between builds).
``determinism_settings()`` returns all of it, for nodes to compare when they connect.
"""

from __future__ import annotations

import sqlite3

__all__ = [
    "KV_MAX_CONTAINERS",
    "SQLITE_CONNECTION_LIMITS",
    "SQLITE_FUNCTION_CALL_STEPS",
    "SQLITE_MAX_RESULT_BYTES",
    "SQLITE_MAX_RESULT_ROWS",
    "SQLITE_PROGRESS_INTERVAL",
    "SQLITE_VM_STEP_BUDGET",
    "determinism_settings",
    "sqlite_compile_options",
]

# kv: a request holding more JSON arrays and objects than this (outside strings) is refused
# before it is decoded. A valid kv request is one flat object; the margin lets a malformed one
# (a list where a string belongs) get the precise error rather than this one.
KV_MAX_CONTAINERS = 16

# SQLite: the progress handler runs every this many VM steps of a statement; the budget is
# counted in these units (the steps of a statement below a multiple of it are not counted).
SQLITE_PROGRESS_INTERVAL = 1000
# The VM steps one command may run, over all its statements. A 10,000-row INSERT takes about
# 130,000; this budget runs for about 0.1 s of plain VM work on a 2020s x86 core.
SQLITE_VM_STEP_BUDGET = 10_000_000
# Each call of an SQL function the SQLite FSM implements in Python (printf, format, the date
# functions) counts as this many VM steps: a call takes about as long as 100-200 steps.
SQLITE_FUNCTION_CALL_STEPS = 200
# What a command's final statement (SELECT, or ... RETURNING) may return: rows, and bytes
# counted as the length of each TEXT (characters) and BLOB (bytes) cell plus 8 per cell.
SQLITE_MAX_RESULT_ROWS = 100_000
SQLITE_MAX_RESULT_BYTES = 8 * 1024 * 1024
# sqlite3.Connection.setlimit on the FSM's connection: name -> (category, value). Each value is
# at most SQLite's default, so every build that accepts the default accepts it.
SQLITE_CONNECTION_LIMITS: dict[str, tuple[int, int]] = {
    # The largest string, BLOB or row: bounds the memory one value can take (zeroblob, printf,
    # replace, || blowups).
    "SQLITE_LIMIT_LENGTH": (sqlite3.SQLITE_LIMIT_LENGTH, 1024 * 1024),
    # The longest statement text (a request body is 1 MiB by default).
    "SQLITE_LIMIT_SQL_LENGTH": (sqlite3.SQLITE_LIMIT_SQL_LENGTH, 4 * 1024 * 1024),
    "SQLITE_LIMIT_COLUMN": (sqlite3.SQLITE_LIMIT_COLUMN, 2000),
    "SQLITE_LIMIT_EXPR_DEPTH": (sqlite3.SQLITE_LIMIT_EXPR_DEPTH, 1000),
    "SQLITE_LIMIT_COMPOUND_SELECT": (sqlite3.SQLITE_LIMIT_COMPOUND_SELECT, 500),
    "SQLITE_LIMIT_FUNCTION_ARG": (sqlite3.SQLITE_LIMIT_FUNCTION_ARG, 127),
    # A LIKE/GLOB comparison costs up to (pattern x text): 2.3 s for a 1000-character pattern
    # against 1 MiB of text, 0.22 s at 100, in one VM step (outside the step budget).
    "SQLITE_LIMIT_LIKE_PATTERN_LENGTH": (sqlite3.SQLITE_LIMIT_LIKE_PATTERN_LENGTH, 100),
    "SQLITE_LIMIT_VARIABLE_NUMBER": (sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999),
    "SQLITE_LIMIT_TRIGGER_DEPTH": (sqlite3.SQLITE_LIMIT_TRIGGER_DEPTH, 100),
    "SQLITE_LIMIT_ATTACHED": (sqlite3.SQLITE_LIMIT_ATTACHED, 0),
}


def sqlite_compile_options() -> list[str]:
    """The SQLite library's compile options, sorted."""
    conn = sqlite3.connect(":memory:")
    try:
        return sorted(row[0] for row in conn.execute("PRAGMA compile_options"))
    finally:
        conn.close()


def determinism_settings() -> dict[str, object]:
    """Everything that decides a command's outcome and must be equal on every node: the limits
    above, the SQLite library's version and its compile options. JSON data; two nodes may apply
    commands of one log only if theirs compare equal."""
    return {
        "kv_max_containers": KV_MAX_CONTAINERS,
        "sqlite_progress_interval": SQLITE_PROGRESS_INTERVAL,
        "sqlite_vm_step_budget": SQLITE_VM_STEP_BUDGET,
        "sqlite_function_call_steps": SQLITE_FUNCTION_CALL_STEPS,
        "sqlite_max_result_rows": SQLITE_MAX_RESULT_ROWS,
        "sqlite_max_result_bytes": SQLITE_MAX_RESULT_BYTES,
        "sqlite_connection_limits": {
            name: value for name, (_, value) in sorted(SQLITE_CONNECTION_LIMITS.items())
        },
        "sqlite_version": sqlite3.sqlite_version,
        "sqlite_compile_options": sqlite_compile_options(),
    }
