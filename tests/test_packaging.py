"""Packaging: the built wheel carries the twist plugin, and twist finds it there.

A flat layout's editable install can hide the plugin from twist (DESIGN.md section 1), so the
test builds a real wheel, unpacks it, and asks Twisted's plugin system from a Python that sees
only the unpacked wheel and the virtualenv's site-packages (no editable-install .pth files).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.trial import unittest

REPO = Path(__file__).resolve().parents[1]
IGNORED = shutil.ignore_patterns("__pycache__", "dropin.cache")
PIP_WHEEL = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]


class PluginTests(unittest.TestCase):
    def test_plugin_discovered_in_development_tree(self) -> None:
        """twist's plugin lookup finds `graft` and points it at graft.tap."""
        makers = {p.tapname: p for p in getPlugins(IServiceMaker)}
        self.assertIn("graft", makers)
        self.assertEqual(makers["graft"].module, "graft.tap")

    def test_wheel_installs_discoverable_plugin(self) -> None:
        """A wheel built from the tree holds twisted/plugins/graft_plugin.py and no
        twisted/plugins/__init__.py, and `twist --help` run against it lists graft."""
        out = Path(self.mktemp()).resolve()
        # Built from a copy of what the wheel is made of: a stale build/ directory in the tree
        # would carry modules that have since moved or gone into the wheel.
        source = out / "source"
        for name in ("pyproject.toml", "README.md"):
            source.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / name, source / name)
        for name in ("graft", "twisted"):
            shutil.copytree(REPO / name, source / name, ignore=IGNORED)
        subprocess.run(
            [*PIP_WHEEL, "-w", str(out), str(source)],
            check=True,
            capture_output=True,
        )
        wheel = next(out.glob("graft-*.whl"))
        names = set(zipfile.ZipFile(wheel).namelist())
        self.assertIn("twisted/plugins/graft_plugin.py", names)
        self.assertNotIn("twisted/plugins/__init__.py", names)
        self.assertNotIn("twisted/__init__.py", names)
        self.assertIn("graft/raft/node.py", names)
        # The web console's files are package data of graft.api (graft.api.console reads them).
        for name in ("index.html", "console.js", "console.css"):
            self.assertIn(f"graft/api/console/{name}", names)
        # The harnesses (graft.testing: simulation, fault suite, test clusters) stay out of it.
        self.assertEqual([n for n in names if n.startswith("graft/testing/")], [])

        unpacked = out / "site"
        zipfile.ZipFile(wheel).extractall(unpacked)
        site_packages = sysconfig.get_paths()["purelib"]
        # -S: no site module, so the editable install's .pth cannot put the tree on sys.path.
        probe = subprocess.run(
            [sys.executable, "-S", "-m", "twisted", "--help"],
            env={"PYTHONPATH": f"{unpacked}:{site_packages}", "PATH": "/usr/bin:/bin"},
            cwd=out,
            capture_output=True,
            text=True,
        )
        self.assertIn("graft", probe.stdout, probe.stderr)
        where = subprocess.run(
            [sys.executable, "-S", "-c", "import graft; print(graft.__file__)"],
            env={"PYTHONPATH": f"{unpacked}:{site_packages}"},
            cwd=out,
            capture_output=True,
            text=True,
            check=True,
        )
        self.assertTrue(where.stdout.strip().startswith(str(unpacked)), where.stdout)
