"""graft.pause_journal: off by default, and when on, one JSON line per GC pass, late reactor
turn and noted event."""

from __future__ import annotations

import gc
import json
import os
import time
from pathlib import Path

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from graft import pause_journal


class PauseJournalTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = Path(self.mktemp())
        self.clock = Clock()
        self.stop = pause_journal.start(str(self.path), self.clock)
        self.addCleanup(self.stop)

    def events(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.path.read_text().splitlines()]

    def test_gc_passes_are_recorded_with_generation_and_durations(self) -> None:
        gc.collect(1)
        (event,) = [e for e in self.events() if e["event"] == "gc"]
        self.assertEqual(event["gen"], 1)
        self.assertIsInstance(event["ms"], float)
        self.assertIsInstance(event["cpu"], float)

    def test_a_late_reactor_turn_is_recorded_with_its_cpu_time(self) -> None:
        self.clock.advance(pause_journal.TICK_MS / 1000)
        before = len([e for e in self.events() if e["event"] == "lag"])
        busy_until = time.perf_counter() + 2 * pause_journal.LAG_MS / 1000
        while time.perf_counter() < busy_until:  # the thread is busy, not descheduled
            pass
        self.clock.advance(pause_journal.TICK_MS / 1000)
        lags = [e for e in self.events() if e["event"] == "lag"][before:]
        self.assertEqual(len(lags), 1)
        self.assertGreater(float(lags[0]["ms"]), pause_journal.LAG_MS)  # type: ignore[arg-type]
        self.assertGreater(float(lags[0]["cpu"]), 0)  # type: ignore[arg-type]

    def test_noted_events_and_stop(self) -> None:
        pause_journal.note("fork", ms=3.5, keys=10)
        self.stop()
        pause_journal.note("fork", ms=9.0, keys=20)  # off: dropped
        gc.collect(0)
        events = self.events()
        self.assertEqual([e["event"] for e in events], ["start", "fork"])
        self.assertEqual((events[1]["ms"], events[1]["keys"]), (3.5, 10))


class EnvironmentTests(SynchronousTestCase):
    def test_off_without_the_environment_variable(self) -> None:
        self.patch(
            os, "environ", {k: v for k, v in os.environ.items() if k != pause_journal.ENVIRONMENT}
        )
        self.assertFalse(pause_journal.enable_from_environment())
        pause_journal.note("fork", ms=1.0)  # must not fail with the journal off
