"""The Klein application: routes, their validation, and the error model (DESIGN.md s. 5).

Routes (every one but /health needs a token of at least the given role when tokens are set):

    POST /command, /command/      write   one command; the body is the FSM's answer
    POST /commands                write   a JSON batch; a JSON array of per-command results
    POST /sessions                write   register a client session: {"session", "index"}
                                          (graft.api.sessions; /command and /commands take
                                          its Graft-Session/-Sequence/-Acked headers)
    POST /cluster/sessions        admin   the cluster's session bounds, through the log:
                                          {"idle_ms", "max_sessions", "max_results"}
    GET|POST /query, /query/      read    a query from the body or ?q= (not both)
    GET /status                   read    this node's view
    GET /health                   open    the process answers
    GET /ready                    read    200 when a leader is known and this node caught up
    GET /metrics                  read    Prometheus text format
    GET /cluster/members          read    the membership: leader, voters, learners, addresses
    POST /cluster/members         admin   {"id", "host", "ports": {"p2p", "api"}}: add (learner,
                                          catch up, promote); "non_voter": true: a non-voter;
                                          answers the new membership
    DELETE /cluster/members/{id}  admin   remove a member; answers the new membership
    PUT /cluster/members/{id}     admin   {"host", "ports"?}: change its advertised addresses
    POST /cluster/members/{id}/promote, .../demote
                                  admin   learner (non-voter) to voter, voter to non-voter
    POST /cluster/leader          admin   optional {"id": target}: transfer; {"leader", "term"}
    POST /cluster/snapshot        admin   snapshot now and compact; {"index", "term"}
    GET /cluster/snapshot         admin   the latest snapshot as application/octet-stream, with
                                          Graft-Snapshot-Index/-Term/-Fsm; 404 when none
    POST /shutdown                admin   202 {"stopping": id}, then the node stops gracefully
    POST /db/execute, /db/request write   rqlite's API (graft.api.rqlite, docs/rqlite.md)
    GET|POST /db/query            read
    GET /readyz                   read
    GET /cluster/check            admin   replica consistency check: every member's FSM digest
                                          at one log index (graft.consistency); 200 with
                                          {"ok", "complete", "mismatch", "members", ...}
    GET /ui, /ui/console.{js,css} open    the web console (graft.api.console)
    GET /ui/cluster               read    every member's /status, gathered by this node

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
  API's own deadline for queries is the limit plus serving.QUERY_GRACE_S, so the node's answer wins.
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

from collections.abc import Callable, Sequence
from typing import Any, cast
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure
from twisted.web.resource import IResource
from twisted.web.server import Request
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import MethodNotAllowed as RouteMethodNotAllowed
from werkzeug.exceptions import NotFound as RouteNotFound

from graft.api.admin_routes import AdminRoutes
from graft.api.auth import Role
from graft.api.batch import batch_body, is_json
from graft.api.console import ConsoleRoutes
from graft.api.deadline import within
from graft.api.params import QueryParams, decode_base64, parse_batch
from graft.api.responses import (
    JSON_TYPE,
    MethodNotAllowed,
    retry_after_seconds,
    write_error,
    write_json,
)
from graft.api.root import ApiRoot, DirectHandler
from graft.api.rqlite.routes import RqliteRoutes
from graft.api.serving import routes, served, sized
from graft.api.sessions import Numbering, SessionRoutes, duplicate_header, numbering, refusal_error
from graft.api.settings import ApiSettings
from graft.api.views import status_document
from graft.driver.port import CommandResult, Consistency, QueryResult
from graft.errors import (
    BadRequest,
    FSMRejected,
    GraftError,
    NoLeader,
    NotFound,
    PayloadTooLarge,
    Timeout,
)

_ROUTE_LIST = (
    "/command, /commands, /sessions, /query, /status, /health, /ready, /metrics, "
    "/cluster/members, /cluster/leader, /cluster/snapshot, /cluster/check, /cluster/sessions "
    "and /shutdown; rqlite's /db/execute, /db/query, /db/request and /readyz; the console at /ui"
)
# How long after a query's time limit the API stops waiting for the node's own answer.
# The hot routes, one table for both routers: path, methods, GraftApi method. Klein registers
# them (so it answers a wrong method on these paths with its 405), and ApiRoot looks them up
# by exact method and path without Klein's per-request routing (graft.api.root).
_HOT_ROUTES = (
    ("/command", ("POST",), "command"),
    ("/command/", ("POST",), "command"),
    ("/commands", ("POST",), "commands"),
    ("/query", ("GET", "POST"), "query"),
    ("/query/", ("GET", "POST"), "query"),
)


class GraftApi(ConsoleRoutes, AdminRoutes, RqliteRoutes, SessionRoutes):
    """The HTTP API of one node, over its ClusterBackend and ClusterAdmin."""

    app = routes

    def resource(self) -> IResource:
        routed: Any = self.app.resource()  # a KleinResource, which mypy cannot see is one
        # The hot routes skip Klein's per-request routing (graft.api.root).
        direct: dict[tuple[bytes, bytes], DirectHandler] = {
            (method.encode("ascii"), path.encode("ascii")): getattr(self, name)
            for path, methods, name in _HOT_ROUTES
            for method in methods
        }
        return cast(IResource, ApiRoot(direct, cast(IResource, routed)))

    # -- commands --------------------------------------------------------------------------

    @served("command", Role.WRITE)
    def command(self, request: Request) -> Deferred[bytes] | bytes:
        params = QueryParams(request.uri)
        body = self._body(request)
        if params.command_encoding_is_base64():
            body = decode_base64(body, "the command body")
        _require_nonempty([body])
        numbered = numbering(request)
        if params.flag("redirect") and not self._backend.is_leader():
            return self._redirect(request)
        return self._submit([body], numbered, self._command_answered, request)

    def _command_answered(self, results: list[CommandResult], request: Request) -> bytes:
        (result,) = results
        self._command_headers(request, result)
        duplicate_header(request, results)
        if (refused := refusal_error(result)) is not None:
            raise refused
        if result.error is not None:
            raise FSMRejected(result.error, index=result.index, term=result.term)
        request.setHeader(b"Content-Type", self._backend.content_type.encode("ascii"))
        return result.output

    @served("commands", Role.WRITE)
    def commands(self, request: Request) -> Deferred[bytes] | bytes:
        params = QueryParams(request.uri)
        batch = parse_batch(self._body(request))
        _require_nonempty(batch)
        self._check_batch_size(batch)
        numbered = numbering(request)
        if params.flag("redirect") and not self._backend.is_leader():
            return self._redirect(request)
        return self._submit(batch, numbered, self._batch_answered, request)

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
        duplicate_header(request, results)
        # A session that refused every command of the batch alike answers as for /command.
        refused = refusal_error(results[0])
        if refused is not None and all(r.refusal == results[0].refusal for r in results):
            raise refused
        as_json = is_json(self._backend.content_type)
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", JSON_TYPE)
        return batch_body(results, as_json)

    def _submit(
        self,
        commands: Sequence[bytes],
        numbered: Numbering | None = None,
        answered: Callable[[list[CommandResult], Any], Any] | None = None,
        request: Request | None = None,
    ) -> Deferred[Any]:
        """The commands' results, or ``answered(results, request)`` if given: called in the
        same callback as the count check, since each callback of a Deferred costs the leader
        CPU on every write."""
        ms = self._settings.command_timeout_ms
        proposed = (
            maybeDeferred(self._backend.submit, commands)
            if numbered is None
            else maybeDeferred(self._backend.submit_operations, numbered.operations(commands))
        )
        answer = within(
            proposed,
            ms / 1000,
            self._reactor,
            lambda: Timeout(f"the command was not applied within {ms} ms"),
        )

        def counted(results: list[CommandResult]) -> Any:
            if len(results) != len(commands):
                raise RuntimeError(
                    f"backend answered {len(results)} results for {len(commands)} commands"
                )
            return results if answered is None else answered(results, request)

        def timed_out(failure: Failure) -> Failure:
            failure.trap(Timeout)
            raise _command_timeout(cast(Timeout, failure.value).message)

        return answer.addCallbacks(counted, timed_out)

    def _command_headers(self, request: Request, result: CommandResult) -> None:
        request.setHeader(b"Graft-Index", str(result.index).encode("ascii"))
        request.setHeader(b"Graft-Term", str(result.term).encode("ascii"))
        request.setHeader(b"Graft-Leader", result.leader.encode("utf-8"))

    # -- queries ---------------------------------------------------------------------------

    @served("query", Role.READ)
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
        answer = self.read_within(
            query,
            consistency,
            time_limit,
            min_index=min_index,
            max_lag_ms=max_lag_ms,
            advice=": retry, or use consistency=weak if a possibly stale answer will do",
        )
        return answer.addCallback(self._query_answered, request)

    def _query_answered(self, result: QueryResult, request: Request) -> bytes:
        request.setHeader(b"Graft-Index", str(result.applied_index).encode("ascii"))
        if result.leader is not None:
            request.setHeader(b"Graft-Leader", result.leader.encode("utf-8"))
        request.setHeader(b"Content-Type", self._backend.content_type.encode("ascii"))
        return result.output

    # -- node state ------------------------------------------------------------------------

    @routes.route("/status", methods=["GET"], endpoint="status")
    @served("status", Role.READ)
    async def status(self, request: Request) -> bytes:
        return write_json(request, 200, status_document(self._backend.status()))

    @routes.route("/health", methods=["GET"], endpoint="health")
    @served("health", None)
    async def health(self, request: Request) -> bytes:
        return write_json(request, 200, {"status": "ok"})

    @routes.route("/ready", methods=["GET"], endpoint="ready")
    @served("ready", Role.READ)
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

    @routes.route("/metrics", methods=["GET"], endpoint="metrics")
    @served("metrics", Role.READ)
    async def metrics(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        return generate_latest(self._backend.metrics)

    # -- shared machinery ------------------------------------------------------------------

    @routes.handle_errors(HTTPException)
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
        return sized(write_error(request, error), request)

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
        "query before resending a command that is not idempotent (or send it with session "
        "headers, which make resending safe: docs/api.md, Sessions)"
    )


def _register_hot_routes() -> None:
    for path, methods, name in _HOT_ROUTES:
        endpoint = name + "_slash" if path.endswith("/") else name
        routes.route(path, methods=list(methods), endpoint=endpoint)(getattr(GraftApi, name))


_register_hot_routes()
