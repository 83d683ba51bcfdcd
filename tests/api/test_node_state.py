"""/status, /health, /ready, /metrics, and what happens off the routes, in memory."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from graft.api import make_api_resource
from graft.api.http_metrics import http_metrics
from graft.api.views import status_document
from tests.api.fakes import ApiTestCase, Settings


class NodeStateTests(ApiTestCase):
    def test_status(self) -> None:
        """GET /status is the backend's status rendered as JSON (graft.api.views)."""
        self.backend.apply_lag = 2
        answer = self.call("GET", "/status")
        self.assertEqual(answer.status, 200)
        self.assertEqual(answer.json(), status_document(self.backend.status()))
        self.assertEqual(answer.json()["applied"], answer.json()["commit"] - 2)
        self.assertEqual(answer.json()["progress"]["ritchie"]["state"], "replicate")

    def test_status_failure_is_internal(self) -> None:
        """A status document that cannot be produced is 500 internal, logged."""
        self.backend.failure = KeyError("commit")
        self.assertError(self.call("GET", "/status"), 500, "internal")
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_health(self) -> None:
        """GET /health is 200 {"status": "ok"} whatever the cluster's state."""
        self.backend.leader = None
        self.backend.apply_lag = 1
        answer = self.call("GET", "/health")
        self.assertEqual((answer.status, answer.json()), (200, {"status": "ok"}))

    def test_ready(self) -> None:
        """GET /ready is 200 when the backend is ready, 503 with Retry-After when not."""
        answer = self.call("GET", "/ready")
        self.assertEqual(answer.status, 200)
        self.assertEqual(answer.json(), {"ready": True, "node": "turing", "leader": "turing"})
        self.backend.leader = None
        answer = self.call("GET", "/ready")
        self.assertEqual(answer.status, 503)
        self.assertEqual(answer.json(), {"ready": False, "node": "turing", "leader": None})
        self.assertEqual(answer.header("Retry-After"), "1")
        self.backend.leader = "turing"
        self.backend.apply_lag = 1  # a leader is known, but this node has not caught up
        answer = self.call("GET", "/ready")
        self.assertEqual(answer.status, 503)
        self.assertEqual(answer.json(), {"ready": False, "node": "turing", "leader": "turing"})

    def test_metrics(self) -> None:
        """GET /metrics is the backend registry in Prometheus text format, including the HTTP
        layer's own request counter and latency histogram."""
        self.call("POST", "/command", data=b"x")
        self.call("GET", "/nowhere")
        answer = self.call("GET", "/metrics")
        self.assertEqual(answer.status, 200)
        self.assertTrue(str(answer.header("Content-Type")).startswith("text/plain; version="))
        families = {f.name: f for f in text_string_to_metric_families(answer.body.decode())}
        counts = {
            (s.labels["route"], s.labels["method"], s.labels["status"]): s.value
            for s in families["graft_http_requests"].samples
            if s.name == "graft_http_requests_total"
        }
        self.assertEqual(
            counts, {("command", "POST", "200"): 1.0, ("unmatched", "GET", "404"): 1.0}
        )
        self.assertIn("graft_http_request_seconds", families)

    def test_latency_is_measured_on_the_reactor_clock(self) -> None:
        """The latency histogram records the time from routing to the finished response."""
        self.backend.hold_commands = True
        pending = self.start("POST", "/command", data=b"x")
        self.clock.advance(0.7)
        (held,) = self.backend.pending_commands
        held.callback(self.backend.results_for([b"x"]))
        self.finish(pending)
        total = self.backend.metrics.get_sample_value(
            "graft_http_request_seconds_sum", {"route": "command"}
        )
        self.assertAlmostEqual(total, 0.7)

    def test_metrics_shared_by_two_apps(self) -> None:
        """Two APIs over one registry share its HTTP metrics instead of failing to register
        them twice."""
        make_api_resource(self.backend, Settings(), reactor=self.clock)
        self.assertIs(http_metrics(self.backend.metrics), http_metrics(self.backend.metrics))
        self.assertIsNot(http_metrics(CollectorRegistry()), http_metrics(self.backend.metrics))


class RoutingTests(ApiTestCase):
    def test_unknown_route(self) -> None:
        """An unknown path is 404 not_found in the JSON error model."""
        for path in ("/nowhere", "/cluster/nodes", "/commands/", "/status/x"):
            answer = self.call("GET", path)
            self.assertError(answer, 404, "not_found")
            self.assertEqual(answer.length, len(answer.body))

    def test_wrong_method(self) -> None:
        """A known path with a wrong method is 405 method_not_allowed with an Allow header,
        and nothing reaches the backend."""
        cases = [
            ("GET", "/command", "POST"),
            ("DELETE", "/commands", "POST"),
            ("PUT", "/query", "GET, HEAD, POST"),
            ("POST", "/status", "GET, HEAD"),
            ("POST", "/health", "GET, HEAD"),
        ]
        for method, path, allowed in cases:
            answer = self.call(method, path, data=b"x")
            self.assertError(answer, 405, "method_not_allowed")
            self.assertEqual(answer.header("Allow"), allowed)
        self.assertEqual((self.backend.submitted, self.backend.queries), ([], []))

    def test_head_health(self) -> None:
        """HEAD works wherever GET does (load balancers probe with it)."""
        answer = self.call("HEAD", "/health")
        self.assertEqual((answer.status, answer.body), (200, b""))
