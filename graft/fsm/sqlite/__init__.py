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

The JSON form
    A command or query whose body starts with ``{`` is a request in the JSON form
    (graft.fsm.sqlite.jsonform): statements with bound parameters, ``?`` or ``:name``, and a
    typed result for each (columns, declared types, values; BLOBs and 64-bit integers exact).
    A command's statements run in one transaction unless ``"transaction": false``; a failing
    statement is an error in the answer, not a rejection (graft.fsm.sqlite.jsonrun). The rules
    below apply to every statement, as to those of a script.

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
    Every replica must reach the same state from the same commands. Time and randomness come
    from the leader's stamp on the command's entry (``apply_stamped``, graft.stamp): the date
    and time functions (``date``, ``time``, ``datetime``, ``julianday``, ``unixepoch``,
    ``strftime``, ``timediff``) with ``'now'`` or no time value, and
    ``current_date``/``current_time``/``current_timestamp`` (also as column DEFAULTs) read its
    time (UTC, milliseconds); ``random()`` and ``randomblob()`` a generator seeded with its
    seed, restarted per command. In a command without a stamp (``apply``, or an entry written
    before stamps) they are refused (CommandRejected). Always refused in commands:
    ``total_changes()`` and the ``'localtime'``/``'utc'`` modifiers (they depend on the
    machine's time zone). Also refused: ``BEGIN``/``COMMIT``/``ROLLBACK``
    (the FSM owns the transaction), ``ATTACH``/``DETACH``, TEMP tables, views, triggers and
    indexes (they are not part of snapshots), and PRAGMAs other than ``user_version``,
    ``application_id`` and the read-only introspection ones. Refused too, as they depend on
    the SQLite build, the machine or the node's files: ``sqlite_version()``,
    ``sqlite_source_id()``, ``sqlite_compileoption_get/used()``, ``fts3_tokenizer()``,
    ``fts5_source_id()``, ``load_extension()``, ``sqlite_offset()``, the C math library's
    transcendental functions (``sin``, ``ln``, ``exp``, ``pow``, ...), the ``dbstat``,
    ``sqlite_dbpage`` and ``sqlite_stmt`` tables, and PRAGMA ``database_list``,
    ``function_list``, ``module_list``, ``pragma_list``, ``collation_list``,
    ``integrity_check`` and ``quick_check`` (also as ``pragma_*`` table-valued functions). A
    command may not leave rowid 2**63-1 in a table it wrote (SQLite then picks the next rowid
    at random), nor an AUTOINCREMENT sequence at 2**63-1. Queries may use all the functions,
    with the node's own clock (they change nothing).

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
    a snapshot can read the database while commands go on writing it, and so that a
    snapshot can be the pages written since the previous one (delta snapshots, below).

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
    thread, and ``journal_size_limit`` truncates the file when the WAL is next reset. The
    reader maps the database file (``mmap_size``), so the backup reads it without a system
    call per page. ``snapshot`` is ``begin_snapshot`` and its writer run at once.

    Delta snapshots (``begin_incremental_snapshot(base)``, what the driver calls): the
    database's WAL is not checkpointed automatically (``wal_autocheckpoint=0``, from the
    first such snapshot on), so it holds every page written since the previous snapshot. A
    delta is the newest image of each of those pages, captured in three steps
    (graft.fsm.sqlite.wal_capture): on the calling thread, between two commands, only a read
    transaction that pins the state and the WAL's last committed frame; in a worker thread
    (the plan's ``prepare``) the copy of the pages, found through the wal-index, and the
    checkpoint of those frames; on the calling thread again (``finish``) the frames committed
    meanwhile set aside for the next delta and the WAL reset to start over. The first commit
    after the reset cuts the WAL file to the frames it wrote (``journal_size_limit`` 0 in
    delta mode), on the calling thread, about 2.5 ms per 32 MB cut on an idle machine: the
    earlier frames' pages, which the kernel would otherwise write to disk within 30 s, leave
    the page cache unwritten, and the bytes of WAL that reach the disk stay within the
    snapshot rule's WAL bound (32 MiB) per node as the database grows. Not to zero bytes: on
    ext4 a file truncated to zero has its new data flushed whenever a descriptor of it is
    closed, as every snapshot's reader connection does. The store folds the pages
    into its full copy. A delta is taken only when ``base`` is the token of this FSM's
    previous snapshot and no restore or plain ``begin_snapshot`` came between; otherwise the
    snapshot is whole, as above, and the next delta starts at the WAL frame after the state
    it pins. Deltas cost what changed since the previous snapshot, not the database's size,
    and the calling thread's part costs what was written while the worker thread copied.

    ``restore`` copies the received bytes to a temp file beside the database (from a regular
    file with ``copy_file_range``, the kernel's copy, else in chunks), checks its structure
    (header, page size, whole pages, no fewer pages than its header counts: CorruptSnapshot
    otherwise, and the live database is untouched), then moves it into place as the database
    (removing the old ``-wal`` and ``-shm``) rather than copying it page by page.

Failures
    An SQLite error caused by this machine rather than by the command (disk full, I/O error,
    out of memory, a corrupt or unwritable file) raises FSMFailure, never CommandRejected:
    another replica would not fail the same way, so the node must stop instead of answering.

Calls must not overlap (the driver calls from one thread at a time), except
``query_in_thread``, which runs in worker threads at the same time as the others.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from graft.config import ConfigError
from graft.fsm.base import CorruptSnapshot, FSMFailure, IncrementalSnapshot, QueryRejected
from graft.fsm.sqlite.digest import begin_sqlite_digest
from graft.fsm.sqlite.jsonform import is_json_form
from graft.fsm.sqlite.jsonrun import JsonCommands
from graft.fsm.sqlite.reads import DEFAULT_QUERY_MAX_BYTES, ThreadedReads
from graft.fsm.sqlite.rules import ALWAYS_NONDETERMINISTIC, DATE_FUNCTIONS
from graft.fsm.sqlite.snapshots import (
    READER_MMAP_BYTES,
    check_image,
    copy_into,
    write_snapshot,
)
from graft.fsm.sqlite.sql import dumps, environment_failure, json_cell, one_statement, set_limits
from graft.fsm.sqlite.wal_capture import (
    WalCapture,
    WalCursor,
    abandon,
    begin_capture,
    mark_whole,
    read_mark,
)

__all__ = ["SQLiteStateMachine"]

# The WAL file is truncated to this size when it is reset after having grown (e.g. during a
# snapshot); below it, its space is reused rather than given back.
_WAL_SIZE_LIMIT = 64 * 1024 * 1024


class _WholeWriter:
    """A whole snapshot's writer, and ``close`` to release its pinned reader if it never
    runs (the driver calls it when storage refuses the snapshot first): an open read
    transaction would keep the WAL from being reset."""

    def __init__(self, write: Callable[[BinaryIO], None], reader: sqlite3.Connection) -> None:
        self._write = write
        self._reader = reader

    def __call__(self, sink: BinaryIO) -> None:
        self._write(sink)

    def close(self) -> None:
        self._reader.close()


class SQLiteStateMachine(JsonCommands, ThreadedReads):
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
        apply_in_thread: bool = True,
    ) -> None:
        del base_dir  # nothing to resolve
        if not isinstance(apply_in_thread, bool):
            raise ConfigError(
                f"fsm.options.apply_in_thread: {apply_in_thread!r} is not true or false"
            )
        # Commands apply in a worker thread (graft.driver.fsm_work): the work budget counts VM
        # steps, and one step over large values can take milliseconds, so a command within its
        # budget may still take seconds; the reactor keeps the node's Raft timing meanwhile.
        # False applies them on the reactor thread (docs/sql.md says what that gives up).
        self.apply_in_thread = apply_in_thread
        self._path = Path(data_dir) / filename
        self._wal_path = self._path.with_name(self._path.name + "-wal")
        self._shm_path = self._path.with_name(self._path.name + "-shm")
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._foreign_keys = foreign_keys
        # What the authorizer lets through: "internal" (our own statements), "command", "query".
        self._mode = "internal"
        # Why the authorizer or a function last refused, for the error message.
        self._refusal: str | None = None
        # Evaluates the built-in date functions we replace, with the arguments we allow.
        self._dates = sqlite3.connect(":memory:", check_same_thread=False)
        set_limits(self._dates)
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
        # The token of the last snapshot begun with begin_incremental_snapshot, while the WAL
        # still holds every frame committed since that snapshot's state (None otherwise).
        self._chain: str | None = None
        # Where the next delta starts in the WAL, and the lock a capture's worker thread and
        # a restore take (graft.fsm.sqlite.wal_capture).
        self._wal_cursor = WalCursor()
        self._capture_lock = threading.RLock()
        self._init_readers(query_max_bytes)
        self._remove_files()
        self._remove_leftovers()
        self._conn = self._open()

    # --- the StateMachine interface ---------------------------------------------------------

    def query(self, query: bytes) -> bytes:
        if is_json_form(query):
            return self._query_request(query)
        statement = one_statement(query)
        self._mode = "query"
        self._refusal = None
        try:
            cursor = self._conn.execute(statement)
            rows = cursor.fetchall()
        except sqlite3.Error as e:
            failure = environment_failure(e)
            if failure is not None:
                raise failure from e
            raise QueryRejected(self._explain(e)) from None
        finally:
            self._mode = "internal"
            # A query never opens a transaction; make sure none is left behind.
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        columns = [column[0] for column in cursor.description or ()]
        return dumps({"columns": columns, "rows": [[json_cell(v) for v in r] for r in rows]})

    def snapshot(self, sink: BinaryIO) -> None:
        self.begin_snapshot()(sink)

    def begin_snapshot(self) -> Callable[[BinaryIO], None]:
        # Its writer checkpoints the WAL when done: frames the next delta needs may go.
        self._chain = None
        abandon(self._wal_cursor)
        return self._begin_full(checkpoint=True)

    def begin_incremental_snapshot(self, base: str | None) -> IncrementalSnapshot:
        """A delta (the WAL's committed frames since the snapshot whose token is ``base``)
        when ``base`` is the token this FSM handed out last, else a whole snapshot; see the
        module docstring ("Snapshots")."""
        token = uuid.uuid4().hex
        try:
            if base is not None and base == self._chain:
                capture = begin_capture(
                    self._path, self._wal_cursor, self._capture_lock, self._path.name + ".delta-"
                )
                if capture is not None:
                    self._chain = token
                    return IncrementalSnapshot(
                        write=capture,
                        delta=True,
                        token=token,
                        close=capture.close,
                        prepare=capture.prepare,
                        finish=lambda: self._finish_capture(capture, token),
                    )
            # From here on only a delta's capture checkpoints the WAL: every frame committed
            # after the state the whole snapshot pins stays in it for the next delta, which
            # starts at the frame after that state.
            self._conn.execute("PRAGMA wal_autocheckpoint=0")
            # After a capture resets the WAL, the first commit cuts the file to the frames it
            # wrote (never to zero): see "Snapshots" in the module docstring.
            self._conn.execute("PRAGMA journal_size_limit=0")
            write = self._begin_full(checkpoint=False)
            mark_whole(self._path, self._wal_cursor)
        except sqlite3.Error as e:
            raise environment_failure(e) or FSMFailure(
                f"SQLite could not start a snapshot ({e}); check the data dir {self._path.parent}"
            ) from e
        self._chain = token
        return IncrementalSnapshot(write=write, delta=False, token=token, close=write.close)

    def _finish_capture(self, capture: WalCapture, token: str) -> None:
        """A delta's capture read its frames: set aside those committed since, reset the WAL
        (on the calling thread, between two commands)."""
        try:
            kept = capture.finish(self._conn)
        except sqlite3.Error as e:
            self._chain = None
            raise environment_failure(e) or FSMFailure(
                f"SQLite could not reset its WAL after a snapshot ({e}); check the data dir "
                f"{self._path.parent}"
            ) from e
        if not kept and self._chain == token:
            self._chain = None  # the wal-index could not be read: the next one is whole

    def _begin_full(self, *, checkpoint: bool) -> _WholeWriter:
        reader = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            reader.execute("PRAGMA synchronous=OFF")  # its checkpoint need not fsync either
            reader.execute(f"PRAGMA mmap_size={READER_MMAP_BYTES}")
            reader.execute("BEGIN")
            # BEGIN is deferred: the first read takes the WAL read mark that pins the state.
            reader.execute("SELECT count(*) FROM sqlite_master").fetchone()
            cookie = reader.execute("PRAGMA schema_version").fetchone()[0]
        except sqlite3.Error as e:
            reader.close()
            raise environment_failure(e) or FSMFailure(
                f"SQLite could not start a snapshot ({e}); check the data dir {self._path.parent}"
            ) from e
        directory = self._path.parent
        prefix = self._path.name + ".snapshot-"

        pages, progress = self._backup_pages, self._backup_progress

        def write(sink: BinaryIO) -> None:
            write_snapshot(
                reader,
                directory,
                prefix,
                sink,
                cookie=cookie,
                pages=pages,
                progress=progress,
                checkpoint=checkpoint,
            )

        return _WholeWriter(write, reader)

    def restore(self, source: BinaryIO) -> None:
        # No reader may start a read on the old file once it is replaced; reads already under
        # way finish on the state they pinned, which was current when they started.
        with self._readers_lock, self._capture_lock:
            self._generation += 1
            self._drop_idle_readers()
            self._chain = None  # the new database's WAL follows no snapshot of ours
            abandon(self._wal_cursor)  # a capture must not read the new files
            self._wal_cursor.drop_carry()
            self._replace_database(source)

    def _replace_database(self, source: BinaryIO) -> None:
        fd, name = tempfile.mkstemp(dir=self._path.parent, prefix=self._path.name + ".restore-")
        copy = Path(name)
        try:
            try:
                copy_into(source, fd)
            finally:
                os.close(fd)
            size = copy.stat().st_size
            if size:
                check_image(copy)
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
        with self._capture_lock:
            abandon(self._wal_cursor)
            self._wal_cursor.drop_carry()
        self._close_readers()
        self._conn.close()
        self._dates.close()

    def size_bytes(self) -> int:
        """The database file and its write-ahead log, on disk (for metrics and status)."""
        total = 0
        for suffix in ("", "-wal"):
            path = self._path.with_name(self._path.name + suffix)
            total += path.stat().st_size if path.exists() else 0
        return total

    def wal_bytes(self) -> int:
        """The bytes of the write-ahead log's frames not yet checkpointed (one read of the
        wal-index header): the driver's snapshot rule takes a snapshot when they are enough
        (graft.driver.snapshot_policy), since in delta mode only a snapshot checkpoints
        them. The file itself may be longer: a reset WAL is rewritten from its start."""
        mark = read_mark(self._shm_path)
        if mark is not None:
            return mark.pending_bytes
        try:
            return os.stat(self._wal_path).st_size
        except FileNotFoundError:
            return 0

    # --- the replica consistency check ------------------------------------------------------

    def begin_digest(self) -> Callable[[], str]:
        """Pin the state and return the function that digests it logically, in a worker
        thread (graft.fsm.sqlite.digest: the file's bytes differ between equal replicas)."""
        return begin_sqlite_digest(self._path)

    # --- setup -------------------------------------------------------------------------------

    def _remove_files(self) -> None:
        for suffix in ("", "-journal", "-wal", "-shm"):
            self._path.with_name(self._path.name + suffix).unlink(missing_ok=True)

    def _remove_leftovers(self) -> None:
        """Temp files of snapshots and restores cut short by a crash."""
        for pattern in (".snapshot-*", ".restore-*", ".delta-*"):
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
        for name, nargs in ALWAYS_NONDETERMINISTIC.items():
            conn.create_function(name, nargs, self._builtin_unless_command(name))
        for name, time_arg in DATE_FUNCTIONS.items():
            conn.create_function(name, -1, self._date_function(name, time_arg), deterministic=True)
        self._guard_command(conn)
        conn.set_authorizer(self._authorize)
        return conn
