"""The answer of POST /commands: a JSON array with one entry per command, each FSM output
parsed as JSON when the FSM's content type is JSON (else base64), built without parsing and
re-encoding the outputs that already are in their final form."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from graft.api.responses import compact_json
from graft.driver.port import CommandResult
from graft.errors import FSMRejected


def is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


# A JSON object of one or two members, keys different, each value null, true, false, an
# integer or a string of printable ASCII needing no escape: json.dumps(json.loads(x),
# separators=(",", ":")) is x itself, byte for byte, so such an output (what the kv FSM
# answers) goes into a batch's answer as it is, without being parsed and encoded again.
_PLAIN_STRING = rb'"[ !#-\[\]-~]*"'
_PLAIN_VALUE = rb"(?:null|true|false|0|-?[1-9][0-9]{0,15}|" + _PLAIN_STRING + rb")"
_VERBATIM = re.compile(
    rb"\{("
    + _PLAIN_STRING
    + rb"):"
    + _PLAIN_VALUE
    + rb"(?:,("
    + _PLAIN_STRING
    + rb"):"
    + _PLAIN_VALUE
    + rb")?\}"
)


def batch_body(results: Sequence[CommandResult], as_json: bool) -> bytes:
    """``json_bytes([_batch_entry(r, as_json) for r in results])``, with the outputs that are
    already in that form copied in (the encoder joins a list's items with "," the same way)."""
    parts: list[bytes] = []
    verbatim = _VERBATIM.fullmatch if as_json else None
    # Consecutive results often share their output and term (a batch of puts of new keys all
    # answer {"prev":null}): the check and the entry's tail are then done once for the run.
    output: bytes | None = None
    term = -1
    tail: bytes | None = None
    for result in results:
        if verbatim is not None and result.error is None and not result.duplicate:
            if result.output != output or result.term != term:
                output, term = result.output, result.term
                match = verbatim(output)
                tail = None
                if match is not None and match[1] != match[2]:
                    tail = b',"term":%d,"result":%b}' % (term, output)
            if tail is not None:
                parts.append(b'{"index":%d%b' % (result.index, tail))
                continue
        parts.append(compact_json(_batch_entry(result, as_json)))
    return b"[" + b",".join(parts) + b"]\n"


# json.loads(text) is this scanner's scan_once(text, 0), plus two whitespace regex passes and
# an end check; an FSM's output rarely has whitespace around it, so a batch's results are
# parsed with scan_once first (see _output_json).
_scan_json: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
_NOT_JSON = object()


def _output_json(output: bytes) -> Any:
    """``json.loads(output.decode("utf-8"))``, or _NOT_JSON where that raises."""
    try:
        text = output.decode("utf-8")
        value, end = _scan_json(text, 0)
        if end == len(text):
            return value
    except (ValueError, StopIteration):  # UnicodeDecodeError is a ValueError too
        pass
    try:
        return json.loads(output.decode("utf-8"))  # whitespace around, or the error
    except ValueError:
        return _NOT_JSON


def _batch_entry(result: CommandResult, as_json: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"index": result.index, "term": result.term}
    if result.duplicate:  # a session's replay of the first result (graft.api.sessions)
        entry["duplicate"] = True
    if result.error is not None:
        entry["error"] = {"code": result.refusal or FSMRejected.code, "message": result.error}
        return entry
    if as_json:
        value = _output_json(result.output)
        if value is not _NOT_JSON:
            entry["result"] = value
            return entry
    entry["result"] = base64.b64encode(result.output).decode("ascii")
    entry["encoding"] = "base64"
    return entry
