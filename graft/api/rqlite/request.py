"""rqlite's requests in, Graft's JSON SQL form out.

rqlite's body is a JSON array of statements, each a string, ``[sql, p1, p2, ...]`` (positional
parameters) or ``[sql, {"name": value}]`` (named). Graft's SQLite FSM takes
``{"statements": [{"sql", "params"}], "transaction": bool}`` with BLOBs as
``{"blob": "<base64>"}`` (graft.fsm.sqlite.jsonform); this module turns the one into the other
and parses the query-string parameters rqlite's clients send.

Parameter values follow rqlite: integers beyond 64 bits become REAL, a string that is an SQL
BLOB literal (``x'0a0b'``) and an array of byte values (0..255) become BLOBs, ``true``/``false``
bind as 1/0 (SQLite has no boolean). Anything else (an object among positional values, an
array of non-bytes) is a 400.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from graft.api.jsonin import load_json
from graft.driver.port import Consistency
from graft.errors import BadRequest

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

# rqlite's consistency levels onto Graft's (docs/rqlite.md): none reads this node as it is;
# weak asks the leader, which answers under its lease (Graft's default); linearizable and
# strong are both linearizable reads (Graft's ReadIndex), rqlite's strong going through the
# log buys nothing more. auto is rqlite's "none on a read-only node, else weak": weak here.
LEVELS: Mapping[str, Consistency] = {
    "none": Consistency.WEAK,
    "weak": Consistency.DEFAULT,
    "auto": Consistency.DEFAULT,
    "linearizable": Consistency.STRONG,
    "strong": Consistency.STRONG,
}

# A Go duration ("1.5s", "300ms", "1h2m"), as rqlite's timeout and freshness take.
_GO_DURATION = re.compile(r"^(?:(\d{1,9}(?:\.\d{0,9})?|\.\d{1,9})(ns|us|µs|μs|ms|s|m|h))+$")
_GO_PART = re.compile(r"(\d{1,9}(?:\.\d{0,9})?|\.\d{1,9})(ns|us|µs|μs|ms|s|m|h)")
_GO_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_HEX_LITERAL = re.compile(r"^\s*[xX]'((?:[0-9a-fA-F]{2})*)'\s*$")


class RqliteParams:
    """The query string as rqlite reads it: a flag is on when present, whatever its value
    (``?transaction``, ``?transaction=true`` and, as in rqlite, ``?transaction=false``)."""

    def __init__(self, uri: bytes) -> None:
        raw = urlsplit(uri).query.decode("utf-8", errors="replace") if b"?" in uri else ""
        parsed = parse_qs(raw, keep_blank_values=True)
        # rqlite takes the first of repeated parameters; so does this.
        self._values: dict[str, str] = {name: values[0] for name, values in parsed.items()}

    def get(self, name: str) -> str | None:
        return self._values.get(name)

    def has(self, name: str) -> bool:
        return name in self._values

    def consistency(self) -> Consistency:
        """``level``: absent or empty is rqlite's default, weak (Graft's default)."""
        level = self._values.get("level", "").strip().lower()
        if not level:
            return Consistency.DEFAULT
        try:
            return LEVELS[level]
        except KeyError:
            raise BadRequest(
                f"parameter level={level[:40]!r} is unknown: use one of {'|'.join(LEVELS)}"
            ) from None

    def duration(self, name: str) -> float | None:
        """A Go duration parameter in seconds; None when absent."""
        value = self._values.get(name)
        if value is None:
            return None
        return go_duration(name, value)


def go_duration(name: str, value: str) -> float:
    text = value.strip()
    if text == "0":
        return 0.0
    if len(text) > 40 or not _GO_DURATION.match(text):
        raise BadRequest(
            f"parameter {name}={value[:40]!r} is not a duration: use a number and a unit as "
            f"rqlite does, e.g. {name}=500ms, {name}=2s or {name}=1m30s"
        )
    return sum(float(n) * _GO_UNIT_SECONDS[unit] for n, unit in _GO_PART.findall(text))


@dataclass(frozen=True, slots=True)
class Statement:
    sql: str
    params: list[Any] | dict[str, Any] | None = None

    def form(self) -> dict[str, Any]:
        """This statement in Graft's JSON SQL form."""
        if self.params is None:
            return {"sql": self.sql}
        return {"sql": self.sql, "params": self.params}


def parse_statements(body: bytes) -> list[Statement]:
    """A JSON array of rqlite statements; BadRequest for anything else or for an empty array."""
    try:
        document = load_json(body, "the statements")
    except (UnicodeDecodeError, ValueError) as e:
        raise BadRequest(
            f"the body is not valid JSON ({e}): send a JSON array of statements, each an SQL "
            'string or ["SQL with ?", param, ...]'
        ) from None
    if not isinstance(document, list):
        raise BadRequest(
            "the body must be a JSON array of statements, each an SQL string or "
            f'["SQL with ?", param, ...], not a JSON {type(document).__name__}'
        )
    if not document:
        raise BadRequest("no statements: send at least one")
    return [_statement(position, item) for position, item in enumerate(document)]


def _statement(position: int, item: Any) -> Statement:
    if isinstance(item, str):
        return Statement(item)
    if not isinstance(item, list) or not item or not isinstance(item[0], str):
        raise BadRequest(
            f"statement {position} is neither an SQL string nor an array whose first element "
            'is the SQL: use "SELECT 1" or ["SELECT ?", 1]'
        )
    sql, rest = item[0], item[1:]
    if not rest:
        return Statement(sql)
    if all(isinstance(value, dict) for value in rest):
        named: dict[str, Any] = {}
        for mapping in rest:
            for name, value in mapping.items():
                named[name] = _value(position, value)
        return Statement(sql, named)
    if any(isinstance(value, dict) for value in rest):
        raise BadRequest(
            f"statement {position} mixes positional and named parameters: use one kind"
        )
    return Statement(sql, [_value(position, value) for value in rest])


def _value(position: int, value: Any) -> Any:
    """One rqlite parameter value as the JSON form binds it."""
    if value is None or isinstance(value, float):
        return value
    if isinstance(value, str):
        match = _HEX_LITERAL.match(value)
        return value if match is None else _blob(binascii.unhexlify(match.group(1)))
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        # rqlite reads a number that is no int64 as a float; so does this.
        return value if _INT64_MIN <= value <= _INT64_MAX else float(value)
    if isinstance(value, list):
        if all(
            isinstance(byte, int) and not isinstance(byte, bool) and 0 <= byte <= 255
            for byte in value
        ):
            return _blob(bytes(value))
        raise BadRequest(
            f"statement {position} has an array parameter that is not a list of byte values "
            "(0..255): send a BLOB as such a list or as an x'hex' string"
        )
    raise BadRequest(
        f"statement {position} has a parameter of an unsupported type "
        f"({type(value).__name__}): use numbers, strings, null or byte arrays"
    )


def _blob(data: bytes) -> dict[str, str]:
    return {"blob": base64.b64encode(data).decode("ascii")}


def sql_request(statements: list[Statement], *, transaction: bool) -> dict[str, Any]:
    """The JSON form of a request: Graft's FSM runs it all or nothing when ``transaction``."""
    return {"statements": [s.form() for s in statements], "transaction": transaction}


def read_only(statements: list[Statement]) -> bool:
    """Whether /db/request can run these as a read: every one is a plain SELECT. Anything else
    (a WITH may end in an INSERT) goes through the log, where the FSM also answers rows."""
    return all(s.sql.lstrip().lstrip("(").lstrip()[:6].upper() == "SELECT" for s in statements)
