"""The writer thread with the real reactor and the real file system."""

from __future__ import annotations

import threading
from pathlib import Path

from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from graft.raft.types import Entry, HardState
from graft.storage import DurableLog, StorageError
from graft.storage.files import OSFileSystem, WritableFile


def entries(first: int, last: int, term: int = 1) -> list[Entry]:
    return [Entry(index=i, term=term, data=b"x" * 100) for i in range(first, last + 1)]


def writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "graft-storage-writer"]


class _FailingFiles(OSFileSystem):
    """Real files whose fsync fails once ``broken`` is set (a dying disk)."""

    broken = False

    def open_append(self, path: Path) -> WritableFile:
        return _FailingFile(super().open_append(path), self)

    def create(self, path: Path) -> WritableFile:
        return _FailingFile(super().create(path), self)


class _FailingFile:
    def __init__(self, inner: WritableFile, owner: _FailingFiles) -> None:
        self._inner = inner
        self._owner = owner

    def write(self, data: bytes) -> None:
        self._inner.write(data)

    def sync(self) -> None:
        if self._owner.broken:
            raise OSError(5, "Input/output error")
        self._inner.sync()

    def truncate(self, size: int) -> None:
        self._inner.truncate(size)

    def close(self) -> None:
        self._inner.close()


class WriterThreadTests(TestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        # Cleanups run last-registered first: every log is closed before this check.
        self.addCleanup(lambda: self.assertEqual(writer_threads(), []))
        self.fsyncs: list[float] = []
        self.fsync_threads: set[str] = set()

    def open(self, **kwargs: object) -> DurableLog:
        log = DurableLog.open(
            self.dir,
            node_id="n1",
            cluster="test",
            reactor=reactor,
            on_fsync=self.observe_fsync,
            **kwargs,  # type: ignore[arg-type]
        )
        self.addCleanup(log.close)  # trial waits for the Deferred
        return log

    def observe_fsync(self, seconds: float) -> None:
        self.fsyncs.append(seconds)
        self.fsync_threads.add(threading.current_thread().name)

    @defer.inlineCallbacks
    def test_persists_fire_in_order_once_durable(self):
        """Many persists from one turn fire in call order, after fewer fsyncs than calls, all
        made on the writer thread, never on the reactor thread."""
        log = self.open()
        order: list[int] = []

        def note(_: None, i: int) -> None:
            order.append(i)

        calls = [
            log.persist(HardState(term=1, commit=i - 1), entries(i, i)).addCallback(note, i)
            for i in range(1, 301)
        ]
        self.assertEqual(log.last_index(), 300)  # visible at once
        yield defer.gatherResults(calls)
        self.assertEqual(order, list(range(1, 301)))
        self.assertEqual(log.durable_index, 300)
        self.assertLess(len(self.fsyncs), 300)
        self.assertTrue(all(seconds >= 0 for seconds in self.fsyncs))
        self.assertEqual(self.fsync_threads, {"graft-storage-writer"})  # never the reactor's
        yield log.close()
        again = self.open()
        self.assertEqual(again.entries(1, 301), entries(1, 300))
        self.assertEqual(again.initial_state()[0], HardState(term=1, commit=299))

    @defer.inlineCallbacks
    def test_close_waits_for_pending_writes_and_stops_the_thread(self):
        """close() writes everything queued before it, then the writer thread is gone."""
        log = self.open()
        pending = log.persist(None, entries(1, 50))
        yield log.close()
        self.assertTrue(pending.called)
        self.assertEqual(writer_threads(), [])
        again = self.open()
        self.assertEqual(again.last_index(), 50)

    @defer.inlineCallbacks
    def test_sync_api_from_a_thread(self):
        """append_sync and set_hard_state_sync return only once durable (tools use them)."""
        log = self.open()
        yield deferToThread(log.append_sync, entries(1, 10))
        yield deferToThread(log.set_hard_state_sync, HardState(term=2, vote="n1"))
        self.assertEqual(log.durable_index, 10)
        yield log.close()
        self.assertEqual(self.open().initial_state()[0], HardState(term=2, vote="n1"))

    @defer.inlineCallbacks
    def test_disk_failure_fails_this_and_every_later_write(self):
        """An fsync error fails the batch with StorageError and every later persist too."""
        files = _FailingFiles()
        log = self.open(files=files)
        yield log.persist(None, entries(1, 5))
        files.broken = True
        with self.assertRaises(StorageError):
            yield log.persist(None, entries(6, 6))
        with self.assertRaises(StorageError):
            yield log.persist(None, entries(7, 7))
        self.assertEqual(log.durable_index, 5)
