"""The web console: ``GET /ui`` and its static files, served by the node itself, and
``GET /ui/cluster``, the one JSON document the page polls.

Routes:

    GET /ui, /ui/                   open    the console's HTML page
    GET /ui/console.js, .css        open    its script and style sheet
    GET /ui/cluster                 read    every member's /status, gathered by this node,
                                            and this node's write counts and latencies

The page and its files hold no cluster data, so they are served without a token; when tokens
are configured the page asks for one, keeps it in the browser's sessionStorage (gone when the
tab closes) and sends it as ``Authorization: Bearer`` on every call, which the routes check as
for any client. The page calls only the node that served it (no cross-origin requests, so the
Origin check of graft.api.serving stays as strict as it is): ``/ui/cluster`` gathers the other
members' ``GET /status`` server-side, each with a short timeout, forwarding the caller's
Authorization header (members share the API tokens). A member that does not answer in time, or
answers with an error, is shown as unreachable with the reason.

The static files are sent with a Content-Security-Policy that allows only this node's own
script, style and fetches: no inline script, no other origin, no framing.
"""

# twisted.web is untyped; its calls are checked by the tests.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import json
from importlib import resources
from typing import Any, Protocol, cast

from twisted.internet.defer import Deferred, fail, gatherResults, maybeDeferred
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IReactorTCP
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH
from twisted.web.server import Request

from graft.api.auth import Role
from graft.api.responses import write_json
from graft.api.serving import ApiBase, routes, served
from graft.api.views import status_document

# How long /ui/cluster waits for a member's /status: the page polls every second, and a
# member that takes longer is as good as unreachable for a live view.
MEMBER_TIMEOUT_S = 0.8
# A member's /status is a few hundred bytes; anything much larger is refused unread.
MAX_MEMBER_STATUS_BYTES = 256 * 1024

_STATIC = {
    "index.html": "text/html; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}
_CSP = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    b"img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
# The routes whose requests the console counts as writes and as reads (graft.api.http_metrics).
_WRITE_ROUTES = frozenset({"command", "commands"})
_READ_ROUTES = frozenset({"query"})


def _load_static() -> dict[str, bytes]:
    folder = resources.files("graft.api").joinpath("console")
    return {name: folder.joinpath(name).read_bytes() for name in _STATIC}


_FILES = _load_static()


class StatusFetcher(Protocol):
    def __call__(self, url: str, authorization: bytes | None) -> Deferred[dict[str, Any]]:
        """GET ``url`` (a member's /status) and answer its JSON; fail with a readable reason."""
        ...


class MemberStatusFetcher:
    """Fetches members' /status over HTTP(S) with one persistent connection pool.

    With api.tls on, members are reached with the system's trust store (twisted's default
    policy): a cluster whose API certificates come from its own CA shows its other members as
    unreachable with the TLS error as the reason.
    """

    def __init__(self, reactor: Any, timeout: float = MEMBER_TIMEOUT_S) -> None:
        self._reactor = reactor
        self._timeout = timeout
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = 1
        self._agent = Agent(reactor, pool=pool, connectTimeout=timeout)

    def __call__(self, url: str, authorization: bytes | None) -> Deferred[dict[str, Any]]:
        if not IReactorTCP.providedBy(self._reactor):
            # An API embedded on a clock alone (in-memory tests): no member can be asked.
            return fail(ConnectError(string="this API's reactor cannot open connections"))
        headers = Headers()
        if authorization is not None:
            headers.addRawHeader(b"Authorization", authorization)
        answer: Deferred[Any] = self._agent.request(b"GET", url.encode("ascii"), headers)
        answer.addCallback(self._read)
        answer.addTimeout(self._timeout, self._reactor)
        return cast("Deferred[dict[str, Any]]", answer)

    def _read(self, response: Any) -> Deferred[dict[str, Any]]:
        if response.length is UNKNOWN_LENGTH or response.length > MAX_MEMBER_STATUS_BYTES:
            response.deliverBody(_Discard())
            raise ValueError("its /status answer has no length or is too large")
        body: Deferred[bytes] = readBody(response)

        def parsed(data: bytes) -> dict[str, Any]:
            if response.code != 200:
                raise ValueError(f"/status answered {response.code}: {_error_text(data)}")
            document = json.loads(data)
            if not isinstance(document, dict):
                raise ValueError("/status did not answer a JSON object")
            return document

        return body.addCallback(parsed)


class _Discard:
    def makeConnection(self, transport: Any) -> None:
        transport.stopProducing()

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure) -> None:
        pass


def _error_text(data: bytes) -> str:
    try:
        return str(json.loads(data)["error"]["message"])[:300]
    except (ValueError, KeyError, TypeError):
        return data[:200].decode("utf-8", errors="replace")


def _reason(failure: Failure) -> str:
    from twisted.internet.defer import TimeoutError as DeferredTimeout

    if failure.check(DeferredTimeout):
        return f"no answer within {MEMBER_TIMEOUT_S:g} s"
    text = str(failure.value) or type(failure.value).__name__
    return text[:300]


class ConsoleRoutes(ApiBase):
    """Part of GraftApi: the web console's routes."""

    app = routes
    # Made on first use; tests put a fake here.
    _status_fetcher: StatusFetcher | None = None

    @routes.route("/ui", methods=["GET"], endpoint="console")
    @routes.route("/ui/", methods=["GET"], endpoint="console_slash")
    @served("console", None)
    async def console_page(self, request: Request) -> bytes:
        return _static(request, "index.html")

    @routes.route("/ui/console.js", methods=["GET"], endpoint="console_js")
    @served("console", None)
    async def console_script(self, request: Request) -> bytes:
        return _static(request, "console.js")

    @routes.route("/ui/console.css", methods=["GET"], endpoint="console_css")
    @served("console", None)
    async def console_style(self, request: Request) -> bytes:
        return _static(request, "console.css")

    @routes.route("/ui/cluster", methods=["GET"], endpoint="console_cluster")
    @served("console_cluster", Role.READ)
    async def console_cluster(self, request: Request) -> bytes:
        own = self._backend.status()
        members = self._backend.members()
        ids = sorted(set(members.voters) | set(members.learners) | {own.id})
        authorization = request.getHeader(b"authorization")
        mine = status_document(own)
        gathered = await gatherResults([self._member(node, mine, authorization) for node in ids])
        for entry in gathered:
            entry["voter"] = entry["id"] in members.voters
            entry["learner"] = entry["id"] in members.learners
            entry["non_voter"] = entry["id"] in members.non_voters
        document = {
            "node": own.id,
            "leader": own.leader,
            "time": self._reactor.seconds(),
            "members": gathered,
            "requests": self._request_counts(),
            "write_latency": self._write_latency_buckets(),
        }
        request.setHeader(b"Cache-Control", b"no-store")
        return write_json(request, 200, document)

    def _member(
        self, node: str, mine: dict[str, Any], authorization: bytes | None
    ) -> Deferred[Any]:
        url = self._backend.api_url(node)
        entry: dict[str, Any] = {"id": node, "api": url, "reachable": False, "error": None}
        if node == mine["id"]:
            entry.update(reachable=True, status=mine)
            return _now(entry)
        if url is None:
            entry.update(status=None, error="its API address is not known to this node")
            return _now(entry)

        def answered(document: dict[str, Any]) -> dict[str, Any]:
            entry.update(reachable=True, status=document)
            return entry

        def failed(failure: Failure) -> dict[str, Any]:
            entry.update(status=None, error=_reason(failure))
            return entry

        # maybeDeferred: a URL the fetcher refuses at once is a reason too, not a 500.
        asked = maybeDeferred(self._fetcher(), url.rstrip("/") + "/status", authorization)
        return asked.addCallbacks(answered, failed)

    def _fetcher(self) -> StatusFetcher:
        if self._status_fetcher is None:
            # The API's own reactor (the node's, in production), as for its timeouts.
            self._status_fetcher = MemberStatusFetcher(self._reactor)
        return self._status_fetcher

    def _request_counts(self) -> dict[str, float]:
        """Commands and queries this node's API has answered since it started, for the
        console's rate charts (it differentiates them between polls)."""
        writes = reads = 0.0
        for family in (self._metrics.requests_family(),):
            for sample in family.samples:
                if not sample.name.endswith("_total"):
                    continue
                route = sample.labels.get("route")
                if route in _WRITE_ROUTES:
                    writes += sample.value
                elif route in _READ_ROUTES:
                    reads += sample.value
        return {"writes": writes, "reads": reads}

    def _write_latency_buckets(self) -> list[list[float | None]]:
        """The cumulative histogram of this node's answered writes, as ``[upper bound in
        seconds (None for +Inf), count]`` pairs: the page takes the difference between two
        polls and reads p50/p99 of that interval off it, as Prometheus's histogram_quantile
        does. A write's time here runs from routing the request to its committed, applied
        answer, forwarding to the leader included: the commit latency a client of this node
        sees."""
        counts: dict[float, float] = {}
        for family in (self._metrics.latency_family(),):
            for sample in family.samples:
                if not sample.name.endswith("_bucket"):
                    continue
                if sample.labels.get("route") not in _WRITE_ROUTES:
                    continue
                bound = float(sample.labels["le"])
                counts[bound] = counts.get(bound, 0.0) + sample.value
        return [[None if b == float("inf") else b, counts[b]] for b in sorted(counts)]


def _now(value: dict[str, Any]) -> Deferred[Any]:
    answer: Deferred[Any] = Deferred()
    answer.callback(value)
    return answer


def _static(request: Request, name: str) -> bytes:
    request.setHeader(b"Content-Type", _STATIC[name].encode("ascii"))
    request.setHeader(b"Content-Security-Policy", _CSP)
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    request.setHeader(b"Referrer-Policy", b"no-referrer")
    request.setHeader(b"Cache-Control", b"no-cache")
    return _FILES[name]
