"""Parsing and validating what a request carries: query-string parameters and bodies.

Every failure is a BadRequest whose message names the parameter, the value and what is
expected. The query string is parsed from the raw URI, never from ``request.args``: Twisted
merges a form-encoded POST body into ``args``, and a query or command body must never be
mistaken for parameters.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

from graft.api.jsonin import load_json
from graft.driver.port import Consistency
from graft.errors import BadRequest

_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no", ""})
# A duration: a number (at most 9 digits, 3 decimals) and a unit.
_DURATION = re.compile(r"^(\d{1,9}(?:\.\d{1,3})?)(ms|s|m)$", re.ASCII)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0}


class QueryParams:
    """The decoded query string of a request URI; each parameter may appear once."""

    def __init__(self, uri: bytes) -> None:
        if b"?" not in uri:  # most requests carry no query string: skip the parsers
            self._values: Mapping[str, str] = {}
            return
        raw = urlsplit(uri).query.decode("utf-8", errors="replace")
        parsed = parse_qs(raw, keep_blank_values=True)
        for name, values in parsed.items():
            if len(values) > 1:
                raise BadRequest(f"parameter {name!r} is given {len(values)} times: give it once")
        self._values = {name: values[0] for name, values in parsed.items()}

    def get(self, name: str) -> str | None:
        return self._values.get(name)

    def flag(self, name: str) -> bool:
        value = self._values.get(name)
        if value is None:
            return False
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise BadRequest(f"parameter {name}={value!r} is not a boolean: use true or false")

    def non_negative_int(self, name: str) -> int | None:
        value = self._values.get(name)
        if value is None:
            return None
        return bounded_int(name, value)

    def consistency(self) -> Consistency:
        value = self._values.get("consistency")
        if value is None:
            return Consistency.DEFAULT
        try:
            return Consistency(value.lower())
        except ValueError:
            choices = "|".join(c.value for c in Consistency)
            raise BadRequest(
                f"parameter consistency={value!r} is unknown: use one of {choices}"
            ) from None

    def duration(self, name: str) -> float | None:
        """A parameter such as ``timeout=500ms``, ``10s`` or ``2m``, in seconds (more than 0)."""
        value = self._values.get(name)
        if value is None:
            return None
        match = _DURATION.match(value.strip().lower())
        if match is None or float(match.group(1)) == 0:
            raise BadRequest(
                f"parameter {name}={value[:40]!r} is not a duration: use a positive number and "
                f"a unit, e.g. {name}=500ms, {name}=10s or {name}=2m"
            )
        return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]

    def command_encoding_is_base64(self) -> bool:
        value = self._values.get("encoding")
        if value is None or value.lower() == "raw":
            return False
        if value.lower() == "base64":
            return True
        raise BadRequest(f"parameter encoding={value!r} is unknown: use base64 or leave it out")


# Indexes and durations travel to the leader in msgpack (signed 64 bits at most) and are compared
# with log indexes: anything larger is a client error, not a reason to wait forever.
MAX_INT_PARAM = 2**63 - 1
_MAX_INT_DIGITS = len(str(MAX_INT_PARAM))


def bounded_int(name: str, value: str) -> int:
    """A decimal in 0..MAX_INT_PARAM, checked on the text before int() sees it: int() of a few
    thousand digits raises ValueError past Python's digit limit and costs time below it."""
    if not value.isascii() or not value.isdigit():
        raise BadRequest(
            f"parameter {name}={_clip(value)!r} is not a non-negative integer: use e.g. {name}=42"
        )
    digits = value.lstrip("0")
    if len(digits) > _MAX_INT_DIGITS or (digits and int(digits) > MAX_INT_PARAM):
        raise BadRequest(
            f"parameter {name}={_clip(value)} is out of range: expected 0 to {MAX_INT_PARAM}"
        )
    return int(digits or "0")


def _clip(value: str) -> str:
    """A parameter value short enough to quote in a message."""
    return value if len(value) <= 40 else value[:37] + "..."


def decode_base64(data: bytes | str, what: str) -> bytes:
    """Standard base64, padding required; ASCII whitespace (line breaks of `base64` output kept
    by curl --data-binary) is ignored."""
    text = data.encode("ascii", errors="replace") if isinstance(data, str) else data
    compact = b"".join(text.split())
    invalid = BadRequest(f"{what} is not valid base64: send standard base64 with padding")
    if len(compact) % 4:
        raise invalid  # b64decode tolerates some stray padding; a client bug should not pass
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise invalid from None


def parse_batch(body: bytes) -> list[bytes]:
    """A /commands body: a non-empty JSON array whose elements are strings (UTF-8 commands) or
    ``{"b64": "..."}`` objects (binary commands). All of it is checked before anything is
    submitted."""
    try:
        document: Any = load_json(body, "the batch")
    except (UnicodeDecodeError, ValueError) as e:
        raise BadRequest(
            f"the batch is not valid JSON ({e}): send a JSON array of strings or "
            '{"b64": "..."} objects'
        ) from None
    if not isinstance(document, list):
        raise BadRequest(
            'the batch must be a JSON array of strings or {"b64": "..."} objects, '
            f"not a JSON {type(document).__name__}"
        )
    if not document:
        raise BadRequest("the batch is empty: send at least one command")
    try:  # the common case, every element a string (nothing else JSON gives has .encode)
        return [element.encode("utf-8") for element in document]
    except (AttributeError, UnicodeEncodeError):
        pass  # the loop below converts the {"b64"} ones and names a wrong element
    commands: list[bytes] = []
    for position, element in enumerate(document):
        if isinstance(element, str):
            try:
                commands.append(element.encode("utf-8"))
            except UnicodeEncodeError:
                raise BadRequest(
                    f"batch element {position} holds a lone surrogate escape: send binary "
                    'commands as {"b64": "..."}'
                ) from None
        elif (
            isinstance(element, dict)
            and set(element) == {"b64"}
            and isinstance(element["b64"], str)
        ):
            commands.append(decode_base64(element["b64"], f"batch element {position}"))
        else:
            raise BadRequest(
                f"batch element {position} is neither a string nor a "
                '{"b64": "<base64>"} object: fix it and resend the batch'
            )
    return commands
