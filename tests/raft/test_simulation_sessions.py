"""Client sessions in the simulation (graft.testing.simulation.sessions): clients resend with
sessions, every replica applies each (session, sequence) once, the schedules are the ones the
seeds had without sessions, and planted bugs in the session code are caught."""

from __future__ import annotations

import dataclasses
from random import Random

from twisted.trial import unittest

from graft.sessions.table import SessionTable, Verdict
from graft.testing.simulation import run
from graft.testing.simulation import sessions as sim_sessions
from graft.testing.simulation.run import SimResult, simulate_seed


def without_sessions(result: SimResult) -> SimResult:
    """The result with what only sessions change taken out."""
    return dataclasses.replace(result, session_commands=0, session_duplicates=0, session_resent=0)


class SimulatedSessionTests(unittest.SynchronousTestCase):
    def test_resent_commands_are_answered_as_duplicates(self) -> None:
        """Over 30 seeds clients resend, some resends are duplicates, and no replica applies
        a (session, sequence) or a client command twice."""
        results = [simulate_seed(seed, Random) for seed in range(30)]
        self.assertEqual([r.violation for r in results if r.violation], [])
        self.assertGreater(sum(r.session_commands for r in results), 0)
        self.assertGreater(sum(r.session_resent for r in results), 0)
        self.assertGreater(sum(r.session_duplicates for r in results), 0)

    def test_sessions_change_no_schedule(self) -> None:
        """A seed runs the same schedule with session clients as without: same ticks,
        commits, reads, snapshots, transfers and membership changes."""
        applied = 0
        for seed in range(8):
            self.patch(run, "SESSION_SHARE", 1.0)
            with_sessions = simulate_seed(seed, Random)
            self.patch(run, "SESSION_SHARE", 0.0)
            plain = simulate_seed(seed, Random)
            self.assertEqual(plain.session_commands, 0)
            self.assertEqual(without_sessions(with_sessions), plain, f"seed {seed}")
            applied += with_sessions.session_commands
        self.assertGreater(applied, 0)

    def test_a_table_that_forgets_duplicates_is_caught(self) -> None:
        """Planted: the table never recognises a duplicate. Seed 5 catches it."""
        check = SessionTable.check

        def forgetful(self: SessionTable, *args: int | str) -> tuple[Verdict, object]:
            verdict, stored = check(self, *args)  # type: ignore[arg-type]
            return (Verdict.NEW, None) if verdict is Verdict.DUPLICATE else (verdict, stored)

        self.patch(SessionTable, "check", forgetful)
        violation = simulate_seed(5, Random).violation or ""
        self.assertIn("exactly once", violation)

    def test_a_table_lost_in_a_restart_is_caught(self) -> None:
        """Planted: a node restarted or given a snapshot starts with an empty table (as if
        snapshots did not carry it). Seed 5 catches it; it is clean without the bug."""
        self.assertIsNone(simulate_seed(5, Random).violation)

        def lost(self: sim_sessions.SessionModel, nid: str, index: int) -> None:
            self._replicas[nid] = sim_sessions._Replica()

        self.patch(sim_sessions.SessionModel, "restored", lost)
        violation = simulate_seed(5, Random).violation or ""
        self.assertIn("session tables differ", violation)
