"""Applying a command: its statements in one transaction, the rows of its final statement
within the result caps, the rowid checks after it, the authorizer of commands and queries, and
the message of a refusal."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from graft.fsm.base import CommandRejected, FSMFailure
from graft.fsm.limits import SQLITE_MAX_RESULT_BYTES, SQLITE_MAX_RESULT_ROWS
from graft.fsm.sqlite.guards import CommandGuards
from graft.fsm.sqlite.jsonform import Statement
from graft.fsm.sqlite.rules import (
    LAYOUT_TABLES,
    NOT_IN_COMMANDS_PRAGMAS,
    REFUSED_IN_COMMANDS,
    SCHEMA_ACTIONS,
    WRITE_ACTIONS,
    function_refusal,
    refuse_in_command,
    refuse_in_query,
)
from graft.fsm.sqlite.sql import (
    ROWS_PER_FETCH,
    dumps,
    environment_failure,
    execute,
    explain,
    json_cell,
    quote,
    split_statements,
    sql_text,
)

# Written by us before each command so that last_insert_rowid() and changes() start from the
# same value on every replica, whatever happened on this connection before (e.g. a restore).
ROWID_SENTINEL = -(1 << 63)
RESET_ROWID = f"INSERT OR REPLACE INTO temp._graft_rowid(rowid) VALUES ({ROWID_SENTINEL})"
# The largest rowid: once a table holds it, SQLite picks the next rowid at random (plain
# tables) or fails with SQLITE_FULL (AUTOINCREMENT).
_MAX_ROWID = (1 << 63) - 1


class CommandApplication(CommandGuards):
    """Part of SQLiteStateMachine: ``apply`` and the checks around it."""

    _conn: sqlite3.Connection
    _statement_written: set[str]

    def apply(self, command: bytes, index: int) -> bytes:
        del index  # the state does not depend on where in the log the command sits
        script = sql_text(command, "command", "an SQL script", CommandRejected)
        statements = split_statements(script, CommandRejected)
        conn = self._conn
        conn.execute(RESET_ROWID)
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
                        while cursor.fetchmany(ROWS_PER_FETCH):
                            pass
                except sqlite3.Error as e:
                    failure = environment_failure(e)
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
            raise environment_failure(e) or FSMFailure(f"SQLite could not commit: {e}") from e
        result: dict[str, Any] = {"changes": conn.total_changes - before}
        result["last_insert_rowid"] = None if rowid == ROWID_SENTINEL else rowid
        if columns is not None:
            result["columns"] = columns
            result["rows"] = rows
        return dumps(result)

    def _final_rows(self, cursor: sqlite3.Cursor) -> list[list[Any]]:
        """The rows of a command's final statement, as JSON cells, fetched a few at a time;
        CommandRejected past the row or byte cap."""
        rows: list[list[Any]] = []
        size = 0
        while True:
            batch = cursor.fetchmany(ROWS_PER_FETCH)
            if not batch:
                return rows
            for row in batch:
                size += 8 * len(row) + sum(len(v) for v in row if isinstance(v, str | bytes))
                rows.append([json_cell(v) for v in row])
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
                tops.append(f"(SELECT max({column}) FROM main.{quote(table)}) = {_MAX_ROWID}")
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
            top = self._conn.execute(f"SELECT max({column}) FROM main.{quote(table)}").fetchone()
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
                    conn.execute(f"SELECT {candidate} FROM main.{quote(table)} LIMIT 0")
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

    def _explain_full(self, error: sqlite3.Error, statements: Sequence[str | Statement]) -> None:
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
                cursor = execute(conn, statement)
                while cursor.fetchmany(ROWS_PER_FETCH):
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

    def _reaches_max_rowid(self, statement: str | Statement, tables: Sequence[str]) -> str | None:
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
                f"CREATE TEMP TRIGGER _graft_probe_{number} AFTER INSERT ON main.{quote(name)} "
                f"WHEN new.rowid = {_MAX_ROWID} BEGIN "
                f"SELECT RAISE(ABORT, '_graft_probe_{number}'); END"
            )
        self._mode = "command"
        self._probing = True
        try:
            cursor = execute(conn, statement)
            while cursor.fetchmany(ROWS_PER_FETCH):
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
            refuse_in_query(action, arg1, arg2, db)
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

    def _refuse_in_command(
        self, action: int, arg1: str | None, arg2: str | None, db: str | None
    ) -> str | None:
        refusal = self._limit_in_command(action, arg1, arg2, db)
        if refusal is not None:
            return refusal
        return refuse_in_command(action, arg1, arg2, db)

    def _limit_in_command(
        self, action: int, arg1: str | None, arg2: str | None, db: str | None
    ) -> str | None:
        """Notes the tables a command writes, and refuses what reads the build, the file
        layout or this node's paths."""
        if action in WRITE_ACTIONS:
            if db == "main" and arg1 is not None:
                self._written.add(arg1)
                self._statement_written.add(arg1)
                if action == sqlite3.SQLITE_UPDATE:
                    self._removed = True
            return None
        if action == sqlite3.SQLITE_DELETE:
            self._removed = True
            return None
        if action in SCHEMA_ACTIONS:
            self._rowid_names = {}
            if action == sqlite3.SQLITE_CREATE_VTABLE and (arg2 or "").lower() in LAYOUT_TABLES:
                return f"virtual tables of module {arg2} are not allowed in a command"
            return None
        if action == sqlite3.SQLITE_FUNCTION:
            name = (arg2 or "").lower()
            if name in REFUSED_IN_COMMANDS:
                return function_refusal(name, "machine" if name != "sqlite_offset" else "layout")
            return None
        if action == sqlite3.SQLITE_READ and (arg1 or "").lower() in LAYOUT_TABLES:
            return (
                f"{arg1} describes this node's file or connection, not the data, and is not "
                "allowed in a command; read it with a query"
            )
        if action == sqlite3.SQLITE_PRAGMA and (arg1 or "").lower() in NOT_IN_COMMANDS_PRAGMAS:
            return (
                f"PRAGMA {(arg1 or '').lower()} (also as pragma_{(arg1 or '').lower()}) is not "
                "allowed in a command: its answer depends on the node or the SQLite build, or "
                "it runs outside the work budget; use it in a query"
            )
        return None

    def _explain(self, error: sqlite3.Error) -> str:
        """SQLite's message, or ours when the authorizer or a replaced function refused."""
        refusal, self._refusal = self._refusal, None
        return explain(refusal, error)
