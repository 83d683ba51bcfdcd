"""What graft.client raises, and how an error answer or a failed connection becomes it.

The API's error body ``{"error": {"code", "message"}}`` becomes a :class:`ClientError` with
that code and the HTTP status; a connection that fails becomes one with a code of the
client's own. Users import these from graft.client; the client's modules from here.
"""

from __future__ import annotations

import json
import socket
import ssl


class ClientError(Exception):
    """An error answer from a node, or a failure to get one.

    ``code`` is the API's error code (``no_leader``, ``timeout``, ...) or one of the client's own:
    ``unreachable`` (nothing listens there), ``connection`` (the connection failed mid-way: the
    outcome of a command is unknown), ``timeout``, ``tls``, ``http_<status>`` (an error answer
    without the API's error body), ``redirect_loop``, ``bad_answer`` (a 2xx that is not what the
    API answers).
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


def transport_error(node: str, base: str, reason: object) -> ClientError:
    """The ClientError for a request to ``node`` (at ``base``) that got no HTTP answer because
    of ``reason`` (an OSError, an HTTPException, a URLError's reason)."""
    if isinstance(reason, ConnectionRefusedError | socket.gaierror):
        return Unreachable(
            f"node {node} at {base} is unreachable ({_describe(reason)}): check that it is "
            "running and that the URL or config is right"
        )
    if isinstance(reason, TimeoutError):
        return ClientError(
            "timeout",
            None,
            f"node {node} at {base} did not answer in time: retry with a larger --timeout; "
            "a command's outcome is unknown, check before re-sending it",
        )
    if isinstance(reason, ssl.SSLError):
        return ClientError(
            "tls",
            None,
            f"TLS with node {node} at {base} failed ({_describe(reason)}): pass the API's "
            "CA with --cacert (and --cert/--key if it wants a client certificate)",
        )
    return ClientError(
        "connection",
        None,
        f"connection to node {node} at {base} failed ({_describe(reason)}): retry; a "
        "command's outcome is unknown, check before re-sending it",
    )


def _describe(reason: object) -> str:
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return str(reason) or type(reason).__name__


def error_from_answer(status: int, body: bytes, node: str) -> ClientError:
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
