"""The HTTP API (DESIGN.md section 5): a Klein app over a ClusterBackend and ClusterAdmin."""

from graft.api.admin import AdminBackend
from graft.api.app import GraftApi
from graft.api.backend import (
    ClusterAdmin,
    ClusterBackend,
    CommandResult,
    Consistency,
    QueryResult,
)
from graft.api.settings import ApiSettings
from graft.api.site import make_api_app, make_api_resource, make_api_site

__all__ = [
    "AdminBackend",
    "ApiSettings",
    "ClusterAdmin",
    "ClusterBackend",
    "CommandResult",
    "Consistency",
    "GraftApi",
    "QueryResult",
    "make_api_app",
    "make_api_resource",
    "make_api_site",
]
