"""GET|POST /query against a FakeBackend, in memory."""

from __future__ import annotations

from graft.api.serving import QUERY_GRACE_S
from graft.driver.port import Consistency, QueryResult
from graft.errors import BadRequest, NoLeader, QueryTimeout, Timeout
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
        """A query not answered within query_timeout_ms (plus the grace that lets the node
        report its own query_timeout first) is 504 timeout."""
        self.serve(Settings(query_timeout_ms=300))
        self.backend.hold_queries = True
        pending = self.start("GET", "/query?q=1&min_index=1000")
        self.clock.advance(0.29 + QUERY_GRACE_S)
        self.assertNoResult(pending)
        self.clock.advance(0.02)
        self.assertError(self.finish(pending), 504, "timeout")

    def test_api_deadline_follows_the_timeout_parameter(self) -> None:
        """With ?timeout=, the API waits that long (plus the grace) instead of the default."""
        self.serve(Settings(query_timeout_ms=300))
        self.backend.hold_queries = True
        pending = self.start("GET", "/query?q=1&timeout=2s")
        self.clock.advance(1.99 + QUERY_GRACE_S)
        self.assertNoResult(pending)
        self.clock.advance(0.02)
        detail = self.assertError(self.finish(pending), 504, "timeout")
        self.assertIn("2000 ms", detail["message"])

    def test_query_stopped_at_its_limit(self) -> None:
        """QueryTimeout from the backend (the FSM stopped the query) is 504 query_timeout with
        the node's message."""
        self.backend.failure = QueryTimeout("the query was stopped at its time limit of 5 s")
        detail = self.assertError(self.call("GET", "/query?q=1"), 504, "query_timeout")
        self.assertEqual(detail["message"], "the query was stopped at its time limit of 5 s")

    def test_timeout_parameter_reaches_backend(self) -> None:
        """?timeout= is a duration with a unit, passed to the backend in seconds; without it
        the backend is left to its default."""
        self.serve(Settings(max_query_timeout_ms=180_000))
        for value, seconds in (
            ("500ms", 0.5),
            ("10s", 10.0),
            ("1.5s", 1.5),
            ("2m", 120.0),
            ("180000ms", 180.0),
            ("3M", 180.0),
        ):
            answer = self.call("GET", f"/query?q=1&timeout={value}")
            self.assertEqual(answer.status, 200, answer.body)
            self.assertEqual(self.backend.queries[-1].timeout, seconds, value)
        self.call("GET", "/query?q=1")
        self.assertIsNone(self.backend.queries[-1].timeout)

    def test_invalid_timeout_parameter(self) -> None:
        """A timeout that is not a positive duration with a unit, or is above
        api.max_query_timeout_ms, is 400 and the backend is not asked."""
        for value in (
            "",
            "5",
            "abc",
            "0s",
            "0.000s",
            "-1s",
            "1h",
            "1e3s",
            "inf",
            "nan",
            "%D9%A3s",  # an Arabic-Indic digit
            "1" * 5000 + "s",
            "1.5.5s",
        ):
            detail = self.assertError(
                self.call("GET", f"/query?q=1&timeout={value}"), 400, "bad_request"
            )
            self.assertIn("timeout", detail["message"])
            self.assertLess(len(detail["message"]), 300)
        detail = self.assertError(self.call("GET", "/query?q=1&timeout=61s"), 400, "bad_request")
        self.assertIn("api.max_query_timeout_ms", detail["message"])
        self.assertIn("60000 ms", detail["message"])
        self.assertEqual(self.backend.queries, [])

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
