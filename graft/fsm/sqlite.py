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
    ``application_id`` and the read-only introspection ones. Queries may use all the functions.

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
from graft.fsm.base import (
    CommandRejected,
    CorruptSnapshot,
    FSMFailure,
    QueryRejected,
    QueryTimedOut,
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
        statements = split_statements(script)
        conn = self._conn
        conn.execute(_RESET_ROWID)
        before = conn.total_changes
        conn.execute("BEGIN")
        self._mode = "command"
        try:
            cursor: sqlite3.Cursor | None = None
            rows: list[Any] = []
            for number, statement in enumerate(statements, start=1):
                self._refusal = None
                try:
                    cursor = conn.execute(statement)
                    rows = cursor.fetchall()
                except sqlite3.Error as e:
                    failure = _environment_failure(e)
                    if failure is not None:
                        raise failure from e
                    raise CommandRejected(
                        f"statement {number} failed: {self._explain(e)}; "
                        "the whole command was rolled back"
                    ) from None
        except BaseException:
            self._mode = "internal"
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._mode = "internal"
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise _environment_failure(e) or FSMFailure(f"SQLite could not commit: {e}") from e
        result: dict[str, Any] = {"changes": conn.total_changes - before}
        rowid = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
        result["last_insert_rowid"] = None if rowid == _ROWID_SENTINEL else rowid
        if cursor is not None and cursor.description is not None:
            result["columns"] = [column[0] for column in cursor.description]
            result["rows"] = [[_json_cell(v) for v in row] for row in rows]
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
        conn.set_authorizer(self._authorize)
        return conn

    def _builtin_unless_command(self, name: str) -> Callable[..., Any]:
        def function(*args: Any) -> Any:
            if self._mode == "command":
                shown = name if name.startswith("current_") else f"{name}()"
                self._refusal = (
                    f"{shown} is not deterministic and not allowed in a command; "
                    "compute the value in the client and put it in the SQL"
                )
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
            return self._builtin(name, args)

        return function

    def _builtin(self, name: str, args: Sequence[Any]) -> Any:
        """SQLite's own function, evaluated on a side connection where it is not replaced."""
        # current_date and friends are keywords, called without parentheses.
        call = name if name.startswith("current_") else f"{name}({', '.join('?' * len(args))})"
        sql = f"SELECT {call}"
        return self._dates.execute(sql, tuple(args)).fetchone()[0]

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
                raise QueryRejected("the node is shutting down; retry on another node")
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
            # One value can never be larger than the whole answer may be.
            self.conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, max_bytes)
            self.conn.set_authorizer(self._authorize)
        except BaseException:
            self.conn.close()
            raise

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
                    raise QueryRejected(
                        "the query was stopped: the node is shutting down; retry on another node"
                    ) from None
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
