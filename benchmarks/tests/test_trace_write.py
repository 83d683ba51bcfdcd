"""The write-path tracer: graft.devtrace's stamps and files, and how benchmarks.trace_write lines
up one write's stamps across the nodes.

.venv/bin/trial benchmarks.tests.test_trace_write
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from benchmarks.trace_write import (
    STAGES,
    NodeTrace,
    count_turns,
    reactor_cpu,
    summarise,
    timeline,
)
from graft import devtrace


class DevtraceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="devtrace-"))
        self.patch(devtrace, "_events", [])

    def test_on_writes_stamps_to_the_process_file(self) -> None:
        self.patch(devtrace, "ON", True)
        self.patch(devtrace, "_DIR", str(self.dir))
        devtrace.mark("propose", 7)
        devtrace.mark("turn")
        devtrace.flush()
        (path,) = self.dir.iterdir()
        lines = [line.split(" ") for line in path.read_text().splitlines()]
        self.assertEqual(
            [(stage, index) for _, stage, index, _ in lines], [("propose", "7"), ("turn", "-1")]
        )
        self.assertLessEqual(int(lines[0][0]), int(lines[1][0]))
        self.assertEqual(devtrace._events, [])

    def test_off_writes_nothing(self) -> None:
        self.patch(devtrace, "ON", False)
        self.patch(devtrace, "_DIR", str(self.dir))
        devtrace._events.append((1, "propose", 1, 1))
        devtrace.flush()
        self.assertEqual(list(self.dir.iterdir()), [])


def _trace(stamps: list[tuple[int, str, int]]) -> NodeTrace:
    """A NodeTrace as read from a file with these (us, stage, index) stamps (CPU time = time)."""
    path = Path(tempfile.mkdtemp(prefix="trace-")) / "1.trace"
    path.write_text(
        "".join(f"{us * 1000} {stage} {index} {us * 1000}\n" for us, stage, index in stamps)
    )
    return NodeTrace.read(path)


def _leader() -> NodeTrace:
    return _trace(
        [
            (10, "api.data", -1),
            (20, "api.render", -1),
            (30, "propose", 5),
            (35, "turn", -1),
            (40, "ready.entries", 5),
            (50, "ae.sent", 5),
            (60, "persist.submit", 5),
            (65, "writer.woke", -1),
            (70, "fsync.start", 5),
            (200, "fsync.end", 5),
            (210, "persisted", 5),
            (290, "peer.data", -1),
            (300, "inbox.resp.n2", 5),
            (310, "peer.data", -1),
            (320, "inbox.resp.n3", 5),
            (330, "turn", -1),
            (340, "ready.commit", 5),
            (350, "apply", 5),
            (360, "api.written", -1),
        ]
    )


def _follower(shift: int) -> NodeTrace:
    return _trace(
        [
            (55 + shift, "peer.data", -1),
            (60 + shift, "inbox.ae", 5),
            (70 + shift, "ready.entries", 5),
            (80 + shift, "persist.submit", 5),
            (85 + shift, "writer.woke", -1),
            (90 + shift, "fsync.start", 5),
            (250 + shift, "fsync.end", 5),
            (260 + shift, "persisted", 5),
            (270 + shift, "resp.sent", 5),
        ]
    )


class TimelineTests(SynchronousTestCase):
    def test_follows_the_follower_that_answered_first(self) -> None:
        slow, fast = _follower(20), _follower(0)
        line = timeline(5, 0, 400_000, _leader(), [slow, fast])
        assert line is not None
        self.assertEqual(line["F answer written"][0], 270_000)  # the fast one's
        self.assertEqual(line["F frame received"][0], 55_000)  # its read before the step
        self.assertEqual(line["L 1st answer stepped"][0], 300_000)
        self.assertEqual(line["L 2nd answer stepped"][0], 320_000)
        self.assertEqual(line["L answer frame received"][0], 290_000)
        self.assertEqual(line["L http answer written"][0], 360_000)
        self.assertEqual(len(line), len(STAGES) + 2)

    def test_an_inline_fsync_wakes_no_thread(self) -> None:
        leader = _leader()
        stamps = [(55, "peer.data", -1), (60, "inbox.ae", 5), (70, "ready.entries", 5)]
        stamps += [(80, "persist.submit", 5), (90, "fsync.start", 5), (250, "fsync.end", 5)]
        stamps += [(260, "persisted", 5), (270, "resp.sent", 5)]
        # An earlier write's wake-up, before this write was queued, is not this one's.
        inline = _trace([(1, "writer.woke", -1), *stamps])
        line = timeline(5, 0, 400_000, leader, [inline])
        assert line is not None
        self.assertEqual(line["F writer thread woke"][0], 90_000)

    def test_a_missing_stage_drops_the_write(self) -> None:
        self.assertIsNone(timeline(6, 0, 400_000, _leader(), [_follower(0)]))

    def test_turns_and_cpu_per_node(self) -> None:
        leader, follower = _leader(), _follower(0)
        line = timeline(5, 0, 400_000, leader, [follower])
        assert line is not None
        turns = count_turns([line], leader, [follower])
        self.assertEqual(turns["L Ready taken"], [1])  # the turn at 35 us
        self.assertEqual(turns["L commit Ready"], [1])  # the turn at 330 us
        self.assertEqual(turns["cpu:L fsync end"], [130_000])  # on the writer thread
        result = {"writes": 1, "complete": 1, "load": ((1.0, 1.0, 1.0),) * 2}
        text = summarise({**result, "timelines": [line], "turns": turns})
        self.assertIn("L commit Ready", text)

    def test_reactor_cpu_spans_the_turns_inside(self) -> None:
        leader = _leader()  # turns at 35 and 330 us; the CPU clock runs with the wall clock
        self.assertEqual(reactor_cpu(leader, 0, 400_000), 295.0)
        self.assertEqual(reactor_cpu(leader, 40_000, 400_000), 0.0)  # one turn: no span
