"""Running requests in the JSON form (graft.fsm.sqlite.jsonform) on the FSM's connections.

Commands: every statement runs under the same rules, guards and work budget as a statement of
a plain-text script (the authorizer and the replaced functions act per statement; the budget
is the request's). With ``"transaction": true`` (the default) all statements run in one
transaction: when one fails, everything is rolled back and its result is the error, the
statements before it say ``rolled back: statement N failed`` and those after it ``not run:
statement N failed``. With ``"transaction": false`` each statement runs (and commits) on its
own, so a failure undoes only that statement. Either way the command is applied, and answers,
the same on every replica: a failing statement is part of the answer, not a rejection. Only a
request that is not valid JSON form is refused (CommandRejected), before anything runs.

The rows all statements of a command return count together against SQLITE_MAX_RESULT_ROWS and
SQLITE_MAX_RESULT_BYTES; past them, the statement that crosses the cap fails.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from graft.fsm.base import CommandRejected, FSMFailure, QueryRejected
from graft.fsm.limits import SQLITE_MAX_RESULT_BYTES, SQLITE_MAX_RESULT_ROWS
from graft.fsm.sqlite.commands import RESET_ROWID, ROWID_SENTINEL, CommandApplication
from graft.fsm.sqlite.decltypes import declared_types
from graft.fsm.sqlite.jsonform import (
    MalformedRequest,
    SqlRequest,
    Statement,
    encode_value,
    error_result,
    is_json_form,
    parse_request,
    render_results,
    rows_result,
    write_result,
)
from graft.fsm.sqlite.sql import ROWS_PER_FETCH, environment_failure, execute, explain

# Python's sqlite3 raises Warning (not an sqlite3.Error) for some misuse, e.g. two statements.
STATEMENT_ERRORS = (sqlite3.Error, sqlite3.Warning)


def request_of(data: bytes, refused: type[CommandRejected] | type[QueryRejected]) -> SqlRequest:
    try:
        return parse_request(data)
    except MalformedRequest as e:
        raise refused(f"{e}") from None


class _Failed(Exception):
    """A statement of the running unit failed: ``number`` (1-based in the request) and why."""

    def __init__(self, number: int, message: str) -> None:
        super().__init__(message)
        self.number = number
        self.message = message


class _RowCap:
    """The rows and bytes a command's statements have returned so far."""

    def __init__(self) -> None:
        self.rows = 0
        self.size = 0

    def add(self, row: Sequence[Any]) -> str | None:
        self.rows += 1
        self.size += 8 * len(row) + sum(len(v) for v in row if isinstance(v, str | bytes))
        if self.rows > SQLITE_MAX_RESULT_ROWS:
            return (
                f"the command's statements return more than {SQLITE_MAX_RESULT_ROWS} rows "
                "together (SQLITE_MAX_RESULT_ROWS): add a LIMIT, or read the rows with queries"
            )
        if self.size > SQLITE_MAX_RESULT_BYTES:
            return (
                f"the command's statements return more than {SQLITE_MAX_RESULT_BYTES} bytes "
                "together (SQLITE_MAX_RESULT_BYTES): return less, or read them with queries"
            )
        return None


class JsonCommands(CommandApplication):
    """Part of SQLiteStateMachine: commands and main-connection queries in the JSON form."""

    def apply(self, command: bytes, index: int) -> bytes:
        if is_json_form(command):
            return self._apply_request(command)
        return super().apply(command, index)

    def _apply_request(self, command: bytes) -> bytes:
        request = request_of(command, CommandRejected)
        self._conn.execute(RESET_ROWID)
        self._start_command()  # the budget is the whole request's
        self._mode = "internal"
        statements = request.statements
        units = [statements] if request.transaction else [(s,) for s in statements]
        cap = _RowCap()
        results: list[dict[str, Any]] = []
        for unit in units:
            results.extend(self._run_unit(unit, len(results), cap))
        return render_results(results)

    def _run_unit(
        self, unit: Sequence[Statement], before: int, cap: _RowCap
    ) -> list[dict[str, Any]]:
        """The statements of ``unit`` in one transaction (the first is statement before + 1)."""
        conn = self._conn
        self._written = set()
        self._removed = False
        conn.execute("BEGIN")
        results: list[dict[str, Any]] = []
        try:
            for offset, statement in enumerate(unit):
                results.append(
                    self._run_statement(statement, before + offset + 1, cap, unit[: offset + 1])
                )
            self._mode = "internal"
            try:
                self._check_rowids()
            except CommandRejected as e:
                raise _Failed(before + len(unit), f"{e}") from None
        except _Failed as failed:
            self._abandon()
            return [
                error_result(failed.message)
                if before + offset + 1 == failed.number
                else error_result(
                    f"{'rolled back' if before + offset + 1 < failed.number else 'not run'}: "
                    f"statement {failed.number} failed"
                )
                for offset in range(len(unit))
            ]
        except BaseException:
            self._abandon()
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise environment_failure(e) or FSMFailure(f"SQLite could not commit: {e}") from e
        return results

    def _abandon(self) -> None:
        self._mode = "internal"
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")
        # The rollback may undo schema changes the rowid cache saw.
        self._rowid_names = {}

    def _run_statement(
        self, statement: Statement, number: int, cap: _RowCap, ran: Sequence[Statement]
    ) -> dict[str, Any]:
        """One statement's result (``ran``: the unit's statements up to this one), or _Failed."""
        conn = self._conn
        self._mode = "command"
        self._refusal = None
        self._statement_written = set()
        try:
            cursor = execute(conn, statement)
            if cursor.description is None:
                rowid = cursor.lastrowid
                affected = max(cursor.rowcount, 0)
                self._mode = "internal"
                return write_result(None if rowid == ROWID_SENTINEL else rowid, affected)
            columns = [column[0] for column in cursor.description]
            values: list[list[Any]] = []
            while batch := cursor.fetchmany(ROWS_PER_FETCH):
                for row in batch:
                    over = cap.add(row)
                    if over is not None:
                        raise _Failed(number, over)
                    values.append([encode_value(v) for v in row])
        except STATEMENT_ERRORS as e:
            if isinstance(e, sqlite3.Error) and (failure := environment_failure(e)) is not None:
                try:
                    # CommandRejected when an AUTOINCREMENT table is full (the same on every
                    # replica): that statement's error, not a failure of this machine.
                    self._explain_full(e, ran)
                except CommandRejected as full:
                    raise _Failed(number, f"{full}") from None
                raise failure from e
            raise _Failed(number, self._explain(e)) from None  # type: ignore[arg-type]
        finally:
            self._mode = "internal"
        types = declared_types(conn, statement.sql, len(columns))
        return rows_result(columns, types, values)

    def _query_request(self, query: bytes) -> bytes:
        """A query in the JSON form on the main connection (not in a worker thread)."""
        request = request_of(query, QueryRejected)
        conn = self._conn
        results: list[dict[str, Any]] = []
        for statement in request.statements:
            self._mode = "query"
            self._refusal = None
            try:
                cursor = execute(conn, statement)
                results.append(query_result(conn, cursor, statement))
            except STATEMENT_ERRORS as e:
                failure = environment_failure(e) if isinstance(e, sqlite3.Error) else None
                if failure is not None:
                    raise failure from e
                refusal, self._refusal = self._refusal, None
                results.append(error_result(explain(refusal, e)))  # type: ignore[arg-type]
            finally:
                self._mode = "internal"
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
        return render_results(results)


def query_result(
    conn: sqlite3.Connection, cursor: sqlite3.Cursor, statement: Statement
) -> dict[str, Any]:
    """The result of a query's statement, its rows read whole (the caller bounds them)."""
    if cursor.description is None:
        return write_result(None, 0)
    columns = [column[0] for column in cursor.description]
    values = [[encode_value(v) for v in row] for row in cursor.fetchall()]
    return rows_result(columns, declared_types(conn, statement.sql, len(columns)), values)
