"""Building the API's Site: the one entry point the service tree uses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.web.resource import IResource
from twisted.web.server import Site

from graft.api.admin import AdminBackend
from graft.api.app import GraftApi
from graft.api.auth import TokenAuthority
from graft.api.deadline import TimeSource
from graft.api.fast_channel import FastApiSite
from graft.api.settings import ApiSettings

# POST /reload's action (graft.reload.NodeReloader.reload): what it reloaded, as JSON.
Reload = Callable[[], dict[str, Any]]


def make_api_app(
    backend: AdminBackend,
    api: ApiSettings,
    *,
    reactor: TimeSource,
    auth: TokenAuthority | None = None,
    reload: Reload | None = None,
) -> GraftApi:
    return GraftApi(backend, api, reactor=reactor, auth=auth, reload=reload)


def make_api_resource(
    backend: AdminBackend,
    api: ApiSettings,
    *,
    reactor: TimeSource,
    auth: TokenAuthority | None = None,
    reload: Reload | None = None,
) -> IResource:
    """The API as a resource, for in-memory tests (treq.testing.StubTreq) or embedding."""
    return make_api_app(backend, api, reactor=reactor, auth=auth, reload=reload).resource()


def make_api_site(
    backend: AdminBackend,
    api: ApiSettings,
    *,
    reactor: TimeSource,
    auth: TokenAuthority | None = None,
    reload: Reload | None = None,
) -> Site:
    """The Site to listen with on the node's API port (plain TCP or TLS: the caller's choice of
    endpoint). It refuses bodies over ``api.max_body_bytes`` while they arrive, connections over
    ``api.limits.max_connections`` and requests slower than ``api.limits.request_deadline_ms``.
    ``auth``: the token authority a reload swaps tokens in; ``reload``: POST /reload's action."""
    site = FastApiSite(
        make_api_resource(backend, api, reactor=reactor, auth=auth, reload=reload),
        max_body_bytes=api.max_body_bytes,
        reactor=reactor,
        max_connections=api.limits.max_connections,
        request_deadline_s=api.limits.request_deadline_ms / 1000,
    )
    site.displayTracebacks = False
    return site
