"""A counter and a histogram for metrics updated on the reactor thread only, once per write.

prometheus_client's ``Counter.inc`` and ``Histogram.observe`` take a lock per update, and the
histogram finds its bucket in a Python loop; at thousands of writes a second on the leader
(a proposal counted, its commit latency observed) that is a share of the CPU each write
costs. These keep plain numbers, updated without a lock (only the reactor thread updates
them, and /metrics reads them there too), and become the same metric families when the
registry is collected. Unlike prometheus_client's own metrics they have no ``_created``
samples.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector


class ReactorCounter(Collector):
    """A counter without labels: ``inc(amount)``."""

    def __init__(self, name: str, documentation: str, *, registry: CollectorRegistry) -> None:
        self._name = name
        self._documentation = documentation
        self.value = 0.0
        registry.register(self)

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("counters only go up")
        self.value += amount

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self._name, self._documentation, value=self.value)

    def describe(self) -> Iterator[Metric]:
        # Names only, so the registry can refuse a duplicate without collecting.
        yield CounterMetricFamily(self._name, self._documentation)


class ReactorHistogram(Collector):
    """A histogram without labels: ``observe(seconds)``; a bound is inclusive (``le``)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._bounds = tuple(float(b) for b in buckets)
        # The ``le`` labels as prometheus_client writes them (repr of the float: "0.001").
        self._labels = (*(repr(b) for b in self._bounds), "+Inf")
        self._counts = [0] * (len(self._bounds) + 1)  # per bucket, not cumulative
        self.sum = 0.0
        registry.register(self)

    def observe(self, amount: float) -> None:
        self._counts[bisect_left(self._bounds, amount)] += 1
        self.sum += amount

    @property
    def count(self) -> int:
        return sum(self._counts)

    def collect(self) -> Iterator[Metric]:
        cumulative = []
        seen = 0
        for label, count in zip(self._labels, self._counts, strict=True):
            seen += count
            cumulative.append((label, float(seen)))
        yield HistogramMetricFamily(
            self._name, self._documentation, buckets=cumulative, sum_value=self.sum
        )

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self._name, self._documentation)
