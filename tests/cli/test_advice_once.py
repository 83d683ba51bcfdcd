"""One line of error gives each piece of advice once: a command's timeout says once that the
outcome is unknown, whoever (node or client) said it first; no_leader after retrying says
once to check graft status."""

from __future__ import annotations

import socket

from click.testing import Result

from tests.support.http_node import error_reply, start_fake_node
from tests.test_cli import CLITestCase, run

NODE_TIMEOUT = (
    "the command was not applied in time; its outcome is unknown: it may still commit. "
    "Check with a query before retrying a non-idempotent command"
)


class AdviceOnceTests(CLITestCase):
    def assertSaidOnce(self, result: Result, *phrases: str) -> None:
        line = self.assertOneLineError(result)
        for phrase in phrases:
            self.assertEqual(line.lower().count(phrase.lower()), 1, f"{phrase!r} in {line}")

    def test_node_timeout_of_a_command(self) -> None:
        """A node's 504 timeout already warns the command may be applied: not again."""
        node = start_fake_node(self, error_reply(504, "timeout", NODE_TIMEOUT))
        result = run(["command", "--url", node.url, "x"])
        self.assertSaidOnce(result, "check with a query", "may still")

    def test_client_timeout_of_a_command(self) -> None:
        """The client's own timeout (no answer in time) warns once too (without a session:
        with one, the command would not have been sent)."""
        # A listening socket nobody accepts from: the connection is made, no answer comes.
        silent = socket.socket()
        self.addCleanup(silent.close)
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        result = run(["command", "--url", url, "--no-session", "--timeout", "0.3", "x"])
        self.assertSaidOnce(result, "outcome is unknown")
        self.assertNotIn("may still be applied", result.stderr)

    def test_no_leader_after_retrying(self) -> None:
        """The node's "retry shortly" is dropped and `graft status` named once."""
        node = start_fake_node(
            self,
            error_reply(
                503, "no_leader", "no leader is known: an election is under way; retry shortly"
            ),
        )
        # Long enough for the first answer to arrive on a loaded machine: the 503 comes at
        # once, and the client retries it until the timeout.
        result = run(["command", "--url", node.url, "--timeout", "3", "x"])
        self.assertSaidOnce(result, "graft status", "retry")
