"""The adaptive inline fsync: the rule (pure), its tracker, and the log writing on the reactor
thread while the disk is fast and on the writer thread otherwise."""

from __future__ import annotations

import threading
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest
from twisted.internet import defer, reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from graft.metrics import NodeMetrics
from graft.raft.types import Entry
from graft.storage import DurableLog
from graft.storage.files import OSFileSystem, WritableFile
from graft.storage.inline_fsync import (
    InlineFsync,
    InlineFsyncRule,
    choose_inline,
    inline_allowed,
    p99,
)

RULE = InlineFsyncRule()  # the defaults: 100 fsyncs, p99 < 2 ms, stall 50 ms, 300 s, 64 KiB
FAST = [0.0005] * 100


def choose(recent: list[float], **overrides: object) -> bool:
    args: dict[str, object] = {
        "now": 1000.0,
        "last_stall": None,
        "size": 1000,
        "writer_idle": True,
        "leading": False,
    }
    args.update(overrides)
    return choose_inline(RULE, recent, **args)  # type: ignore[arg-type]


class RuleTests(SynchronousTestCase):
    def test_fast_disk_small_write_idle_writer_is_inline(self) -> None:
        self.assertTrue(choose(FAST))

    def test_too_few_fsyncs_known(self) -> None:
        self.assertFalse(choose(FAST[:99]))

    def test_p99_at_or_over_the_bound(self) -> None:
        self.assertTrue(choose([0.0005] * 98 + [0.0019, 0.04]))  # one slow: p99 is 1.9 ms
        self.assertFalse(choose([0.0005] * 98 + [0.002, 0.002]))
        self.assertFalse(choose([0.003] * 100))

    def test_a_stall_in_the_window(self) -> None:
        self.assertFalse(choose([0.0005] * 99 + [0.05]))

    def test_hold_off_after_a_stall(self) -> None:
        self.assertFalse(choose(FAST, now=1000.0, last_stall=1000.0 - 299.0))
        self.assertTrue(choose(FAST, now=1000.0, last_stall=1000.0 - 300.0))

    def test_large_write(self) -> None:
        self.assertTrue(choose(FAST, size=64 * 1024))
        self.assertFalse(choose(FAST, size=64 * 1024 + 1))

    def test_busy_writer(self) -> None:
        self.assertFalse(choose(FAST, writer_idle=False))

    def test_a_leader_never_writes_inline(self) -> None:
        self.assertFalse(choose(FAST, leading=True))

    def test_disabled(self) -> None:
        off = InlineFsyncRule(enabled=False)
        self.assertFalse(inline_allowed(off, FAST, 1000.0, None))

    def test_p99_nearest_rank(self) -> None:
        self.assertEqual(p99([float(i) for i in range(1, 101)]), 99.0)
        self.assertEqual(p99([5.0]), 5.0)


class TrackerTests(SynchronousTestCase):
    def test_counts_paths_switches_and_stalls(self) -> None:
        now = [0.0]
        tracker = InlineFsync(InlineFsyncRule(window=2), clock=lambda: now[0])
        self.assertFalse(tracker.choose(10, writer_idle=True))  # nothing known yet
        tracker.observe(0.001)
        tracker.observe(0.001)
        self.assertTrue(tracker.choose(10, writer_idle=True))
        self.assertTrue(tracker.inline)
        tracker.observe(0.2)  # a stall
        self.assertFalse(tracker.choose(10, writer_idle=True))
        tracker.observe(0.001)
        tracker.observe(0.001)  # the window is fast again, but the hold-off is not over
        now[0] = 299.0
        self.assertFalse(tracker.choose(10, writer_idle=True))
        now[0] = 301.0
        self.assertTrue(tracker.choose(10, writer_idle=True))
        self.assertEqual(
            (tracker.inline_writes, tracker.threaded_writes, tracker.switches, tracker.stalls),
            (2, 3, 3, 1),
        )

    def test_metrics_show_the_tracker(self) -> None:
        metrics = NodeMetrics()
        tracker = InlineFsync(InlineFsyncRule(window=1))
        metrics.watch_inline_fsync(lambda: tracker)
        tracker.observe(0.001)
        tracker.choose(10, writer_idle=True)
        tracker.choose(10, writer_idle=False)
        text = generate_latest(metrics.registry).decode()
        self.assertIn('graft_log_writes_total{path="inline"} 1.0', text)
        self.assertIn('graft_log_writes_total{path="threaded"} 1.0', text)
        self.assertIn("graft_inline_fsync_mode 1.0", text)
        self.assertIn("graft_inline_fsync_switches_total 1.0", text)
        self.assertIn("graft_fsync_stalls_total 0.0", text)


class _SlowFiles(OSFileSystem):
    """Real files whose next fsyncs take ``delay`` seconds longer (a stalling disk)."""

    delay = 0.0

    def open_append(self, path: Path) -> WritableFile:
        return _SlowFile(super().open_append(path), self)

    def create(self, path: Path) -> WritableFile:
        return _SlowFile(super().create(path), self)


class _SlowFile:
    def __init__(self, inner: WritableFile, owner: _SlowFiles) -> None:
        self._inner = inner
        self._owner = owner

    def write(self, data: bytes) -> None:
        self._inner.write(data)

    def sync(self) -> None:
        time.sleep(self._owner.delay)
        self._inner.sync()

    def truncate(self, size: int) -> None:
        self._inner.truncate(size)

    def close(self) -> None:
        self._inner.close()


def entry(index: int, size: int = 100) -> Entry:
    return Entry(index=index, term=1, data=b"x" * size)


class InlineLogTests(TestCase):
    """With the real reactor: an inline write's Deferred has fired when ``persist`` returns
    (and its fsync ran on this thread); a threaded one's fires later, from the writer thread."""

    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.files = _SlowFiles()
        self.fsync_threads: list[str] = []

    def open(self, rule: InlineFsyncRule) -> DurableLog:
        log = DurableLog.open(
            self.dir,
            node_id="n1",
            cluster="test",
            reactor=reactor,
            files=self.files,
            on_fsync=lambda _: self.fsync_threads.append(threading.current_thread().name),
            inline_fsync=rule,
        )
        self.addCleanup(log.close)
        return log

    @defer.inlineCallbacks
    def warm_up(self, log: DurableLog, count: int) -> Generator[defer.Deferred[Any], Any, None]:
        for index in range(1, count + 1):
            d = log.persist(None, [entry(index)])
            self.assertFalse(d.called)  # not yet known to be fast: the writer thread
            yield d

    @defer.inlineCallbacks
    def test_fast_disk_writes_inline_and_in_order(
        self,
    ) -> Generator[defer.Deferred[Any], Any, None]:
        log = self.open(InlineFsyncRule(window=3, max_p99=10.0, stall=10.0, max_bytes=1000))
        yield self.warm_up(log, 3)
        self.assertEqual(set(self.fsync_threads), {"graft-storage-writer"})
        inline = log.persist(None, [entry(4)])
        self.assertTrue(inline.called)
        self.assertEqual(self.fsync_threads[-1], threading.current_thread().name)
        self.assertEqual(log.durable_index, 4)
        # A large write goes to the writer thread; a small one behind it waits its turn there.
        large = log.persist(None, [entry(5, size=2000)])
        small = log.persist(None, [entry(6)])
        self.assertFalse(large.called or small.called)
        fired: list[int] = []
        large.addCallback(lambda _: fired.append(5))
        small.addCallback(lambda _: fired.append(6))
        yield small
        self.assertEqual(fired, [5, 6])
        assert log.inline_fsync is not None
        self.assertEqual((log.inline_fsync.inline_writes, log.inline_fsync.threaded_writes), (1, 5))
        yield log.close()
        reopened = DurableLog.open(self.dir, node_id="n1", cluster="test", threaded=False)
        self.assertEqual([e.index for e in reopened.entries(1, 7)], [1, 2, 3, 4, 5, 6])
        yield reopened.close()

    @defer.inlineCallbacks
    def test_a_stall_sends_writes_back_to_the_thread(
        self,
    ) -> Generator[defer.Deferred[Any], Any, None]:
        log = self.open(InlineFsyncRule(window=3, max_p99=10.0, stall=0.05))
        yield self.warm_up(log, 3)
        self.files.delay = 0.06
        self.assertTrue(log.persist(None, [entry(4)]).called)  # inline, and it stalls
        self.files.delay = 0.0
        after = log.persist(None, [entry(5)])
        self.assertFalse(after.called)  # the writer thread again
        yield after
        assert log.inline_fsync is not None
        self.assertEqual(log.inline_fsync.stalls, 1)
        self.assertFalse(log.inline_fsync.inline)
        self.assertEqual(log.inline_fsync.switches, 2)

    @defer.inlineCallbacks
    def test_a_leader_writes_on_the_thread(self) -> Generator[defer.Deferred[Any], Any, None]:
        log = self.open(InlineFsyncRule(window=3, max_p99=10.0, stall=10.0))
        yield self.warm_up(log, 3)
        log.set_leading(True)
        led = log.persist(None, [entry(4)])
        self.assertFalse(led.called)
        yield led
        log.set_leading(False)
        self.assertTrue(log.persist(None, [entry(5)]).called)

    @defer.inlineCallbacks
    def test_disabled_never_inline(self) -> Generator[defer.Deferred[Any], Any, None]:
        log = self.open(InlineFsyncRule(enabled=False, window=1, max_p99=10.0, stall=10.0))
        yield self.warm_up(log, 5)
        self.assertEqual(set(self.fsync_threads), {"graft-storage-writer"})
