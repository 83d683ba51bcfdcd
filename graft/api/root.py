"""The API's root resource: the hot routes straight to their handlers, the rest through Klein.

Klein's routing (werkzeug's URL map bound per request, an adapter, two notifyFinish
Deferreds and a maybeDeferred around the handler) cost about as much per request as Graft's
own command handling. Commands and queries are looked up here by exact method and path and
rendered directly; any other path, or a hot path with another method (405 with ``Allow``),
goes to the Klein resource, so there is one routing table for the rest and one error model.
"""

# twisted.web is untyped; its calls are checked by the tests.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request

from graft import devtrace
from graft.api.request_done import when_done
from graft.socket_flush import flush_now

_log = Logger()

# A direct route: the request in, a Deferred of the whole body out (errors already turned
# into their JSON bodies, a client that left into CancelledError).
DirectHandler = Callable[[Request], "Deferred[bytes]"]


class ApiRoot(Resource):
    """Renders ``routes[(method, path)]`` itself and everything else with ``fallback``."""

    isLeaf = True

    def __init__(
        self, routes: Mapping[tuple[bytes, bytes], DirectHandler], fallback: IResource
    ) -> None:
        super().__init__()
        self._routes = dict(routes)
        self._fallback = fallback

    @property
    def routes(self) -> Mapping[tuple[bytes, bytes], DirectHandler]:
        """The direct routes, by (method, path): graft.api.fast_channel serves them too."""
        return self._routes

    def render(self, request: Request) -> Any:
        if devtrace.ON:
            devtrace.mark("api.render")
        handler = self._routes.get((request.method, request.path))
        if handler is None:
            fallback: Any = self._fallback  # IResource is a zope interface mypy cannot call
            return fallback.render(request)
        answer = handler(request)
        if answer.called and not answer.paused:
            # Answered at once (an error, a lease read): the client is still here. A Deferred
            # that is called but paused waits on another, and is answered later, below.
            answer.addCallbacks(_write, _dropped, callbackArgs=(request,))
            return NOT_DONE_YET
        connected = [True]

        def left(reason: Failure | None) -> None:
            if reason is None:
                return  # answered
            # The client went away: stop waiting (the deadline's timer stops; the backend's
            # work, a proposal say, goes on).
            connected[0] = False
            answer.cancel()

        def respond(body: bytes) -> None:
            if connected[0]:
                _write(body, request)

        when_done(request, left)
        answer.addCallbacks(respond, _dropped)
        return NOT_DONE_YET


def _write(body: bytes, request: Request) -> None:
    if request._disconnected:  # the client left as the answer came: nobody to write to
        return
    channel = request.channel
    request.write(body)
    request.finish()
    if channel is not None:  # the answer leaves now, not after the reactor's next poll
        flush_now(channel.transport)
    if devtrace.ON:
        devtrace.mark("api.written")


def _dropped(failure: Failure) -> None:
    if not failure.check(CancelledError):
        _log.failure("API response could not be written", failure)
