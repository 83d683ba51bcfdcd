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

    def test_http_batch_round_applies_every_command_of_each_batch(self) -> None:
        before = self.applied()
        self.load.http_round(batch=5)
        self.assertEqual(self.applied(), before + 15)
        for _, transport in self.load.channels:
            self.assertEqual(transport.value(), b"")

    def test_direct_batch_round_applies_every_command(self) -> None:
        before = self.applied()
        self.load.direct_round(batch=4)
        self.assertEqual(self.applied(), before + 12)

    def test_prepared_rounds_are_the_ones_sent(self) -> None:
        self.load.prepare(2, 3, direct=False)
        built = self.load.sent
        before = self.applied()
        self.load.http_round(batch=3)
        self.load.http_round(batch=3)
        self.assertEqual(self.load.sent, built)  # nothing built while measuring
        self.assertEqual(self.applied(), before + 18)

    def test_a_refused_batch_command_stops_the_round(self) -> None:
        body = b'["{\\"op\\":\\"nope\\"}"]'
        request = b"POST /commands HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%b" % (
            len(body),
            body,
        )
        self.load.prepare(1, 1, direct=False)
        self.load._prepared[0][0] = request
        with self.assertRaisesRegex(RuntimeError, "refused"):
            self.load.http_round(batch=1)
