"""Parsing the API's own JSON bodies (/commands batches, administration) with explicit bounds.

json.loads recurses once per nesting level, so ``[`` x 5000 ends in RecursionError (a 500
unless caught, and how deep it may go depends on the stack); an integer of thousands of digits
costs time or raises past Python's digit limit. Both are refused as 400 ``bad_request``: the
integers while parsing, the depth after it (the decoder's RecursionError counts as too deep;
a body is at most ``api.max_body_bytes``, so parsing first is bounded). A body that is not
JSON is scanned on its bytes, so that a deep one is still called deep. The API's bodies nest
two levels and hold small numbers, so the bounds are far above any valid body. Parsing first
keeps a /commands batch, whose commands are JSON text full of brackets inside strings, to one
pass (scanning its strings before parsing cost 2-3 times the parse).
"""

from __future__ import annotations

import json
import re
from typing import Any

from graft.errors import BadRequest

# A batch is an array of strings or {"b64": ...} objects, a member is an object holding an
# object: two levels. Some room above that, and far below the recursion limit.
MAX_JSON_DEPTH = 16
# Ports and indexes fit in 19 digits; one more for a sign.
_MAX_INT_CHARS = 20

# A JSON string, or (unterminated) everything from its quote to the end. Possessive and
# anchored at the end so that no input makes the scan go back: linear in the body's length.
_STRING = re.compile(rb'"(?:[^"\\]++|\\[\s\S])*+(?:"|\\?\Z)')
# Everything but brackets is deleted; braces become brackets (only the depth matters here).
_BRACKETS = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def nesting_too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> str | None:
    """Why ``body`` cannot be parsed safely (nested deeper than ``limit``, or brackets that do
    not balance outside strings), or None. Cost: a few passes over the body at C speed."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return None  # cannot nest deeper than it has openers (the usual case: no scan)
    brackets = _STRING.sub(b"", body).translate(_BRACKETS, _NOT_BRACKETS)
    # Each pass removes the innermost level everywhere; what is left after `limit` passes
    # nests deeper (or does not balance, which no valid JSON does either).
    for _ in range(limit):
        if not brackets:
            return None
        shorter = brackets.replace(b"[]", b"")
        if len(shorter) == len(brackets):
            return "its brackets do not balance"
        brackets = shorter
    if not brackets:
        return None
    return f"it nests deeper than {limit} levels"


def _bounded_int(text: str) -> int:
    if len(text) > _MAX_INT_CHARS:
        shown = text[:12] + "..."
        raise BadRequest(
            f"the body holds the integer {shown} of {len(text)} digits: numbers in API bodies "
            f"have at most {_MAX_INT_CHARS - 1} digits"
        )
    return int(text)


def load_json(body: bytes, what: str) -> Any:
    """``json.loads(body)`` with the depth and integer size bounded: BadRequest naming ``what``
    (e.g. "the batch") when a bound is passed; ValueError (UnicodeDecodeError included) for a
    body that is not JSON, for the caller to describe."""
    try:
        document = json.loads(body, parse_int=_bounded_int)
    except RecursionError:  # the decoder's own guard, well before the C stack runs out
        document = _TOO_DEEP
    except ValueError:
        problem = nesting_too_deep(body)  # a bomb that is not JSON either: say it is deep
        if problem is not None:
            raise BadRequest(f"{what} is refused: {problem}") from None
        raise
    if document is _TOO_DEEP or _deeper_than(document, MAX_JSON_DEPTH):
        raise BadRequest(f"{what} is refused: it nests deeper than {MAX_JSON_DEPTH} levels")
    return document


_TOO_DEEP = object()


def _deeper_than(document: Any, limit: int) -> bool:
    """Whether a parsed document nests deeper than ``limit`` (the outermost array or object
    is level 1). Iterative, and it stops at the limit: cost at most linear in the document."""
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            value = value.values()
        elif not isinstance(value, list):
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in value if isinstance(child, list | dict))
    return False
