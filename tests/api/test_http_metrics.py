"""graft.api.http_metrics: plain counts that expose what prometheus_client's own would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from twisted.trial.unittest import SynchronousTestCase

from graft.api.http_metrics import _LATENCY_BUCKETS, http_metrics

# Bounds exactly (a bound is inclusive), between them, past the last, and below zero.
_LATENCIES = (0.0, 0.001, 0.0011, 0.0025, 0.004, 0.7, 10.0, 10.5, 99.0, -0.2)


def _samples(registry: CollectorRegistry) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
    return {
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


class HttpMetricsTests(SynchronousTestCase):
    def test_same_samples_as_prometheus_client(self) -> None:
        """The same requests give the same counter and histogram samples (names, labels and
        values, buckets included) as prometheus_client's Counter and Histogram."""
        ours = CollectorRegistry()
        theirs = CollectorRegistry()
        metrics = http_metrics(ours)
        requests = Counter(
            "graft_http_requests", "x", ["route", "method", "status"], registry=theirs
        )
        latency = Histogram(
            "graft_http_request_seconds", "x", ["route"], buckets=_LATENCY_BUCKETS, registry=theirs
        )
        for i, seconds in enumerate(_LATENCIES):
            route, status = ("command", 200) if i % 3 else ("query", 404)
            metrics.observe(route=route, method="POST", status=status, seconds=seconds)
            requests.labels(route=route, method="POST", status=str(status)).inc()
            latency.labels(route=route).observe(max(0.0, seconds))
        self.assertEqual(_samples(ours), _samples(theirs))
        self.assertEqual(
            ours.get_sample_value(
                "graft_http_request_seconds_bucket", {"route": "command", "le": "0.001"}
            ),
            1.0,  # 0.001 itself; 0.0 went to the query route
        )
