"""check_data_dir and dump_log: what operators run against a data dir; they never write."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from graft.raft.types import Entry, HardState, SnapshotMeta
from graft.storage import CorruptionError, DurableLog, check_data_dir, dump_log


class InspectTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        log = DurableLog.open(
            self.dir,
            node_id="n1",
            cluster="test",
            segment_bytes=4096,
            reactor=Clock(),
            threaded=False,
        )
        log.append_sync([Entry(index=i, term=2, data=b"%04d" % i * 10) for i in range(1, 101)])
        log.set_hard_state_sync(HardState(term=2, vote="n1", commit=90))
        log.save_snapshot(SnapshotMeta(index=50, term=2), "kv", lambda sink: sink.write(b"s"))
        self.successResultOf(log.close())

    def contents(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(self.dir.iterdir())}

    def test_check_reports_a_healthy_dir(self) -> None:
        """A healthy dir checks ok, with identity, hard state, snapshot and log lines."""
        report = check_data_dir(self.dir)
        self.assertTrue(report.ok, report.lines)
        text = "\n".join(report.lines)
        self.assertIn("node 'n1', cluster 'test'", text)
        self.assertIn("commit=90", text)
        self.assertIn("snapshot: index 50", text)
        self.assertIn("entries 1..100", text)
        self.assertEqual(report.lines[-1], "OK")

    def test_check_reports_a_torn_tail_without_cutting_it(self) -> None:
        """A torn final record is reported as the repair the next start will make; the check
        itself changes nothing."""
        last = sorted(self.dir.glob("*.seg"))[-1]
        last.write_bytes(last.read_bytes()[:-3])
        before = self.contents()
        report = check_data_dir(self.dir)
        self.assertTrue(report.ok, report.lines)
        self.assertTrue(any("torn final record" in line for line in report.lines))
        self.assertEqual(self.contents(), before)

    def test_check_of_a_missing_dir_is_not_ok(self) -> None:
        """Checking a path that does not exist says so instead of passing."""
        self.assertFalse(check_data_dir(self.dir / "nope").ok)

    def test_dump_reads_a_range(self) -> None:
        """dump_log yields exactly the entries first..last inclusive, as written."""
        dumped = list(dump_log(self.dir, 40, 45))
        self.assertEqual([e.index for e in dumped], [40, 41, 42, 43, 44, 45])
        self.assertEqual(dumped[0].data, b"0040" * 10)
        self.assertEqual(len(list(dump_log(self.dir))), 100)

    def test_dump_refuses_corruption_and_writes_nothing(self) -> None:
        """dump_log raises CorruptionError on a damaged segment and leaves the files alone."""
        middle = sorted(self.dir.glob("*.seg"))[1]
        raw = bytearray(middle.read_bytes())
        raw[100] ^= 1
        middle.write_bytes(bytes(raw))
        before = self.contents()
        with self.assertRaises(CorruptionError):
            list(dump_log(self.dir))
        self.assertEqual(self.contents(), before)
