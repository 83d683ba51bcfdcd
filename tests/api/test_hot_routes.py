"""The hot routes come from one table (graft.api.app._HOT_ROUTES) that feeds both routers."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from graft.api import app
from graft.api.app import GraftApi
from tests.api.fakes import FakeBackend, Settings


class HotRouteTableTests(SynchronousTestCase):
    def test_each_hot_route_is_in_the_direct_table_and_in_klein(self) -> None:
        """Every (method, path) of the table is looked up directly by ApiRoot, bound to the
        handler the table names, and Klein routes it too (so that a wrong method on the path
        is Klein's 405); the direct table holds nothing else."""
        api = GraftApi(FakeBackend(), Settings(), reactor=Clock())
        root: Any = api.resource()
        klein = api.app.url_map.bind("127.0.0.1")
        expected = set()
        for path, methods, name in app._HOT_ROUTES:
            for method in methods:
                key = (method.encode("ascii"), path.encode("ascii"))
                expected.add(key)
                self.assertEqual(root._routes[key], getattr(api, name))
                endpoint, _ = klein.match(path, method=method)
                self.assertEqual(endpoint.removesuffix("_slash"), name)
        self.assertEqual(set(root._routes), expected)
