"""JSON bodies: every response that is not the FSM's own output, errors included."""

# twisted.web is untyped; its calls are checked by the tests.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import json
import math
from typing import Any

from twisted.web.server import Request

from graft.errors import FSMRejected, GraftError, NoLeader, Overloaded, Unauthorized

JSON_TYPE = b"application/json"


class MethodNotAllowed(GraftError):
    """The path exists but does not take this method. DESIGN.md s. 5 lists no code for 405, so
    the API adds ``method_not_allowed``: a client that keys on ``code`` should not confuse a
    wrong method with a malformed request."""

    code = "method_not_allowed"
    status = 405

    def __init__(self, message: str, *, allowed: list[str]) -> None:
        super().__init__(message)
        self.allowed = allowed


# json.dumps(value, separators=...) builds an encoder per call; one serves every response.
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def compact_json(value: Any) -> bytes:
    """``json.dumps(value, separators=(",", ":"))`` as bytes (ASCII: non-ASCII is escaped)."""
    return _ENCODER.encode(value).encode("ascii")


def json_bytes(value: Any) -> bytes:
    """Compact JSON with a trailing newline, so a curl answer ends the terminal line."""
    return compact_json(value) + b"\n"


# Reason phrases twisted.web does not know (it would say "Unknown Status").
_REASONS = {422: b"Unprocessable Content"}


def write_json(request: Request, status: int, value: Any) -> bytes:
    """Set the status and JSON content type; return the body for the handler to hand back."""
    request.setResponseCode(status, _REASONS.get(status))
    request.setHeader(b"Content-Type", JSON_TYPE)
    return json_bytes(value)


def error_document(error: GraftError) -> dict[str, Any]:
    """The ``{"error": {...}}`` body for an error, with the index and term of an FSM refusal."""
    detail: dict[str, Any] = {"code": error.code, "message": error.message}
    if isinstance(error, FSMRejected):
        detail["index"] = error.index
        detail["term"] = error.term
    return {"error": detail}


def retry_after_seconds(seconds: float) -> bytes:
    """Retry-After takes whole seconds; round up and never say 0 (a client would spin)."""
    return str(max(1, math.ceil(seconds))).encode("ascii")


def write_error(request: Request, error: GraftError) -> bytes:
    """Status, the headers the error implies, and the JSON body."""
    if isinstance(error, NoLeader | Overloaded):
        request.setHeader(b"Retry-After", retry_after_seconds(error.retry_after))
    elif isinstance(error, Unauthorized):
        request.setHeader(b"WWW-Authenticate", b'Bearer realm="graft"')
    elif isinstance(error, MethodNotAllowed):
        request.setHeader(b"Allow", ", ".join(error.allowed).encode("ascii"))
    return write_json(request, error.status, error_document(error))
