"""The errors of graft.client: what a failed request raises."""

from __future__ import annotations

import json


class ClientError(Exception):
    """An error answer from a node, or a failure to get one.

    ``code`` is the API's error code (``no_leader``, ``timeout``, ...) or one of the client's own:
    ``unreachable`` (nothing listens there), ``connection`` (the connection failed mid-way: the
    outcome of a command is unknown), ``http_error`` (a non-JSON error answer).
    ``status`` is the HTTP status, or None when there was no HTTP answer.
    """

    def __init__(self, code: str, status: int | None, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message
        # Set for fsm_error: the index the rejected command was committed at.
        self.index: int | None = None

    def __str__(self) -> str:
        return self.message


class Unreachable(ClientError):
    """Nothing answered at the URL (connection refused, unknown host): safe to try elsewhere."""

    def __init__(self, message: str) -> None:
        super().__init__("unreachable", None, message)


class OutcomeUnknown(ClientError):
    """A command under a session whose outcome the client cannot learn: the cluster forgot
    its result (``sequence_forgotten``), or a try may have been applied and no answer came
    before the deadline. ``code`` and ``status`` are those of the last answer (or failure).
    Sending the command again would be a new command: check with a query first."""


def _describe(reason: object) -> str:
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return str(reason) or type(reason).__name__


def _error_from_answer(status: int, body: bytes, node: str) -> ClientError:
    """Build the ClientError for a non-2xx answer, from the API's JSON error body if present."""
    code, message, index = f"http_{status}", "", None
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        error = parsed["error"]
        code = str(error.get("code") or code)
        message = str(error.get("message") or "")
        raw_index = error.get("index", parsed.get("index"))
        index = raw_index if isinstance(raw_index, int) else None
    else:
        text = body.decode("utf-8", "replace").strip().splitlines()
        message = text[0][:200] if text else f"HTTP {status} with an empty body"
    err = ClientError(code, status, f"{node}: {code} ({status}): {message}")
    err.index = index
    return err
