"""The simulation's clock model (drift, late ticks, stalls) and the planted wall-clock bug."""

from __future__ import annotations

from random import Random

from twisted.trial import unittest

from graft.raft.messages import Heartbeat
from graft.testing.simulation.checker import Violation
from graft.testing.simulation.clocks import ClockModel
from graft.testing.simulation.cluster import Cluster
from graft.testing.simulation.network import InFlight
from graft.testing.simulation.run import simulate_seed

IDS = ["n1", "n2", "n3"]


class ClockModelTests(unittest.SynchronousTestCase):
    def cluster(self, rates: dict[str, float], **kw: float) -> Cluster:
        c = Cluster(IDS, Random, seed=1)
        c.clocks = ClockModel(Random(1), rates, **kw)  # type: ignore[arg-type]
        return c

    def test_a_slow_clock_ticks_less(self) -> None:
        """A clock at 0.9 ticks per step runs 9 ticks in 10 steps; at 1.0, 10."""
        c = self.cluster({"n1": 0.9, "n2": 1.0, "n3": 1.0})
        for _ in range(10):
            c.tick()
        assert c.clocks is not None
        self.assertEqual(c.clocks.done["n1"], 9)
        self.assertEqual(c.clocks.done["n2"], 10)

    def test_stall_holds_messages_then_ticks_catch_up_first(self) -> None:
        """A stalled node runs no ticks and handles nothing; when it wakes, its ticks catch up
        before the messages that waited are handled."""
        c = self.cluster({n: 1.0 for n in IDS})
        clocks = c.clocks
        assert clocks is not None
        c.elect("n1")
        clocks.stalled_until["n2"] = c.now + 5
        before = c.node("n2")._ticks
        c.deliver(
            InFlight(
                due=c.now,
                order=0,
                msg=Heartbeat(term=c.node("n1").term, sender="n1", to="n2", commit=0, seq=99),
            )
        )
        self.assertEqual(len(clocks.held["n2"]), 1)
        for _ in range(4):
            c.tick()
        self.assertEqual(c.node("n2")._ticks, before)
        c.tick()
        self.assertEqual(c.node("n2")._ticks, before + 5)
        self.assertNotIn("n2", clocks.held)
        # The heartbeat was handled after the ticks: n2 counts none since it.
        self.assertEqual(c.node("n2")._election_elapsed, 0)

    def test_frozen_ticks_break_the_lease(self) -> None:
        """The checker catches the wall-clock driver's bug: a leader whose ticks stop (its wall
        clock stepped back) while it is cut off serves a lease read the new leader's commit
        has made stale."""
        c = self.cluster({n: 1.0 for n in IDS})
        assert c.clocks is not None
        c.lease_probe = True
        c.elect("n1")
        c.run(3)
        self.assertIsNotNone(c.node("n1").lease_read_index())
        c.clocks.frozen_until["n1"] = c.now + 40
        c.isolate("n1")
        with self.assertRaises(Violation) as caught:
            for _ in range(35):
                c.tick()
                c.deliver_due()
        self.assertIn("lease read on n1", str(caught.exception))

    def test_same_schedule_with_true_ticks_is_clean(self) -> None:
        """The same cut-off leader whose ticks keep time gives up its lease in time."""
        c = self.cluster({"n1": 0.9, "n2": 1.0, "n3": 1.0})
        c.lease_probe = True
        c.elect("n1")
        c.run(3)
        c.isolate("n1")
        for _ in range(35):
            c.tick()
            c.deliver_due()
        self.assertGreater(c.checker.known_commit, c.node("n1").log.committed)


class PlantedBugTests(unittest.SynchronousTestCase):
    def test_random_schedules_catch_the_wall_clock_driver(self) -> None:
        """`simulate_seed(74, Random, plant="wall_clock")`: ticks that follow wall-clock steps
        (the old driver) give a stale lease read; the same seed with true ticks is clean."""
        planted = simulate_seed(74, Random, plant="wall_clock")
        self.assertIsNotNone(planted.violation)
        assert planted.violation is not None
        self.assertIn("lease read", planted.violation)
        self.assertIsNone(simulate_seed(74, Random).violation)
