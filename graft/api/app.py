"""The Klein application: routes, their validation, and the error model (DESIGN.md s. 5).

Routes (every one but /health needs a token of at least the given role when tokens are set):

    POST /command, /command/      write   one command; the body is the FSM's answer
    POST /commands                write   a JSON batch; a JSON array of per-command results
    GET|POST /query, /query/      read    a query from the body or ?q= (not both)
    GET /status                   read    this node's view
    GET /health                   open    the process answers
    GET /ready                    read    200 when a leader is known and this node caught up
    GET /metrics                  read    Prometheus text format
    GET /cluster/members          read    the membership: leader, voters, learners, addresses
    POST /cluster/members         admin   {"id", "host", "ports": {"p2p", "api"}}: add (learner,
                                          catch up, promote); answers the new membership
    DELETE /cluster/members/{id}  admin   remove a member; answers the new membership
    POST /cluster/leader          admin   optional {"id": target}: transfer; {"leader", "term"}
    POST /cluster/snapshot        admin   snapshot now and compact; {"index", "term"}
    GET /cluster/snapshot         admin   the latest snapshot as application/octet-stream, with
                                          Graft-Snapshot-Index/-Term/-Fsm; 404 when none
    POST /shutdown                admin   202 {"stopping": id}, then the node stops gracefully
    GET /cluster/check            admin   replica consistency check: every member's FSM digest
                                          at one log index (graft.consistency); 200 with
                                          {"ok", "complete", "mismatch", "members", ...}

Decisions beyond DESIGN.md:
- A wrong method on a known path is 405 with code ``method_not_allowed`` and an ``Allow``
  header (DESIGN.md lists no code for 405; reusing ``bad_request`` would blur the two).
- ``?redirect=true`` is honoured by /command, /commands and ``default``-consistency queries
  (the ones that must run on the leader); ``strong`` and ``weak`` queries are served by this
  node. The ``Location`` keeps the whole query string, ``redirect=true`` included, so if the
  leadership moved again meanwhile the next hop redirects too instead of forwarding.
- An empty command (or empty batch element) is a 400: nothing is proposed.
- The API's own deadlines (api.command_timeout_ms / query_timeout_ms) race the backend's
  Deferred without cancelling it: a proposed command may still commit after the 504.
- A query's time limit is ``?timeout=`` (500ms, 10s, 2m; at most api.max_query_timeout_ms) or
  api.query_timeout_ms. The node stops a query at its limit (504 ``query_timeout``); the
  API's own deadline for queries is the limit plus QUERY_GRACE_S, so the node's answer wins.
- /ready answers ``{"ready": bool, "node", "leader"}``, 503 with Retry-After when not ready:
  it is a probe, not an error.
- Batch results: ``result`` is the FSM's output parsed as JSON when its content type is JSON;
  otherwise (or when the output does not parse) it is base64 and the entry says
  ``"encoding": "base64"``.
- Tokens (graft.api.auth): missing or unknown -> 401, valid but too low a role -> 403.
- Bodies over api.max_body_bytes: 413 before they are read whole (graft.api.limits).
- A POST/PUT/DELETE whose Origin (or Sec-Fetch-Site) says a browser sent it from another web
  origin is 403 before the token is looked at (GraftApi._check_origin); requests without
  those headers (curl, the CLI) and every content type are accepted as before.
- A batch over api.limits.max_batch_commands is 413; integers in the query string outside
  0..2**63-1 and JSON bodies nested over 16 levels are 400 (graft.api.params, .jsonin).
- Every answer declares its Content-Length; the HTTP metrics label requests by route name
  (``unmatched`` for 404/405), never by raw path.
- Administration (/cluster/..., /shutdown) needs the admin role, except reading the membership
  (read). The backend implements graft.driver.port.ClusterAdmin as well (graft.api.admin).
- Administration does not use api.command_timeout_ms: adding a member waits for the learner to
  catch up, which may take minutes. Every administrative operation gets ADMIN_TIMEOUT_S
  (150 s, above the node's own 120 s catch-up limit) and then a 504; like commands, the
  operation itself is not cancelled.
- Bodies of administrative requests are parsed strictly: unknown keys, node ids that the config
  would refuse, ports outside 1..65535 (or p2p == api) are 400s. The snapshot is the whole
  database, so downloading it needs admin, not read.
- GET /cluster/snapshot streams the file from the node asked (never read whole into memory)
  and closes it at the end or when the client leaves.
- POST /shutdown answers 202 first; the backend's shutdown() runs on the next reactor turn
  after the answer is written (or the client left), so the answer is not lost to the stop.
"""

# twisted.web is untyped; its calls are checked by the tests.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import base64
import functools
import inspect
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Concatenate, ParamSpec, cast
from urllib.parse import urlsplit

from klein import Klein
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from twisted.internet.defer import CancelledError, Deferred, fail, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource
from twisted.web.server import Request
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import MethodNotAllowed as RouteMethodNotAllowed
from werkzeug.exceptions import NotFound as RouteNotFound

from graft.api.admin import (
    ADMIN_TIMEOUT_S,
    AdminBackend,
    node_id,
    parse_new_member,
    parse_transfer_target,
)
from graft.api.auth import Role, TokenAuthority
from graft.api.deadline import TimeSource, within
from graft.api.http_metrics import http_metrics
from graft.api.limits import too_large
from graft.api.params import QueryParams, decode_base64, parse_batch
from graft.api.responses import (
    JSON_TYPE,
    MethodNotAllowed,
    compact_json,
    retry_after_seconds,
    write_error,
    write_json,
)
from graft.api.root import ApiRoot, DirectHandler
from graft.api.settings import ApiSettings
from graft.api.snapshot_download import SnapshotResource
from graft.api.views import members_document, status_document
from graft.driver.port import CommandResult, Consistency, QueryResult
from graft.errors import (
    BadRequest,
    Forbidden,
    FSMRejected,
    GraftError,
    Internal,
    NoLeader,
    NotFound,
    PayloadTooLarge,
    Timeout,
)
from graft.origin import normalize_origin

_log = Logger()

P = ParamSpec("P")
_ROUTE_LIST = (
    "/command, /commands, /query, /status, /health, /ready, /metrics, /cluster/members, "
    "/cluster/leader, /cluster/snapshot, /cluster/check and /shutdown"
)
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
# Methods that change nothing; any other one is checked against the browser's Origin.
_SAFE_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS"})
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
# How long after a query's time limit the API stops waiting for the node's own answer.
QUERY_GRACE_S = 1.0

Handler = Callable[
    Concatenate["GraftApi", Request, P],
    Awaitable[bytes | IResource] | Deferred[bytes] | bytes,
]


def _served(route: str, role: Role | None) -> Callable[[Handler[P]], Callable[..., Deferred[Any]]]:
    """Wrap a handler: count it in the HTTP metrics, check the token, and turn any failure into
    the JSON error model. A handler may be a coroutine function or a plain function returning
    a Deferred (the hot routes: no coroutine to drive per request)."""

    def decorate(handler: Handler[P]) -> Callable[..., Deferred[Any]]:
        @functools.wraps(handler)
        def serve(self: GraftApi, request: Request, *args: P.args, **kwargs: P.kwargs) -> Any:
            self._instrument(request, route)
            answer: Deferred[Any]
            try:
                if request.method not in _SAFE_METHODS:
                    self._check_origin(request)
                if role is not None:
                    self._auth.authorize(_header(request, b"authorization"), role)
                outcome = handler(self, request, *args, **kwargs)
            except Exception:
                answer = fail()
            else:
                if isinstance(outcome, Deferred):
                    answer = outcome
                elif inspect.iscoroutine(outcome):
                    answer = Deferred.fromCoroutine(outcome)
                else:
                    answer = succeed(outcome)
            answer.addErrback(self._failed, request)
            return answer.addCallback(_sized, request)

        return serve

    return decorate


class GraftApi:
    """The HTTP API of one node, over its ClusterBackend and ClusterAdmin."""

    app = Klein()

    def __init__(
        self, backend: AdminBackend, settings: ApiSettings, *, reactor: TimeSource
    ) -> None:
        self._backend = backend
        self._settings = settings
        self._reactor = reactor
        self._auth = TokenAuthority(settings.tokens)
        self._metrics = http_metrics(backend.metrics)

    def resource(self) -> IResource:
        routed: Any = self.app.resource()  # a KleinResource, which mypy cannot see is one
        # The hot routes skip Klein's per-request routing (graft.api.root).
        direct: dict[tuple[bytes, bytes], DirectHandler] = {}
        for path in (b"/command", b"/command/"):
            direct[(b"POST", path)] = self.command
        direct[(b"POST", b"/commands")] = self.commands
        for path in (b"/query", b"/query/"):
            for method in (b"GET", b"POST"):
                direct[(method, path)] = self.query
        return cast(IResource, ApiRoot(direct, cast(IResource, routed)))

    # -- commands --------------------------------------------------------------------------

    @app.route("/command", methods=["POST"], endpoint="command")
    @app.route("/command/", methods=["POST"], endpoint="command_slash")
    @_served("command", Role.WRITE)
    def command(self, request: Request) -> Deferred[bytes] | bytes:
        params = QueryParams(request.uri)
        body = self._body(request)
        if params.command_encoding_is_base64():
            body = decode_base64(body, "the command body")
        _require_nonempty([body])
        if params.flag("redirect") and not self._backend.is_leader():
            return self._redirect(request)
        return self._submit([body]).addCallback(self._command_answered, request)

    def _command_answered(self, results: list[CommandResult], request: Request) -> bytes:
        (result,) = results
        self._command_headers(request, result)
        if result.error is not None:
            raise FSMRejected(result.error, index=result.index, term=result.term)
        request.setHeader(b"Content-Type", self._backend.content_type.encode("ascii"))
        return result.output

    @app.route("/commands", methods=["POST"], endpoint="commands")
    @_served("commands", Role.WRITE)
    def commands(self, request: Request) -> Deferred[bytes] | bytes:
        params = QueryParams(request.uri)
        batch = parse_batch(self._body(request))
        _require_nonempty(batch)
        self._check_batch_size(batch)
        if params.flag("redirect") and not self._backend.is_leader():
            return self._redirect(request)
        return self._submit(batch).addCallback(self._batch_answered, request)

    def _check_batch_size(self, batch: Sequence[bytes]) -> None:
        """Over api.limits.max_batch_commands is a 413: a 1 MiB body holds some 260,000 tiny
        commands, each a log entry, a result and a share of the leader's memory until applied."""
        cap = self._settings.limits.max_batch_commands
        if len(batch) > cap:
            raise PayloadTooLarge(
                f"the batch holds {len(batch)} commands, over the limit of {cap}: split it "
                "into several requests (or raise api.limits.max_batch_commands)"
            )

    def _batch_answered(self, results: list[CommandResult], request: Request) -> bytes:
        self._command_headers(request, results[-1])
        as_json = _is_json(self._backend.content_type)
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", JSON_TYPE)
        return _batch_body(results, as_json)

    def _submit(self, commands: Sequence[bytes]) -> Deferred[list[CommandResult]]:
        ms = self._settings.command_timeout_ms
        answer = within(
            maybeDeferred(self._backend.submit, commands),
            ms / 1000,
            self._reactor,
            lambda: Timeout(f"the command was not applied within {ms} ms"),
        )

        def counted(results: list[CommandResult]) -> list[CommandResult]:
            if len(results) != len(commands):
                raise RuntimeError(
                    f"backend answered {len(results)} results for {len(commands)} commands"
                )
            return results

        def timed_out(failure: Failure) -> Failure:
            failure.trap(Timeout)
            raise _command_timeout(cast(Timeout, failure.value).message)

        return answer.addCallbacks(counted, timed_out)

    def _command_headers(self, request: Request, result: CommandResult) -> None:
        request.setHeader(b"Graft-Index", str(result.index).encode("ascii"))
        request.setHeader(b"Graft-Term", str(result.term).encode("ascii"))
        request.setHeader(b"Graft-Leader", result.leader.encode("utf-8"))

    # -- queries ---------------------------------------------------------------------------

    @app.route("/query", methods=["GET", "POST"], endpoint="query")
    @app.route("/query/", methods=["GET", "POST"], endpoint="query_slash")
    @_served("query", Role.READ)
    def query(self, request: Request) -> Deferred[bytes] | bytes:
        params = QueryParams(request.uri)
        consistency = params.consistency()
        min_index = params.non_negative_int("min_index")
        max_lag_ms = params.non_negative_int("max_lag_ms")
        time_limit = _query_time_limit(params, self._settings)
        body = self._body(request)
        text = params.get("q")
        if text is not None and body.strip():
            raise BadRequest("the query is both in ?q= and in the body: send it in one place")
        query = text.encode("utf-8") if text is not None else body
        if not query.strip():
            raise BadRequest("the query is empty: send it as the request body or as ?q=...")
        if (
            consistency is Consistency.DEFAULT
            and params.flag("redirect")
            and not self._backend.is_leader()
        ):
            return self._redirect(request)
        ms = self._settings.query_timeout_ms if time_limit is None else round(time_limit * 1000)
        answer: Deferred[QueryResult] = within(
            maybeDeferred(
                self._backend.query,
                query,
                consistency,
                min_index=min_index,
                max_lag_ms=max_lag_ms,
                timeout=time_limit,
            ),
            # The node stops the query at its limit and says so (504 query_timeout); this is
            # the backstop for an answer that does not come back at all.
            ms / 1000 + QUERY_GRACE_S,
            self._reactor,
            lambda: Timeout(
                f"the query did not finish within {ms} ms (it changed nothing): retry, or "
                "use consistency=weak if a possibly stale answer will do"
            ),
        )
        return answer.addCallback(self._query_answered, request)

    def _query_answered(self, result: QueryResult, request: Request) -> bytes:
        request.setHeader(b"Graft-Index", str(result.applied_index).encode("ascii"))
        if result.leader is not None:
            request.setHeader(b"Graft-Leader", result.leader.encode("utf-8"))
        request.setHeader(b"Content-Type", self._backend.content_type.encode("ascii"))
        return result.output

    # -- node state ------------------------------------------------------------------------

    @app.route("/status", methods=["GET"], endpoint="status")
    @_served("status", Role.READ)
    async def status(self, request: Request) -> bytes:
        return write_json(request, 200, status_document(self._backend.status()))

    @app.route("/health", methods=["GET"], endpoint="health")
    @_served("health", None)
    async def health(self, request: Request) -> bytes:
        return write_json(request, 200, {"status": "ok"})

    @app.route("/ready", methods=["GET"], endpoint="ready")
    @_served("ready", Role.READ)
    async def ready(self, request: Request) -> bytes:
        ready = self._backend.is_ready()
        if not ready:
            request.setHeader(b"Retry-After", retry_after_seconds(1.0))
        document = {
            "ready": ready,
            "node": self._backend.node_id,
            "leader": self._backend.leader_id(),
        }
        return write_json(request, 200 if ready else 503, document)

    @app.route("/metrics", methods=["GET"], endpoint="metrics")
    @_served("metrics", Role.READ)
    async def metrics(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        return generate_latest(self._backend.metrics)

    # -- cluster administration ------------------------------------------------------------

    @app.route("/cluster/members", methods=["GET"], endpoint="members")
    @_served("members", Role.READ)
    async def members(self, request: Request) -> bytes:
        return write_json(request, 200, members_document(self._backend.members()))

    @app.route("/cluster/members", methods=["POST"], endpoint="add_member")
    @_served("add_member", Role.ADMIN)
    async def add_member(self, request: Request) -> bytes:
        member = parse_new_member(self._body(request))
        document = await self._administer(
            lambda: self._backend.add_member(
                member.node_id, member.host, member.p2p_port, member.api_port
            ),
            f"adding {member.node_id}",
            "it may still be catching up and be promoted later: check `graft members list` "
            "before retrying",
        )
        return write_json(request, 200, members_document(document))

    @app.route("/cluster/members/<string:member>", methods=["DELETE"], endpoint="remove_member")
    @_served("remove_member", Role.ADMIN)
    async def remove_member(self, request: Request, member: str) -> bytes:
        target = node_id(member, "the member")
        document = await self._administer(
            lambda: self._backend.remove_member(target),
            f"removing {target}",
            "it may still be removed: check `graft members list` before retrying",
        )
        return write_json(request, 200, members_document(document))

    @app.route("/cluster/leader", methods=["POST"], endpoint="transfer_leadership")
    @_served("transfer_leadership", Role.ADMIN)
    async def transfer_leadership(self, request: Request) -> bytes:
        target = parse_transfer_target(self._body(request))
        document = await self._administer(
            lambda: self._backend.transfer_leadership(target),
            "the leadership transfer",
            "check `graft status` to see who leads now",
        )
        return write_json(request, 200, document)

    @app.route("/cluster/snapshot", methods=["POST"], endpoint="take_snapshot")
    @_served("take_snapshot", Role.ADMIN)
    async def take_snapshot(self, request: Request) -> bytes:
        document = await self._administer(
            self._backend.take_snapshot,
            "the snapshot",
            "it may still be written: GET /cluster/snapshot shows the latest",
        )
        return write_json(request, 200, document)

    @app.route("/cluster/snapshot", methods=["GET"], endpoint="download_snapshot")
    @_served("download_snapshot", Role.ADMIN)
    async def download_snapshot(self, request: Request) -> IResource:
        latest = self._backend.latest_snapshot()
        if latest is None:
            raise NotFound(
                f"node {self._backend.node_id} has no snapshot yet: take one with "
                "POST /cluster/snapshot (`graft snapshot take`) and retry"
            )
        manifest, data = latest
        try:
            return cast(IResource, SnapshotResource(manifest, data))
        except BaseException:
            data.close()
            raise

    @app.route("/shutdown", methods=["POST"], endpoint="shutdown")
    @_served("shutdown", Role.ADMIN)
    async def shutdown(self, request: Request) -> bytes:
        def stop(_: object) -> None:
            # On the next turn, so the 202 reaches the transport before the node stops.
            self._reactor.callLater(0, self._backend.shutdown)

        request.notifyFinish().addBoth(stop)
        return write_json(request, 202, {"stopping": self._backend.node_id})

    # -- the replica consistency check -----------------------------------------------------

    # Admin, not read: each check appends an entry to the log and digests the whole state on
    # every member, so it costs what a snapshot costs.
    @app.route("/cluster/check", methods=["GET"], endpoint="check")
    @_served("check", Role.ADMIN)
    async def check(self, request: Request) -> bytes:
        document = await self._administer(
            self._backend.check_replicas,
            "the replica consistency check",
            "a member may be slow to digest a large state; run it again",
        )
        return write_json(request, 200, document)

    async def _administer(
        self, operation: Callable[[], Deferred[Any]], what: str, then: str
    ) -> Any:
        """Run an administrative operation under ADMIN_TIMEOUT_S instead of the command timeout."""
        seconds = ADMIN_TIMEOUT_S
        return await within(
            maybeDeferred(operation),
            seconds,
            self._reactor,
            lambda: Timeout(f"{what} did not finish within {seconds:g} s: {then}"),
        )

    # -- shared machinery ------------------------------------------------------------------

    @app.handle_errors(HTTPException)
    def _routing_failed(self, request: Request, failure: Failure) -> bytes:
        """No route matched: 404 for an unknown path, 405 for a known path and wrong method."""
        self._instrument(request, "unmatched")
        path = request.path.decode("utf-8", errors="replace")
        method = request.method.decode("ascii", errors="replace")
        error: GraftError
        if isinstance(failure.value, RouteMethodNotAllowed):
            allowed = sorted(failure.value.valid_methods or [])
            error = MethodNotAllowed(
                f"{method} is not allowed on {path}: use {', '.join(allowed)}", allowed=allowed
            )
        elif isinstance(failure.value, RouteNotFound):
            error = NotFound(f"there is no route {path}: the API serves {_ROUTE_LIST}")
        else:
            error = BadRequest(f"{method} {path} cannot be routed: the API serves {_ROUTE_LIST}")
        return _sized(write_error(request, error), request)

    def _failed(self, failure: Failure, request: Request) -> bytes | Failure:
        if failure.check(CancelledError):
            return failure  # the client went away; Klein drops it quietly
        error = failure.value
        if not isinstance(error, GraftError) or isinstance(error, Internal):
            _log.failure(
                "API request {method} {uri} failed",
                failure,
                method=request.method,
                uri=request.uri,
            )
            error = Internal(
                f"internal error on node {self._backend.node_id}: the cause is in its log"
            )
        return write_error(request, error)

    def _redirect(self, request: Request) -> bytes:
        """307 to the same path and query on the leader's API."""
        leader = self._backend.leader_id()
        if leader is None:
            raise NoLeader("no leader is known (an election may be under way): retry shortly")
        base = self._backend.api_url(leader)
        if base is None:
            raise NoLeader(
                f"the leader {leader} has no known API address: retry without redirect=true"
            )
        target = urlsplit(request.uri.decode("latin-1"))
        location = base.rstrip("/") + (target.path or "/")
        if target.query:
            location += "?" + target.query
        request.setHeader(b"Location", location.encode("latin-1"))
        request.setHeader(b"Graft-Leader", leader.encode("utf-8"))
        return write_json(request, 307, {"leader": leader, "location": location})

    def _body(self, request: Request) -> bytes:
        """The body, refused if over the limit. The Site's BoundedRequest refuses earlier,
        before reading; this check covers a resource served by another Site (tests, embedding)."""
        limit = self._settings.max_body_bytes
        declared = request.getHeader(b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            raise too_large(limit)
        content = request.content
        if content is None:
            return b""
        content.seek(0)
        data: bytes = content.read(limit + 1)
        if len(data) > limit:
            raise too_large(limit)
        return data

    def _check_origin(self, request: Request) -> None:
        """Refuse a state-changing request that a browser sends from another web origin.

        A page open in an operator's browser can POST to the API (a form, or fetch in no-cors
        mode: no preflight), and the browser then says where the page came from in ``Origin``
        (and ``Sec-Fetch-Site``). Such a request is refused with 403 unless the origin is this
        node's own API address (or, when that is a loopback address, localhost at the same
        port) or is in api.allowed_origins. The own address is the configured one, not the
        request's Host header, which a DNS-rebinding page controls. Clients that are not
        browsers (curl, the graft CLI, libraries) send neither header and are not affected;
        neither is any content type (curl --data sends a form type, the CLI text/plain).
        """
        origin_header = request.getHeader(b"origin")
        if origin_header is None:
            fetch_site = request.getHeader(b"sec-fetch-site")
            if fetch_site is not None and fetch_site.lower() in (b"cross-site", b"same-site"):
                raise Forbidden(
                    "a browser sent this request from another site (Sec-Fetch-Site: "
                    f"{fetch_site.decode('latin-1')}): state-changing requests from web pages "
                    "are refused"
                )
            return
        shown = origin_header.decode("latin-1")
        origin = normalize_origin(shown)
        allowed = self._own_origins()
        if origin is not None and (origin in allowed or origin in self._settings.allowed_origins):
            return
        raise Forbidden(
            f"a browser sent this request from the web origin {shown[:100]!r}, which is not "
            f"this node's API ({', '.join(sorted(allowed)) or 'unknown'}) nor in "
            "api.allowed_origins: state-changing requests from other web pages are refused "
            "(clients that send no Origin header, like curl and the graft CLI, are not affected)"
        )

    def _own_origins(self) -> set[str]:
        url = self._backend.api_url(self._backend.node_id)
        own = normalize_origin(url) if url is not None else None
        if own is None:
            return set()
        parts = urlsplit(own)
        origins = {own}
        if parts.hostname in ("localhost", "127.0.0.1", "::1"):
            suffix = f":{parts.port}" if parts.port is not None else ""
            origins.update(f"{parts.scheme}://{name}{suffix}" for name in _LOOPBACK_NAMES)
        return origins

    def _instrument(self, request: Request, route: str) -> None:
        started = self._reactor.seconds()
        method = request.method.decode("ascii", errors="replace").upper()
        label = method if method in _KNOWN_METHODS else "OTHER"

        def record(_: object) -> None:
            self._metrics.observe(
                route=route,
                method=label,
                status=request.code,
                seconds=self._reactor.seconds() - started,
            )

        request.notifyFinish().addBoth(record)


def _sized(body: bytes | IResource, request: Request) -> bytes | IResource:
    """Declare the length: a plain body instead of a chunked one, for simple clients. A
    resource (a streamed snapshot) declares its own."""
    if not isinstance(body, bytes):
        return body
    request.setHeader(b"Content-Length", str(len(body)).encode("ascii"))
    return body


def _header(request: Request, name: bytes) -> str | None:
    value = request.getHeader(name)
    return None if value is None else value.decode("latin-1")


def _require_nonempty(commands: Sequence[bytes]) -> None:
    if all(commands):
        return
    for position, command in enumerate(commands):
        if not command:
            where = "the command" if len(commands) == 1 else f"batch element {position}"
            raise BadRequest(f"{where} is empty: send the command's bytes")


def _query_time_limit(params: QueryParams, settings: ApiSettings) -> float | None:
    """``?timeout=`` in seconds, within api.max_query_timeout_ms; None: the node's default."""
    seconds = params.duration("timeout")
    if seconds is None:
        return None
    most = settings.max_query_timeout_ms
    if seconds * 1000 > most:
        raise BadRequest(
            f"parameter timeout={params.get('timeout')} is more than the {most} ms a query may "
            "run on this node (api.max_query_timeout_ms): ask for less, or make the query cheaper"
        )
    return seconds


def _command_timeout(reason: str) -> Timeout:
    return Timeout(
        f"{reason}: the outcome is unknown and the command may still commit; check with a "
        "query before resending a command that is not idempotent"
    )


def _is_json(content_type: str) -> bool:
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


def _batch_body(results: Sequence[CommandResult], as_json: bool) -> bytes:
    """``json_bytes([_batch_entry(r, as_json) for r in results])``, with the outputs that are
    already in that form copied in (the encoder joins a list's items with "," the same way)."""
    parts: list[bytes] = []
    verbatim = _VERBATIM.fullmatch if as_json else None
    for result in results:
        if verbatim is not None and result.error is None:
            match = verbatim(result.output)
            if match is not None and match[1] != match[2]:
                parts.append(
                    b'{"index":%d,"term":%d,"result":%b}' % (result.index, result.term, match[0])
                )
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
    if result.error is not None:
        entry["error"] = {"code": FSMRejected.code, "message": result.error}
        return entry
    if as_json:
        value = _output_json(result.output)
        if value is not _NOT_JSON:
            entry["result"] = value
            return entry
    entry["result"] = base64.b64encode(result.output).decode("ascii")
    entry["encoding"] = "base64"
    return entry
