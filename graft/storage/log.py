"""DurableLog: the node's log, hard state and snapshots on disk, read from memory.

One class of ~560 lines on purpose: the in-memory entry list, the queue to the writer thread
and compaction share one set of indexes whose invariants are easier to check in one place.

Theory of operation. ``open`` replays the data dir synchronously and keeps every entry since
the start of the oldest kept segment in a list, so the core's reads (``term``, ``entries``)
never touch the disk. Writes update that list at once (the core reads back what it just
produced) and are queued for the writer thread (``graft.storage.writer``), which writes each
batch in order with one fsync and then fires the batch's Deferreds on the reactor. The reactor
thread never waits on the disk. ``durable_index`` trails ``last_index`` by whatever is queued.

Snapshots are files beside the log (``graft.storage.snapshots``); compaction deletes whole
segments below a snapshot, so the in-memory list starts at the first kept segment, which may
be below the snapshot index.

Threads: call everything on the reactor thread, except ``save_snapshot``,
``save_snapshot_delta`` and ``open_snapshot`` (blocking; call them from a worker thread) and
the ``*_sync`` methods (blocking; for tools and tests, not to be mixed with ``persist`` from
another thread).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from twisted.internet.defer import Deferred, fail, succeed

from graft.raft.errors import LogCompacted, LogUnavailable
from graft.raft.types import (
    Entry,
    EntryKind,
    HardState,
    Membership,
    SnapshotMeta,
    decode_membership,
)
from graft.storage.columns import EntryColumns, release_in_slices
from graft.storage.errors import SnapshotSuperseded, StorageError
from graft.storage.files import FileSystem, OSFileSystem
from graft.storage.inline_fsync import InlineFsync, InlineFsyncRule
from graft.storage.records import encode_records, parse_segment_name
from graft.storage.recovery import recover
from graft.storage.segments import SegmentSet, repair
from graft.storage.snapshots import SnapshotInfo, SnapshotStore
from graft.storage.state_files import (
    HARD_STATE_FILE,
    IDENTITY_FILE,
    Identity,
    check_identity,
    read_identity,
    write_identity,
)
from graft.storage.writer import BatchWriter, WriteOp, WriterThread

DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024


def _default_reactor() -> Any:
    from twisted.internet import reactor

    return reactor


class DurableLog:
    """The durable ``LogStorage`` of one node (see the module docstring)."""

    def __init__(
        self,
        *,
        files: FileSystem,
        data_dir: Path,
        reactor: Any,
        writer: BatchWriter,
        threaded: bool,
        entries: list[Entry],
        first_index: int,
        hard_state: HardState,
        snapshots: SnapshotStore,
        snapshot: SnapshotInfo | None,
        notes: list[str],
        inline_fsync: InlineFsync | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.notes = notes  # repairs made at open, for the operator's log
        self._files = files
        self._reactor = reactor
        self._writer = writer
        self._entries = EntryColumns(entries)
        self._first = first_index
        self._hard_state = hard_state
        self._snapshots = snapshots
        self._snapshot_info = snapshot
        self._snapshot_meta = snapshot.meta if snapshot is not None else SnapshotMeta()
        # Orders save_snapshot's update (worker thread) against install_snapshot's (reactor):
        # whichever comes second, the newer snapshot wins (see save_snapshot).
        self._snapshot_lock = threading.Lock()
        self.durable_index = writer.disk.last_index
        self._failure: StorageError | None = None
        self._closed: Deferred[None] | None = None
        self._pending: list[WriteOp] = []  # synchronous mode only
        self._unfired = 0  # submitted ops whose Deferred has not fired yet
        self._carried: HardState | None = None  # a commit-only change for the next write
        self._flush_call: Any = None
        # A follower's small writes on the reactor thread while the disk is fast
        # (graft.storage.inline_fsync); only with a writer thread to fall back on.
        self.inline_fsync = inline_fsync if threaded else None
        self._thread = (
            WriterThread(writer, on_done=self._batch_written, on_stopped=self._writer_stopped)
            if threaded
            else None
        )

    @classmethod
    def open(
        cls,
        data_dir: Path,
        *,
        node_id: str,
        cluster: str,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        files: FileSystem | None = None,
        reactor: Any = None,
        threaded: bool = True,
        commit_interval: float = 0.1,
        on_fsync: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        inline_fsync: InlineFsyncRule | None = None,
    ) -> DurableLog:
        """Open (creating if needed) the data dir of ``node_id`` and replay it.

        Raises IdentityMismatch, CorruptionError or StorageError; each message is one line that
        says what to do. Repairs made on the way (a torn final record cut) are listed in
        ``notes`` for the caller to log.

        ``files`` is the file layer (the real one by default); ``on_fsync(seconds)`` observes
        each log fsync, on the writer thread; ``commit_interval`` bounds how often a change of
        only the commit index rewrites the hard state file (see ``graft.storage.writer``);
        ``clock`` is the monotonic clock that interval is measured with.

        ``inline_fsync`` enables the adaptive inline fsync with these thresholds (see
        ``graft.storage.inline_fsync``; threaded mode only); None writes every batch on the
        writer thread.

        ``threaded=False`` does the writes on the calling thread instead of a writer thread:
        each reactor turn's persists are written by one ``reactor.callLater(0, ...)`` (with a
        Clock, ``advance(0)``), or at once by ``write_pending()``. Tools without a running
        reactor use this mode (``close`` then completes synchronously).
        """
        files = files if files is not None else OSFileSystem()
        data_dir = Path(data_dir)
        if segment_bytes < 4096:
            raise ValueError("segment_bytes must be at least 4096")
        if not files.exists(data_dir):
            files.makedirs(data_dir)
            files.sync_dir(data_dir.parent)  # the new directory's own name must survive a crash
        _check_or_write_identity(files, data_dir, node_id=node_id, cluster=cluster)
        for name in files.listdir(data_dir):
            if name in (IDENTITY_FILE + ".tmp", HARD_STATE_FILE + ".tmp"):
                files.unlink(data_dir / name)  # a crash interrupted an atomic replace
        snapshots = SnapshotStore(files, data_dir)
        found = recover(files, data_dir, snapshots, clean=True)
        tracker = InlineFsync(inline_fsync, clock) if inline_fsync is not None else None
        disk = SegmentSet(
            files,
            data_dir,
            segment_bytes=segment_bytes,
            segments=found.replay.segments,
            next_index=found.next_index,
            on_fsync=_observers(tracker, on_fsync),
        )
        repair(files, data_dir, found.replay)
        if found.discard:
            disk.discard_all(found.first_index)
        hard_state = found.hard_state
        writer = BatchWriter(
            files,
            data_dir,
            disk,
            hard_state=hard_state,
            commit_interval=commit_interval,
            clock=clock,
        )
        return cls(
            files=files,
            data_dir=data_dir,
            reactor=reactor if reactor is not None else _default_reactor(),
            writer=writer,
            threaded=threaded,
            entries=found.entries,
            first_index=found.first_index,
            hard_state=hard_state,
            snapshots=snapshots,
            snapshot=found.snapshot,
            notes=found.notes,
            inline_fsync=tracker,
        )

    # -- LogStorage: reads, from memory ------------------------------------------------------

    def initial_state(self) -> tuple[HardState, Membership | None]:
        entries = self._entries
        for offset in range(len(entries) - 1, -1, -1):
            if entries.kind(offset) == EntryKind.MEMBERSHIP:
                return self._hard_state, decode_membership(entries.data(offset))
        if self._snapshot_meta.index > 0:
            return self._hard_state, self._snapshot_meta.membership
        return self._hard_state, None

    def first_index(self) -> int:
        return self._first

    @property
    def log_bytes(self) -> int:
        """The size of the log's segment files (for metrics and status). The writer thread
        changes the list: a copy of it is taken at once, and each size is one int to read."""
        return sum(segment.size for segment in list(self._writer.disk.segments))

    def last_index(self) -> int:
        return self._first + len(self._entries) - 1

    def term(self, index: int) -> int:
        offset = index - self._first
        if 0 <= offset < len(self._entries):
            return self._entries.term(offset)
        if index == self._snapshot_meta.index:
            return self._snapshot_meta.term
        if offset < 0:
            raise LogCompacted(f"index {index} is compacted (first index {self._first})")
        raise LogUnavailable(f"index {index} is beyond the last index {self.last_index()}")

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        if lo < self._first:
            raise LogCompacted(f"index {lo} is compacted (first index {self._first})")
        if hi > self.last_index() + 1:
            raise LogUnavailable(f"index {hi - 1} is beyond the last index {self.last_index()}")
        if lo >= hi:
            return []
        first = self._first
        return self._entries.entries(lo - first, hi - first, first, max_bytes)

    def snapshot_meta(self) -> SnapshotMeta:
        return self._snapshot_meta

    @property
    def hard_state(self) -> HardState:
        """The latest hard state given to ``persist`` (durable or not yet)."""
        return self._hard_state

    # -- writes ------------------------------------------------------------------------------

    def persist(self, hard_state: HardState | None, entries: Sequence[Entry]) -> Deferred[None]:
        """Record a Ready's hard state and entries now; the Deferred fires once they are
        durable (in call order). Entries may start at or below ``last_index() + 1``, replacing
        the conflicting suffix.

        The exception is the commit index: a change of only the commit index fires at once
        when nothing is queued, and is written with the next write (or on close)."""
        if self._failure is not None or self._closed is not None:
            return fail(self._failure or StorageError("the log is closed; reopen it to write"))
        entries = tuple(entries)
        if not entries and hard_state is not None and self._unfired == 0:
            latest = self._hard_state
            if hard_state.term == latest.term and hard_state.vote == latest.vote:
                # Only the commit index moved, and everything before is durable: Raft asks no
                # disk for the commit index before anything is answered (the leader teaches it
                # again), so it rides with the next write instead of waking the writer thread,
                # a round trip that at low load costs each node more than the fsync.
                self._apply(hard_state, entries)
                self._carried = hard_state
                return succeed(None)
        self._apply(hard_state, entries)
        deferred: Deferred[None] = Deferred()
        # Encoded here, so that under load it overlaps the writer thread's current fsync.
        records = encode_records(entries) if entries else None
        op = WriteOp(hard_state=hard_state, entries=entries, records=records, deferred=deferred)
        inline = self.inline_fsync
        if inline is not None and inline.choose(
            len(records) if records is not None else 0, writer_idle=self._unfired == 0
        ):
            self._write_inline(op)
        else:
            self._submit(op)
        return deferred

    def append_sync(self, entries: Sequence[Entry]) -> None:
        """Append (or replace a suffix) and return once durable. For tools and tests."""
        entries = tuple(entries)
        self._apply(None, entries)
        self._run_sync(WriteOp(entries=entries))

    def set_hard_state_sync(self, hard_state: HardState) -> None:
        """Write the hard state durably before returning. For tools and tests."""
        self._apply(hard_state, ())
        self._run_sync(WriteOp(hard_state=hard_state, force_hard_state=True))

    def _apply(self, hard_state: HardState | None, entries: tuple[Entry, ...]) -> None:
        if entries:
            first = entries[0].index
            if entries[-1].index - first != len(entries) - 1:
                raise ValueError("entries must have consecutive indexes")
            if first > self.last_index() + 1:
                raise ValueError(f"entry {first} leaves a gap after {self.last_index()}")
            if first < self._first:
                raise ValueError(f"entry {first} is below the first index {self._first}")
            self._entries.truncate(first - self._first)
            self._entries.extend(entries)
        if hard_state is not None:
            self._hard_state = hard_state

    # -- snapshots and compaction ------------------------------------------------------------

    def save_snapshot(
        self,
        meta: SnapshotMeta,
        fsm_name: str,
        write: Callable[[BinaryIO], object],
        *,
        chain: str | None = None,
    ) -> None:
        """Write a snapshot of the FSM (``write`` fills the file) durably; the previous one is
        deleted once this one is. Blocking: call it from a worker thread.

        A snapshot received from the leader (``install_snapshot``) may overtake this one while
        it is written; then the received one wins, whatever the order of the two files' writes,
        and this save raises SnapshotSuperseded (a ValueError): its file is never written, or is
        deleted when the received one is, and the log's view of its snapshot stays the newer
        one. Without that, the log could claim snapshot N while its entries start after M > N
        (a node that can neither vote nor campaign), or lose M's file (one that cannot start).
        ``chain``: the FSM's token for this snapshot, named by a later delta as its base.
        """
        if meta.index <= self._snapshot_meta.index:
            raise SnapshotSuperseded(
                f"snapshot {meta.index} is not newer than {self._snapshot_meta.index}"
            )
        self._adopt(self._snapshots.save(meta, fsm_name, write, chain=chain))

    def save_snapshot_delta(
        self,
        meta: SnapshotMeta,
        fsm_name: str,
        write: Callable[[BinaryIO], object],
        *,
        base_chain: str,
        chain: str,
    ) -> None:
        """As ``save_snapshot``, the FSM writing only what changed since the snapshot whose
        chain token is ``base_chain`` (an SQLite WAL; ``SnapshotStore.save_delta``), which
        the store folds into its full copy. DeltaRefused (nothing kept) if that snapshot is
        no longer the latest: the FSM must then write a whole one."""
        if meta.index <= self._snapshot_meta.index:
            raise SnapshotSuperseded(
                f"snapshot {meta.index} is not newer than {self._snapshot_meta.index}"
            )
        info = self._snapshots.save_delta(meta, fsm_name, write, base_chain=base_chain, chain=chain)
        self._adopt(info)

    def _adopt(self, info: SnapshotInfo) -> None:
        with self._snapshot_lock:
            if info.meta.index <= self._snapshot_meta.index:
                raise SnapshotSuperseded(
                    f"snapshot {info.meta.index} was overtaken by {self._snapshot_meta.index}"
                )
            self._snapshot_info = info
            self._snapshot_meta = info.meta

    def open_snapshot_image(self, info: SnapshotInfo) -> BinaryIO:
        """``info``'s data file for sending or downloading whole (not checked; callable from
        any thread): no delta is folded into it until it is closed. SnapshotBusy while one
        is (try again shortly)."""
        return self._snapshots.open_image(info)

    def snapshot_info(self) -> SnapshotInfo | None:
        """The durable snapshot's manifest (FSM name, size, checksum), if any."""
        return self._snapshot_info

    def open_snapshot(self) -> tuple[SnapshotMeta, BinaryIO] | None:
        """The durable snapshot, its data checked against the manifest (the caller closes it)."""
        info = self._snapshot_info
        if info is None:
            return None
        return info.meta, self._snapshots.open(info)

    def install_snapshot(
        self, meta: SnapshotMeta, path: Path, fsm_name: str = ""
    ) -> Deferred[None]:
        """Adopt a snapshot received from the leader (the file at ``path`` is copied in).

        As in Raft's InstallSnapshot: if the log has the snapshot's last entry (same index and
        term) it is kept, otherwise the whole log is discarded. Fires once durable."""
        if self._failure is not None or self._closed is not None:
            return fail(self._failure or StorageError("the log is closed; reopen it to write"))
        with self._snapshot_lock:
            if meta.index <= self._snapshot_meta.index:
                raise ValueError(f"snapshot {meta.index} is not newer than {self._snapshot_meta}")
            keep = (
                self._first <= meta.index <= self.last_index()
                and self.term(meta.index) == meta.term
            )
            if not keep:
                self._entries = EntryColumns()
                self._first = meta.index + 1
            self._snapshot_meta = meta

        def install(disk: SegmentSet) -> SnapshotInfo:
            info = self._snapshots.install(meta, fsm_name, Path(path))
            if not keep:
                disk.discard_all(meta.index + 1)
            return info

        def installed(info: SnapshotInfo) -> None:
            with self._snapshot_lock:
                if self._snapshot_meta.index == info.meta.index:
                    self._snapshot_info = info

        deferred: Deferred[None] = Deferred()
        self._submit(WriteOp(action=install, then=installed, deferred=deferred))
        return deferred.addCallback(lambda _: None)

    def compact(self, index: int, keep: int = 0) -> Deferred[None]:
        """Delete the whole segments holding only entries at or below ``index - keep`` (which
        must be covered by the snapshot); the log then starts at the first kept segment."""
        if index > self._snapshot_meta.index:
            raise ValueError(
                f"cannot compact to {index}: the snapshot ends at {self._snapshot_meta.index}"
            )
        if self._failure is not None or self._closed is not None:
            return fail(self._failure or StorageError("the log is closed; reopen it to write"))
        below = index - keep + 1

        def dropped(first_on_disk: int) -> None:
            if first_on_disk > self._first:
                garbage = self._entries.drop_front(first_on_disk - self._first)
                self._first = first_on_disk
                release_in_slices(garbage, self._reactor.callLater)

        deferred: Deferred[None] = Deferred()
        self._submit(
            WriteOp(action=lambda disk: disk.drop_before(below), then=dropped, deferred=deferred)
        )
        return deferred.addCallback(lambda _: None)

    # -- the writer ------------------------------------------------------------------------------

    def _submit(self, op: WriteOp) -> None:
        if self._carried is not None:
            if op.hard_state is None:
                op.hard_state = self._carried
            self._carried = None
        if op.deferred is not None:
            self._unfired += 1
        if self._thread is not None:
            self._thread.submit(op)
            return
        self._pending.append(op)
        if self._flush_call is None and op.event is None:
            self._flush_call = self._reactor.callLater(0, self.write_pending)

    def set_leading(self, leading: bool) -> None:
        """The driver says whether this node leads: a leader never fsyncs inline."""
        if self.inline_fsync is not None:
            self.inline_fsync.leading = leading

    def _write_inline(self, op: WriteOp) -> None:
        """Write ``op`` here, on the reactor thread, and fire its Deferred before returning.
        Only while nothing is queued for the writer thread (which then sleeps on its empty
        queue, so the disk has one user) and nothing is left to report, so order holds."""
        if self._carried is not None:
            if op.hard_state is None:
                op.hard_state = self._carried
            self._carried = None
        self._unfired += 1
        failure: BaseException | None = None
        try:
            self._writer.write([op])
        except Exception as error:  # as on the writer thread: this and every later op fails
            failure = error
        self._batch_written([op], failure, self._writer.disk.last_index, here=True)

    def write_pending(self) -> None:
        """Synchronous mode: write everything queued now, as one batch, on this thread."""
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        batch, self._pending = self._pending, []
        if not batch:
            return
        failure: BaseException | None = None
        if self._failure is None:
            try:
                self._writer.write(batch)
            except Exception as error:
                failure = error
        self._batch_written(batch, failure, self._writer.disk.last_index)

    def _run_sync(self, op: WriteOp) -> None:
        if self._failure is not None or self._closed is not None:
            raise self._failure or StorageError("the log is closed; reopen it to write")
        op.event = threading.Event()
        self._submit(op)
        if self._thread is None:
            self.write_pending()
        op.event.wait()
        if op.error is not None:
            raise op.error
        if op.then is not None:
            op.then(op.result)

    def _batch_written(
        self, batch: list[WriteOp], error: BaseException | None, durable: int, here: bool = False
    ) -> None:
        """Called where the batch was written (the writer thread, or the caller: then, or with
        ``here``, the Deferreds fire at once)."""
        failure = self._failure
        if error is not None and failure is None:
            failure = StorageError(
                f"{self.data_dir}: writing the log failed ({error}); stop the node, fix the "
                "disk (space, permissions, hardware) and start it again"
            )
            failure.__cause__ = error
            self._failure = failure
        if failure is None:
            self.durable_index = durable
        deferred_ops = []
        for op in batch:
            if op.event is not None:
                op.error = failure
                op.event.set()
            else:
                deferred_ops.append(op)
        if not deferred_ops:
            return
        if self._thread is None or here:
            self._fire(deferred_ops, failure)
        else:
            self._reactor.callFromThread(self._fire, deferred_ops, failure)

    def _fire(self, ops: list[WriteOp], failure: StorageError | None) -> None:
        for op in ops:
            if op.deferred is None:
                continue
            self._unfired -= 1
            if failure is not None:
                op.deferred.errback(failure)
                continue
            if op.then is not None:
                op.then(op.result)
            op.deferred.callback(op.result if op.then is not None else None)

    def close(self) -> Deferred[None]:
        """Write what is queued, close the files and stop the writer thread."""
        if self._closed is not None:
            return self._closed
        self._closed = Deferred()
        if self._carried is not None:
            self._submit(WriteOp())  # takes the carried hard state; the writer's close writes it
        if self._thread is None:
            self.write_pending()
            error: BaseException | None = None
            try:
                if self._failure is None:
                    self._writer.close()
                else:
                    self._writer.disk.abandon()
            except Exception as failure:
                error = failure
            self._closing_done(error)
        else:
            self._thread.stop()
        return self._closed

    def _writer_stopped(self, error: BaseException | None) -> None:
        self._reactor.callFromThread(self._closing_done, error)

    def _closing_done(self, error: BaseException | None) -> None:
        if self._thread is not None:
            self._thread.join()
        assert self._closed is not None
        if error is not None:
            self._closed.errback(StorageError(f"{self.data_dir}: closing the log failed ({error})"))
        else:
            self._closed.callback(None)


def _observers(
    tracker: InlineFsync | None, on_fsync: Callable[[float], None] | None
) -> Callable[[float], None] | None:
    """What each fsync's duration goes to: the inline fsync's window and the caller's."""
    if tracker is None or on_fsync is None:
        return on_fsync if tracker is None else tracker.observe
    observe = tracker.observe

    def both(seconds: float) -> None:
        observe(seconds)
        on_fsync(seconds)

    return both


def _check_or_write_identity(
    files: FileSystem, data_dir: Path, *, node_id: str, cluster: str
) -> None:
    found = read_identity(files, data_dir)
    if found is not None:
        check_identity(data_dir / IDENTITY_FILE, found, node_id=node_id, cluster=cluster)
        return
    names = files.listdir(data_dir)
    if any(
        parse_segment_name(name) is not None or name == HARD_STATE_FILE or name.startswith("snap-")
        for name in names
    ):
        raise StorageError(
            f"{data_dir}: holds graft data but no {IDENTITY_FILE} file; restore the file from a "
            "backup, or move this data dir aside to start a fresh node"
        )
    write_identity(files, data_dir, Identity(node_id=node_id, cluster=cluster))
