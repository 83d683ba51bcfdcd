"""graft.launcher: the argv of a node process, and the child that refuses an orphaned start."""

from __future__ import annotations

import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from graft.launcher import node_command, run_twist, twist_args


class ArgvTests(SynchronousTestCase):
    def test_twist_args(self) -> None:
        """The arguments after `twist`: explicit text logs, then `graft --config --node`."""
        self.assertEqual(
            twist_args("c.yaml", "n1", log_level="warn", join=True),
            [
                "--log-format=text",
                "--log-level=warn",
                "graft",
                "--config",
                "c.yaml",
                "--node",
                "n1",
                "--join",
            ],
        )

    def test_node_command_names_its_parent(self) -> None:
        """A child tied to this process runs the launcher with --parent and this pid."""
        self.assertEqual(
            node_command("c.yaml", "n1", die_with_parent=True)[:5],
            [sys.executable, "-m", "graft.launcher", "--parent", str(os.getpid())],
        )
        self.assertNotIn("--parent", node_command("c.yaml", "n1"))

    def test_run_twist(self) -> None:
        """run_twist hands twist's runner the arguments as if typed after `twist`."""
        from twisted.application.twist._twist import Twist

        calls: list[list[str]] = []
        self.patch(Twist, "main", calls.append)
        run_twist(["--log-format=text", "graft"])
        self.assertEqual(calls, [["twist", "--log-format=text", "graft"]])


class ParentTests(SynchronousTestCase):
    def test_refuses_to_start_when_parent_is_gone(self) -> None:
        """A child whose parent is not the one named (it died before the child could ask to
        be signalled) exits at once instead of running a node nobody supervises."""
        not_parent = os.getpid() + 1_000_000  # no process has it; surely not the parent
        ran = subprocess.run(
            [sys.executable, "-m", "graft.launcher", "--parent", str(not_parent), "--version"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertNotEqual(ran.returncode, 0, ran.stdout)
        self.assertIn(f"parent {not_parent} is gone", ran.stderr)
