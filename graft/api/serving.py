"""What every route of the API shares: the one Klein app, the ``served`` wrapper (metrics,
the browser-origin check, the token, the JSON error model) and ``ApiBase``, the state and
helpers of GraftApi that its route groups (graft.api.app, graft.api.admin_routes) use."""

# twisted.web is untyped; its calls are checked by the tests.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Concatenate, ParamSpec, TypeVar
from urllib.parse import urlsplit

from klein import Klein
from twisted.internet.defer import CancelledError, Deferred, fail, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource
from twisted.web.server import Request

from graft.api.admin import AdminBackend
from graft.api.auth import Role, TokenAuthority
from graft.api.deadline import TimeSource, within
from graft.api.http_metrics import http_metrics
from graft.api.limits import too_large
from graft.api.request_done import when_done
from graft.api.responses import write_error
from graft.api.settings import ApiSettings
from graft.driver.port import Consistency, QueryResult
from graft.errors import Forbidden, GraftError, Internal, Timeout
from graft.origin import normalize_origin

_log = Logger()

P = ParamSpec("P")
S = TypeVar("S", bound="ApiBase")
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
# Methods that change nothing; any other one is checked against the browser's Origin.
_SAFE_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS"})
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")

# The routing table of every route but the hot ones' direct lookup (graft.api.root).
routes = Klein()

Handler = Callable[
    Concatenate[S, Request, P],
    Awaitable[bytes | IResource] | Deferred[bytes] | bytes,
]


def served(
    route: str, role: Role | None
) -> Callable[[Handler[S, P]], Callable[..., Deferred[Any]]]:
    """Wrap a handler: count it in the HTTP metrics, check the token, and turn any failure into
    the JSON error model. A handler may be a coroutine function or a plain function returning
    a Deferred (the hot routes: no coroutine to drive per request)."""

    def decorate(handler: Handler[S, P]) -> Callable[..., Deferred[Any]]:
        @functools.wraps(handler)
        def serve(self: S, request: Request, *args: P.args, **kwargs: P.kwargs) -> Any:
            self._instrument(request, route)
            answer: Deferred[Any]
            try:
                if request.method not in _SAFE_METHODS:
                    self._check_origin(request)
                if role is not None:
                    self._auth.authorize(header(request, b"authorization"), role)
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
            return answer.addCallback(sized, request)

        return serve

    return decorate


# The API's own deadline for a query is its time limit plus this, so the node's answer (504
# query_timeout, said by the node) wins over the API's backstop.
QUERY_GRACE_S = 1.0


class ApiBase:
    """The node's backend, settings and clock, and what every route does with a request."""

    def __init__(
        self,
        backend: AdminBackend,
        settings: ApiSettings,
        *,
        reactor: TimeSource,
        auth: TokenAuthority | None = None,
        reload: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self._backend = backend
        self._settings = settings
        self._reactor = reactor
        # Given by the node when it reloads tokens (graft.reload): it swaps them in this one.
        self._auth = auth if auth is not None else TokenAuthority(settings.tokens)
        self._reload = reload
        self._metrics = http_metrics(backend.metrics)

    def read_within(
        self,
        query: bytes,
        consistency: Consistency,
        time_limit: float | None,
        *,
        min_index: int | None = None,
        max_lag_ms: int | None = None,
        advice: str = "",
    ) -> Deferred[QueryResult]:
        """The backend's answer to ``query``, or Timeout a little after its time limit: the
        node stops a query at its limit and says so (504 query_timeout); this is the backstop
        for an answer that does not come back at all."""
        ms = self._settings.query_timeout_ms if time_limit is None else round(time_limit * 1000)
        return within(
            maybeDeferred(
                self._backend.query,
                query,
                consistency,
                min_index=min_index,
                max_lag_ms=max_lag_ms,
                timeout=time_limit,
            ),
            ms / 1000 + QUERY_GRACE_S,
            self._reactor,
            lambda: Timeout(
                f"the query did not finish within {ms} ms (it changed nothing){advice}"
            ),
        )

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

        when_done(request, record)


def sized(body: bytes | IResource, request: Request) -> bytes | IResource:
    """Declare the length: a plain body instead of a chunked one, for simple clients. A
    resource (a streamed snapshot) declares its own."""
    if not isinstance(body, bytes):
        return body
    request.setHeader(b"Content-Length", str(len(body)).encode("ascii"))
    return body


def header(request: Request, name: bytes) -> str | None:
    value = request.getHeader(name)
    return None if value is None else value.decode("latin-1")
