"""ReactorCounter and ReactorHistogram expose what prometheus_client's Counter and Histogram
would for the same updates (less the ``_created`` samples)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from twisted.trial.unittest import SynchronousTestCase

from graft.reactor_metrics import ReactorCounter, ReactorHistogram

BUCKETS = (0.0005, 0.001, 0.0025, 5.0)


def exposition(registry: CollectorRegistry) -> list[str]:
    """The text format's lines, without the ``_created`` ones."""
    return [
        line for line in generate_latest(registry).decode().splitlines() if "_created" not in line
    ]


class ReactorMetricsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.theirs = CollectorRegistry()
        self.ours = CollectorRegistry()

    def test_counter_same_as_prometheus_client(self) -> None:
        theirs = Counter("graft_things", "Things.", registry=self.theirs)
        ours = ReactorCounter("graft_things", "Things.", registry=self.ours)
        for amount in (1, 3, 0.5):
            theirs.inc(amount)
            ours.inc(amount)
        self.assertEqual(exposition(self.ours), exposition(self.theirs))
        self.assertIn("graft_things_total 4.5", exposition(self.ours))

    def test_counter_refuses_to_go_down(self) -> None:
        ours = ReactorCounter("graft_things", "Things.", registry=self.ours)
        self.assertRaises(ValueError, ours.inc, -1)
        self.assertEqual(ours.value, 0)

    def test_histogram_same_as_prometheus_client(self) -> None:
        """Bounds are inclusive (a value on a bound counts in that bucket), above the last
        bound is +Inf; buckets are cumulative, with the count and the sum."""
        theirs = Histogram("graft_wait_seconds", "Waits.", buckets=BUCKETS, registry=self.theirs)
        ours = ReactorHistogram("graft_wait_seconds", "Waits.", buckets=BUCKETS, registry=self.ours)
        for seconds in (0.0001, 0.0005, 0.001, 0.002, 7.0, 5.0, 0.0):
            theirs.observe(seconds)
            ours.observe(seconds)
        self.assertEqual(exposition(self.ours), exposition(self.theirs))
        self.assertIn('graft_wait_seconds_bucket{le="0.0005"} 3.0', exposition(self.ours))
        self.assertEqual(ours.count, 7)

    def test_names_are_registered(self) -> None:
        """Registering the same name twice in a registry is refused, as for any metric."""
        ReactorCounter("graft_things", "Things.", registry=self.ours)
        self.assertRaises(ValueError, ReactorCounter, "graft_things", "Again.", registry=self.ours)
        self.assertEqual(self.ours.get_sample_value("graft_things_total"), 0.0)
