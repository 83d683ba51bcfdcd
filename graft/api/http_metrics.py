"""Prometheus metrics of the HTTP layer, registered once per registry (the node owns it)."""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpMetrics:
    requests: Counter  # labels: route, method, status
    latency: Histogram  # labels: route

    children: dict[tuple[str, str, int], tuple[Any, Any]] = field(default_factory=dict)

    def observe(self, *, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        found = self.children.get(key)
        if found is None:  # labels() is a locked dict lookup: do it once per label set
            found = self.children[key] = (
                self.requests.labels(route=route, method=method, status=str(status)),
                self.latency.labels(route=route),
            )
        found[0].inc()
        found[1].observe(max(0.0, seconds))


_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, HttpMetrics] = (
    weakref.WeakKeyDictionary()
)


def http_metrics(registry: CollectorRegistry) -> HttpMetrics:
    """The registry's HTTP metrics, created on first use: registering the same names twice in
    one registry is an error, and two sites may share a node's registry (e.g. in tests)."""
    found = _by_registry.get(registry)
    if found is None:
        found = HttpMetrics(
            requests=Counter(
                "graft_http_requests",
                "HTTP API requests answered, by route, method and status.",
                ["route", "method", "status"],
                registry=registry,
            ),
            latency=Histogram(
                "graft_http_request_seconds",
                "Time from routing an HTTP API request to finishing its response.",
                ["route"],
                buckets=_LATENCY_BUCKETS,
                registry=registry,
            ),
        )
        _by_registry[registry] = found
    return found
