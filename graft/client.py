"""A small synchronous HTTP client for Graft's API, used by the ``graft`` command.

It speaks the API's error model (DESIGN.md section 5): an error body
``{"error": {"code", "message"}}`` becomes a :class:`ClientError` with that code and the HTTP
status. It follows 307 redirects itself (urllib refuses to re-send a POST body), walks the member
list when a node is down, and retries what retrying can fix until the deadline (RETRYABLE:
``no_leader``, which means the request was not accepted and an election is probably under
way). ``no_quorum`` sends it on to the next member at once (it may be in the majority) and
ends the request once every member answered so or not at all. Never a 4xx (``stale``,
``min_index_beyond_log``, ...): the same request gets the same answer.

Only the standard library is used, so the CLI starts fast and needs no reactor.

Commands go under a client session by default (graft/client_sessions.py): numbered, so that
a timeout, a dropped connection or a leader change is retried and still applied once.

It is one module of ~700 lines because the request loop, the error model and the cluster
operations share the same few private helpers; the CLI's use of it lives in graft/cli/.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import random
import re
import socket
import ssl
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from graft.sql_form import SqlStatement, sql_request

if TYPE_CHECKING:
    from graft.client_sessions import SessionCommands

# How often a 307 may be followed before we suspect a loop between two nodes.
MAX_REDIRECTS = 5
# Backoff between no_leader retries: starts short (elections take a few hundred ms).
FIRST_BACKOFF_S = 0.05
MAX_BACKOFF_S = 1.0
# The answers every request retries: nothing was done, and an election that ends or a member
# in the majority (the walk moves on to the next URL) can do better.
RETRYABLE = ("no_leader", "no_quorum")
# Reads also retry a timeout: they change nothing.
RETRYABLE_READS = (*RETRYABLE, "timeout")


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


@dataclass(frozen=True, slots=True, kw_only=True)
class Response:
    """A successful (2xx) answer; ``url`` is where it finally came from, after redirects."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def header_int(self, name: str) -> int | None:
        value = self.header(name)
        if value is None:
            return None
        try:
            return int(value)
        except ValueError:
            return None

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def duplicate(self) -> bool:
        """Whether a session's dedup answered: the command had been applied by an earlier try,
        and this is its first result again (``Graft-Duplicate: true``)."""
        return (self.header("Graft-Duplicate") or "").lower() == "true"


@dataclass(frozen=True, slots=True, kw_only=True)
class SavedSnapshot:
    """A snapshot downloaded to ``path``: where it came from and what it is."""

    node: str
    path: Path
    size: int
    index: int | None
    term: int | None
    fsm: str | None


class NoRedirects(urllib.request.HTTPRedirectHandler):
    """Turn every redirect into an HTTPError, so the caller sees the 307 itself (the client
    re-sends method and body; a test harness checks the redirect). The one such handler."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass(kw_only=True)
class GraftClient:
    """Talks to the members at ``urls`` (API base URLs such as ``http://127.0.0.1:8080``).

    ``names`` maps a base URL to its node id for messages; ``timeout`` bounds a whole operation,
    retries included. ``sleep`` and ``clock`` are injectable so tests need not wait.
    """

    urls: Sequence[str]
    names: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 10.0
    token: str | None = None
    ssl_context: ssl.SSLContext | None = None
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    # False: an unreachable member fails at once instead of being retried until the deadline
    # (for a caller that must know quickly, like `graft start --join`).
    retry_unreachable: bool = True
    # Commands under a client session (exactly once, retried until the deadline); False sends
    # them as before sessions: a timeout or a dropped connection ends the command, unknown.
    session: bool = True
    # The bound of each try of a command under a session, so that a node that accepts the
    # connection and never answers is left for another; None: the time left to the deadline.
    attempt_timeout: float | None = None
    # A number in [0, 1) per pause: retries under a session wait between half and all of the
    # backoff, so that clients a failure struck together do not retry together.
    jitter: Callable[[], float] = random.random

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("GraftClient needs at least one URL")
        self.urls = [url.rstrip("/") for url in self.urls]
        handlers: list[urllib.request.BaseHandler] = [NoRedirects()]
        if self.ssl_context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=self.ssl_context))
        self._opener = urllib.request.build_opener(*handlers)
        # Imported here: graft.client_sessions builds on this module's error model.
        from graft.client_sessions import SessionCommands

        self._commands: SessionCommands = SessionCommands(self)

    @property
    def session_id(self) -> str | None:
        """The id of the client session commands go under: None before the first command,
        with ``session=False`` or when the cluster has no sessions."""
        return self._commands.book.session_id

    # -- one request to one node -------------------------------------------------------------

    def name_of(self, url: str) -> str:
        base = _base_url(url)
        return self.names.get(base, base)

    def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Response:
        """Send one request, following up to MAX_REDIRECTS 307/308 answers with the same method
        and body. Raises ClientError for every non-2xx answer and every transport failure."""
        with self._open(method, url, body=body, headers=headers, timeout=timeout) as (raw, final):
            try:
                data = raw.read()
            except (OSError, http.client.HTTPException) as failure:
                raise self._transport_error(final, failure) from None
            return Response(
                status=raw.status,
                headers={k.lower(): v for k, v in raw.headers.items()},
                body=data,
                url=final,
            )

    @contextlib.contextmanager
    def _open(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Iterator[tuple[Any, str]]:
        """The open 2xx answer (body not read yet) and the URL it finally came from."""
        per_try = self.timeout if timeout is None else timeout
        all_headers = {"Accept": "application/json"}
        if self.token:
            all_headers["Authorization"] = f"Bearer {self.token}"
        if body is not None:
            all_headers["Content-Type"] = "text/plain"
        all_headers.update(headers or {})
        for _ in range(MAX_REDIRECTS + 1):
            req = urllib.request.Request(url, data=body, headers=all_headers, method=method)
            try:
                raw = self._opener.open(req, timeout=max(per_try, 0.01))
            except urllib.error.HTTPError as answer:
                with answer:
                    location = answer.headers.get("Location")
                    if answer.code in (307, 308) and location:
                        target = urllib.parse.urljoin(url, location)
                        if not self._may_carry_credentials(url, target):
                            all_headers.pop("Authorization", None)
                        url = target
                        continue
                    raise _error_from_answer(
                        answer.code, answer.read(), self.name_of(url)
                    ) from None
            except urllib.error.URLError as failure:
                raise self._transport_error(url, failure.reason) from None
            except (OSError, http.client.HTTPException) as failure:
                raise self._transport_error(url, failure) from None
            with raw:
                yield raw, url
            return
        raise ClientError(
            "redirect_loop",
            None,
            f"more than {MAX_REDIRECTS} redirects starting at {self.name_of(url)}: the nodes "
            "disagree about the leader; retry in a moment or check `graft status`",
        )

    def _may_carry_credentials(self, current: str, target: str) -> bool:
        """Whether a redirect from ``current`` to ``target`` may keep the Authorization header:
        only to the same origin or to one of the members the client was given, and never from
        https to http. Anything else (a node's Location pointing elsewhere, by mistake or by
        an attacker) would hand the token to a stranger, or send it in clear text."""
        if urllib.parse.urlsplit(current).scheme.lower() == "https" and (
            urllib.parse.urlsplit(target).scheme.lower() != "https"
        ):
            return False
        origin = _origin(target)
        if origin is None:
            return False
        return origin == _origin(current) or origin in {_origin(u) for u in self.urls}

    def _transport_error(self, url: str, reason: object) -> ClientError:
        node = self.name_of(url)
        base = _base_url(url)
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

    # -- operations across the cluster ---------------------------------------------------------

    def command(self, data: bytes) -> Response:
        """POST /command. The node asked forwards to the leader itself. Under a session (the
        default) a timeout, a dropped connection and the other answers listed in
        graft.client_sessions are retried on any member until the deadline, and the command
        is applied once. Without one we only move on to the next member when a node is
        unreachable, and retry RETRYABLE until the deadline; other failures are not retried:
        after a timeout the command may still commit."""
        return self._send_commands("/command", data, _content_type(data), count=1)

    def commands(self, batch: Sequence[bytes]) -> Response:
        """POST /commands: the commands in order, one log entry each, as one request (under a
        session it takes one sequence number per command). The answer is the JSON array of
        per-command results (docs/api.md)."""
        if not batch:
            raise ValueError("a batch needs at least one command")
        body = json.dumps([_batch_element(command) for command in batch]).encode("utf-8")
        return self._send_commands(
            "/commands", body, {"Content-Type": "application/json"}, count=len(batch)
        )

    def _send_commands(
        self, path: str, body: bytes, headers: Mapping[str, str], *, count: int
    ) -> Response:
        if self.session:
            return self._commands.send(path, body, headers, count=count)
        return self._retrying("POST", path, body=body, headers=headers)

    def execute(
        self, statements: Sequence[SqlStatement], *, transaction: bool = True
    ) -> list[dict[str, Any]]:
        """Run SQL ``statements`` with bound parameters as one command (the SQLite FSM's JSON
        form, see ``sql_request``); the result of each statement, in order, failed ones as
        ``{"error": ...}``. E.g. ``execute([("INSERT INTO t(a) VALUES (?)", [1])])``."""
        request = sql_request(statements, transaction)
        return _results(
            self._send_commands("/command", request, {"Content-Type": "application/json"}, count=1)
        )

    def select(
        self,
        statements: Sequence[SqlStatement],
        *,
        consistency: str = "default",
        min_index: int | None = None,
    ) -> list[dict[str, Any]]:
        """Run read-only ``statements`` with bound parameters as one query: the result of each,
        ``{"columns", "types", "values"}`` (or ``{"error": ...}``)."""
        params = {"consistency": consistency}
        if min_index is not None:
            params["min_index"] = str(min_index)
        path = "/query?" + urllib.parse.urlencode(params)
        return _results(
            self._json_post(path, sql_request(statements), retry_codes=("no_leader", "timeout"))
        )

    def _json_post(
        self, path: str, body: bytes, retry_codes: Sequence[str] = ("no_leader",)
    ) -> Response:
        return self._retrying(
            "POST",
            path,
            body=body,
            retry_codes=retry_codes,
            headers={"Content-Type": "application/json"},
        )

    def query(
        self,
        query: bytes,
        *,
        consistency: str = "default",
        min_index: int | None = None,
        max_lag_ms: int | None = None,
    ) -> Response:
        """POST /query (same as GET with a body). Reads are idempotent, so a timeout or a
        RETRYABLE answer may be retried until the deadline too."""
        params: dict[str, str] = {"consistency": consistency}
        if min_index is not None:
            params["min_index"] = str(min_index)
        if max_lag_ms is not None:
            params["max_lag_ms"] = str(max_lag_ms)
        path = "/query?" + urllib.parse.urlencode(params)
        return self._retrying(
            "POST",
            path,
            body=query,
            retry_codes=RETRYABLE_READS,
            headers=_content_type(query),
        )

    # -- cluster administration ----------------------------------------------------------------
    # Any member may be asked: a follower has the leader carry the operation out. Like commands,
    # they are retried only while nobody answers or there is no leader (nothing was accepted).

    def members(self) -> dict[str, Any]:
        """GET /cluster/members: ``{"leader", "voters", "learners", "addresses"}``."""
        return self._admin("GET", "/cluster/members", None, retry_codes=RETRYABLE_READS)

    def add_member(
        self, node_id: str, host: str, p2p_port: int, api_port: int, *, non_voter: bool = False
    ) -> dict[str, Any]:
        """POST /cluster/members; answers once the new member caught up and is a voter, so give
        the client a timeout that allows for the catch-up. A non-voter (``non_voter``) is
        answered once it is added; it catches up afterwards."""
        member: dict[str, Any] = {
            "id": node_id,
            "host": host,
            "ports": {"p2p": p2p_port, "api": api_port},
        }
        if non_voter:
            member["non_voter"] = True
        return self._admin("POST", "/cluster/members", member)

    def promote_member(self, node_id: str) -> dict[str, Any]:
        """POST /cluster/members/{id}/promote: a learner (non-voter) becomes a voter."""
        return self._admin("POST", _member_path(node_id) + "/promote")

    def demote_member(self, node_id: str) -> dict[str, Any]:
        """POST /cluster/members/{id}/demote: a voter becomes a non-voter."""
        return self._admin("POST", _member_path(node_id) + "/demote")

    def update_member(
        self, node_id: str, host: str, p2p_port: int | None = None, api_port: int | None = None
    ) -> dict[str, Any]:
        """PUT /cluster/members/{id}: its new advertised addresses (a port left None is kept)."""
        ports = {k: v for k, v in (("p2p", p2p_port), ("api", api_port)) if v is not None}
        document: dict[str, Any] = {"host": host}
        if ports:
            document["ports"] = ports
        return self._admin("PUT", _member_path(node_id), document)

    def remove_member(self, node_id: str) -> dict[str, Any]:
        """DELETE /cluster/members/{id}; answers the membership without it."""
        return self._admin("DELETE", _member_path(node_id))

    def transfer_leadership(self, target: str | None = None) -> dict[str, Any]:
        """POST /cluster/leader; answers ``{"leader", "term"}`` once leadership moved."""
        return self._admin("POST", "/cluster/leader", {"id": target})

    def take_snapshot(self) -> dict[str, Any]:
        """POST /cluster/snapshot; answers ``{"index", "term"}``."""
        return self._admin("POST", "/cluster/snapshot", None)

    def check_replicas(self) -> dict[str, Any]:
        """GET /cluster/check: every member's FSM digest at one log index (graft.consistency)."""
        return self._admin("GET", "/cluster/check", None)

    def shutdown(self, url: str) -> dict[str, Any]:
        """POST /shutdown to the node at ``url`` (not retried elsewhere: it concerns that node)."""
        return _json_object(self.request("POST", url.rstrip("/") + "/shutdown", body=b""))

    def wait_until_down(self, url: str, *, poll_s: float = 0.1) -> bool:
        """Poll GET /health at ``url`` until nothing answers there (True) or the client's
        timeout passes (False)."""
        deadline = self.clock() + self.timeout
        while True:
            remaining = deadline - self.clock()
            try:
                self.request("GET", url.rstrip("/") + "/health", timeout=min(1.0, remaining))
            except ClientError as err:
                # Refused, reset or closed mid-answer: the process has let go of its port.
                if err.code in ("unreachable", "connection"):
                    return True
            if self.clock() + poll_s >= deadline:
                return False
            self.sleep(poll_s)

    def save_snapshot(self, destination: Path, *, url: str | None = None) -> SavedSnapshot:
        """GET /cluster/snapshot from ``url`` (else the first member that answers), streamed to
        ``destination`` atomically: a temp file in the same directory, fsynced, renamed over it.
        The client's timeout bounds each wait for data, not the whole download."""
        candidates = [url.rstrip("/")] if url else list(self.urls)
        last: ClientError | None = None
        for base in candidates:
            try:
                return self._download(base, destination)
            except Unreachable as err:
                last = err
        assert last is not None
        if len(candidates) > 1:
            raise Unreachable(f"no member answered ({len(candidates)} tried, last: {last.message})")
        raise last

    def _download(self, base: str, destination: Path) -> SavedSnapshot:
        headers = {"Accept": "application/octet-stream"}
        with self._open("GET", base + "/cluster/snapshot", headers=headers) as (raw, final):
            node = self.name_of(final)
            expected = _int_header(raw.headers.get("Content-Length"))
            temp = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed or removed below)
                dir=destination.parent, prefix=f".{destination.name}.", suffix=".part", delete=False
            )
            try:
                with temp:
                    size = _copy(raw, temp, lambda e: self._transport_error(final, e))
                    temp.flush()
                    os.fsync(temp.fileno())
                if expected is not None and size != expected:
                    raise ClientError(
                        "connection",
                        None,
                        f"the snapshot from node {node} was cut off after {size} of {expected} "
                        "bytes: retry the download",
                    )
                os.replace(temp.name, destination)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp.name)
                raise
            _fsync_directory(destination.parent)
            return SavedSnapshot(
                node=node,
                path=destination,
                size=size,
                index=_int_header(raw.headers.get("Graft-Snapshot-Index")),
                term=_int_header(raw.headers.get("Graft-Snapshot-Term")),
                fsm=raw.headers.get("Graft-Snapshot-Fsm"),
            )

    def _admin(
        self,
        method: str,
        path: str,
        document: Any = None,
        *,
        retry_codes: Sequence[str] = RETRYABLE,
    ) -> dict[str, Any]:
        body = None if document is None else json.dumps(document).encode("utf-8")
        # A POST without a body still sends an empty one, with a length, for strict proxies.
        if body is None and method == "POST":
            body = b""
        response = self._retrying(
            method,
            path,
            body=body,
            retry_codes=retry_codes,
            headers={"Content-Type": "application/json"},
        )
        return _json_object(response)

    def _retrying(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None,
        retry_codes: Sequence[str] = RETRYABLE,
        headers: Mapping[str, str] | None = None,
        deadline: float | None = None,
        attempt_timeout: float | None = None,
    ) -> Response:
        if deadline is None:
            deadline = self.clock() + self.timeout
        backoff = FIRST_BACKOFF_S
        turn = 0
        last: ClientError | None = None
        # A no_quorum answer, and the answers since that no retry changes soon (no_quorum, or
        # none at all): once every member has given one, waiting does not help.
        quorum_answer: ClientError | None = None
        hopeless = 0
        while True:
            url = self.urls[turn % len(self.urls)]
            remaining = deadline - self.clock()
            if attempt_timeout is not None:
                remaining = min(remaining, attempt_timeout)
            try:
                return self.request(
                    method, url + path, body=body, headers=headers, timeout=remaining
                )
            except Unreachable as err:
                last = err
                turn += 1
                hopeless += 1
                if quorum_answer is not None and hopeless >= len(self.urls):
                    break
                # Walk the whole list before pausing: another member may be up.
                if turn % len(self.urls) != 0:
                    continue
                if not self.retry_unreachable:
                    break
            except ClientError as err:
                if not _retryable(err, retry_codes):
                    raise
                last = err
                turn += 1
                if err.code == "no_quorum":
                    # Another member may be in the majority: ask it now.
                    quorum_answer = err
                    hopeless += 1
                    if hopeless >= len(self.urls):
                        break
                    continue
                quorum_answer, hopeless = None, 0
            if self.clock() + backoff >= deadline:
                break
            self.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)
        assert last is not None
        raise self.gave_up(last, quorum_answer)

    def gave_up(self, last: ClientError, quorum_answer: ClientError | None) -> ClientError:
        """The error to raise when retrying ended on ``last`` (``quorum_answer``: the
        no_quorum answer it ended on, if it did)."""
        if quorum_answer is not None:
            # The node's message names the voters out of reach and what to do: no more advice.
            return ClientError(
                "no_quorum", quorum_answer.status, f"no quorum: {quorum_answer.message}"
            )
        if isinstance(last, Unreachable) and len(self.urls) > 1:
            return Unreachable(f"no member answered ({len(self.urls)} tried, last: {last.message})")
        if last.code == "no_leader":
            return ClientError(
                "no_leader",
                last.status,
                f"the cluster had no leader for {self.timeout:g}s of retrying (last answer: "
                f"{_without_retry_advice(last.message)}): check `graft status`; a majority of "
                "the voters must be up and connected",
            )
        return last


def _content_type(body: bytes) -> dict[str, str]:
    """application/json for a body that is a JSON object (the SQLite FSM's JSON form, the kv
    FSM's commands), else the default text/plain."""
    if body.lstrip()[:1] == b"{":
        return {"Content-Type": "application/json"}
    return {}


def _batch_element(command: bytes) -> str | dict[str, str]:
    """A command of a /commands batch: its text when it is UTF-8, else ``{"b64": ...}``."""
    try:
        return command.decode("utf-8")
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(command).decode("ascii")}


def _results(response: Response) -> list[dict[str, Any]]:
    results = _json_object(response).get("results")
    if not isinstance(results, list):
        raise ClientError(
            "bad_answer",
            response.status,
            f"{response.url} answered without a results list: does the cluster run the SQLite "
            "state machine?",
        )
    return results


def _retryable(error: ClientError, codes: Sequence[str]) -> bool:
    """Whether a retry may get another answer: one of ``codes``, and never a 4xx (the same
    request gets the same refusal)."""
    if error.status is not None and 400 <= error.status < 500:
        return False
    return error.code in codes


def _without_retry_advice(message: str) -> str:
    """A node's message without its closing "retry" advice, for a client that has retried."""
    return re.sub(r"[;:,]\s*retry( shortly)?\.?$", "", message.rstrip())


def _base_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of a URL, default ports filled in; None if it has no host."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if not parts.hostname:
        return None
    return scheme, parts.hostname, port or {"http": 80, "https": 443}.get(scheme, 0)


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


def _json_object(response: Response) -> dict[str, Any]:
    try:
        document = response.json()
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise ClientError(
            "bad_answer",
            response.status,
            f"{response.url} answered with something other than a JSON object: is it a Graft "
            "node's API?",
        )
    return document


def _int_header(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


COPY_CHUNK_BYTES = 1024 * 1024


def _copy(source: Any, sink: IO[bytes], failed: Callable[[BaseException], ClientError]) -> int:
    """Copy an HTTP body to a file chunk by chunk; a broken connection becomes ``failed(e)``."""
    size = 0
    while True:
        try:
            chunk = source.read(COPY_CHUNK_BYTES)
        except http.client.IncompleteRead as e:
            sink.write(e.partial)
            return size + len(e.partial)  # the Content-Length check reports it
        except (OSError, http.client.HTTPException) as e:
            raise failed(e) from None
        if not chunk:
            return size
        sink.write(chunk)
        size += len(chunk)


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable (not every filesystem allows opening a directory: best effort)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _member_path(node_id: str) -> str:
    return "/cluster/members/" + urllib.parse.quote(node_id, safe="")
