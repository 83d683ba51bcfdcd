"""rqlite's HTTP API on Graft's API port (docs/rqlite.md):

    POST /db/execute          write   statements through the log; per-statement results
    GET|POST /db/query        read    a read at ``level`` (GET: ``q=``); per-statement rows
    POST /db/request          write   SELECTs only: as /db/query; anything else: as /db/execute
    GET /readyz               read    rqlite's readiness text: 200 or 503

Requests and answers are rqlite's shapes (graft.api.rqlite.request, .response); the SQL runs
in Graft's SQLite FSM through its JSON form. SQL errors are 200 with ``"error"`` in the
statement's result, as rqlite answers; a malformed request is a 400 and a node problem its
usual status, in Graft's error model. Followers forward to the leader; with ``redirect`` they
answer 301 to the leader instead (as rqlite does; pyrqlite follows it).

HTTP Basic credentials are accepted wherever a bearer token is: the password is the token,
the user name is not looked at, so one token config serves both kinds of client.
"""

# twisted.web is untyped; its calls are checked by the tests.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import base64
import binascii
import functools
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure
from twisted.web.server import Request

from graft.api.auth import Role
from graft.api.deadline import within
from graft.api.responses import JSON_TYPE, compact_json, write_json
from graft.api.rqlite.request import (
    RqliteParams,
    Statement,
    parse_statements,
    read_only,
    sql_request,
)
from graft.api.rqlite.response import RenderOptions, fsm_results, render_results
from graft.api.serving import ApiBase, routes, served
from graft.driver.port import CommandResult, Consistency, QueryResult
from graft.errors import BadRequest, NoLeader, PayloadTooLarge, Timeout

_TEXT_TYPE = b"text/plain; charset=utf-8"


def basic_as_bearer(handler: Callable[..., Any]) -> Callable[..., Any]:
    """Present an ``Authorization: Basic`` password as a bearer token to the token check."""

    @functools.wraps(handler)
    def serve(self: Any, request: Request, *args: Any, **kwargs: Any) -> Any:
        value = request.getHeader(b"authorization")
        if value is not None:
            scheme, _, credentials = value.strip().partition(b" ")
            if scheme.lower() == b"basic":
                token = _basic_password(credentials.strip())
                if token is not None:
                    request.requestHeaders.setRawHeaders(b"authorization", [b"Bearer " + token])
        return handler(self, request, *args, **kwargs)

    return serve


def _basic_password(credentials: bytes) -> bytes | None:
    try:
        decoded = base64.b64decode(credentials, validate=True)
    except (binascii.Error, ValueError):
        return None
    _, colon, password = decoded.partition(b":")
    if not colon or not password or b"\r" in password or b"\n" in password:
        return None
    return password


class RqliteRoutes(ApiBase):
    """Part of GraftApi: rqlite's /db/* routes and /readyz."""

    app = routes

    @routes.route("/db/execute", methods=["POST"], endpoint="rqlite_execute")
    @basic_as_bearer
    @served("rqlite_execute", Role.WRITE)
    def rqlite_execute(self, request: Request) -> Deferred[bytes] | bytes:
        params = RqliteParams(request.uri)
        statements = self._rqlite_statements(request)
        return self._rqlite_write(request, params, statements)

    @routes.route("/db/query", methods=["GET", "POST"], endpoint="rqlite_query")
    @basic_as_bearer
    @served("rqlite_query", Role.READ)
    def rqlite_query(self, request: Request) -> Deferred[bytes] | bytes:
        params = RqliteParams(request.uri)
        if request.method == b"GET":
            text = params.get("q")
            if not text or not text.strip():
                raise BadRequest("the query is empty: send it as ?q=SELECT...")
            statements = [Statement(text)]
        else:
            statements = self._rqlite_statements(request)
        return self._rqlite_read(request, params, statements)

    @routes.route("/db/request", methods=["POST"], endpoint="rqlite_request")
    @basic_as_bearer
    @served("rqlite_request", Role.WRITE)
    def rqlite_request(self, request: Request) -> Deferred[bytes] | bytes:
        params = RqliteParams(request.uri)
        statements = self._rqlite_statements(request)
        if read_only(statements):
            return self._rqlite_read(request, params, statements)
        return self._rqlite_write(request, params, statements)

    @routes.route("/readyz", methods=["GET"], endpoint="rqlite_readyz")
    @basic_as_bearer
    @served("rqlite_readyz", Role.READ)
    def rqlite_readyz(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", _TEXT_TYPE)
        params = RqliteParams(request.uri)
        if params.has("noleader"):
            return b"[+]node ok"
        if self._backend.is_ready():
            return b"[+]node ok\n[+]leader ok\n[+]store ok"
        request.setResponseCode(503)
        if self._backend.leader_id() is None:
            return b"[+]node ok\n[+]leader does not exist"
        return b"[+]node ok\n[+]leader ok\n[+]store not ready"

    # -- the two paths -----------------------------------------------------------------------

    def _rqlite_statements(self, request: Request) -> list[Statement]:
        body = self._body(request)
        content_type = request.getHeader(b"content-type") or b""
        if content_type.lower().startswith(b"text/plain"):
            # rqlite takes a text/plain body as one statement.
            if not body.strip():
                raise BadRequest("no statements: the text/plain body is empty")
            try:
                return [Statement(body.decode("utf-8"))]
            except UnicodeDecodeError:
                raise BadRequest("the text/plain body is not UTF-8") from None
        statements = parse_statements(body)
        cap = self._settings.limits.max_batch_commands
        if len(statements) > cap:
            raise PayloadTooLarge(
                f"the request holds {len(statements)} statements, over the limit of {cap}: "
                "split it into several requests (or raise api.limits.max_batch_commands)"
            )
        return statements

    def _rqlite_write(
        self, request: Request, params: RqliteParams, statements: list[Statement]
    ) -> Deferred[bytes] | bytes:
        started = self._reactor.seconds()
        wait_s = self._settings.command_timeout_ms / 1000
        asked = params.duration("timeout")
        if asked:
            wait_s = min(wait_s, asked)
        if params.has("redirect") and not self._backend.is_leader():
            return self._rqlite_redirect(request)
        command = compact_json(sql_request(statements, transaction=params.has("transaction")))
        answer = within(
            maybeDeferred(self._backend.submit, [command]),
            wait_s,
            self._reactor,
            lambda: Timeout(
                f"the statements were not applied within {wait_s:g} s: the outcome is unknown "
                "and they may still commit; check with a query before resending"
            ),
        )

        def answered(results: list[CommandResult]) -> bytes:
            (result,) = results
            request.setHeader(b"Graft-Index", str(result.index).encode("ascii"))
            request.setHeader(b"Graft-Leader", result.leader.encode("utf-8"))
            if result.error is not None:
                fsm = [{"error": result.error}]
            else:
                fsm = fsm_results(result.output)
            extra: dict[str, Any] = {}
            if params.has("raft_index"):
                extra["raft_index"] = result.index
            if params.has("queue"):
                # Executed at once, not queued: the log index stands for rqlite's number.
                extra["sequence_number"] = result.index
            return self._rqlite_answer(request, params, fsm, started, extra)

        return answer.addCallback(answered)

    def _rqlite_read(
        self, request: Request, params: RqliteParams, statements: list[Statement]
    ) -> Deferred[bytes] | bytes:
        started = self._reactor.seconds()
        consistency = params.consistency()
        max_lag_ms = None
        freshness = params.duration("freshness")
        if consistency is Consistency.WEAK and freshness:
            max_lag_ms = max(1, round(freshness * 1000))
        time_limit = params.duration("timeout") or None
        most = self._settings.max_query_timeout_ms
        if time_limit is not None and time_limit * 1000 > most:
            raise BadRequest(
                f"parameter timeout={params.get('timeout')} is more than the {most} ms a query "
                "may run on this node (api.max_query_timeout_ms): ask for less"
            )
        if (
            params.has("redirect")
            and consistency is not Consistency.WEAK
            and not self._backend.is_leader()
        ):
            return self._rqlite_redirect(request)
        query = compact_json(sql_request(statements, transaction=params.has("transaction")))
        answer = self.read_within(query, consistency, time_limit, max_lag_ms=max_lag_ms)

        def answered(result: QueryResult) -> bytes:
            request.setHeader(b"Graft-Index", str(result.applied_index).encode("ascii"))
            if result.leader is not None:
                request.setHeader(b"Graft-Leader", result.leader.encode("utf-8"))
            return self._rqlite_answer(request, params, fsm_results(result.output), started, {})

        def refused(failure: Failure) -> bytes:
            # The FSM refused the SQL as a read (a write statement, say): rqlite answers an SQL
            # error in the statement's result, with 200, and its clients expect that.
            failure.trap(BadRequest)
            message = failure.value.message if isinstance(failure.value, BadRequest) else ""
            return self._rqlite_answer(request, params, [{"error": message}], started, {})

        return answer.addCallbacks(answered, refused)

    def _rqlite_answer(
        self,
        request: Request,
        params: RqliteParams,
        fsm: list[dict[str, Any]],
        started: float,
        extra: dict[str, Any],
    ) -> bytes:
        options = RenderOptions(
            associative=params.has("associative"), blob_array=params.has("blob_array")
        )
        document: dict[str, Any] = {"results": render_results(fsm, options), **extra}
        if params.has("timings"):
            document["time"] = max(0.0, self._reactor.seconds() - started)
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", JSON_TYPE)
        if params.has("pretty"):
            return json.dumps(document, indent=4).encode("utf-8") + b"\n"
        return compact_json(document) + b"\n"

    def _rqlite_redirect(self, request: Request) -> bytes:
        """301 to the same path and query on the leader's API, as rqlite answers."""
        leader = self._backend.leader_id()
        if leader is None:
            raise NoLeader("no leader is known (an election may be under way): retry shortly")
        base = self._backend.api_url(leader)
        if base is None:
            raise NoLeader(f"the leader {leader} has no known API address: retry without redirect")
        target = urlsplit(request.uri.decode("latin-1"))
        location = base.rstrip("/") + (target.path or "/")
        if target.query:
            location += "?" + target.query
        request.setHeader(b"Location", location.encode("latin-1"))
        request.setHeader(b"Graft-Leader", leader.encode("utf-8"))
        return write_json(request, 301, {"leader": leader, "location": location})
