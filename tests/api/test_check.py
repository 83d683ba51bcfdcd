"""GET /cluster/check against a FakeBackend, in memory."""

from __future__ import annotations

from graft.errors import NoLeader
from tests.api.fakes import ADMIN, READER, ApiTestCase, Settings, bearer, tokens


class CheckRouteTests(ApiTestCase):
    def test_answers_the_backends_result(self) -> None:
        answer = self.call("GET", "/cluster/check")
        self.assertEqual(answer.status, 200, answer.body)
        self.assertEqual(self.backend.admin_calls, [("check",)])
        document = answer.json()
        self.assertTrue(document["ok"])
        self.assertEqual(sorted(document["members"]), sorted(self.backend.voters))

    def test_needs_an_admin_token(self) -> None:
        """A check appends to the log and digests the whole state on every member: admin."""
        self.serve(Settings(tokens=tokens(read=READER, admin=ADMIN)))
        answer = self.call("GET", "/cluster/check", headers=bearer(READER))
        self.assertError(answer, 403, "forbidden")
        self.assertEqual(self.backend.admin_calls, [])
        answer = self.call("GET", "/cluster/check", headers=bearer(ADMIN))
        self.assertEqual(answer.status, 200, answer.body)

    def test_no_leader(self) -> None:
        self.backend.admin_failure = NoLeader("no leader is known")
        self.assertError(self.call("GET", "/cluster/check"), 503, "no_leader")

    def test_other_methods(self) -> None:
        self.assertError(self.call("POST", "/cluster/check"), 405, "method_not_allowed")
