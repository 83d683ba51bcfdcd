"""Queries in worker threads (graft.fsm.base.ThreadedQueries): each on a read-only connection
of its own (a pool of them), its read transaction pinned when the call starts, stopped at its
deadline by a watchdog thread, and its answer built row by row within ``query_max_bytes``."""

from __future__ import annotations

import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from graft.config import ConfigError
from graft.errors import SHUTTING_DOWN
from graft.fsm.base import FSMFailure, QueryRejected, QueryTimedOut
from graft.fsm.sqlite.decltypes import declared_types
from graft.fsm.sqlite.jsonform import (
    SqlRequest,
    Statement,
    encode_value,
    error_result,
    is_json_form,
    render_results,
    rows_result,
    write_result,
)
from graft.fsm.sqlite.jsonrun import STATEMENT_ERRORS, request_of
from graft.fsm.sqlite.rules import printf_refusal, refuse_in_query
from graft.fsm.sqlite.sql import (
    dumps,
    environment_failure,
    execute,
    explain,
    json_cell,
    one_statement,
    set_limits,
)

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


class ThreadedReads:
    """Part of SQLiteStateMachine: ``query_in_thread`` and its pool of readers."""

    _path: Path
    _foreign_keys: bool

    def query_in_thread(self, query: bytes, deadline: float) -> bytes:
        """``query`` on a read-only connection of its own, for a worker thread: stopped at
        ``deadline`` (a ``time.monotonic()`` value) with QueryTimedOut, and refused with
        QueryRejected when its answer would exceed ``query_max_bytes``.

        The read transaction starts when the call does, so it sees every command applied
        before; ``restore`` waits for that start, and no read starts on a replaced file.
        """
        request = request_of(query, QueryRejected) if is_json_form(query) else None
        statement = one_statement(query) if request is None else ""
        if time.monotonic() >= deadline:
            raise QueryTimedOut("the query's deadline passed before a thread was free to run it")
        reader = self._take_reader(deadline)
        try:
            if request is not None:
                return reader.run_request(request, deadline, self._query_max_bytes, self._is_closed)
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
                        refuse=refuse_in_query,
                    )
                reader.pin()
            except sqlite3.Error as e:
                if reader is not None:
                    reader.close()
                raise environment_failure(e) or FSMFailure(
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


class _Reader:
    """A read-only connection to the database, used by one worker thread at a time.

    The query rules are the main connection's (``rules.refuse_in_query``), enforced by an
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
            set_limits(self.conn)
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
                refusal = printf_refusal(name, args, max_bytes, "value a query may build")
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
            answer = bytearray(b'{"columns":' + dumps(columns) + b',"rows":[')
            separator = b""
            for row in cursor:
                piece = dumps([json_cell(v) for v in row])
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
            self._raise_whole_query_failure(e, closing, max_bytes)
            raise QueryRejected(self._explain(e)) from None
        finally:
            self._checking = False
            if cursor is not None:
                cursor.close()  # a statement left half-read would keep the transaction busy
            self.conn.set_progress_handler(None, 0)

    def run_request(
        self, request: SqlRequest, deadline: float, max_bytes: int, closing: Callable[[], bool]
    ) -> bytes:
        """The JSON-form answer to ``request`` (graft.fsm.sqlite.jsonform): a result or an error
        for each statement, all read in one read transaction, within ``max_bytes`` in all."""

        def stop() -> int:
            return 1 if closing() or time.monotonic() >= deadline else 0

        self.conn.set_progress_handler(stop, _DEADLINE_CHECK_STEPS)
        results: list[dict[str, Any]] = []
        size = 0
        try:
            for statement in request.statements:
                self._checking = True
                self._refusal = None
                cursor: sqlite3.Cursor | None = None
                try:
                    cursor = execute(self.conn, statement)
                    self._checking = False
                    result, size = self._statement_rows(cursor, statement, size, max_bytes)
                    results.append(result)
                except STATEMENT_ERRORS as e:
                    self._checking = False
                    self._raise_whole_query_failure(e, closing, max_bytes)
                    refusal, self._refusal = self._refusal, None
                    results.append(error_result(explain(refusal, e)))  # type: ignore[arg-type]
                finally:
                    self._checking = False
                    if cursor is not None:
                        cursor.close()
        finally:
            self.conn.set_progress_handler(None, 0)
        answer = render_results(results)
        if len(answer) > max_bytes:
            raise _too_large(max_bytes)
        return answer

    def _statement_rows(
        self, cursor: sqlite3.Cursor, statement: Statement, size: int, max_bytes: int
    ) -> tuple[dict[str, Any], int]:
        """One statement's result, and the answer's size so far with it (an estimate a little
        below the rendered size: _too_large past ``max_bytes``)."""
        if cursor.description is None:
            return write_result(None, 0), size + 40
        columns = [column[0] for column in cursor.description]
        size += len(dumps(columns)) * 2 + 40
        values: list[list[Any]] = []
        for row in cursor:
            cells = [encode_value(v) for v in row]
            size += len(dumps(cells)) + 1
            if size > max_bytes:
                raise _too_large(max_bytes)
            values.append(cells)
        types = declared_types(self.conn, statement.sql, len(columns))
        return rows_result(columns, types, values), size

    def _raise_whole_query_failure(
        self, error: Exception, closing: Callable[[], bool], max_bytes: int
    ) -> None:
        """What stops the whole query rather than one statement: the deadline, shutdown, an
        answer too large, this machine's failure."""
        if not isinstance(error, sqlite3.Error):
            return
        code = getattr(error, "sqlite_errorcode", None)
        if code == sqlite3.SQLITE_INTERRUPT:
            if closing():
                raise QueryRejected(f"the query was stopped: {SHUTTING_DOWN}") from None
            raise QueryTimedOut("the query ran past its deadline and was stopped") from None
        if code == sqlite3.SQLITE_TOOBIG:
            raise _too_large(max_bytes) from None
        failure = environment_failure(error)
        if failure is not None:
            raise failure from error

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
        return explain(refusal, error)


def _too_large(max_bytes: int) -> QueryRejected:
    return QueryRejected(
        f"the query's answer would be larger than {max_bytes} bytes, the most a query may "
        "return (fsm.options.query_max_bytes); select fewer rows or columns (LIMIT, WHERE) and "
        "page through the rest"
    )
