"""Crash tests: cut the power at every write point of a scripted workload, then recover.

For each seed a random Raft-like workload (appends, suffix replacements, hard state changes,
group-committed batches and synchronous writes, segment rolls) runs against the fault-injecting
file system once to count its write points, then once more per write point, crashing there.
Recovery must open cleanly and give a log that is exactly a prefix of one the workload could
have produced since the last acknowledged write, holding every acknowledged entry that no later
write replaced; and a hard state no older than the last acknowledged one.
"""

from __future__ import annotations

import os
import random

from twisted.trial.unittest import SynchronousTestCase

from graft.raft.types import Entry, HardState
from graft.storage import DurableLog
from tests.storage.faultfs import Crash, FaultyFileSystem
from tests.storage.workload import Record, Runner, Script, make_script
from tests.support.storage import open_log

SEEDS = int(os.environ.get("GRAFT_CRASH_SEEDS", "24"))


def recovered_records(log: DurableLog) -> tuple[Record, ...]:
    entries = log.entries(log.first_index(), log.last_index() + 1)
    return tuple((e.index, e.term, e.data) for e in entries)


def explain_log(script: Script, acked: int, issued: int, found: tuple[Record, ...]) -> str | None:
    """None if ``found`` is a legal recovery when writes 1..acked were acknowledged and writes
    up to ``issued`` had been handed to the log: a prefix of the log as it stood after one of
    writes acked..issued, keeping every acknowledged entry that no unacknowledged write came to
    replace."""
    writes = [s for s in script.steps if s.kind != "flush"]
    must_keep = len(script.logs[acked])
    for write in writes[acked:issued]:
        if write.entries:
            must_keep = min(must_keep, write.entries[0].index - 1)
    if len(found) < must_keep:
        return (
            f"recovered {len(found)} entries but {must_keep} were acknowledged and not "
            "replaced by a later write"
        )
    for candidate in script.logs[acked : issued + 1]:
        if candidate[: len(found)] == found:
            return None
    return (
        f"recovered {len(found)} entries (last {found[-1][:2] if found else None}) is no prefix "
        f"of the log after any of writes {acked}..{issued}"
    )


def explain_hard_state(script: Script, acked: int, found: HardState) -> str | None:
    """The term and vote must be those of the last acknowledged write or a later one; the
    commit index may lag (it is written lazily) but never exceeds what was issued."""
    later = script.hard_states[acked:]
    if not any((h.term, h.vote) == (found.term, found.vote) for h in later):
        return f"hard state {found} lost the term/vote of {script.hard_states[acked]}"
    if found.commit > max(h.commit for h in script.hard_states):
        return f"hard state {found} has a commit index never issued"
    if found not in script.hard_states and found.commit > 0:
        return f"hard state {found} was never issued"
    return None


class CrashAtEveryWritePointTests(SynchronousTestCase):
    repairs = 0

    def check_seed(self, seed: int) -> int:
        script = make_script(seed)
        clean = FaultyFileSystem()
        Runner(script, clean).run()
        total = clean.points
        rng = random.Random(seed)
        for point in range(1, total + 1):
            for torn, names_too in ((False, False), (True, False), (True, True)):
                files = FaultyFileSystem(crash_at=point)
                runner = Runner(script, files)
                with self.assertRaises(Crash):
                    runner.run()
                survivor = files.after_crash(torn=torn, rng=rng, names_too=names_too)
                where = (
                    f"seed {seed}, crash at point {point} ({files.log[-1]}), torn={torn}, "
                    f"names_too={names_too}"
                )
                try:
                    log = open_log(survivor)
                except Exception as error:
                    self.fail(f"{where}: recovery refused: {error}")
                self.repairs += bool(log.notes)
                problem = explain_log(script, runner.acked, runner.issued, recovered_records(log))
                problem = problem or explain_hard_state(script, runner.acked, log.hard_state)
                if problem is not None:
                    self.fail(f"{where}: {problem}")
                # The recovered log must take new writes and keep them.
                next_index = log.last_index() + 1
                term = log.term(log.last_index()) + 1
                log.append_sync([Entry(index=next_index, term=term, data=b"after")])
                self.successResultOf(log.close())
                again = open_log(survivor.copy())
                self.assertEqual(again.last_index(), next_index, where)
                self.assertEqual(again.entries(next_index, next_index + 1)[0].data, b"after")
        return total

    def test_every_write_point_over_many_seeds(self) -> None:
        """For every write point of many seeded workloads, a crash there (keeping only synced
        data, with and without a torn last write, with and without unsynced directory
        changes) recovers to a legal prefix holding every
        acknowledged entry, and the recovered log accepts and keeps new entries."""
        points = 0
        for seed in range(SEEDS):
            points += self.check_seed(seed)
        self.assertGreater(points, SEEDS * 20)  # the workloads really do write
        self.assertGreater(self.repairs, SEEDS)  # and torn tails really were cut

    def test_checker_rejects_a_lost_acknowledged_entry(self) -> None:
        """The prefix check itself fails when an acknowledged entry is missing (so the crash
        test above can fail)."""
        script = make_script(3)
        acked = len(script.logs) - 1
        full = script.logs[acked]
        self.assertIsNone(explain_log(script, acked, acked, full))
        self.assertIsNotNone(explain_log(script, acked, acked, full[:-1]))
        changed = (*full[:-1], (full[-1][0], full[-1][1], b"other"))
        self.assertIsNotNone(explain_log(script, acked, acked, changed))
