"""Group commit: one writer thread writes queued work in order, one fsync per batch.

Callers (the reactor) queue ``WriteOp``s and carry on; the writer thread takes *everything*
queued so far as one batch, appends it, fsyncs once, writes the hard state if it must, and
hands the finished batch back through ``on_done`` (the log passes it to the reactor with
``callFromThread``). Because the thread only ever sleeps while the queue is empty, a loaded
reactor's many small persists naturally coalesce into large batches.

Hard state policy: a change of term or vote is written atomically with the directory fsync
before the batch is reported durable (Raft forbids answering before that). A change of only
the commit index is written without the directory fsync and at most once per
``commit_interval`` seconds: commit is a lower bound the leader re-teaches, so after a crash an
older, whole hard state file is safe, and a leader under load does not pay two extra fsyncs on
every batch. Closing the log writes the latest one durably.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from queue import SimpleQueue
from typing import Any

from twisted.internet.defer import Deferred

from graft import devtrace
from graft.raft.types import Entry, HardState
from graft.storage.files import FileSystem
from graft.storage.segments import SegmentSet
from graft.storage.state_files import write_hard_state


@dataclass(slots=True, kw_only=True, eq=False)
class WriteOp:
    """One unit of queued work; ``action`` runs after the op's entries, on the writer thread."""

    hard_state: HardState | None = None
    entries: Sequence[Entry] = ()
    records: bytes | None = None  # encode_records(entries), if the caller encoded them
    force_hard_state: bool = False
    action: Callable[[SegmentSet], Any] | None = None
    deferred: Deferred[Any] | None = None
    event: threading.Event | None = None  # for synchronous callers
    then: Callable[[Any], None] | None = None  # runs with the result where the op completes
    result: Any = None
    error: BaseException | None = field(default=None)


class BatchWriter:
    """Writes one batch of ops to disk; knows nothing of threads."""

    def __init__(
        self,
        files: FileSystem,
        data_dir: Path,
        disk: SegmentSet,
        *,
        hard_state: HardState,
        commit_interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._files = files
        self._dir = data_dir
        self.disk = disk
        self._durable_hs = hard_state  # what the hard state file holds
        self._latest_hs = hard_state  # what it should hold
        self._commit_interval = commit_interval
        self._clock = clock
        self._last_commit_write = float("-inf")

    def write(self, batch: Sequence[WriteOp]) -> None:
        if devtrace.ON:
            devtrace.mark("write.start", self.disk.last_index)
        force = False
        for op in batch:
            if op.entries:
                self.disk.append(op.entries, op.records)
            if op.hard_state is not None:
                self._latest_hs = op.hard_state
            force = force or op.force_hard_state
            if op.action is not None:
                self.disk.sync()
                op.result = op.action(self.disk)
        if devtrace.ON:
            devtrace.mark("fsync.start", self.disk.last_index)
        self.disk.sync()
        if devtrace.ON:
            devtrace.mark("fsync.end", self.disk.last_index)
        self._write_hard_state(force=force)

    def _write_hard_state(self, *, force: bool) -> None:
        latest, durable = self._latest_hs, self._durable_hs
        if latest == durable and not force:
            return
        if force or (latest.term, latest.vote) != (durable.term, durable.vote):
            write_hard_state(self._files, self._dir, latest)
        else:
            now = self._clock()
            if now - self._last_commit_write < self._commit_interval:
                return
            self._last_commit_write = now
            write_hard_state(self._files, self._dir, latest, sync_dir=False)
        self._durable_hs = latest

    def close(self) -> None:
        self._write_hard_state(force=self._latest_hs != self._durable_hs)
        self.disk.close()


_STOP = WriteOp()  # queued by ``stop``: write what came before it, then exit


class WriterThread:
    """Runs a BatchWriter on one dedicated thread, strictly in queue order."""

    def __init__(
        self,
        writer: BatchWriter,
        on_done: Callable[[list[WriteOp], BaseException | None, int], None],
        on_stopped: Callable[[BaseException | None], None],
    ) -> None:
        self._writer = writer
        self._on_done = on_done
        self._on_stopped = on_stopped
        # A SimpleQueue (C, lock-free put) rather than a Condition: submitting and waking the
        # writer is one call, which matters when the disk syncs in ~150 us.
        self._queue: SimpleQueue[WriteOp] = SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="graft-storage-writer", daemon=True)
        self._thread.start()

    def submit(self, op: WriteOp) -> None:
        self._queue.put(op)

    def stop(self) -> None:
        """Finish what is queued, close the files, then call ``on_stopped`` and exit."""
        self._queue.put(_STOP)

    def join(self) -> None:
        self._thread.join()

    def _run(self) -> None:
        failure: BaseException | None = None
        queue = self._queue
        stopping = False
        while not (stopping and queue.empty()):
            batch = [queue.get()]  # sleeps only while nothing is queued
            if devtrace.ON:
                devtrace.mark("writer.woke")
            while not queue.empty():  # then takes everything queued so far
                batch.append(queue.get())
            if _STOP in batch:
                stopping = True
                batch = [op for op in batch if op is not _STOP]
            if batch:
                if failure is None:
                    try:
                        self._writer.write(batch)
                    except Exception as error:  # disk full, I/O error: every later op fails
                        failure = error
                self._on_done(batch, failure, self._writer.disk.last_index)
        close_error: BaseException | None = None
        try:
            if failure is None:
                self._writer.close()
            else:  # already reported; do not write to a failing disk again
                self._writer.disk.abandon()
        except Exception as error:
            close_error = error
        self._on_stopped(close_error)
