"""The fsync-stall nemesis (graft.testing.faults.disk): the hook in the node process, its control
file, the nemesis kind and the report of elections during stalls."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

from twisted.trial import unittest

from graft.testing.faults import disk
from graft.testing.faults.history import NemesisEvent, StatusSample
from graft.testing.faults.nemesis import KINDS, Nemesis, ScheduleConfig
from tests.faults.test_harness import FakeClock, FakeCluster, FakeNetwork, FakePoller


class HookTests(unittest.SynchronousTestCase):
    def setUp(self) -> None:
        self.control = Path(self.mktemp())
        self.synced: list[int] = []
        self.slept: list[float] = []
        self.os = SimpleNamespace(fsync=self.synced.append, fdatasync=self.synced.append)

    def install(self, environ: dict[str, str]) -> bool:
        return disk.install_fsync_stall(environ, target=self.os, sleep=self.slept.append)

    def test_not_installed_without_the_variable(self) -> None:
        """Outside the fault suite nothing is wrapped: fsync stays the real function."""
        fsync = self.os.fsync
        self.assertFalse(self.install({}))
        self.assertIs(self.os.fsync, fsync)

    def test_every_fsync_waits_while_the_file_says_so(self) -> None:
        self.assertTrue(self.install({disk.ENV: str(self.control)}))
        self.os.fsync(3)
        self.assertEqual(self.slept, [])  # no file: no stall
        disk.set_stall(self.control, 0.5)
        self.os.fsync(4)
        self.os.fdatasync(5)
        self.assertEqual(self.slept, [0.5, 0.5])
        disk.set_stall(self.control, None)
        self.os.fsync(6)
        self.assertEqual(self.slept, [0.5, 0.5])
        self.assertEqual(self.synced, [3, 4, 5, 6])  # the real call always follows

    def test_garbage_in_the_control_file_means_no_stall(self) -> None:
        self.control.write_text("soon\n")
        self.assertEqual(disk.stall_seconds(self.control), 0.0)
        self.control.write_text("1e9\n")
        self.assertEqual(disk.stall_seconds(self.control), 10.0)


class NemesisTests(unittest.SynchronousTestCase):
    def test_fsync_stall_is_in_the_default_mix_and_heals(self) -> None:
        """One node's fsyncs slow down by 0.2-1 s; healing (and the final heal) ends it."""
        self.assertIn(disk.KIND, KINDS)
        cluster = FakeCluster()
        nemesis = Nemesis(
            cluster,  # type: ignore[arg-type]
            FakeNetwork(),  # type: ignore[arg-type]
            FakePoller(),  # type: ignore[arg-type]
            random.Random(5),
            FakeClock(),
            ScheduleConfig(),
        )
        (victim,), detail, heal = nemesis.inject(disk.KIND)
        ((node, seconds),) = cluster.stalls
        self.assertEqual(node, victim)
        assert seconds is not None
        self.assertTrue(0.2 <= seconds <= 1.0)
        self.assertIn(victim, detail)
        heal()
        self.assertEqual(cluster.stalls[-1], (victim, None))
        nemesis.final_heal()
        self.assertTrue(all(s is None for _, s in cluster.stalls[2:]))


class ReportTests(unittest.SynchronousTestCase):
    def test_elections_during_stalls(self) -> None:
        """A term that rises during a stall (or within a second after it) is reported."""
        events = [
            NemesisEvent(start=1.0, end=3.0, kind=disk.KIND, nodes=("n2",), detail="(follower)"),
            NemesisEvent(start=5.0, end=7.0, kind=disk.KIND, nodes=("n1",), detail="(leader)"),
            NemesisEvent(start=9.0, end=9.5, kind="kill", nodes=("n3",)),
        ]
        samples = [
            StatusSample(t=0.5, node="n1", role="leader", term=2),
            StatusSample(t=2.0, node="n1", role="leader", term=2),
            StatusSample(t=6.0, node="n3", role="leader", term=3),
        ]
        found = disk.elections_during_stalls(events, samples)
        self.assertEqual(
            [(f["node"], f["role"], f["election"]) for f in found],
            [("n2", "follower", False), ("n1", "leader", True)],
        )
