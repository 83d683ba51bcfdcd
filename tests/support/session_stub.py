"""A node that keeps client sessions as the API's contract says (docs/api.md), for the tests of
graft.client's sessions while the real server is elsewhere: a twisted.web resource on the
trial reactor, listening on 127.0.0.1.

Its state machine is a list: each command applied is appended to ``applied`` as
(session, sequence, command) and answered ``{"index": i, "command": text}``. Knobs make it
misbehave the ways a cluster does: answer an error before applying (``before``), apply and
then drop the connection (``drop``) or answer a 504 (``late``), hold answers back
(``holding``), expire a session or forget results below a floor.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import reactor as global_reactor
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    headers: dict[str, str]


@dataclass
class SessionRecord:
    """What the stub keeps of one session: the answers of the requests it applied, by their
    first sequence number, and the floor below which it has forgotten them."""

    answers: dict[int, Answer] = field(default_factory=dict)
    floor: int = 1


@dataclass(frozen=True, slots=True)
class Sent:
    """The session headers of one /command or /commands request (None when absent)."""

    path: str
    port: int
    session: str | None
    sequence: str | None
    acked: str | None


def error_answer(status: int, code: str, message: str) -> Answer:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return Answer(status, body, {"Content-Type": "application/json"})


class SessionStub(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.sessions: dict[str, SessionRecord] = {}
        self.registrations = 0
        self.applied: list[tuple[str | None, int | None, bytes]] = []
        self.sent: list[Sent] = []
        # Answered, in order, to the next commands before anything is applied.
        self.before: list[Answer] = []
        # How many of the next commands are applied and then get no answer (connection cut).
        self.drop = 0
        # Whether a dropped answer's session expires at once too (evicted before the retry).
        self.expire_on_drop = False
        # How many of the next commands are applied and then answered 504 timeout.
        self.late = 0
        # While True, answers to commands wait in ``held`` until release().
        self.holding = False
        self.held: list[Callable[[], None]] = []
        # The stub listens on several ports, one per "member", all sharing its state; those in
        # ``followers`` answer commands with a 307 to the first.
        self.urls: list[str] = []
        self.followers: set[str] = set()

    @property
    def url(self) -> str:
        return self.urls[0]

    # -- knobs ---------------------------------------------------------------------------------

    def expire(self, session: str) -> None:
        del self.sessions[session]

    def forget_below(self, session: str, floor: int) -> None:
        self.sessions[session].floor = floor

    def release(self) -> None:
        held, self.held = self.held, []
        for finish in held:
            finish()

    # -- the contract --------------------------------------------------------------------------

    def render_POST(self, request: Request) -> bytes | int:
        path = request.path.decode()
        if path == "/sessions":
            return self._finish(request, self._register())
        if path not in ("/command", "/commands"):
            return self._finish(request, error_answer(404, "not_found", f"no route {path}"))
        session = _header(request, "Graft-Session")
        sequence = _header(request, "Graft-Sequence")
        acked = _header(request, "Graft-Acked")
        port = request.getHost().port
        self.sent.append(Sent(path, port, session, sequence, acked))
        if f"http://127.0.0.1:{port}" in self.followers:
            request.setResponseCode(307)
            request.setHeader("Location", self.url + path)
            return b""
        if self.before:
            return self._finish(request, self.before.pop(0))
        assert request.content is not None
        body = request.content.read()
        commands = [body] if path == "/command" else _batch(body)
        answer = self._numbered(path, commands, session, sequence, acked)
        if self.drop > 0:
            self.drop -= 1
            if self.expire_on_drop and session is not None:
                self.sessions.pop(session, None)
            assert request.channel is not None and request.channel.transport is not None
            request.channel.transport.abortConnection()
            return NOT_DONE_YET
        if self.late > 0:
            self.late -= 1
            answer = error_answer(504, "timeout", "the command was not applied in time")
        if self.holding:
            self.held.append(lambda: self._write(request, answer))
            return NOT_DONE_YET
        return self._finish(request, answer)

    def _register(self) -> Answer:
        self.registrations += 1
        session = f"stub-{self.registrations}"
        self.sessions[session] = SessionRecord()
        body = json.dumps({"session": session, "index": len(self.applied) + 1}).encode()
        return Answer(200, body, {"Content-Type": "application/json"})

    def _numbered(
        self,
        path: str,
        commands: list[bytes],
        session: str | None,
        sequence: str | None,
        acked: str | None,
    ) -> Answer:
        if session is None and sequence is None:
            return self._apply(path, commands, None, None)
        if session is None or sequence is None:
            return error_answer(400, "bad_request", "Graft-Session and Graft-Sequence go together")
        try:
            number = int(sequence)
            floor = int(acked) if acked is not None else None
        except ValueError:
            return error_answer(400, "bad_request", "Graft-Sequence and Graft-Acked are integers")
        if number < 1 or (floor is not None and floor < 1):
            return error_answer(400, "bad_request", "sequence numbers start at 1")
        record = self.sessions.get(session)
        if record is None:
            return error_answer(410, "session_expired", f"session {session} is unknown or expired")
        if number < record.floor:
            return error_answer(409, "sequence_forgotten", f"the result of {number} was discarded")
        if floor is not None and floor > record.floor:
            record.floor = floor
            record.answers = {n: a for n, a in record.answers.items() if n >= floor}
        stored = record.answers.get(number)
        if stored is not None:
            return Answer(stored.status, stored.body, {**stored.headers, "graft-duplicate": "true"})
        answer = self._apply(path, commands, session, number)
        record.answers[number] = answer
        return answer

    def _apply(
        self, path: str, commands: list[bytes], session: str | None, number: int | None
    ) -> Answer:
        results: list[dict[str, Any]] = []
        for offset, command in enumerate(commands):
            sequence = None if number is None else number + offset
            self.applied.append((session, sequence, command))
            results.append(
                {"index": len(self.applied), "command": command.decode("utf-8", "replace")}
            )
        headers = {"Content-Type": "application/json", "Graft-Index": str(len(self.applied))}
        if path == "/command":
            return Answer(200, json.dumps(results[0]).encode(), headers)
        batch = [{"index": r["index"], "term": 1, "result": r} for r in results]
        return Answer(200, json.dumps(batch).encode(), headers)

    def _finish(self, request: Request, answer: Answer) -> bytes:
        request.setResponseCode(answer.status)
        for name, value in answer.headers.items():
            request.setHeader(name, value)
        return answer.body

    def _write(self, request: Request, answer: Answer) -> None:
        request.write(self._finish(request, answer))
        request.finish()


def _header(request: Request, name: str) -> str | None:
    value = request.getHeader(name)
    return value if isinstance(value, str) or value is None else value.decode()


def _batch(body: bytes) -> list[bytes]:
    elements = json.loads(body)
    return [
        base64.b64decode(e["b64"]) if isinstance(e, dict) else e.encode("utf-8") for e in elements
    ]


def start_session_stub(test: TestCase, members: int = 1) -> SessionStub:
    """A stub listening on ``members`` ports of 127.0.0.1 until the end of ``test`` (a trial
    TestCase: the stub runs on the reactor, so the client under test runs in a thread)."""
    stub = SessionStub()
    reactor: Any = global_reactor
    for _ in range(members):
        port = reactor.listenTCP(0, Site(stub), interface="127.0.0.1")
        stub.urls.append(f"http://127.0.0.1:{port.getHost().port}")
        test.addCleanup(port.stopListening)
    return stub
