"""Graft's JSON SQL results in, rqlite's response shapes out.

The FSM answers ``{"results": [...]}`` with, per statement, ``{"last_insert_id",
"rows_affected"}``, ``{"columns", "types", "values"}`` or ``{"error"}``, BLOB values as
``{"blob": "<base64>"}`` (graft.fsm.sqlite.jsonform). rqlite renders these as its Go encoder
does, and its clients depend on the details:

- zero ``last_insert_id``/``rows_affected`` and empty ``columns``/``types``/``values`` are left
  out (Go's omitempty); a CREATE TABLE answers ``{}``.
- types are the declared column types in lower case; a column without one (an expression)
  takes the type of its first non-NULL value: integer, real, text or blob.
- BLOBs are base64 strings (``blob_array``: arrays of byte values).
- columns declared DATE, DATETIME or TIMESTAMP: text in one of SQLite's time formats and
  integers (Unix seconds, or milliseconds beyond 10^12) render as RFC 3339 in UTC, e.g.
  ``2024-05-01T12:30:00Z``: pyrqlite's TIMESTAMP converter needs the ``T``. Text that is no
  time stays as it is (rqlite would answer the zero time). BOOLEAN columns answer true/false
  for integers.
- ``associative``: rows as objects, ``{"types": {column: type}, "rows": [{...}]}``, and
  ``"rows": null`` on results of writes.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import re
from collections.abc import Sequence
from typing import Any

from graft.errors import Internal

_TIME_TYPES = frozenset({"date", "datetime", "timestamp"})
# SQLite's time text as go-sqlite3 parses it: a date, then optionally a time to the minute or
# second, a fraction of up to nine digits and an offset (the last two only after seconds).
_TIME_TEXT = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})"
    r"(?:[ T](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?(?:([+-])(\d{2}):(\d{2}))?)?)?$",
    re.ASCII,
)
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


class RenderOptions:
    __slots__ = ("associative", "blob_array")

    def __init__(self, *, associative: bool = False, blob_array: bool = False) -> None:
        self.associative = associative
        self.blob_array = blob_array


def fsm_results(output: bytes) -> list[dict[str, Any]]:
    """The ``results`` list of the FSM's answer; Internal when it is not that shape (a bug)."""
    try:
        document = json.loads(output)
        results = document["results"]
        if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
            raise TypeError("results is not a list of objects")
    except (ValueError, TypeError, KeyError) as e:
        raise Internal(f"the FSM's SQL answer is not a results document: {e}") from None
    return results


def render_results(results: Sequence[dict[str, Any]], options: RenderOptions) -> list[Any]:
    return [render_result(result, options) for result in results]


def render_result(result: dict[str, Any], options: RenderOptions) -> dict[str, Any]:
    if "error" in result:
        return {"error": str(result["error"])}
    if "columns" in result:
        return _rows(result, options)
    rendered: dict[str, Any] = {}
    for key in ("last_insert_id", "rows_affected"):
        if result.get(key):
            rendered[key] = result[key]
    if options.associative:
        rendered["rows"] = None
    return rendered


def _rows(result: dict[str, Any], options: RenderOptions) -> dict[str, Any]:
    columns: list[str] = list(result.get("columns") or [])
    values: list[list[Any]] = list(result.get("values") or [])
    declared = list(result.get("types") or [])
    declared += [""] * (len(columns) - len(declared))
    types = [str(t or "").lower() for t in declared[: len(columns)]]
    for position, kind in enumerate(types):
        if not kind:
            types[position] = _type_of_first_value(values, position)
    rows = [[_value(v, types[i], options) for i, v in enumerate(row)] for row in values]
    if options.associative:
        return {
            "types": dict(zip(columns, types, strict=True)),
            "rows": [dict(zip(columns, row, strict=False)) for row in rows],
        }
    rendered: dict[str, Any] = {}
    if columns:
        rendered["columns"] = columns
        rendered["types"] = types
    if rows:
        rendered["values"] = rows
    return rendered


def _type_of_first_value(values: list[list[Any]], position: int) -> str:
    for row in values:
        value = row[position] if position < len(row) else None
        if value is None:
            continue
        if isinstance(value, bool | int):
            return "integer"
        if isinstance(value, float):
            return "real"
        if isinstance(value, dict):
            return "blob"
        return "text"
    return ""


def _value(value: Any, kind: str, options: RenderOptions) -> Any:
    if isinstance(value, dict):
        encoded = value.get("blob")
        if not isinstance(encoded, str):
            raise Internal("the FSM answered an object that is not a BLOB")
        if not options.blob_array:
            return encoded  # rqlite's BLOBs are standard base64 too
        try:
            return list(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            raise Internal("the FSM answered a BLOB that is not base64") from None
    if kind in _TIME_TYPES:
        if isinstance(value, str):
            return time_text(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return unix_time(value)
    elif kind == "boolean" and isinstance(value, int) and not isinstance(value, bool):
        return value > 0
    return value


def time_text(text: str) -> str:
    """SQLite time text as RFC 3339 (``2024-05-01T12:30:00.5Z``); the text itself when it is
    not one of the forms go-sqlite3 reads (a trailing Z is allowed)."""
    match = _TIME_TEXT.match(text[:-1] if text.endswith("Z") else text)
    if match is None:
        return text
    year, month, day, hour, minute, second, fraction, sign, off_h, off_m = match.groups()
    try:
        datetime.datetime(
            int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0)
        )
    except ValueError:
        return text
    rendered = f"{year}-{month}-{day}T{hour or '00'}:{minute or '00'}:{second or '00'}"
    digits = (fraction or "").rstrip("0")
    if digits:
        rendered += "." + digits
    if sign is None or (int(off_h) == 0 and int(off_m) == 0):
        return rendered + "Z"
    if int(off_h) > 23 or int(off_m) > 59:
        return text
    return f"{rendered}{sign}{off_h}:{off_m}"


def unix_time(value: int) -> str | int:
    """An integer in a time column as go-sqlite3 reads it: Unix seconds, or milliseconds when
    beyond 10^12 either way; the integer itself when it is outside the years 1..9999."""
    try:
        if abs(value) > 10**12:
            moment = _EPOCH + datetime.timedelta(milliseconds=value)
        else:
            moment = _EPOCH + datetime.timedelta(seconds=value)
    except OverflowError:
        return value
    rendered = (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
        f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    )
    if moment.microsecond:
        rendered += f".{moment.microsecond:06d}".rstrip("0")
    return rendered + "Z"
