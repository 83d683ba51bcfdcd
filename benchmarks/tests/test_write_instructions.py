"""benchmarks.write_instructions: its fake-time reactor heap and its rounds of writes.

.venv/bin/trial benchmarks.tests.test_write_instructions
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from benchmarks.write_instructions import HeapClock, WriteLoad


class HeapClockTests(SynchronousTestCase):
    def test_runs_due_calls_in_time_order(self) -> None:
        clock = HeapClock()
        fired: list[str] = []
        clock.callLater(2.0, fired.append, "b")
        clock.callLater(1.0, fired.append, "a")
        cancelled = clock.callLater(1.5, fired.append, "never")
        cancelled.cancel()
        clock.advance(1.0)
        self.assertEqual(fired, ["a"])
        clock.advance(1.0)
        self.assertEqual(fired, ["a", "b"])
        self.assertEqual(clock.getDelayedCalls(), [])


class WriteLoadTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.load = WriteLoad(3)
        self.addCleanup(self.load.stop)

    def applied(self) -> Any:
        return self.load.leader.status().applied

    def test_http_round_answers_and_applies_a_write_per_connection(self) -> None:
        before = self.applied()
        self.load.http_round()
        self.assertEqual(self.applied(), before + 3)
        for _, transport in self.load.channels:
            self.assertEqual(transport.value(), b"")  # every answer was read (a 200)

    def test_direct_round_applies_a_write_per_connection(self) -> None:
        before = self.applied()
        self.load.direct_round()
        self.assertEqual(self.applied(), before + 3)
