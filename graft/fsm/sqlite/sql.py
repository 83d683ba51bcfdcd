"""SQL text and SQLite errors, shared by commands, queries and snapshots: splitting a script
into statements, the one statement of a query, which errors are this machine's fault, the
connection limits, and the JSON of answers."""

from __future__ import annotations

import base64
import json
import math
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from graft.fsm.base import FSMFailure, QueryRejected
from graft.fsm.limits import SQLITE_CONNECTION_LIMITS

if TYPE_CHECKING:
    from graft.fsm.sqlite.jsonform import Statement

ROWS_PER_FETCH = 256


# SQLite reads SQL text up to a NUL (and Python's sqlite3 refuses to pass one on): checked
# before the text is split, so that it is a refusal rather than a ValueError that stops a node.
_NUL_REFUSAL = (
    "the {what} contains a NUL character (U+0000), which SQL text cannot hold; write binary "
    "data as a blob literal (X'00') or char(0)"
)


def sql_text(data: bytes, what: str, expected: str, refused: Callable[[str], Exception]) -> str:
    """``data`` (a command or a query) as SQL text, or ``refused`` saying why it is not."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise refused(f"the {what} is not UTF-8 text; expected {expected}") from None
    if "\x00" in text:
        raise refused(_NUL_REFUSAL.format(what=what))
    return text


# How many characters split_statements may hand SQLite's tokenizer for one script. Each
# semicolon inside an unfinished statement (a string, a comment, a trigger body) costs a scan
# of the statement so far, so a body of one quote and many semicolons would cost the square of
# its length on every replica; a real script scans about its own length.
SPLIT_SCAN_BUDGET = 64 << 20


def split_statements(script: str, refused: Callable[[str], Exception] = ValueError) -> list[str]:
    """The statements of an SQL script, each ending with ``;``.

    SQLite's own tokenizer (``sqlite3.complete_statement``) decides where a statement ends, so
    semicolons inside strings, comments and trigger bodies are handled; text that holds no
    statement (blank, comments only) is dropped, and an unfinished tail (an unclosed string) is
    kept as it is for SQLite to report. A script that would make the tokenizer scan more than
    SPLIT_SCAN_BUDGET characters is refused with ``refused`` (the same on every replica).
    """
    statements: list[str] = []
    start = 0  # where the statement being read begins
    searched = 0  # where to look for its next semicolon
    scanned = 0
    while True:
        semicolon = script.find(";", searched)
        last = semicolon < 0
        # The text after the last semicolon is tried as if one followed it.
        candidate = script[start:] + ";" if last else script[start : semicolon + 1]
        scanned += len(candidate)
        if scanned > SPLIT_SCAN_BUDGET:
            raise refused(_TANGLED)
        if sqlite3.complete_statement(candidate):
            statements.append(candidate)
            if last:
                return [s for s in statements if _has_code(s)]
            start = searched = semicolon + 1
        elif last:
            break
        else:
            searched = semicolon + 1
    if script[start:].strip():
        statements.append(script[start:])
    return [s for s in statements if _has_code(s)]


_TANGLED = (
    "the SQL text has too many semicolons inside one unfinished statement (a string, comment "
    "or trigger body) to split it into statements; close the string or comment, or send the "
    "statement in the JSON form (docs/sql.md), which does not split"
)


def _has_code(statement: str) -> bool:
    """False for a piece that is only blanks, comments and semicolons."""
    text = statement
    while True:
        text = text.lstrip().lstrip(";").lstrip()
        if text.startswith("--"):
            newline = text.find("\n")
            if newline < 0:
                return False
            text = text[newline + 1 :]
        elif text.startswith("/*"):
            end = text.find("*/")
            if end < 0:
                return False
            text = text[end + 2 :]
        else:
            return bool(text)


# Errors that come from this machine (disk, memory, file), not from the command: another
# replica would not hit them, so they must not become a deterministic rejection.
_ENVIRONMENT_ERRORS = frozenset(
    {
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_CORRUPT,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_NOTADB,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_PERM,
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_INTERNAL,
        sqlite3.SQLITE_NOLFS,
        sqlite3.SQLITE_PROTOCOL,
    }
)


def environment_failure(error: sqlite3.Error) -> FSMFailure | None:
    code = getattr(error, "sqlite_errorcode", None)
    if code is None or code & 0xFF not in _ENVIRONMENT_ERRORS:
        return None
    name = getattr(error, "sqlite_errorname", str(code))
    return FSMFailure(
        f"SQLite failed on this machine ({name}: {error}); stop the node, fix the cause "
        "(disk space, permissions of the data dir) and restart it: the state is rebuilt "
        "from the log"
    )


def set_limits(conn: sqlite3.Connection) -> None:
    for category, value in SQLITE_CONNECTION_LIMITS.values():
        conn.setlimit(category, value)


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def json_cell(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def one_statement(query: bytes) -> str:
    """The one SQL statement of a query, or QueryRejected saying what is wrong with it."""
    text = sql_text(query, "query", "one SQL statement", QueryRejected)
    statements = split_statements(text, QueryRejected)
    if not statements:
        raise QueryRejected("the query is empty; expected one SQL statement such as SELECT")
    if len(statements) > 1:
        raise QueryRejected(
            f"the query has {len(statements)} statements; expected exactly one "
            "(send scripts as a command)"
        )
    return statements[0]


def explain(refusal: str | None, error: sqlite3.Error) -> str:
    """Our own ``refusal`` (the authorizer's or a replaced function's) if there is one, else
    SQLite's message."""
    if refusal is not None:
        return refusal
    if isinstance(error, sqlite3.ProgrammingError | sqlite3.Warning):
        return f"{error}".rstrip(".")
    return str(error)


def execute(conn: sqlite3.Connection, statement: str | Statement) -> sqlite3.Cursor:
    """``statement`` (SQL text, or a statement of the JSON form with its parameters bound) run
    on ``conn``."""
    if isinstance(statement, str):
        return conn.execute(statement)
    if statement.params is None:
        return conn.execute(statement.sql)
    return conn.execute(statement.sql, statement.params)
