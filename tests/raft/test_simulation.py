"""The seeded random simulation: safety over many schedules, liveness, reproducibility."""

from __future__ import annotations

from random import Random

from twisted.trial import unittest

from graft.raft.ready import Role
from graft.raft.simulation import SimParams, simulate_seed
from graft.simulate import main as simulate_main
from tests.raft.helpers import make_cluster

SEEDS = 300


class SimulationTests(unittest.SynchronousTestCase):
    def test_random_schedules_are_safe(self) -> None:
        """Hundreds of hostile schedules (drops, delays, duplicates, reordering, partitions,
        crashes) of 3- and 5-node clusters violate no safety property and stay live."""
        failures = []
        for seed in range(SEEDS):
            result = simulate_seed(seed, Random)
            if result.violation is not None:
                failures.append(f"seed {seed}: {result.violation}")
        self.assertEqual(failures, [])

    def test_same_seed_same_run(self) -> None:
        """A seed replays exactly: same commits, same reads, same trace."""
        a = simulate_seed(7, Random, params=SimParams(nodes=5, crash=0.05))
        b = simulate_seed(7, Random, params=SimParams(nodes=5, crash=0.05))
        self.assertEqual(a, b)
        self.assertGreater(a.commit, 0)

    def test_checker_reports_a_violation(self) -> None:
        """The checker is not blind: two leaders in one term are reported."""
        c = make_cluster()
        c.elect("n1")
        n2 = c.node("n2")
        n2._role = Role.LEADER
        from graft.raft.simulation import Violation

        with self.assertRaises(Violation):
            c.checker.observe(n2)

    def test_command_line_summary(self) -> None:
        """The command line ends with the summary line and exits 0 when all seeds pass."""
        import contextlib
        import io

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = simulate_main(["--seeds", "4", "--jobs", "1"])
        self.assertEqual(code, 0)
        self.assertEqual(out.getvalue().splitlines()[-1], "simulate: 4 seeds, 0 violations")


class LivenessTests(unittest.SynchronousTestCase):
    def test_stable_majority_elects_and_commits(self) -> None:
        """With a majority up and connected (two of five nodes crashed, others partitioned
        away), a leader is elected and a proposal commits within a bounded number of ticks,
        for many different random timeouts."""
        bound = 100
        for seed in range(40):
            c = make_cluster(["a", "b", "c", "d", "e"], seed=seed)
            c.crash("d")
            c.crash("e")
            ticks = 0
            leader = None
            while ticks < bound:
                c.run(1)
                ticks += 1
                leader = c.leader()
                if leader is not None and leader.lease_read_index() is not None:
                    break
            self.assertIsNotNone(leader, f"seed {seed}: no leader in {bound} ticks")
            assert leader is not None
            index = c.propose(leader.id, [b"x"])[0]
            c.run(3)
            for nid in ("a", "b", "c"):
                self.assertGreaterEqual(c.node(nid).log.committed, index, f"seed {seed}")
