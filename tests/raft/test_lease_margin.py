"""The lease's margins (graft.raft.config): clock drift, tick quantisation, tick lateness."""

from __future__ import annotations

from twisted.trial import unittest

from graft.raft.config import LATE_TICKS, QUANTUM_TICKS, RaftConfig, lease_ticks
from graft.raft.types import Membership

from .helpers import make_cluster


class LeaseArithmeticTests(unittest.SynchronousTestCase):
    def test_default_350_35(self) -> None:
        """350/35 ms is E = 10 ticks: lease = 350 x 0.9 - 35 - 70 = 210 ms, 6 ticks."""
        cfg = RaftConfig(id="a", bootstrap=Membership(voters=frozenset("a")))
        self.assertEqual(cfg.clock_drift, 0.1)
        self.assertEqual(cfg.stickiness_ticks, 10)
        self.assertEqual(cfg.lease_ticks, 6)
        self.assertEqual(cfg.lease_ticks * 35, 210)

    def test_drift_is_rounded_up(self) -> None:
        """A fraction of a tick of drift costs a whole tick: the margin never shrinks."""
        self.assertEqual(lease_ticks(20, 0.1), 20 - 2 - 1 - 2)
        self.assertEqual(lease_ticks(20, 0.11), 20 - 3 - 1 - 2)
        self.assertEqual(lease_ticks(10, 0.0), 10 - 0 - 1 - 2)

    def test_no_lease_when_margins_eat_it(self) -> None:
        """With a short election timeout the margins leave nothing: no lease at all."""
        self.assertEqual(lease_ticks(3, 0.1), 0)
        self.assertEqual(lease_ticks(2, 0.5), 0)

    def test_safe_for_allowed_rate_ratio(self) -> None:
        """(L + LATE) x P_leader <= (E - 1) x P_follower whenever P_leader / P_follower <=
        1 / (1 - drift), for every E and drift the configuration allows."""
        for e in range(2, 200):
            for pct in range(0, 50):
                drift = pct / 100
                lease = lease_ticks(e, drift)
                if lease == 0:
                    continue
                ratio = 1 / (1 - drift)
                self.assertLessEqual(
                    (lease + LATE_TICKS) * ratio,
                    (e - QUANTUM_TICKS) + 1e-9,
                    f"E={e} drift={drift}",
                )

    def test_zero_lease_means_no_lease_read(self) -> None:
        """A cluster whose lease is 0 ticks never answers from the lease."""
        c = make_cluster(election_ticks=3, clock_drift=0.1)
        leader = c.elect("n1")
        for _ in range(5):
            c.run(1)
            self.assertIsNone(leader.lease_read_index())
