"""GET|POST /query against a FakeBackend, in memory."""

from __future__ import annotations

from graft.api.backend import Consistency, QueryResult
from graft.errors import BadRequest, NoLeader, Timeout
from tests.api.fakes import ApiTestCase, FakeBackend, QueryCall, Settings


class QueryTests(ApiTestCase):
    def test_seed_curl_shape(self) -> None:
        """The seed's `curl -X GET -H 'Content-Type: text/plain' --data "SELECT * FROM users;"
        .../query/` runs the body as a default-consistency query and answers the FSM output."""
        answer = self.call(
            "GET",
            "/query/",
            data=b"SELECT * FROM users;",
            headers={"Content-Type": "text/plain"},
        )
        self.assertEqual(answer.status, 200)
        self.assertEqual(answer.body, self.backend.query_output)
        self.assertEqual(answer.header("Content-Type"), "application/json")
        self.assertEqual(answer.header("Graft-Index"), "9")
        self.assertEqual(answer.header("Graft-Leader"), "turing")
        self.assertEqual(
            self.backend.queries,
            [
                QueryCall(
                    query=b"SELECT * FROM users;",
                    consistency=Consistency.DEFAULT,
                    min_index=None,
                    max_lag_ms=None,
                )
            ],
        )

    def test_form_encoded_body_is_the_query(self) -> None:
        """curl's default form content type on a POST does not turn the SQL into parameters."""
        answer = self.call(
            "POST",
            "/query?consistency=weak",
            data=b"SELECT 1 WHERE 'a'='a'&x=1",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        self.assertEqual(answer.status, 200)
        self.assertEqual(self.backend.queries[0].query, b"SELECT 1 WHERE 'a'='a'&x=1")
        self.assertEqual(self.backend.queries[0].consistency, Consistency.WEAK)

    def test_query_parameter(self) -> None:
        """?q= carries the query (percent-decoded as UTF-8) on GET /query without a body."""
        self.call("GET", "/query?q=SELECT%20%27%C3%A9%27")
        self.assertEqual(self.backend.queries[0].query, "SELECT 'é'".encode())

    def test_parameters_reach_backend(self) -> None:
        """consistency, min_index and max_lag_ms are parsed and passed through."""
        for name, consistency in (
            ("default", Consistency.DEFAULT),
            ("strong", Consistency.STRONG),
            ("WEAK", Consistency.WEAK),
        ):
            self.call("POST", f"/query?consistency={name}&min_index=42&max_lag_ms=250", data=b"q")
            self.assertEqual(
                self.backend.queries[-1],
                QueryCall(query=b"q", consistency=consistency, min_index=42, max_lag_ms=250),
            )

    def test_invalid_parameters(self) -> None:
        """Unknown consistency, non-numeric or negative min_index/max_lag_ms, a repeated
        parameter, an empty query and a query in both places are each 400, and the backend is
        not asked."""
        paths = [
            "/query?consistency=linearizable",
            "/query?min_index=abc",
            "/query?min_index=-1",
            "/query?min_index=1.5",
            "/query?max_lag_ms=soon",
            "/query?consistency=weak&consistency=strong",
            "/query?redirect=perhaps",
        ]
        for path in paths:
            answer = self.call("GET", path, data=b"SELECT 1")
            self.assertError(answer, 400, "bad_request")
        self.assertError(self.call("GET", "/query"), 400, "bad_request")
        self.assertError(self.call("GET", "/query", data=b"  \n"), 400, "bad_request")
        self.assertError(self.call("GET", "/query?q=a", data=b"b"), 400, "bad_request")
        self.assertEqual(self.backend.queries, [])

    def test_unknown_consistency_message_lists_choices(self) -> None:
        """The 400 for a bad consistency says which values exist."""
        detail = self.assertError(self.call("GET", "/query?consistency=x&q=1"), 400, "bad_request")
        self.assertIn("default|strong|weak", detail["message"])

    def test_fsm_refusal_is_bad_request(self) -> None:
        """BadRequest from the backend (e.g. a write statement as a query) is 400."""
        self.backend.failure = BadRequest("queries are read-only: send writes to /command")
        detail = self.assertError(self.call("GET", "/query?q=DELETE"), 400, "bad_request")
        self.assertEqual(detail["message"], "queries are read-only: send writes to /command")

    def test_no_leader(self) -> None:
        """NoLeader from the backend is 503 no_leader with Retry-After."""
        self.backend.failure = NoLeader("no leader", retry_after=2.5)
        answer = self.call("GET", "/query?q=1&consistency=strong")
        self.assertError(answer, 503, "no_leader")
        self.assertEqual(answer.header("Retry-After"), "3")

    def test_backend_timeout(self) -> None:
        """Timeout from the backend is 504 timeout."""
        self.backend.failure = Timeout("read index not confirmed: retry")
        self.assertError(self.call("GET", "/query?q=1"), 504, "timeout")

    def test_api_deadline(self) -> None:
        """A query not answered within query_timeout_ms is 504 timeout."""
        self.serve(Settings(query_timeout_ms=300))
        self.backend.hold_queries = True
        pending = self.start("GET", "/query?q=1&min_index=1000")
        self.clock.advance(0.29)
        self.assertNoResult(pending)
        self.clock.advance(0.02)
        self.assertError(self.finish(pending), 504, "timeout")

    def test_held_query_answers(self) -> None:
        """A query answered later is relayed with the applied index and no leader header when
        the backend knows none."""
        self.backend.hold_queries = True
        pending = self.start("GET", "/query?q=1")
        self.assertNoResult(pending)
        (held,) = self.backend.pending_queries
        held.callback(QueryResult(output=b"[]", applied_index=77, leader=None))
        answer = self.finish(pending)
        self.assertEqual((answer.status, answer.body), (200, b"[]"))
        self.assertEqual(answer.header("Graft-Index"), "77")
        self.assertIsNone(answer.header("Graft-Leader"))


class QueryRedirectTests(ApiTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.backend = FakeBackend(node_id="turing", leader="ritchie")
        self.serve(Settings())

    def test_default_query_redirects(self) -> None:
        """A default-consistency query with ?redirect=true on a follower is a 307 to the
        leader."""
        answer = self.call("GET", "/query/?redirect=true&q=1", allow_redirects=False)
        self.assertEqual(answer.status, 307)
        self.assertEqual(
            answer.header("Location"), "http://127.0.0.1:8081/query/?redirect=true&q=1"
        )
        self.assertEqual(self.backend.queries, [])

    def test_strong_and_weak_are_served_here(self) -> None:
        """strong and weak queries are served by the node asked, even with ?redirect=true."""
        for consistency in ("strong", "weak"):
            answer = self.call("GET", f"/query?redirect=true&q=1&consistency={consistency}")
            self.assertEqual(answer.status, 200)
        self.assertEqual(len(self.backend.queries), 2)
