"""The default FSM: a replicated SQLite database.

Commands
    A command is a UTF-8 SQL script. Its statements run in order inside ONE transaction: if any
    statement fails, everything the script did is rolled back and CommandRejected carries
    SQLite's message (which statement, and why). The answer is JSON::

        {"changes": N, "last_insert_rowid": R-or-null}

    ``changes`` counts the rows the script's statements inserted, updated or deleted (not those
    changed by triggers); ``last_insert_rowid`` is the rowid of the last row the script inserted,
    null if it inserted none. When the script's final statement returns rows (a SELECT, or
    ``... RETURNING``), the answer also has ``"columns"`` and ``"rows"`` as for a query.

Queries
    A query is ONE read-only statement (SELECT, WITH ... SELECT, or an introspection PRAGMA such
    as ``table_info``). Anything that would write, several statements, or transaction control is
    refused with QueryRejected and changes nothing; an SQLite authorizer enforces this while the
    statement is prepared, before it runs. The answer is JSON
    ``{"columns": [...], "rows": [[...], ...]}``; a BLOB is returned as a base64 string, and a
    non-finite REAL (inf, -inf) as null.

    The driver runs queries through ``query_in_thread``: in a worker thread, on a read-only
    connection of its own (the same rules), stopped at a deadline (QueryTimedOut), and refused
    when the answer would exceed ``query_max_bytes`` (an option, 8 MiB by default).

Determinism
    Every replica must reach the same state from the same commands, so inside commands these are
    refused (CommandRejected): ``random()``, ``randomblob()``, ``total_changes()``,
    ``current_date``/``current_time``/``current_timestamp`` (also as column DEFAULTs), the date
    and time functions (``date``, ``time``, ``datetime``, ``julianday``, ``unixepoch``,
    ``strftime``) with ``'now'`` or no time value, and their ``'localtime'``/``'utc'`` modifiers
    (they depend on the machine's time zone). Also refused: ``BEGIN``/``COMMIT``/``ROLLBACK``
    (the FSM owns the transaction), ``ATTACH``/``DETACH``, TEMP tables, views, triggers and
    indexes (they are not part of snapshots), and PRAGMAs other than ``user_version``,
    ``application_id`` and the read-only introspection ones. Refused too, as they depend on
    the SQLite build, the machine or the node's files: ``sqlite_version()``,
    ``sqlite_source_id()``, ``sqlite_compileoption_get/used()``, ``fts3_tokenizer()``,
    ``fts5_source_id()``, ``load_extension()``, ``sqlite_offset()``, ``timediff()`` with
    ``'now'``, the C math library's transcendental functions (``sin``, ``ln``, ``exp``,
    ``pow``, ...), the ``dbstat``, ``sqlite_dbpage`` and ``sqlite_stmt`` tables, and PRAGMA
    ``database_list``, ``function_list``, ``module_list``, ``pragma_list``,
    ``collation_list``, ``integrity_check`` and ``quick_check`` (also as ``pragma_*``
    table-valued functions). A command may not leave rowid 2**63-1 in a table it wrote (SQLite
    then picks the next rowid at random), nor an AUTOINCREMENT sequence at 2**63-1. Queries
    may use all the functions.

Limits
    Each command runs within limits that are the same on every replica (``graft.fsm.limits``):
    a budget of SQLITE_VM_STEP_BUDGET VM steps (each call of a function this module runs in
    Python counts SQLITE_FUNCTION_CALL_STEPS), the connection limits SQLITE_CONNECTION_LIMITS
    (the longest value or row, statement, LIKE pattern, ...), and at most
    SQLITE_MAX_RESULT_ROWS rows and SQLITE_MAX_RESULT_BYTES bytes returned by its final
    statement. Over any of them, CommandRejected names the limit. SQLITE_FULL raised because
    an AUTOINCREMENT table has used its largest rowid is a CommandRejected too.

Storage
    The database file is ``data_dir/fsm.sqlite3``. It is deleted and created empty when the FSM
    starts: the node rebuilds the state from its snapshot and log, which are the durable truth,
    so the file needs no durability of its own (``synchronous=OFF``). It is in WAL mode so that
    a snapshot can read the database while commands go on writing it.

Snapshots
    A snapshot is an SQLite database file (in rollback-journal mode, so that any ``sqlite3``
    tool opens it as it is). ``begin_snapshot`` opens a second connection and starts a read
    transaction on it: in WAL mode that pins the database as of that moment for this reader,
    whatever the main connection commits afterwards, and costs about a millisecond. The writer
    it returns copies the pinned state with SQLite's backup API from that reader into a temp
    file in the data dir (the backup step runs without the GIL and without any lock that the
    main connection needs), ends the read transaction, streams the file to the sink and
    deletes it. While the reader is open the WAL cannot be reset, so it grows by what commands
    write meanwhile; the writer checkpoints it once the read transaction is over, from its own
    thread, and ``journal_size_limit`` truncates the file when the WAL is next reset.
    ``snapshot`` is ``begin_snapshot`` and its writer run at once. ``restore`` moves the
    received file into place as the database (removing the old ``-wal`` and ``-shm``) rather
    than copying it page by page.

Failures
    An SQLite error caused by this machine rather than by the command (disk full, I/O error,
    out of memory, a corrupt or unwritable file) raises FSMFailure, never CommandRejected:
    another replica would not fail the same way, so the node must stop instead of answering.

Calls must not overlap (the driver calls from one thread at a time), except
``query_in_thread``, which runs in worker threads at the same time as the others.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import shutil
import sqlite3
import struct
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from graft.config import ConfigError
from graft.errors import SHUTTING_DOWN
from graft.fsm.base import (
    CommandRejected,
    CorruptSnapshot,
    FSMFailure,
    QueryRejected,
    QueryTimedOut,
)
from graft.fsm.limits import (
    SQLITE_CONNECTION_LIMITS,
    SQLITE_FUNCTION_CALL_STEPS,
    SQLITE_MAX_RESULT_BYTES,
    SQLITE_MAX_RESULT_ROWS,
    SQLITE_PROGRESS_INTERVAL,
    SQLITE_VM_STEP_BUDGET,
)
from graft.fsm.sqlite_digest import begin_sqlite_digest

__all__ = ["SQLiteStateMachine", "split_statements"]

_SQLITE_HEADER = b"SQLite format 3\x00"
# Bytes 18 and 19 of the header: the file format write and read versions, 2 in WAL mode and 1
# in rollback-journal mode. A backup of a WAL database copies 2; snapshots are stored with 1.
_FORMAT_VERSION_OFFSET = 18
_ROLLBACK_FORMAT = b"\x01\x01"
# Bytes 40-43: the schema cookie (PRAGMA schema_version). The backup API sets the copy's to its
# own old value plus one; the snapshot carries the source's, so that a restored replica answers
# PRAGMA schema_version like one that replayed the log.
_SCHEMA_COOKIE_OFFSET = 40
# The WAL file is truncated to this size when it is reset after having grown (e.g. during a
# snapshot); below it, its space is reused rather than given back.
_WAL_SIZE_LIMIT = 64 * 1024 * 1024
_COPY_CHUNK = 1024 * 1024
# Written by us before each command so that last_insert_rowid() and changes() start from the
# same value on every replica, whatever happened on this connection before (e.g. a restore).
_ROWID_SENTINEL = -(1 << 63)
_RESET_ROWID = f"INSERT OR REPLACE INTO temp._graft_rowid(rowid) VALUES ({_ROWID_SENTINEL})"

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
    {"schema_version", "page_count", "page_size", "freelist_count", "encoding", "foreign_keys"}
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
_ACTION_NAMES = {
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
_ALWAYS_NONDETERMINISTIC = {
    "random": 0,
    "randomblob": 1,
    "total_changes": 0,
    "current_date": 0,
    "current_time": 0,
    "current_timestamp": 0,
}
# Date and time functions: deterministic unless asked for 'now' or the local time zone. The
# argument holding the time value (after strftime's format).
_DATE_FUNCTIONS = {
    "date": 0,
    "time": 0,
    "datetime": 0,
    "julianday": 0,
    "unixepoch": 0,
    "strftime": 1,
}
_ZONE_MODIFIERS = frozenset({"localtime", "utc"})

# The largest answer a query may build (its JSON, in bytes), unless fsm.options says otherwise.
# It must fit in a peer frame, since a follower forwards default reads to the leader.
DEFAULT_QUERY_MAX_BYTES = 8 * 1024 * 1024
# A watchdog thread interrupts a query at its deadline. Besides, every this many SQLite VM
# instructions (some 30 ms of work) a progress handler looks at the deadline, in case the
# interrupt came between two statements. Not much more often: each look takes the GIL, and
# two query threads taking it thousands of times a second delay the reactor thread by
# milliseconds at every turn (measured: /health median 0.9 -> 8 ms at 10,000 instructions).
_DEADLINE_CHECK_STEPS = 1_000_000
# Read-only connections kept open between queries (more are opened when more threads query).
_MAX_IDLE_READERS = 4
# Functions whose result depends on the SQLite build (version, compile options, pointers) or on
# the machine's C math library (transcendental functions are not correctly rounded, and libm
# versions differ in the last bit): name -> the argument counts SQLite defines. Refused in
# commands; queries get SQLite's own result.
_BUILD_DEPENDENT = {
    "sqlite_version": (0,),
    "sqlite_source_id": (0,),
    "sqlite_compileoption_get": (1,),
    "sqlite_compileoption_used": (1,),
    "fts3_tokenizer": (1, 2),
    "fts5_source_id": (0,),
    "load_extension": (1, 2),
}
_LIBM_DEPENDENT = {
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
_REFUSED_IN_COMMANDS = frozenset({*_BUILD_DEPENDENT, *_LIBM_DEPENDENT, "sqlite_offset", "bm25"})
# Tables whose rows describe this connection or the file layout rather than the data.
_LAYOUT_TABLES = frozenset({"dbstat", "sqlite_dbpage", "sqlite_stmt"})
# Introspection PRAGMAs a command may not use: database_list holds this node's file path; the
# function, module, pragma and collation lists describe the build; the checks do O(database)
# work in one VM step, outside the work budget (run them as queries).
_NOT_IN_COMMANDS_PRAGMAS = frozenset(
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
# The largest rowid: once a table holds it, SQLite picks the next rowid at random (plain
# tables) or fails with SQLITE_FULL (AUTOINCREMENT).
_MAX_ROWID = (1 << 63) - 1
# Actions of the authorizer that write rows, and those that may change which tables have a
# rowid (the cache of rowid aliases is dropped on them).
_WRITE_ACTIONS = frozenset({sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE})
_SCHEMA_ACTIONS = frozenset(
    {
        sqlite3.SQLITE_CREATE_TABLE,
        sqlite3.SQLITE_DROP_TABLE,
        sqlite3.SQLITE_ALTER_TABLE,
        sqlite3.SQLITE_CREATE_VTABLE,
        sqlite3.SQLITE_DROP_VTABLE,
    }
)
_BUDGET_UNITS = SQLITE_VM_STEP_BUDGET // SQLITE_PROGRESS_INTERVAL
_CALLS_PER_UNIT = SQLITE_PROGRESS_INTERVAL // SQLITE_FUNCTION_CALL_STEPS
# A printf conversion: flags, width, precision, length, type. SQLite's %c repeats its character
# "precision" times one append at a time, even past SQLITE_LIMIT_LENGTH (then it returns NULL):
# printf('%.*c', 2000000000, 'x') holds the thread for seconds in one VM step.
_PRINTF_SPEC = re.compile(r"%([-+ #!0,]*)(\*|\d+)?(?:\.(\*|\d+))?(l{0,2})([a-zA-Z%])")
_MAX_LENGTH = SQLITE_CONNECTION_LIMITS["SQLITE_LIMIT_LENGTH"][1]
_ROWS_PER_FETCH = 256


# SQLite reads SQL text up to a NUL (and Python's sqlite3 refuses to pass one on): checked
# before the text is split, so that it is a refusal rather than a ValueError that stops a node.
_NUL_REFUSAL = (
    "the {what} contains a NUL character (U+0000), which SQL text cannot hold; write binary "
    "data as a blob literal (X'00') or char(0)"
)


def split_statements(script: str) -> list[str]:
    """The statements of an SQL script, each ending with ``;``.

    SQLite's own tokenizer (``sqlite3.complete_statement``) decides where a statement ends, so
    semicolons inside strings, comments and trigger bodies are handled; text that holds no
    statement (blank, comments only) is dropped, and an unfinished tail (an unclosed string) is
    kept as it is for SQLite to report.
    """
    statements: list[str] = []
    current: list[str] = []
    for piece in script.split(";"):
        current.append(piece)
        candidate = ";".join(current) + ";"
        if sqlite3.complete_statement(candidate):
            statements.append(candidate)
            current = []
    tail = ";".join(current)
    if current and tail.strip():
        statements.append(tail)
    return [s for s in statements if _has_code(s)]


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


def _environment_failure(error: sqlite3.Error) -> FSMFailure | None:
    code = getattr(error, "sqlite_errorcode", None)
    if code is None or code & 0xFF not in _ENVIRONMENT_ERRORS:
        return None
    name = getattr(error, "sqlite_errorname", str(code))
    return FSMFailure(
        f"SQLite failed on this machine ({name}: {error}); stop the node, fix the cause "
        "(disk space, permissions of the data dir) and restart it: the state is rebuilt "
        "from the log"
    )


def _printf_refusal(name: str, args: Sequence[Any], longest: int, what: str) -> str | None:
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


def _set_limits(conn: sqlite3.Connection) -> None:
    for category, value in SQLITE_CONNECTION_LIMITS.values():
        conn.setlimit(category, value)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _function_refusal(name: str, why: str) -> str:
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


def _json_cell(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class SQLiteStateMachine:
    """A replicated SQLite database (see the module docstring for the full contract)."""

    content_type = "application/json"

    def __init__(
        self,
        *,
        data_dir: Path,
        base_dir: Path | None = None,
        filename: str = "fsm.sqlite3",
        foreign_keys: bool = True,
        query_max_bytes: int = DEFAULT_QUERY_MAX_BYTES,
    ) -> None:
        del base_dir  # nothing to resolve
        self._path = Path(data_dir) / filename
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._foreign_keys = foreign_keys
        # What the authorizer lets through: "internal" (our own statements), "command", "query".
        self._mode = "internal"
        # Why the authorizer or a function last refused, for the error message.
        self._refusal: str | None = None
        # Evaluates the built-in date functions we replace, with the arguments we allow.
        self._dates = sqlite3.connect(":memory:", check_same_thread=False)
        _set_limits(self._dates)
        # The running command's work, in units of SQLITE_PROGRESS_INTERVAL VM steps.
        self._steps = 0
        self._calls = 0
        # Set while a failing statement runs again to find why (outside the budget: the
        # triggers it runs with add steps).
        self._probing = False
        # The main-database tables the running command (and its current statement) inserts
        # into or updates.
        self._written: set[str] = set()
        self._statement_written: set[str] = set()
        # Whether it deletes or updates rows (so may have removed a row with the largest rowid
        # while the AUTOINCREMENT sequence keeps it).
        self._removed = False
        # table -> the name that reads its rowid (None: it has none), until the schema changes.
        self._rowid_names: dict[str, str | None] = {}
        # How snapshot writers run the backup: all pages in one step unless a test asks for
        # small steps with a callback between them.
        self._backup_pages = -1
        self._backup_progress: Callable[[int, int, int], object] | None = None
        self._init_readers(query_max_bytes)
        self._remove_files()
        self._remove_leftovers()
        self._conn = self._open()

    # --- the StateMachine interface ---------------------------------------------------------

    def apply(self, command: bytes, index: int) -> bytes:
        del index  # the state does not depend on where in the log the command sits
        try:
            script = command.decode("utf-8")
        except UnicodeDecodeError:
            raise CommandRejected("the command is not UTF-8 text; expected an SQL script") from None
        if "\x00" in script:
            raise CommandRejected(_NUL_REFUSAL.format(what="command"))
        statements = split_statements(script)
        conn = self._conn
        conn.execute(_RESET_ROWID)
        before = conn.total_changes
        conn.execute("BEGIN")
        self._start_command()
        try:
            columns: list[str] | None = None
            rows: list[Any] = []
            last = len(statements)
            for number, statement in enumerate(statements, start=1):
                self._refusal = None
                self._statement_written = set()
                try:
                    cursor = conn.execute(statement)
                    if number == last:
                        rows = self._final_rows(cursor)
                        if cursor.description is not None:
                            columns = [column[0] for column in cursor.description]
                    else:
                        while cursor.fetchmany(_ROWS_PER_FETCH):
                            pass
                except sqlite3.Error as e:
                    failure = _environment_failure(e)
                    if failure is not None:
                        self._explain_full(e, statements[:number])
                        raise failure from e
                    raise CommandRejected(
                        f"statement {number} failed: {self._explain(e)}; "
                        "the whole command was rolled back"
                    ) from None
            self._mode = "internal"
            rowid = self._check_rowids()
        except BaseException:
            self._mode = "internal"
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            # The rollback may undo schema changes the rowid cache saw.
            self._rowid_names = {}
            raise
        self._mode = "internal"
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise _environment_failure(e) or FSMFailure(f"SQLite could not commit: {e}") from e
        result: dict[str, Any] = {"changes": conn.total_changes - before}
        result["last_insert_rowid"] = None if rowid == _ROWID_SENTINEL else rowid
        if columns is not None:
            result["columns"] = columns
            result["rows"] = rows
        return _dumps(result)

    def query(self, query: bytes) -> bytes:
        statement = _one_statement(query)
        self._mode = "query"
        self._refusal = None
        try:
            cursor = self._conn.execute(statement)
            rows = cursor.fetchall()
        except sqlite3.Error as e:
            failure = _environment_failure(e)
            if failure is not None:
                raise failure from e
            raise QueryRejected(self._explain(e)) from None
        finally:
            self._mode = "internal"
            # A query never opens a transaction; make sure none is left behind.
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        columns = [column[0] for column in cursor.description or ()]
        return _dumps({"columns": columns, "rows": [[_json_cell(v) for v in r] for r in rows]})

    def snapshot(self, sink: BinaryIO) -> None:
        self.begin_snapshot()(sink)

    def begin_snapshot(self) -> Callable[[BinaryIO], None]:
        reader = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            reader.execute("PRAGMA synchronous=OFF")  # its checkpoint need not fsync either
            reader.execute("BEGIN")
            # BEGIN is deferred: the first read takes the WAL read mark that pins the state.
            reader.execute("SELECT count(*) FROM sqlite_master").fetchone()
            cookie = reader.execute("PRAGMA schema_version").fetchone()[0]
        except sqlite3.Error as e:
            reader.close()
            raise _environment_failure(e) or FSMFailure(
                f"SQLite could not start a snapshot ({e}); check the data dir {self._path.parent}"
            ) from e
        directory = self._path.parent
        prefix = self._path.name + ".snapshot-"

        pages, progress = self._backup_pages, self._backup_progress

        def write(sink: BinaryIO) -> None:
            _write_snapshot(
                reader, directory, prefix, sink, cookie=cookie, pages=pages, progress=progress
            )

        return write

    def restore(self, source: BinaryIO) -> None:
        # No reader may start a read on the old file once it is replaced; reads already under
        # way finish on the state they pinned, which was current when they started.
        with self._readers_lock:
            self._generation += 1
            self._drop_idle_readers()
            self._replace_database(source)

    def _replace_database(self, source: BinaryIO) -> None:
        fd, name = tempfile.mkstemp(dir=self._path.parent, prefix=self._path.name + ".restore-")
        copy = Path(name)
        try:
            with os.fdopen(fd, "wb") as f:
                shutil.copyfileobj(source, f, _COPY_CHUNK)
            size = copy.stat().st_size
            if size:
                with copy.open("rb") as f:
                    if f.read(len(_SQLITE_HEADER)) != _SQLITE_HEADER:
                        raise CorruptSnapshot(
                            "the snapshot is not an SQLite database; "
                            "restore a snapshot taken by graft.fsm.sqlite"
                        )
            self._conn.close()
            self._remove_files()
            if size:
                os.replace(copy, self._path)
            try:
                self._conn = self._open()
                self._conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            except sqlite3.DatabaseError as e:
                if size == 0:
                    raise
                # Leave an empty database behind, as at start, and say what went wrong.
                self._conn.close()
                self._remove_files()
                self._conn = self._open()
                raise CorruptSnapshot(
                    f"the SQLite snapshot cannot be read ({e}); "
                    "restore a snapshot taken by graft.fsm.sqlite"
                ) from None
        finally:
            copy.unlink(missing_ok=True)

    def close(self) -> None:
        self._close_readers()
        self._conn.close()
        self._dates.close()

    # --- the replica consistency check ------------------------------------------------------

    def begin_digest(self) -> Callable[[], str]:
        """Pin the state and return the function that digests it logically, in a worker
        thread (graft.fsm.sqlite_digest: the file's bytes differ between equal replicas)."""
        return begin_sqlite_digest(self._path)

    # --- setup -------------------------------------------------------------------------------

    def _remove_files(self) -> None:
        for suffix in ("", "-journal", "-wal", "-shm"):
            self._path.with_name(self._path.name + suffix).unlink(missing_ok=True)

    def _remove_leftovers(self) -> None:
        """Temp files of snapshots and restores cut short by a crash."""
        for pattern in (".snapshot-*", ".restore-*"):
            for path in self._path.parent.glob(self._path.name + pattern):
                path.unlink(missing_ok=True)

    def _open(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit BEGIN, we delimit transactions ourselves.
        # cached_statements=0: a cached statement would skip the authorizer on reuse.
        conn = sqlite3.connect(
            self._path, isolation_level=None, cached_statements=0, check_same_thread=False
        )
        conn.execute("PRAGMA synchronous=OFF")
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            conn.close()
            raise FSMFailure(
                f"SQLite cannot use WAL mode for {self._path} (it reports {mode!r}); put the "
                "data dir on a local file system that supports shared memory (mmap)"
            )
        conn.execute(f"PRAGMA journal_size_limit={_WAL_SIZE_LIMIT}")
        conn.execute(f"PRAGMA foreign_keys={'ON' if self._foreign_keys else 'OFF'}")
        conn.execute("CREATE TEMP TABLE _graft_rowid(x)")
        for name, nargs in _ALWAYS_NONDETERMINISTIC.items():
            conn.create_function(name, nargs, self._builtin_unless_command(name))
        for name, time_arg in _DATE_FUNCTIONS.items():
            conn.create_function(name, -1, self._date_function(name, time_arg), deterministic=True)
        self._guard_command(conn)
        conn.set_authorizer(self._authorize)
        return conn

    def _builtin_unless_command(self, name: str, why: str = "deterministic") -> Callable[..., Any]:
        def function(*args: Any) -> Any:
            if self._mode == "command":
                self._refusal = _function_refusal(name, why)
                raise ValueError(self._refusal)
            return self._builtin(name, args)

        return function

    def _date_function(self, name: str, time_arg: int) -> Callable[..., Any]:
        def function(*args: Any) -> Any:
            if self._mode == "command":
                value = args[time_arg] if len(args) > time_arg else "now"
                if isinstance(value, str) and value.strip().lower() == "now":
                    self._refusal = (
                        f"{name}() with 'now' is not deterministic and not allowed in a "
                        "command; put the time in the SQL as a literal"
                    )
                    raise ValueError(self._refusal)
                for modifier in args[time_arg + 1 :]:
                    if isinstance(modifier, str) and modifier.strip().lower() in _ZONE_MODIFIERS:
                        self._refusal = (
                            f"{name}() with the {modifier.strip().lower()!r} modifier depends on "
                            "the machine's time zone and is not allowed in a command"
                        )
                        raise ValueError(self._refusal)
            self._charge_call()
            return self._builtin(name, args)

        return function

    def _builtin(self, name: str, args: Sequence[Any]) -> Any:
        """SQLite's own function, evaluated on a side connection where it is not replaced."""
        # current_date and friends are keywords, called without parentheses.
        call = name if name.startswith("current_") else f"{name}({', '.join('?' * len(args))})"
        sql = f"SELECT {call}"
        return self._dates.execute(sql, tuple(args)).fetchone()[0]

    # --- the limits of a command --------------------------------------------------------------

    def _guard_command(self, conn: sqlite3.Connection) -> None:
        """Set up on a new connection what bounds and checks commands: the size limits, the work
        budget and the replaced build- and machine-dependent functions."""
        _set_limits(conn)
        conn.set_progress_handler(self._progress, SQLITE_PROGRESS_INTERVAL)
        for name, counts in (_BUILD_DEPENDENT | _LIBM_DEPENDENT).items():
            # The math functions stay deterministic for SQLite, so that schemas using them in
            # indexes or generated columns still load (writes to those tables are refused).
            deterministic = name in _LIBM_DEPENDENT
            function = self._builtin_unless_command(name, "machine")
            for count in counts:
                conn.create_function(name, count, function, deterministic=deterministic)
        for name in ("printf", "format"):  # format() is SQLite 3.38 and later
            if self._has_builtin(name, 1):
                conn.create_function(name, -1, self._printf(name), deterministic=True)
        if self._has_builtin("timediff", 2):  # SQLite 3.43 and later
            conn.create_function("timediff", 2, self._timediff, deterministic=True)
        self._rowid_names = {}

    def _printf(self, name: str) -> Callable[..., Any]:
        """SQLite's printf()/format(), refusing a %c repeat count over SQLITE_LIMIT_LENGTH
        (SQLite would loop that many times before giving up)."""

        def function(*args: Any) -> Any:
            refusal = _printf_refusal(name, args, _MAX_LENGTH, "string (SQLITE_LIMIT_LENGTH)")
            if refusal is not None:
                self._refusal = refusal
                raise ValueError(refusal)
            self._charge_call()
            return self._builtin(name, args)

        return function

    def _has_builtin(self, name: str, count: int) -> bool:
        try:
            self._dates.execute(f"SELECT {name}({', '.join(['NULL'] * count)})").fetchone()
        except sqlite3.OperationalError:
            return False
        return True

    def _timediff(self, *args: Any) -> Any:
        """timediff(A, B): either time may be 'now', which a command may not use."""
        if self._mode == "command" and any(
            isinstance(value, str) and value.strip().lower() == "now" for value in args
        ):
            self._refusal = (
                "timediff() with 'now' is not deterministic and not allowed in a command; "
                "put the time in the SQL as a literal"
            )
            raise ValueError(self._refusal)
        self._charge_call()
        return self._builtin("timediff", args)

    def _start_command(self) -> None:
        self._steps = 0
        self._calls = 0
        self._written = set()
        self._removed = False
        self._mode = "command"

    def _progress(self) -> int:
        """SQLite's progress handler: every SQLITE_PROGRESS_INTERVAL VM steps of a statement.
        Stops a command at its work budget; the count is the same on every replica."""
        if self._mode != "command" or self._probing:
            return 0
        self._steps += 1
        if self._within_budget():
            return 0
        return 1

    def _within_budget(self) -> bool:
        """False (with the refusal set) once the command's VM steps, plus what its calls of
        our Python functions count for, pass the budget."""
        if self._steps + self._calls // _CALLS_PER_UNIT <= _BUDGET_UNITS:
            return True
        self._refusal = (
            f"the command ran more than {SQLITE_VM_STEP_BUDGET} SQLite VM steps (the work "
            "budget of one command, SQLITE_VM_STEP_BUDGET); split the work into smaller "
            "commands, or bound its loops (e.g. a WITH RECURSIVE without LIMIT)"
        )
        return False

    def _charge_call(self) -> None:
        """A call of a function we replaced by Python costs a hundred VM steps' time: it counts
        SQLITE_FUNCTION_CALL_STEPS steps against a command's budget."""
        if self._mode == "command" and not self._probing:
            self._calls += 1
            if not self._within_budget():
                raise ValueError(self._refusal)

    def _final_rows(self, cursor: sqlite3.Cursor) -> list[list[Any]]:
        """The rows of a command's final statement, as JSON cells, fetched a few at a time;
        CommandRejected past the row or byte cap."""
        rows: list[list[Any]] = []
        size = 0
        while True:
            batch = cursor.fetchmany(_ROWS_PER_FETCH)
            if not batch:
                return rows
            for row in batch:
                size += 8 * len(row) + sum(len(v) for v in row if isinstance(v, str | bytes))
                rows.append([_json_cell(v) for v in row])
            if len(rows) > SQLITE_MAX_RESULT_ROWS:
                raise CommandRejected(
                    f"the command's final statement returns more than {SQLITE_MAX_RESULT_ROWS} "
                    "rows (SQLITE_MAX_RESULT_ROWS); the whole command was rolled back: "
                    "add a LIMIT, or read the rows with queries"
                )
            if size > SQLITE_MAX_RESULT_BYTES:
                raise CommandRejected(
                    f"the command's final statement returns more than {SQLITE_MAX_RESULT_BYTES} "
                    "bytes (SQLITE_MAX_RESULT_BYTES); the whole command was rolled back: "
                    "return less, or read the rows with queries"
                )

    def _check_rowids(self) -> int:
        """The command's last_insert_rowid(); CommandRejected if the command leaves the largest
        rowid in a table it wrote, or the largest AUTOINCREMENT sequence value: SQLite would
        then choose the next rowid at random (a different one on each replica), or fail every
        later insert with SQLITE_FULL.

        One query answers both (it runs after every command); only when something is wrong do
        others find what, for the message."""
        tables = sorted(self._written)
        tops = ["0"]
        for table in tables:
            column = self._rowid_name(table) if not table.startswith("sqlite_") else None
            if column is not None:
                tops.append(f"(SELECT max({column}) FROM main.{_quote(table)}) = {_MAX_ROWID}")
        # A sequence reaches the largest rowid only with a row that gets it, which the check
        # above sees unless the command removed it again (or wrote sqlite_sequence itself).
        # Then the sequences of the tables written (all of them if sqlite_sequence was): an
        # older state may hold an exhausted one, which must not block other tables. (One
        # missed here still gives a rejection, not a failure: see _explain_full.)
        sequences = None if "sqlite_sequence" in self._written else tables
        parameters: Sequence[str] = ()
        if (self._removed or sequences is None) and tables and self._has_sequence():
            where = ""
            if sequences is not None:
                where = f" AND name IN ({', '.join('?' * len(sequences))})"
                parameters = sequences
            tops.append(
                f"EXISTS (SELECT 1 FROM main.sqlite_sequence WHERE seq >= {_MAX_ROWID}{where})"
            )
        sql = f"SELECT last_insert_rowid(), {' OR '.join(tops)}"
        rowid, wrong = self._conn.execute(sql, parameters).fetchone()
        if not wrong:
            return int(rowid)
        for table in tables:
            column = self._rowid_name(table) if not table.startswith("sqlite_") else None
            if column is None:
                continue
            top = self._conn.execute(f"SELECT max({column}) FROM main.{_quote(table)}").fetchone()
            if top[0] == _MAX_ROWID:
                raise CommandRejected(
                    f"the command leaves a row with rowid {_MAX_ROWID} (the largest) in table "
                    f"{table}: SQLite would give the next row a random rowid, different on "
                    "each replica; the whole command was rolled back: use smaller rowids"
                )
        exhausted = self._max_sequence_table(sequences)
        raise CommandRejected(
            f"the command leaves the AUTOINCREMENT sequence of table {exhausted} at {_MAX_ROWID} "
            "(the largest rowid): every later insert into it would fail; the whole command "
            "was rolled back"
        )

    def _has_sequence(self) -> bool:
        """Whether the database has sqlite_sequence (made by the first AUTOINCREMENT table)."""
        known = self._rowid_names.get("sqlite_sequence", "?")
        if known == "?":
            row = self._conn.execute(
                "SELECT 1 FROM main.sqlite_master WHERE name = 'sqlite_sequence'"
            ).fetchone()
            known = "seq" if row is not None else None
            self._rowid_names["sqlite_sequence"] = known  # dropped with the cache
        return known is not None

    def _rowid_name(self, table: str) -> str | None:
        """The name that reads the rowid of ``table`` (a column may hide one of rowid, _rowid_
        and oid), or None for a table without one (WITHOUT ROWID, or all three hidden)."""
        if table in self._rowid_names:
            return self._rowid_names[table]
        conn = self._conn
        found: str | None = None
        try:
            columns = {
                row[0].lower()
                for row in conn.execute("SELECT name FROM pragma_table_xinfo(?, 'main')", (table,))
            }
            for candidate in ("rowid", "_rowid_", "oid"):
                if candidate not in columns:
                    conn.execute(f"SELECT {candidate} FROM main.{_quote(table)} LIMIT 0")
                    found = candidate
                    break
        except sqlite3.OperationalError:  # no such column: WITHOUT ROWID; or the table is gone
            found = None
        self._rowid_names[table] = found
        return found

    def _max_sequence_table(self, tables: Sequence[str] | None = None) -> str | None:
        """The first table (by name; among ``tables`` if given) whose AUTOINCREMENT sequence
        is at the largest rowid."""
        sql = "SELECT name FROM main.sqlite_sequence WHERE seq >= ?"
        parameters: list[Any] = [_MAX_ROWID]
        if tables is not None:
            sql += f" AND name IN ({', '.join('?' * len(tables))})"
            parameters.extend(tables)
        try:
            row = self._conn.execute(sql + " ORDER BY name LIMIT 1", parameters).fetchone()
        except sqlite3.OperationalError:  # no AUTOINCREMENT table yet: no sqlite_sequence
            return None
        return None if row is None else str(row[0])

    def _explain_full(self, error: sqlite3.Error, statements: Sequence[str]) -> None:
        """On SQLITE_FULL from the last of ``statements``, CommandRejected if that statement
        inserts into an AUTOINCREMENT table that is at, or reaches, the largest rowid (every
        replica fails alike), rather than the disk filling up (this machine only, a failure).

        SQLite has rolled the whole transaction back, so the statements run again, after those
        before the failing one (they succeeded once, so they do again unless the disk is full,
        which then stays a failure): the sequences of the tables the failing statement writes
        are looked up, then the failing statement runs with a temporary trigger that stops it
        as soon as it gives an AUTOINCREMENT table the largest rowid, before SQLite needs the
        next one. Commands cannot leave a sequence there (see _check_rowids)."""
        code = getattr(error, "sqlite_errorcode", 0) & 0xFF
        if code != sqlite3.SQLITE_FULL or not self._statement_written or not statements:
            return
        tables = sorted(self._statement_written)
        conn = self._conn
        self._mode = "internal"
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        table: str | None = None
        conn.execute("BEGIN")
        try:
            self._start_command()
            for statement in statements[:-1]:
                cursor = conn.execute(statement)
                while cursor.fetchmany(_ROWS_PER_FETCH):
                    pass
            self._mode = "internal"
            table = self._max_sequence_table(tables)
            if table is None:
                table = self._reaches_max_rowid(statements[-1], tables)
        except sqlite3.Error:
            table = None
        finally:
            self._mode = "internal"
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        if table is not None:
            raise CommandRejected(
                f"table {table} has used its largest AUTOINCREMENT rowid ({_MAX_ROWID}), so "
                "SQLite cannot insert into it any more (SQLITE_FULL); the whole command was "
                "rolled back: delete the table's sqlite_sequence entry or recreate the table"
            )

    def _reaches_max_rowid(self, statement: str, tables: Sequence[str]) -> str | None:
        """Runs ``statement`` (in the open transaction, which the caller rolls back) with
        temporary triggers on the AUTOINCREMENT tables among ``tables``: the table that gets
        the largest rowid, or None if none does (the statement succeeds or fails otherwise)."""
        conn = self._conn
        marks = ", ".join("?" * len(tables))
        rows = conn.execute(
            "SELECT name FROM main.sqlite_master WHERE type = 'table' AND name IN "
            f"({marks}) AND sql LIKE '%AUTOINCREMENT%' ORDER BY name",
            list(tables),
        ).fetchall()
        if not rows:
            return None
        names = [str(row[0]) for row in rows]
        for number, name in enumerate(names):
            conn.execute(
                f"CREATE TEMP TRIGGER _graft_probe_{number} AFTER INSERT ON main.{_quote(name)} "
                f"WHEN new.rowid = {_MAX_ROWID} BEGIN "
                f"SELECT RAISE(ABORT, '_graft_probe_{number}'); END"
            )
        self._mode = "command"
        self._probing = True
        try:
            cursor = conn.execute(statement)
            while cursor.fetchmany(_ROWS_PER_FETCH):
                pass
        except sqlite3.Error as e:
            text = str(e)
            for number, name in enumerate(names):
                if text == f"_graft_probe_{number}":
                    return name
        finally:
            self._mode = "internal"
            self._probing = False
        return None

    # --- the authorizer ------------------------------------------------------------------------

    def _authorize(
        self, action: int, arg1: str | None, arg2: str | None, db: str | None, _source: str | None
    ) -> int:
        if self._mode == "internal":
            return sqlite3.SQLITE_OK
        refusal = (
            self._refuse_in_query(action, arg1, arg2, db)
            if self._mode == "query"
            else self._refuse_in_command(action, arg1, arg2, db)
        )
        if refusal is None:
            return sqlite3.SQLITE_OK
        # The first refusal names the statement's own action (CREATE TABLE rather than the
        # INSERT into sqlite_master it implies).
        if self._refusal is None:
            self._refusal = refusal
        return sqlite3.SQLITE_DENY

    def _refuse_in_query(
        self, action: int, arg1: str | None, arg2: str | None, db: str | None
    ) -> str | None:
        if action in _QUERY_ACTIONS:
            return None
        if action == sqlite3.SQLITE_PRAGMA:
            name = (arg1 or "").lower()
            if name in _INTROSPECTION_PRAGMAS:
                return None
            if arg2 is None and name in _HEADER_PRAGMAS | _QUERY_ONLY_PRAGMAS:
                return None
            return f"PRAGMA {name} is not allowed in a query; expected a read-only statement"
        what = _ACTION_NAMES.get(action, f"action {action}")
        target = f" on {arg1}" if arg1 and action != sqlite3.SQLITE_TRANSACTION else ""
        if arg1 in ("sqlite_master", "sqlite_temp_master"):
            what, target = "a schema change", ""  # CREATE/DROP/ALTER write sqlite_master first
        return (
            f"a query must be read-only but this statement does {what}{target}; "
            "send writes as a command"
        )

    def _refuse_in_command(
        self, action: int, arg1: str | None, arg2: str | None, db: str | None
    ) -> str | None:
        refusal = self._limit_in_command(action, arg1, arg2, db)
        if refusal is not None:
            return refusal
        return self._refuse_in_command_as_before(action, arg1, arg2, db)

    def _limit_in_command(
        self, action: int, arg1: str | None, arg2: str | None, db: str | None
    ) -> str | None:
        """Notes the tables a command writes, and refuses what reads the build, the file
        layout or this node's paths."""
        if action in _WRITE_ACTIONS:
            if db == "main" and arg1 is not None:
                self._written.add(arg1)
                self._statement_written.add(arg1)
                if action == sqlite3.SQLITE_UPDATE:
                    self._removed = True
            return None
        if action == sqlite3.SQLITE_DELETE:
            self._removed = True
            return None
        if action in _SCHEMA_ACTIONS:
            self._rowid_names = {}
            if action == sqlite3.SQLITE_CREATE_VTABLE and (arg2 or "").lower() in _LAYOUT_TABLES:
                return f"virtual tables of module {arg2} are not allowed in a command"
            return None
        if action == sqlite3.SQLITE_FUNCTION:
            name = (arg2 or "").lower()
            if name in _REFUSED_IN_COMMANDS:
                return _function_refusal(name, "machine" if name != "sqlite_offset" else "layout")
            return None
        if action == sqlite3.SQLITE_READ and (arg1 or "").lower() in _LAYOUT_TABLES:
            return (
                f"{arg1} describes this node's file or connection, not the data, and is not "
                "allowed in a command; read it with a query"
            )
        if action == sqlite3.SQLITE_PRAGMA and (arg1 or "").lower() in _NOT_IN_COMMANDS_PRAGMAS:
            return (
                f"PRAGMA {(arg1 or '').lower()} (also as pragma_{(arg1 or '').lower()}) is not "
                "allowed in a command: its answer depends on the node or the SQLite build, or "
                "it runs outside the work budget; use it in a query"
            )
        return None

    def _refuse_in_command_as_before(
        self, action: int, arg1: str | None, arg2: str | None, db: str | None
    ) -> str | None:
        if action in (sqlite3.SQLITE_TRANSACTION, sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
            return (
                f"{_ACTION_NAMES[action]} is not allowed in a command; "
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

    def _explain(self, error: sqlite3.Error) -> str:
        """SQLite's message, or ours when the authorizer or a replaced function refused."""
        refusal, self._refusal = self._refusal, None
        if refusal is not None:
            return refusal
        if isinstance(error, sqlite3.ProgrammingError | sqlite3.Warning):
            return f"{error}".rstrip(".")
        return str(error)

    # --- queries in worker threads (graft.fsm.base.ThreadedQueries) ---------------------------

    def query_in_thread(self, query: bytes, deadline: float) -> bytes:
        """``query`` on a read-only connection of its own, for a worker thread: stopped at
        ``deadline`` (a ``time.monotonic()`` value) with QueryTimedOut, and refused with
        QueryRejected when its answer would exceed ``query_max_bytes``.

        The read transaction starts when the call does, so it sees every command applied
        before; ``restore`` waits for that start, and no read starts on a replaced file.
        """
        statement = _one_statement(query)
        if time.monotonic() >= deadline:
            raise QueryTimedOut("the query's deadline passed before a thread was free to run it")
        reader = self._take_reader(deadline)
        try:
            return reader.run(statement, deadline, self._query_max_bytes, self._is_closed)
        finally:
            self._give_back(reader)

    def _init_readers(self, query_max_bytes: int) -> None:
        if (
            isinstance(query_max_bytes, bool)
            or not isinstance(query_max_bytes, int)
            or query_max_bytes < 1024
        ):
            raise ConfigError(
                f"fsm.options.query_max_bytes: {query_max_bytes!r} is not a number of bytes of "
                "at least 1024; expected e.g. 8388608 (8 MiB)"
            )
        self._query_max_bytes = query_max_bytes
        # Guards the reader lists, the generation and the file swap of ``restore``.
        self._readers_lock = threading.Lock()
        self._generation = 0  # bumped by each restore: readers of older ones are stale
        self._idle_readers: list[_Reader] = []
        self._busy_readers: dict[_Reader, float] = {}  # -> its query's deadline
        self._closed = False
        # Wakes the watchdog when a deadline is added or the FSM closes.
        self._deadlines_changed = threading.Condition(self._readers_lock)
        self._watchdog: threading.Thread | None = None

    def _is_closed(self) -> bool:
        return self._closed

    def _take_reader(self, deadline: float) -> _Reader:
        """An idle reader of the current database (or a new one), with its read pinned, watched
        by the watchdog until ``deadline``."""
        with self._readers_lock:
            if self._closed:
                raise QueryRejected(SHUTTING_DOWN)
            reader: _Reader | None = None
            while self._idle_readers and reader is None:
                candidate = self._idle_readers.pop()
                if candidate.generation == self._generation:
                    reader = candidate
                else:
                    candidate.close()
            try:
                if reader is None:
                    reader = _Reader(
                        self._path,
                        generation=self._generation,
                        max_bytes=self._query_max_bytes,
                        foreign_keys=self._foreign_keys,
                        refuse=self._refuse_in_query,
                    )
                reader.pin()
            except sqlite3.Error as e:
                if reader is not None:
                    reader.close()
                raise _environment_failure(e) or FSMFailure(
                    f"SQLite could not start a query ({e}); check the data dir {self._path.parent}"
                ) from e
            self._busy_readers[reader] = deadline
            if self._watchdog is None:
                self._watchdog = threading.Thread(
                    target=self._watch_deadlines, name="graft-sqlite-deadlines", daemon=True
                )
                self._watchdog.start()
            self._deadlines_changed.notify()
            return reader

    def _watch_deadlines(self) -> None:
        """Interrupt each query when its deadline passes; sleeps in between (no GIL held)."""
        with self._deadlines_changed:
            while not self._closed:
                now = time.monotonic()
                for reader, deadline in self._busy_readers.items():
                    if deadline <= now:
                        reader.conn.interrupt()
                waiting = [d for d in self._busy_readers.values() if d > now]
                self._deadlines_changed.wait(min(waiting) - now if waiting else None)

    def _give_back(self, reader: _Reader) -> None:
        with self._readers_lock:
            # Done: the watchdog must not interrupt what this connection runs next.
            self._busy_readers.pop(reader, None)
        reusable = reader.unpin()
        with self._readers_lock:
            if (
                reusable
                and not self._closed
                and reader.generation == self._generation
                and len(self._idle_readers) < _MAX_IDLE_READERS
            ):
                self._idle_readers.append(reader)
                return
        reader.close()

    def _drop_idle_readers(self) -> None:
        """Close the idle readers (the caller holds the lock); busy ones close when done."""
        idle, self._idle_readers = self._idle_readers, []
        for reader in idle:
            reader.close()

    def _close_readers(self) -> None:
        with self._readers_lock:
            self._closed = True  # running queries see it at their next deadline check
            self._drop_idle_readers()
            for reader in self._busy_readers:
                reader.conn.interrupt()
            self._deadlines_changed.notify_all()  # the watchdog ends


def _one_statement(query: bytes) -> str:
    """The one SQL statement of a query, or QueryRejected saying what is wrong with it."""
    try:
        text = query.decode("utf-8")
    except UnicodeDecodeError:
        raise QueryRejected("the query is not UTF-8 text; expected one SQL statement") from None
    if "\x00" in text:
        raise QueryRejected(_NUL_REFUSAL.format(what="query"))
    statements = split_statements(text)
    if not statements:
        raise QueryRejected("the query is empty; expected one SQL statement such as SELECT")
    if len(statements) > 1:
        raise QueryRejected(
            f"the query has {len(statements)} statements; expected exactly one "
            "(send scripts as a command)"
        )
    return statements[0]


class _Reader:
    """A read-only connection to the database, used by one worker thread at a time.

    The query rules are the main connection's (``_refuse_in_query``), enforced by an
    authorizer while the client's statement is prepared; the connection is also opened
    read-only and with ``query_only``, so a write cannot get through even if a rule missed it.
    """

    def __init__(
        self,
        path: Path,
        *,
        generation: int,
        max_bytes: int,
        foreign_keys: bool,
        refuse: Callable[[int, str | None, str | None, str | None], str | None],
    ) -> None:
        uri = f"file:{urllib.parse.quote(str(path))}?mode=ro"
        self.conn = sqlite3.connect(
            uri,
            uri=True,
            isolation_level=None,
            cached_statements=0,  # a cached statement would skip the authorizer on reuse
            check_same_thread=False,
            timeout=1.0,
        )
        self.generation = generation
        self._refuse = refuse
        self._checking = False  # the rules apply to the client's statement, not to ours
        self._refusal: str | None = None
        try:
            self.conn.execute("PRAGMA query_only=ON")
            # As on the main connection, so that `PRAGMA foreign_keys` answers alike.
            self.conn.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
            # The commands' size limits (LIKE patterns, statement length, expression depth),
            # except that one value may be as large as the whole answer may be.
            _set_limits(self.conn)
            self.conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, max_bytes)
            self._guard_printf(max_bytes)
            self.conn.set_authorizer(self._authorize)
        except BaseException:
            self.conn.close()
            raise

    def _guard_printf(self, max_bytes: int) -> None:
        """printf()/format() refusing a %c repeat count over the longest value: SQLite would
        loop that many times in one VM step, where neither the deadline nor an interrupt can
        stop it. The others are evaluated by SQLite's own, on a private connection."""
        builtins = sqlite3.connect(":memory:", check_same_thread=False)
        self._builtins = builtins
        for name in ("printf", "format"):
            try:
                builtins.execute(f"SELECT {name}(NULL)").fetchone()
            except sqlite3.OperationalError:
                continue  # format() is SQLite 3.38 and later

            def function(*args: Any, name: str = name) -> Any:
                refusal = _printf_refusal(name, args, max_bytes, "value a query may build")
                if refusal is not None:
                    self._refusal = refusal
                    raise ValueError(refusal)
                sql = f"SELECT {name}({', '.join('?' * len(args))})"
                return builtins.execute(sql, args).fetchone()[0]

            self.conn.create_function(name, -1, function, deterministic=True)

    def pin(self) -> None:
        """Start the read transaction (a deferred BEGIN takes its snapshot at the first read)."""
        self.conn.execute("BEGIN")
        self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()

    def unpin(self) -> bool:
        """End the read transaction; False if the connection is unusable."""
        try:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
        except sqlite3.Error:
            return False
        return True

    def close(self) -> None:
        self.conn.close()
        self._builtins.close()

    def run(
        self, statement: str, deadline: float, max_bytes: int, closing: Callable[[], bool]
    ) -> bytes:
        """The JSON answer to ``statement``, built row by row within ``max_bytes``."""

        def stop() -> int:
            return 1 if closing() or time.monotonic() >= deadline else 0

        self.conn.set_progress_handler(stop, _DEADLINE_CHECK_STEPS)
        self._checking = True
        self._refusal = None
        cursor: sqlite3.Cursor | None = None
        try:
            cursor = self.conn.execute(statement)
            self._checking = False
            columns = [column[0] for column in cursor.description or ()]
            answer = bytearray(b'{"columns":' + _dumps(columns) + b',"rows":[')
            separator = b""
            for row in cursor:
                piece = _dumps([_json_cell(v) for v in row])
                if len(answer) + len(separator) + len(piece) + 2 > max_bytes:
                    raise _too_large(max_bytes)
                answer += separator
                answer += piece
                separator = b","
            answer += b"]}"
            if len(answer) > max_bytes:  # the column names alone
                raise _too_large(max_bytes)
            return bytes(answer)
        except sqlite3.Error as e:
            code = getattr(e, "sqlite_errorcode", None)
            if code == sqlite3.SQLITE_INTERRUPT:
                if closing():
                    raise QueryRejected(f"the query was stopped: {SHUTTING_DOWN}") from None
                raise QueryTimedOut("the query ran past its deadline and was stopped") from None
            if code == sqlite3.SQLITE_TOOBIG:
                raise _too_large(max_bytes) from None
            failure = _environment_failure(e)
            if failure is not None:
                raise failure from e
            raise QueryRejected(self._explain(e)) from None
        finally:
            self._checking = False
            if cursor is not None:
                cursor.close()  # a statement left half-read would keep the transaction busy
            self.conn.set_progress_handler(None, 0)

    def _authorize(
        self, action: int, arg1: str | None, arg2: str | None, db: str | None, _source: str | None
    ) -> int:
        if not self._checking:
            return sqlite3.SQLITE_OK
        refusal = self._refuse(action, arg1, arg2, db)
        if refusal is None:
            return sqlite3.SQLITE_OK
        if self._refusal is None:
            self._refusal = refusal
        return sqlite3.SQLITE_DENY

    def _explain(self, error: sqlite3.Error) -> str:
        refusal, self._refusal = self._refusal, None
        if refusal is not None:
            return refusal
        if isinstance(error, sqlite3.ProgrammingError | sqlite3.Warning):
            return f"{error}".rstrip(".")
        return str(error)


def _too_large(max_bytes: int) -> QueryRejected:
    return QueryRejected(
        f"the query's answer would be larger than {max_bytes} bytes, the most a query may "
        "return (fsm.options.query_max_bytes); select fewer rows or columns (LIMIT, WHERE) and "
        "page through the rest"
    )


def _write_snapshot(
    reader: sqlite3.Connection,
    directory: Path,
    prefix: str,
    sink: BinaryIO,
    *,
    cookie: int,
    pages: int,
    progress: Callable[[int, int, int], object] | None,
) -> None:
    """Copy the state pinned by ``reader``'s read transaction to ``sink``, then release it.

    Runs in a worker thread while the main connection goes on committing.
    """
    copy: Path | None = None
    try:
        fd, name = tempfile.mkstemp(dir=directory, prefix=prefix)
        os.close(fd)
        copy = Path(name)
        target = sqlite3.connect(copy)
        try:
            # A scratch file: no journal, no fsync.
            target.execute("PRAGMA journal_mode=OFF")
            target.execute("PRAGMA synchronous=OFF")
            # By default all pages in one step, without the GIL. The source side reads through
            # the open read transaction, so the copy is the pinned state even though other
            # connections commit meanwhile, and it never restarts (a restart needs a change
            # seen by the backup's own source connection between steps).
            reader.backup(target, pages=pages, progress=progress)
        finally:
            target.close()
        # Free the WAL first: the file holds the state now.
        reader.execute("ROLLBACK")
        reader.execute("PRAGMA wal_checkpoint(PASSIVE)")
        with copy.open("r+b") as f:
            if copy.stat().st_size >= len(_SQLITE_HEADER):  # not a database with no page
                f.seek(_FORMAT_VERSION_OFFSET)
                f.write(_ROLLBACK_FORMAT)
                f.seek(_SCHEMA_COOKIE_OFFSET)
                f.write(struct.pack(">I", cookie))
                f.seek(0)
            shutil.copyfileobj(f, sink, _COPY_CHUNK)
    except sqlite3.Error as e:
        raise _environment_failure(e) or FSMFailure(
            f"SQLite could not write the snapshot ({e}); check the data dir {directory}"
        ) from e
    finally:
        reader.close()
        if copy is not None:
            copy.unlink(missing_ok=True)
