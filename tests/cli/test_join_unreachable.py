"""`graft start --join`: the leader's member_unreachable (the node was added as a learner the
leader cannot reach yet) is not a refusal; the node is started and the message shown."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SkipTest

from graft.cli import join
from graft.cli import node as node_commands
from tests.support.http_node import error_reply, start_fake_node
from tests.test_cli import CLITestCase, run, write_join_config

MESSAGE = (
    "delta was added as a learner; the leader alpha cannot reach it at 127.0.0.1:19083 "
    "(connection refused); it is promoted once it is running and caught up"
)


class JoinUnreachableTests(CLITestCase):
    def setUp(self) -> None:
        try:
            from graft.certs import generate_certificates
        except ImportError as e:
            raise SkipTest(f"graft.certs is not available: {e}") from None
        from graft.config import load_config

        self.path = write_join_config(self.tmpdir())
        generate_certificates(load_config(self.path))
        self.started: list[Any] = []
        self.patch(node_commands, "run_twist", self.started.append)
        self.patch(join, "JOIN_REFUSAL_WINDOW_S", 5.0)

    def test_unreachable_learner_is_started_not_refused(self) -> None:
        """An early member_unreachable starts the node (it is what the leader waits for) and
        shows the leader's words as a warning, not as "failed"."""
        node = start_fake_node(self, error_reply(409, "member_unreachable", MESSAGE))
        result = run(["start", "delta", "-c", str(self.path), "--join", node.url])
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertEqual(len(self.started), 1)
        self.assertIn("delta was added as a learner", result.stderr)
        self.assertNotIn("failed", result.stderr)
        self.assertNotIn("was not started", result.stderr)
