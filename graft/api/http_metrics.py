"""Prometheus metrics of the HTTP layer, registered once per registry (the node owns it).

Every request adds one to a counter and one latency to a histogram. prometheus_client's
Counter and Histogram take a lock per update and the histogram walks its buckets in Python;
at thousands of requests a second that was a measurable share of the leader's CPU. The
counts here are plain integers in dicts, updated on the reactor thread (the only thread that
answers requests), and turned into the same metric families (``graft_http_requests_total``
by route, method and status; ``graft_http_request_seconds`` by route) when the registry is
collected, which /metrics also does on the reactor thread. Unlike prometheus_client's own
metrics, these have no ``_created`` samples.
"""

from __future__ import annotations

import weakref
from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# The ``le`` labels as prometheus_client writes them (repr of the float: "0.001", "1.0").
_BUCKET_LABELS = (*(repr(b) for b in _LATENCY_BUCKETS), "+Inf")


class HttpMetrics(Collector):
    """Request counts by (route, method, status) and latencies by route."""

    def __init__(self) -> None:
        self._requests: dict[tuple[str, str, int], int] = {}
        # route -> per-bucket counts (not cumulative; the last one is over every bound)
        self._buckets: dict[str, list[int]] = {}
        self._sums: dict[str, float] = {}

    def observe(self, *, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        requests = self._requests
        requests[key] = requests.get(key, 0) + 1
        buckets = self._buckets.get(route)
        if buckets is None:
            buckets = self._buckets[route] = [0] * len(_BUCKET_LABELS)
            self._sums[route] = 0.0
        if seconds < 0.0:
            seconds = 0.0
        # A bucket's bound is inclusive (le): the first bound >= seconds.
        buckets[bisect_left(_LATENCY_BUCKETS, seconds)] += 1
        self._sums[route] += seconds

    def collect(self) -> Iterator[Metric]:
        yield self.requests_family()
        yield self.latency_family()

    def requests_family(self) -> CounterMetricFamily:
        requests = CounterMetricFamily(
            "graft_http_requests",
            "HTTP API requests answered, by route, method and status.",
            labels=["route", "method", "status"],
        )
        for (route, method, status), count in list(self._requests.items()):
            requests.add_metric([route, method, str(status)], count)
        return requests

    def latency_family(self) -> HistogramMetricFamily:
        latency = HistogramMetricFamily(
            "graft_http_request_seconds",
            "Time from routing an HTTP API request to finishing its response.",
            labels=["route"],
        )
        for route, counts in list(self._buckets.items()):
            cumulative = []
            seen = 0
            for label, count in zip(_BUCKET_LABELS, counts, strict=True):
                seen += count
                cumulative.append((label, float(seen)))
            latency.add_metric([route], cumulative, self._sums[route])
        return latency


_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, HttpMetrics] = (
    weakref.WeakKeyDictionary()
)


def http_metrics(registry: CollectorRegistry) -> HttpMetrics:
    """The registry's HTTP metrics, created on first use: registering the same names twice in
    one registry is an error, and two sites may share a node's registry (e.g. in tests)."""
    found = _by_registry.get(registry)
    if found is None:
        found = HttpMetrics()
        registry.register(found)
        _by_registry[registry] = found
    return found
