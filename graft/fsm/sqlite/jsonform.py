"""The JSON form of SQL commands and queries: statements with bound parameters in, typed
results out. Pure functions (no connection, no I/O): the SQLite FSM runs what ``parse_request``
returns, and other front ends (rqlite's API) build and read the same form.

Request (a command or a query)::

    {"statements": [{"sql": "INSERT INTO t(a, b) VALUES (?, ?)", "params": [1, "x"]},
                    {"sql": "SELECT * FROM t WHERE a = :a", "params": {"a": 1}},
                    {"sql": "SELECT 1"}],
     "transaction": true}

``params`` is optional: a list binds ``?``/``?NNN`` placeholders by position, an object binds
``:name``/``@name``/``$name`` by name (without the prefix). A value is JSON null, a boolean
(bound as 1/0), an integer in -2**63..2**63-1, a finite number, a string, or a BLOB written
``{"blob": "<base64>"}``. ``transaction`` (commands only, default true) runs all statements in
one transaction; false runs each in its own. Each ``sql`` holds exactly one statement (a second
one makes that statement fail, before any of it runs).

Response: ``{"results": [...]}``, one entry per statement, in order: ``{"last_insert_id": N or
null, "rows_affected": N}`` for a statement without rows, ``{"columns": [...], "types": [...],
"values": [[...], ...]}`` for one with rows (a SELECT, ``... RETURNING``, a PRAGMA), and
``{"error": "message"}`` for one that failed or did not take effect. Values come back as they
went in: integers exact, REAL as numbers (inf and -inf as null), TEXT as strings, NULL as null,
BLOB as ``{"blob": "<base64>"}``. ``types`` holds each column's declared type as written in
the schema (``"DATETIME"``), or ``""`` for a column that is an expression.

A body is in the JSON form when its first character other than white space is ``{``: SQL text
never starts with one, so the plain-text form keeps meaning what it meant.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from graft.fsm.limits import SQLITE_CONNECTION_LIMITS
from graft.fsm.sqlite.sql import dumps

__all__ = [
    "MalformedRequest",
    "Params",
    "SqlRequest",
    "Statement",
    "decode_value",
    "dump_request",
    "encode_value",
    "error_result",
    "is_json_form",
    "parse_request",
    "render_results",
    "rows_result",
    "write_result",
]

# A valid request nests at most this deep: the request, "statements", a statement, its
# "params", a {"blob": ...} value. Checked before decoding, as the decoder recurses once per
# level and running out of stack depends on the node, not on the input.
_MAX_DEPTH = 5
_MAX_LENGTH = SQLITE_CONNECTION_LIMITS["SQLITE_LIMIT_LENGTH"][1]
_MAX_PARAMS = SQLITE_CONNECTION_LIMITS["SQLITE_LIMIT_VARIABLE_NUMBER"][1]
_INT_MIN, _INT_MAX = -(1 << 63), (1 << 63) - 1
_WHITESPACE = b" \t\r\n"

Params = Sequence[Any] | Mapping[str, Any]


class MalformedRequest(ValueError):
    """The body looks like the JSON form but is not a valid request; the message says why."""


@dataclass(frozen=True)
class Statement:
    sql: str
    # None: no parameters; a tuple binds by position, a dict by name. BLOBs are bytes.
    params: tuple[Any, ...] | dict[str, Any] | None = None


@dataclass(frozen=True)
class SqlRequest:
    statements: tuple[Statement, ...]
    transaction: bool = True


def is_json_form(body: bytes) -> bool:
    """Whether ``body`` is meant as the JSON form (it starts with ``{``)."""
    return body.lstrip(_WHITESPACE)[:1] == b"{"


def parse_request(body: bytes) -> SqlRequest:
    """The request in ``body``, or MalformedRequest saying what is wrong with it."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedRequest("the request is not UTF-8 text; expected a JSON object") from None
    _check_depth(text)
    try:
        document = _DECODER.decode(text)
    except json.JSONDecodeError as e:
        raise MalformedRequest(f"the request is not valid JSON ({e})") from None
    if not isinstance(document, dict):
        raise MalformedRequest('the request must be a JSON object {"statements": [...]}')
    unknown = sorted(set(document) - {"statements", "transaction"})
    if unknown:
        raise MalformedRequest(
            f"unknown field {unknown[0]!r} in the request; expected statements, transaction"
        )
    transaction = document.get("transaction", True)
    if not isinstance(transaction, bool):
        raise MalformedRequest('"transaction" must be true or false')
    items = document.get("statements")
    if not isinstance(items, list) or not items:
        raise MalformedRequest(
            '"statements" must be a non-empty list of {"sql": ..., "params": ...} objects'
        )
    statements = tuple(_statement(item, number) for number, item in enumerate(items, start=1))
    return SqlRequest(statements=statements, transaction=transaction)


def encode_value(value: Any) -> Any:
    """An SQLite value as JSON data: BLOBs as ``{"blob": base64}``, inf/-inf/NaN as null."""
    if isinstance(value, bytes | bytearray | memoryview):
        return {"blob": base64.b64encode(value).decode("ascii")}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def decode_value(value: Any) -> Any:
    """A value of a result as Python: ``{"blob": base64}`` as bytes, the rest as it is."""
    if isinstance(value, dict) and set(value) == {"blob"}:
        return base64.b64decode(value["blob"])
    return value


def dump_request(request: SqlRequest) -> bytes:
    """``request`` as a body in the JSON form (bytes parameters as BLOBs): what
    ``parse_request`` reads back as an equal request."""
    items: list[dict[str, Any]] = []
    for statement in request.statements:
        item: dict[str, Any] = {"sql": statement.sql}
        if isinstance(statement.params, dict):
            item["params"] = {k: encode_value(v) for k, v in statement.params.items()}
        elif statement.params is not None:
            item["params"] = [encode_value(v) for v in statement.params]
        items.append(item)
    return dumps({"statements": items, "transaction": request.transaction})


def write_result(last_insert_id: int | None, rows_affected: int) -> dict[str, Any]:
    return {"last_insert_id": last_insert_id, "rows_affected": rows_affected}


def rows_result(
    columns: Sequence[str], types: Sequence[str], values: Sequence[Sequence[Any]]
) -> dict[str, Any]:
    """A statement's rows; ``values`` already encoded (``encode_value``)."""
    return {"columns": list(columns), "types": list(types), "values": [list(v) for v in values]}


def error_result(message: str) -> dict[str, Any]:
    return {"error": message}


def render_results(results: Sequence[Mapping[str, Any]]) -> bytes:
    """The response body: ``{"results": [...]}`` as compact UTF-8 JSON."""
    return dumps({"results": list(results)})


# --- decoding -------------------------------------------------------------------------------


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise MalformedRequest(f"field {key!r} appears twice in one JSON object")
            seen.add(key)
    return result


def _reject_constant(name: str) -> Any:
    raise MalformedRequest(f"{name} is not valid JSON; send finite numbers only")


def _integer(digits: str) -> int:
    # Checked before int() sees it: int()'s own digit limit is an interpreter setting
    # (PYTHONINTMAXSTRDIGITS) that may differ between nodes, so it must never decide a command.
    value = int(digits) if len(digits) <= 20 else None  # a sign and 19 digits
    if value is None or not _INT_MIN <= value <= _INT_MAX:
        raise MalformedRequest(
            f"the integer {digits[:30]}{'...' if len(digits) > 30 else ''} is outside SQLite's "
            "range (-2**63 to 2**63-1); send it as a string or a REAL"
        )
    return value


def _number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise MalformedRequest(f"the number {text[:30]} is too large for a REAL (a double)")
    return value


_DECODER = json.JSONDecoder(
    object_pairs_hook=_reject_duplicates,
    parse_constant=_reject_constant,
    parse_int=_integer,
    parse_float=_number,
)


def _check_depth(text: str) -> None:
    if text.count("[") + text.count("{") <= _MAX_DEPTH:  # the usual small request: no scan
        return
    # Drop escaped backslashes, then escaped quotes: every quote left opens or closes a string,
    # so the pieces at even positions are what lies outside strings.
    pieces = text.replace("\\\\", "").replace('\\"', "").split('"')
    outside = "".join(pieces[0::2]).encode("utf-8")
    brackets = outside.translate(_BRACKETS, _NOT_BRACKETS)
    if brackets and max(accumulate(b - 1 for b in brackets)) > _MAX_DEPTH:
        raise MalformedRequest(
            f"the request nests JSON arrays and objects more than {_MAX_DEPTH} deep; expected "
            '{"statements": [{"sql": ..., "params": [...]}]}'
        )


# Opening brackets -> 2, closing -> 0 (their depth change + 1); everything else is deleted.
_BRACKETS = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[{]}")


def _statement(item: Any, number: int) -> Statement:
    where = f"statement {number}"
    if not isinstance(item, dict):
        raise MalformedRequest(f'{where} must be an object {{"sql": ..., "params": ...}}')
    unknown = sorted(set(item) - {"sql", "params"})
    if unknown:
        raise MalformedRequest(f"unknown field {unknown[0]!r} in {where}; expected sql, params")
    sql = item.get("sql")
    if not isinstance(sql, str):
        raise MalformedRequest(f'{where} needs "sql", a string holding one SQL statement')
    _check_text(sql, f"the SQL of {where}")
    if "\x00" in sql:
        raise MalformedRequest(
            f"the SQL of {where} contains a NUL character (U+0000), which SQL text cannot "
            "hold; pass such a value as a parameter"
        )
    if not sql.strip():
        raise MalformedRequest(f"the SQL of {where} is empty; expected one SQL statement")
    # More than one statement in ``sql`` is that statement's error when it runs (Python's
    # sqlite3 refuses it before running any): splitting here would cost time quadratic in the
    # number of semicolons inside an unclosed string.
    raw = item.get("params")
    params: tuple[Any, ...] | dict[str, Any] | None
    if raw is None:
        params = None
    elif isinstance(raw, list):
        params = tuple(_value(v, f"parameter {i} of {where}") for i, v in enumerate(raw, 1))
    elif isinstance(raw, dict):
        params = {}
        for name, v in raw.items():
            _check_text(name, f"a parameter name of {where}")
            if not name:
                raise MalformedRequest(f"a parameter name of {where} is empty")
            params[name] = _value(v, f"parameter {name!r} of {where}")
    else:
        raise MalformedRequest(
            f'"params" of {where} must be a list (for ?) or an object (for :name)'
        )
    if params is not None and len(params) > _MAX_PARAMS:
        raise MalformedRequest(
            f"{where} has {len(params)} parameters, over SQLite's limit of {_MAX_PARAMS} "
            "(SQLITE_LIMIT_VARIABLE_NUMBER)"
        )
    return Statement(sql=sql, params=params)


def _value(value: Any, where: str) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        _check_text(value, where)
        if len(value) > _MAX_LENGTH:  # characters: at least as many bytes in UTF-8
            raise _too_long(where)
        return value
    if isinstance(value, dict) and set(value) == {"blob"} and isinstance(value["blob"], str):
        try:
            data = base64.b64decode(value["blob"], validate=True)
        except (binascii.Error, ValueError):
            raise MalformedRequest(f'{where}: "blob" is not valid base64') from None
        if len(data) > _MAX_LENGTH:
            raise _too_long(where)
        return data
    raise MalformedRequest(
        f'{where} must be null, a boolean, a number, a string or {{"blob": "<base64>"}}'
    )


def _too_long(where: str) -> MalformedRequest:
    return MalformedRequest(
        f"{where} is longer than {_MAX_LENGTH} bytes, the longest value SQLite takes here "
        "(SQLITE_LIMIT_LENGTH)"
    )


def _check_text(text: str, where: str) -> None:
    """MalformedRequest for a lone UTF-16 surrogate (JSON allows "\\ud800"): it is not text,
    and binding it would fail outside SQLite's error handling."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedRequest(
            f"{where} holds an unpaired UTF-16 surrogate escape, which is not text"
        ) from None
