"""What commands and queries may do: the rules the SQLite authorizer enforces while a
statement is prepared, and the functions a command may not call because their results differ
between replicas (time, randomness, the SQLite build, the machine's math library, the file
layout)."""

from __future__ import annotations

import math
import re
import sqlite3
from collections.abc import Sequence
from typing import Any

from graft.fsm.limits import SQLITE_CONNECTION_LIMITS

# PRAGMAs that only describe the schema or the file; allowed in queries and commands.
_INTROSPECTION_PRAGMAS = frozenset(
    {
        "table_info",
        "table_xinfo",
        "table_list",
        "index_list",
        "index_info",
        "index_xinfo",
        "foreign_key_list",
        "foreign_key_check",
        "integrity_check",
        "quick_check",
        "collation_list",
        "function_list",
        "pragma_list",
        "module_list",
        "database_list",
    }
)
# PRAGMAs stored in the database header (so in snapshots): readable in queries, settable in
# commands.
_HEADER_PRAGMAS = frozenset({"user_version", "application_id"})
_QUERY_ONLY_PRAGMAS = frozenset(
    {
        "schema_version",
        "page_count",
        "page_size",
        "freelist_count",
        "encoding",
        "foreign_keys",
        # SQLAlchemy reads it on every new connection (its default isolation level).
        "read_uncommitted",
    }
)

_QUERY_ACTIONS = frozenset(
    {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
)
_TEMP_ACTIONS = frozenset(
    {
        sqlite3.SQLITE_CREATE_TEMP_TABLE,
        sqlite3.SQLITE_CREATE_TEMP_INDEX,
        sqlite3.SQLITE_CREATE_TEMP_TRIGGER,
        sqlite3.SQLITE_CREATE_TEMP_VIEW,
        sqlite3.SQLITE_DROP_TEMP_TABLE,
        sqlite3.SQLITE_DROP_TEMP_INDEX,
        sqlite3.SQLITE_DROP_TEMP_TRIGGER,
        sqlite3.SQLITE_DROP_TEMP_VIEW,
    }
)
ACTION_NAMES = {
    sqlite3.SQLITE_INSERT: "INSERT",
    sqlite3.SQLITE_UPDATE: "UPDATE",
    sqlite3.SQLITE_DELETE: "DELETE",
    sqlite3.SQLITE_CREATE_TABLE: "CREATE TABLE",
    sqlite3.SQLITE_CREATE_INDEX: "CREATE INDEX",
    sqlite3.SQLITE_CREATE_VIEW: "CREATE VIEW",
    sqlite3.SQLITE_CREATE_TRIGGER: "CREATE TRIGGER",
    sqlite3.SQLITE_CREATE_VTABLE: "CREATE VIRTUAL TABLE",
    sqlite3.SQLITE_DROP_TABLE: "DROP TABLE",
    sqlite3.SQLITE_DROP_INDEX: "DROP INDEX",
    sqlite3.SQLITE_DROP_VIEW: "DROP VIEW",
    sqlite3.SQLITE_DROP_TRIGGER: "DROP TRIGGER",
    sqlite3.SQLITE_DROP_VTABLE: "DROP VIRTUAL TABLE",
    sqlite3.SQLITE_ALTER_TABLE: "ALTER TABLE",
    sqlite3.SQLITE_TRANSACTION: "transaction control",
    sqlite3.SQLITE_SAVEPOINT: "SAVEPOINT",
    sqlite3.SQLITE_ATTACH: "ATTACH",
    sqlite3.SQLITE_DETACH: "DETACH",
    sqlite3.SQLITE_ANALYZE: "ANALYZE",
    sqlite3.SQLITE_REINDEX: "REINDEX",
    sqlite3.SQLITE_PRAGMA: "PRAGMA",
}

# Functions whose result depends on something else than their arguments.
ALWAYS_NONDETERMINISTIC = {
    "random": 0,
    "randomblob": 1,
    "total_changes": 0,
    "current_date": 0,
    "current_time": 0,
    "current_timestamp": 0,
}
# Date and time functions: deterministic unless asked for 'now' or the local time zone. The
# argument holding the time value (after strftime's format).
DATE_FUNCTIONS = {
    "date": 0,
    "time": 0,
    "datetime": 0,
    "julianday": 0,
    "unixepoch": 0,
    "strftime": 1,
}
ZONE_MODIFIERS = frozenset({"localtime", "utc"})

# Functions whose result depends on the SQLite build (version, compile options, pointers) or on
# the machine's C math library (transcendental functions are not correctly rounded, and libm
# versions differ in the last bit): name -> the argument counts SQLite defines. Refused in
# commands; queries get SQLite's own result.
BUILD_DEPENDENT = {
    "sqlite_version": (0,),
    "sqlite_source_id": (0,),
    "sqlite_compileoption_get": (1,),
    "sqlite_compileoption_used": (1,),
    "fts3_tokenizer": (1, 2),
    "fts5_source_id": (0,),
    "load_extension": (1, 2),
}
LIBM_DEPENDENT = {
    **dict.fromkeys(
        [
            *("acos", "acosh", "asin", "asinh", "atan", "atanh", "cos", "cosh"),
            *("sin", "sinh", "tan", "tanh", "exp", "ln", "log10", "log2"),
        ],
        (1,),
    ),
    "log": (1, 2),
    "pow": (2,),
    "power": (2,),
    "atan2": (2,),
}
# Refused in commands by name when the statement is prepared (the authorizer): those above,
# plus sqlite_offset() (a byte offset in the file: a replica restored from a snapshot and one
# that replayed the log need not agree) and FTS5's bm25() (computed with libm's log()), which
# cannot be replaced by Python functions. (FTS5's hidden "rank" column, bm25 by default, is
# not caught.)
REFUSED_IN_COMMANDS = frozenset({*BUILD_DEPENDENT, *LIBM_DEPENDENT, "sqlite_offset", "bm25"})
# Tables whose rows describe this connection or the file layout rather than the data.
LAYOUT_TABLES = frozenset({"dbstat", "sqlite_dbpage", "sqlite_stmt"})
# Introspection PRAGMAs a command may not use: database_list holds this node's file path; the
# function, module, pragma and collation lists describe the build; the checks do O(database)
# work in one VM step, outside the work budget (run them as queries).
NOT_IN_COMMANDS_PRAGMAS = frozenset(
    {
        "database_list",
        "function_list",
        "module_list",
        "pragma_list",
        "collation_list",
        "integrity_check",
        "quick_check",
    }
)
# Actions of the authorizer that write rows, and those that may change which tables have a
# rowid (the cache of rowid aliases is dropped on them).
WRITE_ACTIONS = frozenset({sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE})
SCHEMA_ACTIONS = frozenset(
    {
        sqlite3.SQLITE_CREATE_TABLE,
        sqlite3.SQLITE_DROP_TABLE,
        sqlite3.SQLITE_ALTER_TABLE,
        sqlite3.SQLITE_CREATE_VTABLE,
        sqlite3.SQLITE_DROP_VTABLE,
    }
)
# A printf conversion: flags, width, precision, length, type. SQLite's %c repeats its character
# "precision" times one append at a time, even past SQLITE_LIMIT_LENGTH (then it returns NULL):
# printf('%.*c', 2000000000, 'x') holds the thread for seconds in one VM step.
_PRINTF_SPEC = re.compile(r"%([-+ #!0,]*)(\*|\d+)?(?:\.(\*|\d+))?(l{0,2})([a-zA-Z%])")
MAX_LENGTH = SQLITE_CONNECTION_LIMITS["SQLITE_LIMIT_LENGTH"][1]


def printf_refusal(name: str, args: Sequence[Any], longest: int, what: str) -> str | None:
    """Why printf()/format() with these arguments may not run: a %c repeat count over the
    longest value, which SQLite would loop through in one VM step before giving up."""
    if not args or not isinstance(args[0], str) or "c" not in args[0]:
        return None
    count = _printf_repeat(args[0], args[1:])
    if count <= longest:
        return None
    return (
        f"{name}() asked to repeat a character {count} times, more than the longest {what}: "
        f"{longest} bytes"
    )


def _printf_repeat(template: str, args: Sequence[Any]) -> int:
    """The largest precision of a %c conversion of ``template`` given its arguments."""
    largest = 0
    position = 0
    for match in _PRINTF_SPEC.finditer(template):
        width, precision, kind = match[2], match[3], match[5]
        if kind == "%":
            continue
        if width == "*":
            position += 1
        count = 0
        if precision == "*":
            count = _as_int(args[position] if position < len(args) else None)
            position += 1
        elif precision is not None:
            count = int(precision) if len(precision) < 20 else 1 << 62
        if kind == "c":
            largest = max(largest, count)
        position += 1
    return largest


def _as_int(value: Any) -> int:
    """About what sqlite3_value_int64 makes of a printf argument (enough to compare with a
    limit)."""
    if isinstance(value, bool | int):
        return int(value)
    if isinstance(value, float):
        return int(value) if math.isfinite(value) else 0
    if isinstance(value, str):
        match = re.match(r"\s*[-+]?\d{1,19}", value)
        return int(match[0]) if match else 0
    return 0


def function_refusal(name: str, why: str) -> str:
    shown = name if name.startswith("current_") else f"{name}()"
    if why == "machine":
        return (
            f"{shown} depends on the SQLite build or the machine's math library and is not "
            "allowed in a command; compute the value in the client and put it in the SQL"
        )
    if why == "layout":
        return (
            f"{shown} depends on where the data lies in this node's file and is not allowed "
            "in a command"
        )
    return (
        f"{shown} is not deterministic and not allowed in a command; "
        "compute the value in the client and put it in the SQL"
    )


def refuse_in_query(action: int, arg1: str | None, arg2: str | None, db: str | None) -> str | None:
    """Why a query may not do ``action`` (the authorizer's arguments), or None."""
    if action in _QUERY_ACTIONS:
        return None
    if action == sqlite3.SQLITE_PRAGMA:
        name = (arg1 or "").lower()
        if name in _INTROSPECTION_PRAGMAS:
            return None
        if arg2 is None and name in _HEADER_PRAGMAS | _QUERY_ONLY_PRAGMAS:
            return None
        return f"PRAGMA {name} is not allowed in a query; expected a read-only statement"
    what = ACTION_NAMES.get(action, f"action {action}")
    target = f" on {arg1}" if arg1 and action != sqlite3.SQLITE_TRANSACTION else ""
    if arg1 in ("sqlite_master", "sqlite_temp_master"):
        what, target = "a schema change", ""  # CREATE/DROP/ALTER write sqlite_master first
    return (
        f"a query must be read-only but this statement does {what}{target}; "
        "send writes as a command"
    )


def refuse_in_command(
    action: int, arg1: str | None, arg2: str | None, db: str | None
) -> str | None:
    """Why a command may not do ``action``: transactions, other databases, TEMP objects and
    PRAGMAs that are not part of the replicated state."""
    if action in (sqlite3.SQLITE_TRANSACTION, sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
        return (
            f"{ACTION_NAMES[action]} is not allowed in a command; "
            "each command already runs in one transaction on the one database"
        )
    if action in _TEMP_ACTIONS or db == "temp":
        return (
            "TEMP tables, views, triggers and indexes are not allowed in a command: they "
            "are not part of snapshots; create them in the main database"
        )
    if action == sqlite3.SQLITE_PRAGMA:
        name = (arg1 or "").lower()
        if name in _INTROSPECTION_PRAGMAS or name in _HEADER_PRAGMAS:
            return None
        return (
            f"PRAGMA {name} is not allowed in a command; only user_version, "
            "application_id and read-only introspection PRAGMAs are"
        )
    return None
