"""The HTTP API (DESIGN.md section 5): a Klein app over the driver's port
(graft.driver.port: ClusterBackend and ClusterAdmin)."""

from graft.api.admin import AdminBackend
from graft.api.app import GraftApi
from graft.api.settings import ApiSettings
from graft.api.site import make_api_app, make_api_resource, make_api_site

__all__ = [
    "AdminBackend",
    "ApiSettings",
    "GraftApi",
    "make_api_app",
    "make_api_resource",
    "make_api_site",
]
