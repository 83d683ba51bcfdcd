"""A real process appending and fsyncing is killed with SIGKILL at random moments, again and
again on the same data dir; after each kill the reopened log holds every index the process
reported durable, byte for byte."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from graft.storage import DurableLog
from graft.testing.pipes import LineReader
from tests.storage.sigkill_writer import data_for

KILLS = int(os.environ.get("GRAFT_SIGKILL_RUNS", "20"))
REPO = Path(__file__).resolve().parents[2]
# One line of the writer's output: it reports every few milliseconds, so a minute is a hang.
LINE_TIMEOUT_S = 60.0


class SigkillTests(SynchronousTestCase):
    def run_and_kill(self, data_dir: Path, rng: random.Random) -> tuple[int, int]:
        """Start the writer, kill it after a random number of reports; return the index it
        reopened at and the highest index it reported durable."""
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.storage.sigkill_writer", str(data_dir)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert process.stdout is not None
            # Every read is bounded: a writer that hangs fails the test instead of hanging it.
            reader = LineReader(process.stdout)
            opened_line = reader.readline(LINE_TIMEOUT_S).decode()
            self.assertTrue(opened_line.startswith("opened "), opened_line)
            opened = int(opened_line.split()[1])
            seen = [reader.readline(LINE_TIMEOUT_S) for _ in range(rng.randint(1, 150))]
            seen.append(reader.pending())
            process.send_signal(signal.SIGKILL)
            rest, errors = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate(timeout=30)
        self.assertEqual(process.returncode, -signal.SIGKILL, errors.decode()[-2000:])
        lines = b"".join(seen).decode().splitlines() + rest.decode().splitlines()
        reported = [
            int(words[1])
            for words in (line.split() for line in lines)
            if len(words) == 2 and words[0] == "durable" and words[1].isdigit()
        ]
        return opened, max(reported, default=opened)

    def test_every_reported_index_survives_sigkill(self) -> None:
        """At least 20 SIGKILLs at random moments: each reopen has every reported index, with
        the bytes that were written, and the writer resumes right after them."""
        data_dir = Path(self.mktemp()).resolve()
        rng = random.Random(20260)
        highest = 0
        for _ in range(KILLS):
            opened, reported = self.run_and_kill(data_dir, rng)
            self.assertGreaterEqual(opened, highest, "an earlier reported index was lost")
            highest = max(highest, reported)
        log = DurableLog.open(
            data_dir, node_id="n1", cluster="sigkill", reactor=Clock(), threaded=False
        )
        self.assertGreaterEqual(log.last_index(), highest)
        self.assertGreater(highest, KILLS)
        for entry in log.entries(1, highest + 1):
            self.assertEqual(entry.data, data_for(entry.index), entry.index)
        self.successResultOf(log.close())
