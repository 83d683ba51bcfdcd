"""Client sessions over HTTP (docs/api.md, "Sessions"): ``POST /sessions``, the headers that
number a command (``Graft-Session``, ``Graft-Sequence``, ``Graft-Acked``), and the cluster's
session settings (``POST /cluster/sessions``, admin).

The API only checks the headers and encodes the session operations (graft.sessions.envelope);
the node decides duplicates, expiry and forgotten sequences when it applies them, the same on
every replica (graft.sessions.table)."""

# twisted.web is untyped; its calls are checked by the tests.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.web.server import Request

from graft.api.auth import Role
from graft.api.deadline import within
from graft.api.jsonin import load_json
from graft.api.responses import write_json
from graft.api.serving import ApiBase, routes, served
from graft.driver.port import CommandResult
from graft.errors import BadRequest, GraftError, SequenceForgotten, SessionExpired, Timeout
from graft.sessions.envelope import (
    MAX_SEQUENCE,
    SESSION_ID,
    encode_numbered,
    encode_register,
    encode_settings,
)
from graft.sessions.table import SessionSettings

SESSION_HEADER = b"graft-session"
SEQUENCE_HEADER = b"graft-sequence"
ACKED_HEADER = b"graft-acked"
_DECIMAL = re.compile(r"[0-9]{1,19}")


@dataclass(frozen=True, slots=True)
class Numbering:
    """A request's session headers: its commands are ``sequence``, ``sequence + 1``, ..."""

    session: str
    sequence: int
    acked: int  # 0: the header was not sent

    def operations(self, commands: Sequence[bytes]) -> list[bytes]:
        if self.sequence + len(commands) - 1 > MAX_SEQUENCE:
            raise BadRequest(
                f"header Graft-Sequence: the batch's sequences go past {MAX_SEQUENCE}; "
                "register a new session"
            )
        return encode_numbered(self.session, self.sequence, self.acked, list(commands))


def _one_header(request: Request, name: bytes) -> str | None:
    values = request.requestHeaders.getRawHeaders(name)
    if not values:
        return None
    if len(values) > 1:
        raise BadRequest(
            f"header {name.decode().title()} is sent {len(values)} times: send it once"
        )
    return str(values[0].decode("latin-1")).strip()


def _positive(name: str, text: str) -> int:
    if not _DECIMAL.fullmatch(text) or not 1 <= int(text) <= MAX_SEQUENCE:
        raise BadRequest(f"header {name}: {text[:40]!r} is not an integer from 1 to {MAX_SEQUENCE}")
    return int(text)


def numbering(request: Request) -> Numbering | None:
    """The request's session headers, None when it sends none (no deduplication); BadRequest
    when they are malformed or only one of Graft-Session and Graft-Sequence is sent."""
    session = _one_header(request, SESSION_HEADER)
    sequence = _one_header(request, SEQUENCE_HEADER)
    acked = _one_header(request, ACKED_HEADER)
    if session is None and sequence is None:
        if acked is not None:
            raise BadRequest("header Graft-Acked is sent without Graft-Session and Graft-Sequence")
        return None
    if session is None or sequence is None:
        missing = "Graft-Sequence" if sequence is None else "Graft-Session"
        raise BadRequest(
            f"header {missing} is missing: a numbered command sends both Graft-Session and "
            "Graft-Sequence (or neither, for no deduplication)"
        )
    if not SESSION_ID.fullmatch(session):
        raise BadRequest(
            f"header Graft-Session: {session[:80]!r} is not a session id (1 to 64 of "
            "A-Z a-z 0-9 _ -); use the id POST /sessions answered"
        )
    number = _positive("Graft-Sequence", sequence)
    floor = 0 if acked is None else _positive("Graft-Acked", acked)
    if floor > number:
        raise BadRequest(
            f"header Graft-Acked: {floor} is above Graft-Sequence {number}; it is the lowest "
            "sequence not yet answered, so it is at most this command's"
        )
    return Numbering(session, number, floor)


def refusal_error(result: CommandResult) -> GraftError | None:
    """The error of a numbered command the session refused, None when it did not."""
    if result.refusal is None:
        return None
    message = result.error or result.refusal
    if result.refusal == SessionExpired.code:
        return SessionExpired(message)
    if result.refusal == SequenceForgotten.code:
        return SequenceForgotten(message)
    return BadRequest(message)


def duplicate_header(request: Request, results: Sequence[CommandResult]) -> None:
    """``Graft-Duplicate: true`` when every command was applied before (a replay)."""
    if results and all(r.duplicate for r in results):
        request.setHeader(b"Graft-Duplicate", b"true")


_SETTING_KEYS = {"idle_ms": 10**6, "max_sessions": 1, "max_results": 1}  # -> table units


def parse_settings(body: bytes) -> SessionSettings:
    """``{"idle_ms", "max_sessions", "max_results"}``, each optional (absent: unchanged; the
    node checks the ranges when it applies them, the same on every node)."""
    if not body.strip():
        return SessionSettings(0, 0, 0)
    try:
        document = load_json(body, "the body")
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise BadRequest(
            'the body is not a JSON object: send e.g. {"idle_ms": 600000, "max_sessions": 4096}'
        )
    unknown = sorted(set(document) - set(_SETTING_KEYS))
    if unknown:
        raise BadRequest(
            f"unknown session settings {', '.join(map(json.dumps, unknown))}: the settings are "
            "idle_ms, max_sessions and max_results"
        )
    values = {}
    for key, unit in _SETTING_KEYS.items():
        value = document.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 2**31:
            if key in document:
                raise BadRequest(f"{key}: {json.dumps(value)[:40]} is not a positive integer")
            value = 0
        values[key] = value * unit
    return SessionSettings(values["idle_ms"], values["max_sessions"], values["max_results"])


class SessionRoutes(ApiBase):
    """Part of GraftApi: POST /sessions and POST /cluster/sessions."""

    app = routes

    @routes.route("/sessions", methods=["POST"], endpoint="register_session")
    @served("register_session", Role.WRITE)
    async def register_session(self, request: Request) -> bytes:
        body = self._body(request).strip()
        if body not in (b"", b"{}"):
            raise BadRequest("POST /sessions takes an empty body or {}")
        ms = self._settings.command_timeout_ms
        answer: Deferred[list[CommandResult]] = within(
            maybeDeferred(self._backend.submit_operations, [encode_register()]),
            ms / 1000,
            self._reactor,
            lambda: Timeout(
                f"the session was not registered within {ms} ms: register again (a session "
                "registered meanwhile is never used and expires)"
            ),
        )
        return await self._operation_answered(request, answer)

    @routes.route("/cluster/sessions", methods=["POST"], endpoint="session_settings")
    @served("session_settings", Role.ADMIN)
    async def session_settings(self, request: Request) -> bytes:
        settings = parse_settings(self._body(request))
        ms = self._settings.command_timeout_ms
        answer: Deferred[list[CommandResult]] = within(
            maybeDeferred(self._backend.submit_operations, [encode_settings(settings)]),
            ms / 1000,
            self._reactor,
            lambda: Timeout(
                f"the session settings were not applied within {ms} ms: they may still be; "
                "send them again (the same settings twice change nothing)"
            ),
        )
        return await self._operation_answered(request, answer)

    async def _operation_answered(
        self, request: Request, answer: Deferred[list[CommandResult]]
    ) -> bytes:
        (result,) = await answer
        error = refusal_error(result)
        if error is not None:
            raise error
        request.setHeader(b"Graft-Index", str(result.index).encode("ascii"))
        request.setHeader(b"Graft-Term", str(result.term).encode("ascii"))
        return write_json(request, 200, json.loads(result.output))
