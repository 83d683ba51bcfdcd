"""A write refused for space: 507 no_space on /command and /commands; reads unaffected."""

from __future__ import annotations

from graft.errors import NoSpace
from tests.api.fakes import ApiTestCase


class NoSpaceTests(ApiTestCase):
    def test_command_and_batch_are_507_no_space(self) -> None:
        self.backend.failure = NoSpace("node n1: its data dir is over its space quota")
        for path, body in (("/command", b"x"), ("/commands", b'["x", "y"]')):
            answer = self.call("POST", path, data=body)
            detail = self.assertError(answer, 507, "no_space")
            self.assertIn("space quota", detail["message"])
