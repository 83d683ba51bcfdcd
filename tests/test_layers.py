"""The import rules between layers (tests/layers.py): the tree keeps them, and each rule
catches a module planted to break it."""

from __future__ import annotations

from pathlib import Path

from twisted.trial import unittest

from tests import layers


class LayerRuleTests(unittest.SynchronousTestCase):
    def plant(self, files: dict[str, str]) -> list[str]:
        """The broken rules of a tree holding ``files`` (path under the root -> source)."""
        root = Path(self.mktemp())
        for name, source in files.items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(source)
        return layers.violations(root)

    def test_tree_keeps_the_rules(self) -> None:
        """No module under graft/ breaks a rule today."""
        self.assertEqual(layers.violations(), [])

    def test_core_imports_only_the_core(self) -> None:
        """The core may import graft.raft and the standard library, nothing else of Graft,
        however the import is written (absolute, relative, inside a function)."""
        found = self.plant(
            {
                "graft/raft/__init__.py": "",
                "graft/raft/good.py": "from graft.raft import log\nimport graft.raft.types\n"
                "from . import memory\nimport hashlib\n",
                "graft/raft/bad.py": "from graft.node import GraftNode\n"
                "from .. import errors\n"
                "def f():\n    from graft import metrics\n",
            }
        )
        self.assertEqual(
            [line.split(" (")[0] for line in found],
            [
                "graft/raft/bad.py:1: graft.raft.bad imports graft.node.GraftNode",
                "graft/raft/bad.py:2: graft.raft.bad imports graft.errors",
                "graft/raft/bad.py:4: graft.raft.bad imports graft.metrics",
            ],
        )

    def test_core_has_no_twisted_clock_socket_os_or_global_random(self) -> None:
        found = self.plant(
            {
                "graft/raft/io.py": "import os.path\nfrom socket import socket\n"
                "from twisted.internet import reactor\nimport time\nfrom random import random\n"
                "import timeit\n",
            }
        )
        imported = [line.split(" imports ")[1].split(" (")[0] for line in found]
        self.assertEqual(
            imported,
            ["os.path", "socket.socket", "twisted.internet.reactor", "time", "random.random"],
        )

    def test_api_reaches_storage_and_transport_only_through_the_driver(self) -> None:
        found = self.plant(
            {
                "graft/api/routes.py": "from graft.storage.log import FileLog\n"
                "import graft.transport\nfrom graft import storage\nfrom graft.node import X\n",
                "graft/node.py": "from graft.storage.log import FileLog\n",
            }
        )
        self.assertEqual(
            [line.split(": ")[0] for line in found],
            ["graft/api/routes.py:1", "graft/api/routes.py:2", "graft/api/routes.py:3"],
        )

    def test_product_never_imports_a_harness(self) -> None:
        """Any module outside graft.testing that imports graft.testing breaks the rule; the
        harnesses import each other freely."""
        found = self.plant(
            {
                "graft/service.py": "from graft.testing.faults import disk\n",
                "graft/cli/__init__.py": "from ..testing import cluster\n",
                "graft/testing/faults/run.py": "from graft.testing.faults import disk\n",
                "graft/testing/__init__.py": "from . import cluster\n",
            }
        )
        self.assertEqual(
            [line.split(" (")[0] for line in found],
            [
                "graft/cli/__init__.py:1: graft.cli imports graft.testing.cluster",
                "graft/service.py:1: graft.service imports graft.testing.faults.disk",
            ],
        )

    def test_client_uses_only_the_standard_library(self) -> None:
        """The client modules may import each other, graft.sql_form and the standard library;
        Twisted or a node-side layer breaks the rule. graft.client_xyz is not graft.client."""
        found = self.plant(
            {
                "graft/client.py": "from graft.client_requests import RequestLoop\n"
                "from graft.sql_form import sql_request\nimport json\n",
                "graft/client_requests.py": "from twisted.internet import reactor\n",
                "graft/client_errors.py": "from graft.errors import GraftError\n",
                "graft/client_sessions.py": "import klein\nfrom graft.client import X\n",
            }
        )
        self.assertEqual(
            [line.split(" (")[0] for line in found],
            [
                "graft/client_errors.py:1: graft.client_errors imports graft.errors.GraftError",
                "graft/client_requests.py:1: graft.client_requests imports "
                "twisted.internet.reactor",
                "graft/client_sessions.py:1: graft.client_sessions imports klein",
            ],
        )
