"""Exactly-once commands for graft.client: the client's side of a session (docs/api.md).

The client registers a session (``POST /sessions``) the first time it sends a command, numbers
every command (``Graft-Sequence``; a ``/commands`` batch takes one number per command, the
header carries the first) and tells the cluster the lowest number it has not yet seen answered
(``Graft-Acked``), below which the cluster may forget results. A retry carries the same
number, so the cluster applies the command once and answers the retry with the first result.
That makes every failure after which the command may or may not have been applied safe to
retry: timeouts, dropped connections, a forwarding failure, as well as the answers that say
nothing was done. They are retried on the members in turn, with jittered exponential backoff,
until the client's deadline.

What still ends a command without an answer says so: :class:`graft.client.OutcomeUnknown`
when the cluster forgot the result (409 ``sequence_forgotten``) or the deadline passed after a
try that may have been applied. A 410 ``session_expired`` is answered by registering a new
session and sending the command again under it, unless an earlier try may have been applied
(then the outcome is unknown: the old session may have applied it before it expired).

A cluster without sessions (404 on ``/sessions``: a version from before them) gets the
commands of this client without a session, as graft.client sent them before.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from graft.client_errors import ClientError, OutcomeUnknown, Unreachable
from graft.client_requests import FIRST_BACKOFF_S, MAX_BACKOFF_S, RequestLoop, Response

# A session id as the cluster hands it out (the contract: ASCII, at most 64 characters).
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# What a numbered command retries: the answers that say nothing was done (no leader, no
# quorum on that member, too busy, nodes disagreeing about the leader), and those after which
# it may have been done, where the same number makes the retry safe.
RETRIED = frozenset(
    {
        "no_leader",
        "no_quorum",
        "overloaded",
        "redirect_loop",
        "timeout",
        "connection",
        "forwarding_failed",
        "http_502",
        "http_503",
        "http_504",
    }
)
# Of those, the ones after which the command may have been applied.
MAYBE_APPLIED = frozenset(
    {"timeout", "connection", "forwarding_failed", "http_502", "http_503", "http_504"}
)
# How many sessions one command tries (a new one after each 410 session_expired) before it
# gives up: a fresh session that is expired at once means a misconfigured cluster, not bad luck.
MAX_SESSIONS_PER_COMMAND = 3


@dataclass(eq=False)
class Session:
    """One registered session: its id, the next free number, and the first number of each
    command sent under it and not yet answered."""

    id: str
    next: int = 1
    open: set[int] = field(default_factory=set)

    def floor(self) -> int:
        """The lowest number not yet seen answered (Graft-Acked)."""
        return min(self.open, default=self.next)


@dataclass(frozen=True, slots=True)
class Ticket:
    """The numbers of one request: ``count`` commands from ``first`` on, under ``session``."""

    session: Session
    first: int
    count: int


class SessionBook:
    """The numbering of one client's commands, shared by the threads that use the client."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the current session and its numbers
        self._registering = threading.Lock()  # one registration at a time
        self._session: Session | None = None
        self.unsupported = False

    @property
    def session_id(self) -> str | None:
        with self._lock:
            return self._session.id if self._session else None

    def take(self, count: int, register: Callable[[], str | None]) -> Ticket | None:
        """Numbers for ``count`` commands, registering a session first if there is none
        (``register`` answers its id, or None when the cluster has no sessions: then None)."""
        with self._registering:
            with self._lock:
                session = self._session
            if session is None and not self.unsupported:
                session_id = register()
                if session_id is None:
                    self.unsupported = True
                else:
                    session = Session(session_id)
                    with self._lock:
                        self._session = session
        if session is None:
            return None
        with self._lock:
            first = session.next
            session.next += count
            session.open.add(first)
        return Ticket(session, first, count)

    def headers(self, ticket: Ticket) -> dict[str, str]:
        with self._lock:
            floor = ticket.session.floor()
        return {
            "Graft-Session": ticket.session.id,
            "Graft-Sequence": str(ticket.first),
            "Graft-Acked": str(floor),
        }

    def done(self, ticket: Ticket) -> None:
        """The request of ``ticket`` was answered or given up: the floor may pass it."""
        with self._lock:
            ticket.session.open.discard(ticket.first)

    def expired(self, session: Session) -> None:
        """The cluster no longer knows ``session``: the next command registers a new one (if
        another thread has not already)."""
        with self._lock:
            if self._session is session:
                self._session = None


class _Expired(Exception):
    def __init__(self, error: ClientError) -> None:
        super().__init__(error.message)
        self.error = error


class SessionCommands:
    """Sends the commands of one client (a GraftClient) under its session."""

    def __init__(self, client: RequestLoop) -> None:
        self._client = client
        self.book = SessionBook()

    def send(self, path: str, body: bytes, headers: Mapping[str, str], *, count: int) -> Response:
        client = self._client
        deadline = client.clock() + client.timeout
        sessions_tried = 0
        while True:
            ticket = self.book.take(count, lambda: self._register(deadline))
            if ticket is None:
                # The cluster has no sessions: as graft.client sends commands without one.
                return client.retrying("POST", path, body=body, headers=headers, deadline=deadline)
            sessions_tried += 1
            try:
                return self._numbered(ticket, path, body, headers, deadline)
            except _Expired as expired:
                # Not applied under the old session (the contract): a new one may send it.
                if sessions_tried >= MAX_SESSIONS_PER_COMMAND or client.clock() >= deadline:
                    raise expired.error from None
                self.book.expired(ticket.session)
            finally:
                self.book.done(ticket)

    def _register(self, deadline: float) -> str | None:
        """POST /sessions until the deadline: the new session's id, or None on a 404 (the
        cluster predates sessions). A registration retried after a lost answer leaves an
        unused session behind, which expires: harmless."""
        client = self._client
        try:
            response = client.retrying(
                "POST",
                "/sessions",
                body=b"{}",
                headers={"Content-Type": "application/json"},
                retry_codes=tuple(RETRIED),
                deadline=deadline,
                attempt_timeout=client.attempt_timeout,
            )
        except ClientError as error:
            if error.status == 404:
                return None
            raise _not_registered(error) from None
        session_id = parse_session(response.body)
        if session_id is None:
            raise ClientError(
                "bad_answer",
                response.status,
                f"{response.url} answered POST /sessions without a valid session id: is it a "
                "Graft node's API?",
            )
        return session_id

    def _numbered(
        self,
        ticket: Ticket,
        path: str,
        body: bytes,
        headers: Mapping[str, str],
        deadline: float,
    ) -> Response:
        """Send the request of ``ticket`` until it is answered: on the members in turn, as
        RequestLoop.retrying does, but retrying everything in RETRIED."""
        client = self._client
        urls = client.urls
        backoff = FIRST_BACKOFF_S
        turn = 0
        last: ClientError | None = None
        maybe_applied = False
        # As in RequestLoop.retrying: a no_quorum answer, and the answers since that waiting
        # does not change soon (no_quorum, or none at all).
        quorum_answer: ClientError | None = None
        hopeless = 0
        while True:
            url = urls[turn % len(urls)]
            remaining = deadline - client.clock()
            if client.attempt_timeout is not None:
                remaining = min(remaining, client.attempt_timeout)
            try:
                return client.request(
                    "POST",
                    url + path,
                    body=body,
                    headers={**headers, **self.book.headers(ticket)},
                    timeout=remaining,
                )
            except Unreachable as error:
                last = error
                turn += 1
                hopeless += 1
                if quorum_answer is not None and hopeless >= len(urls):
                    break
                if turn % len(urls) != 0:
                    continue  # walk the whole list before pausing: another member may be up
                if not client.retry_unreachable:
                    break
            except ClientError as error:
                if error.status == 410 and error.code == "session_expired":
                    if maybe_applied:
                        raise self._unknown(error, ticket, "the session expired") from None
                    raise _Expired(error) from None
                if error.status == 409 and error.code == "sequence_forgotten":
                    raise self._unknown(error, ticket, "the cluster forgot its result") from None
                if not _retried(error):
                    if maybe_applied and error.code != "fsm_error":
                        raise self._unknown(error, ticket, "a retry was refused") from None
                    raise
                last = error
                maybe_applied = maybe_applied or error.code in MAYBE_APPLIED
                turn += 1
                if error.code == "no_quorum":
                    quorum_answer = error
                    hopeless += 1
                    if hopeless >= len(urls):
                        break
                    continue  # another member may be in the majority: ask it now
                quorum_answer, hopeless = None, 0
            pause = backoff * (0.5 + 0.5 * client.jitter())
            if client.clock() + pause >= deadline:
                break
            client.sleep(pause)
            backoff = min(backoff * 2, MAX_BACKOFF_S)
        assert last is not None
        if maybe_applied:
            raise self._unknown(last, ticket, f"no answer came in {client.timeout:g}s of retrying")
        raise client.gave_up(last, quorum_answer)

    def _unknown(self, error: ClientError, ticket: Ticket, why: str) -> OutcomeUnknown:
        what = "the batch" if ticket.count > 1 else "the command"
        numbers = (
            f"sequence {ticket.first}"
            if ticket.count == 1
            else f"sequences {ticket.first}-{ticket.first + ticket.count - 1}"
        )
        unknown = OutcomeUnknown(
            error.code,
            error.status,
            f"{what}'s outcome is unknown: a try may have applied it, and {why} "
            f"(session {ticket.session.id}, {numbers}; last: {_gist(error.message)}): check "
            "with a query before sending it again",
        )
        unknown.index = error.index
        return unknown


# The advice that closes a message of graft.client's (retry, check, pass --cacert...): the
# messages above give their own.
_ADVICE = re.compile(
    r"[.:;,]\s*(retry|check|pass|its outcome|a command's outcome)\b.*$", re.IGNORECASE
)


def _gist(message: str) -> str:
    """``message`` without its closing advice."""
    return _ADVICE.sub("", message.strip()) or message.strip()


def _retried(error: ClientError) -> bool:
    """Whether a numbered command is retried after ``error``: never after a 4xx (the same
    request gets the same refusal), whatever its code."""
    if error.status is not None and 400 <= error.status < 500:
        return False
    return error.code in RETRIED


def _not_registered(error: ClientError) -> ClientError:
    """``error`` of a registration, saying that the command was not sent."""
    if error.code in ("timeout", "connection"):
        message = (
            f"{_gist(error.message)} while registering a client session, so the command was "
            "not sent: retry (with a larger --timeout if the cluster is slow)"
        )
    else:
        message = f"{error.message} (while registering a client session: the command was not sent)"
    if isinstance(error, Unreachable):
        return Unreachable(message)
    failure = ClientError(error.code, error.status, message)
    failure.index = error.index
    return failure


def parse_session(body: bytes) -> str | None:
    """The session id of a POST /sessions answer, or None when it holds none."""
    try:
        document = json.loads(body)
    except ValueError:
        return None
    value = document.get("session") if isinstance(document, dict) else None
    return value if isinstance(value, str) and SESSION_ID.fullmatch(value) else None
