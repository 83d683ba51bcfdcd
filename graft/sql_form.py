"""The SQLite state machine's JSON form as a client builds it (docs/sql.md): statements with
bound parameters, BLOBs as base64."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from typing import Any

# A statement for ``execute``/``select``: SQL text alone, or with its parameters (a sequence for
# ``?``, a mapping for ``:name``). Parameter values: None, bool, int, float, str, bytes (BLOB).
SqlStatement = str | tuple[str, Sequence[Any] | Mapping[str, Any]]


def sql_request(statements: Sequence[SqlStatement], transaction: bool | None = None) -> bytes:
    """The JSON form of a command or query of the SQLite state machine:
    ``{"statements": [{"sql": ..., "params": ...}], "transaction": ...}``, bytes as BLOBs."""
    if isinstance(statements, str):
        raise TypeError("statements must be a list of statements, not one string")
    items: list[dict[str, Any]] = []
    for statement in statements:
        if isinstance(statement, str):
            items.append({"sql": statement})
            continue
        sql, params = statement
        if isinstance(params, Mapping):
            bound: Any = {str(k): _sql_value(v) for k, v in params.items()}
        else:
            bound = [_sql_value(v) for v in params]
        items.append({"sql": sql, "params": bound})
    document: dict[str, Any] = {"statements": items}
    if transaction is not None:
        document["transaction"] = transaction
    return json.dumps(document, ensure_ascii=False).encode("utf-8")


def _sql_value(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"blob": base64.b64encode(value).decode("ascii")}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(
        f"cannot bind {type(value).__name__} as an SQL parameter; use None, bool, int, float, "
        "str or bytes"
    )
