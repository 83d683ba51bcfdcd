# mypy: disable-error-code="no-untyped-call"
"""Snapshots: taking this node's (and compacting the log below it), installing one received
from the leader, and streaming this node's to a follower (graft.driver.snapshot_transfer)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO, cast

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from graft.driver.apply import Applier
from graft.driver.clock import ReactorTime
from graft.driver.fsm_work import FsmWork
from graft.driver.lifecycle import Scheduler
from graft.driver.outcomes import failed
from graft.driver.peers import PeerPort
from graft.driver.pipeline import DurableStorage
from graft.driver.settings import DriverSettings
from graft.driver.snapshot_policy import SnapshotPolicy, log_bytes, snapshot_due
from graft.driver.snapshot_transfer import LocalSnapshot, SnapshotReceiver, SnapshotSender
from graft.errors import BadRequest, GraftError, NoLeader, SnapshotBusy
from graft.fsm import IncrementalSnapshot, StateMachine, begin_snapshot
from graft.metrics import NodeMetrics
from graft.raft.messages import InstallSnapshot
from graft.raft.node import RaftNode
from graft.raft.ready import Role
from graft.raft.types import Entry, SnapshotMeta, membership_to_dict
from graft.storage.errors import DeltaRefused, SnapshotSuperseded
from graft.storage.errors import SnapshotBusy as StorageBusy
from graft.waiters import IndexWaiters

log = Logger(namespace="graft.node")

# Runs a blocking function off the reactor thread: (function, *args) -> its result.
RunInThread = Callable[..., Deferred[Any]]


class Snapshots:
    def __init__(
        self,
        *,
        raft: RaftNode,
        storage: DurableStorage,
        fsm: StateMachine,
        clock: ReactorTime,
        peers: PeerPort,
        applier: Applier,
        applied: IndexWaiters,
        pipeline: Scheduler,
        settings: DriverSettings,
        run_in_thread: RunInThread,
        receiver: SnapshotReceiver | None,
        fsm_work: FsmWork,
        metrics: NodeMetrics | None = None,
    ) -> None:
        self._raft = raft
        self._storage = storage
        self._fsm = fsm
        self._clock = clock
        self._applier = applier
        self._applied = applied
        self._pipeline = pipeline
        self._settings = settings
        self._run_in_thread = run_in_thread
        self._receiver = receiver
        # Restores of received snapshots, in a thread; applies and reads wait for them.
        self.fsm_work = fsm_work
        self._metrics = metrics or NodeMetrics()
        self._sending: dict[str, float] = {}  # follower -> when its snapshot started to leave
        self.index = storage.snapshot_meta().index  # the latest snapshot's index
        self._taking: Deferred[dict[str, Any]] | None = None
        self._policy = SnapshotPolicy(
            min_entries=settings.snapshot_entries,
            log_ratio=settings.snapshot_log_ratio,
            max_log_bytes=settings.snapshot_max_log_bytes,
            wal_bytes=settings.snapshot_wal_bytes,
        )
        # The FSM's WAL size (an FSM that has one: SQLite), and that size as the latest
        # snapshot left it: their difference is the rule's wal_bytes_since.
        self._wal_bytes: Callable[[], int] | None = getattr(fsm, "wal_bytes", None)
        self._wal_at_snapshot = 0
        # Log bytes applied since this process started, and that count as of the latest
        # snapshot's index: their difference is the rule's log_bytes_since.
        self._applied_bytes = 0
        self._bytes_at_snapshot = 0
        info = storage.snapshot_info()
        self._last_snapshot_bytes = info.size if info is not None else 0
        self._show_policy()
        self._sender = SnapshotSender(
            peers=peers,
            latest=self._latest_local,
            report=self._report,
            call_timeout=max(10.0, settings.command_timeout),
        )

    # -- from the leader ---------------------------------------------------------------------

    def receive_chunk(self, peer: str, args: dict[str, Any]) -> Deferred[dict[str, Any]]:
        """install_snapshot_chunk: a piece of the leader's snapshot."""
        if self._receiver is None:
            return failed(BadRequest(f"{self._raft.id} cannot receive snapshots"))
        try:
            return succeed(self._receiver.chunk(peer, args))
        except GraftError as e:
            return failed(e)

    def claim_received(self, meta: SnapshotMeta | None) -> Path | None:
        if meta is None or self._receiver is None:
            return None
        return self._receiver.take(meta)

    def install(self, meta: SnapshotMeta, path: Path | None) -> Deferred[None]:
        """The core restored from a snapshot the leader sent: make it this node's log before
        anything that depends on it (the acknowledgement) leaves. Fires once storage holds it
        durably (what the acknowledgement claims); the FSM is then restored from it in a thread
        (graft.driver.fsm_work), applies and reads waiting for that."""
        if path is None:
            return fail(
                RuntimeError(f"the core installed snapshot {meta.index} but no file arrived")
            )
        started = time.perf_counter()
        d: Deferred[None] = self._storage.install_snapshot(meta, path, self._settings.fsm_name)
        d.addCallback(lambda _: self._restore(meta, path, started))
        return d

    def _restore(self, meta: SnapshotMeta, path: Path, started: float) -> None:
        """Queue the FSM's restore from ``path``, the file storage just installed."""

        took: list[float] = []

        def restore_fsm() -> None:  # in a worker thread; the reactor keeps serving
            began = time.perf_counter()
            with path.open("rb") as source:
                self._fsm.restore(source)
            took.append(time.perf_counter() - began)

        def done() -> None:
            path.unlink(missing_ok=True)
            if self._receiver is not None:
                self._receiver.installed(meta)
            self.index = max(self.index, meta.index)
            self._snapshot_done(self._applied_bytes)
            self._applier.skipped_to(meta.index, meta.membership, meta.stamp_floor_ns)
            self._metrics.snapshots_installed.inc()
            self._metrics.snapshot_install_duration.observe(time.perf_counter() - started)
            log.info(
                "installed snapshot {index} from the leader (FSM restored in {seconds:.2f} s, "
                "off the reactor thread)",
                index=meta.index,
                seconds=took[0] if took else 0.0,
            )

        self.fsm_work.restore(
            meta.index, restore_fsm, done, f"restoring the FSM from snapshot {meta.index}"
        )

    # -- to a follower -----------------------------------------------------------------------

    def send(self, message: InstallSnapshot) -> None:
        """Stream this node's latest snapshot to the follower the core asked to send it to."""
        self._sending.setdefault(message.to, time.perf_counter())
        self._sender.send(message)

    def _latest_local(self) -> LocalSnapshot | None:
        info = self._storage.snapshot_info()
        if info is None:
            return None
        return LocalSnapshot(
            meta=info.meta,
            fsm_name=info.fsm_name,
            size=info.size,
            path=info.data_path,
            crc32=info.crc32,
            open=self._image_opener(info),
        )

    def _report(self, peer: str, ok: bool) -> None:
        started = self._sending.pop(peer, None)
        self._metrics.snapshots_sent.labels(result="ok" if ok else "failed").inc()
        if started is not None:
            self._metrics.snapshot_send_duration.observe(time.perf_counter() - started)
        if self._raft.role is Role.LEADER:
            self._raft.report_snapshot(peer, ok)
            self._pipeline.schedule()

    def latest(self) -> tuple[dict[str, Any], BinaryIO] | None:
        """This node's latest snapshot: its manifest and its data, open."""
        info = self._storage.snapshot_info()
        if info is None:
            return None
        manifest = {
            "index": info.meta.index,
            "term": info.meta.term,
            "fsm": info.fsm_name,
            "size": info.size,
            "membership": membership_to_dict(info.meta.membership),
        }
        opener = self._image_opener(info)
        if opener is None:
            return manifest, open(info.data_path, "rb")
        try:
            return manifest, opener()
        except StorageBusy:
            raise SnapshotBusy(
                f"snapshot {info.meta.index} is being updated with the latest changes; "
                "retry in a second"
            ) from None

    # -- this node's own -----------------------------------------------------------------------

    def maybe_snapshot(self, entries: Sequence[Entry] = ()) -> None:
        """``entries`` were just applied: take a snapshot if the rule says it is time
        (graft.driver.snapshot_policy)."""
        self._applied_bytes += log_bytes(entries)
        since = self._applied_bytes - self._bytes_at_snapshot
        self._metrics.snapshot_log_bytes.set(since)
        if self._taking is None and snapshot_due(
            self._policy,
            entries_since=self._applied.applied - self.index,
            log_bytes_since=since,
            last_snapshot_bytes=self._last_snapshot_bytes,
            wal_bytes_since=self._wal_since(),
        ):
            self.take().addErrback(_automatic_failed)

    def _snapshot_done(self, applied_bytes: int) -> None:
        """A snapshot (this node's or the leader's) is now the latest: the rule counts from
        it, ``applied_bytes`` being the count of log bytes applied as of its index."""
        self._bytes_at_snapshot = max(self._bytes_at_snapshot, applied_bytes)
        if self._wal_bytes is not None:
            # What the snapshot left in the WAL (commands applied while it was written, or
            # frames a query's open read kept from being reset) counts from here.
            self._wal_at_snapshot = self._wal_bytes()
        info = self._storage.snapshot_info()
        if info is not None:
            self._last_snapshot_bytes = info.size
        self._show_policy()

    def _wal_since(self) -> int:
        """How much the FSM's WAL grew since the latest snapshot (0 without one)."""
        if self._wal_bytes is None:
            return 0
        size = self._wal_bytes()
        # Reset below that size since (a restore replaced the database): count from there.
        self._wal_at_snapshot = min(self._wal_at_snapshot, size)
        return size - self._wal_at_snapshot

    def _show_policy(self) -> None:
        self._metrics.snapshot_log_bytes.set(self._applied_bytes - self._bytes_at_snapshot)
        self._metrics.snapshot_last_bytes.set(self._last_snapshot_bytes)
        threshold = self._policy.log_ratio * self._last_snapshot_bytes
        if self._policy.max_log_bytes > 0:
            threshold = min(threshold, self._policy.max_log_bytes)
        self._metrics.snapshot_threshold_bytes.set(threshold)

    def take(self) -> Deferred[dict[str, Any]]:
        """Snapshot the FSM at the applied index (the copy is written off the reactor thread
        while commands keep applying), then drop log segments below it."""
        return self._take(in_turn=False)

    def _take(self, *, in_turn: bool) -> Deferred[dict[str, Any]]:
        if not in_turn and self.fsm_work.busy:  # never during a restore or apply: after it
            return self.fsm_work.turn().addCallback(lambda _: self._take(in_turn=True))
        if self._taking is not None:
            # One at a time: wait for the one under way, then take one at the new applied index.
            after: Deferred[Any] = Deferred()

            def chain(result: object) -> object:
                after.callback(None)
                return result

            running: Deferred[Any] = self._taking
            running.addBoth(chain)
            return after.addCallback(lambda _: self.take())
        applied = self._applied.applied
        if applied <= self.index:
            current = self._storage.snapshot_meta()
            return succeed({"index": current.index, "term": current.term})
        meta = SnapshotMeta(
            index=applied,
            term=self._storage.term(applied),
            membership=self._applier.applied_membership,
            stamp_floor_ns=self._applier.stamp_floor_ns,
        )
        timer = time.perf_counter()
        write, save, capture, delta = self._begin_write()
        kind = "a delta" if delta else "whole"
        self._metrics.snapshot_last_pause.set(time.perf_counter() - timer)
        applied_bytes = self._applied_bytes
        started = self._clock.seconds()
        called = []

        def write_once(sink: BinaryIO) -> None:
            called.append(True)
            write(sink)

        d: Deferred[Any] = self._save(capture, save, meta, write_once)
        # Marked as under way before any callback is added: a save that has already failed
        # (a refused delta) runs ``finished`` below at once, which must find it marked to
        # clear it.
        self._taking = d

        def release(failure: Failure) -> Failure:
            # Storage refused the snapshot before writing it: let the FSM drop what it pinned
            # (a writer's child process, a copy-on-write overlay).
            close = getattr(write, "close", None)
            if not called and close is not None:
                self._run_in_thread(close).addErrback(
                    lambda f: log.failure("releasing an unused snapshot writer", failure=f)
                )
            return failure

        d.addErrback(release)

        def compact(_: object) -> Deferred[None]:
            self.index = max(self.index, meta.index)
            self._snapshot_done(applied_bytes)
            took = time.perf_counter() - timer
            self._metrics.snapshots_taken.inc()
            self._metrics.snapshot_take_duration.observe(took)
            self._metrics.snapshot_last_duration.set(took)
            log.info(
                "snapshot at index {index} (term {term}) written in {seconds:.2f} s, {kind}",
                index=meta.index,
                term=meta.term,
                seconds=self._clock.seconds() - started,
                kind=kind,
            )
            return self._storage.compact(meta.index, keep=self._settings.snapshot_trailing)

        def finished(result: object) -> object:
            self._taking = None
            return result

        d.addCallback(compact)
        d.addCallback(lambda _: {"index": meta.index, "term": meta.term})
        d.addErrback(self._superseded)
        d.addErrback(self._delta_refused)
        d.addBoth(finished)
        out: Deferred[dict[str, Any]] = Deferred()
        d.addBoth(lambda r: out.callback(r) if not isinstance(r, Failure) else out.errback(r))
        return out

    def _superseded(self, failure: Failure) -> dict[str, Any]:
        """A snapshot from the leader was installed while this node wrote its own, older one:
        storage kept the leader's and dropped this one (see DurableLog.save_snapshot)."""
        failure.trap(SnapshotSuperseded)
        current = self._storage.snapshot_meta()
        log.info(
            "snapshot dropped: {reason}; keeping snapshot {index}",
            reason=failure.value,
            index=current.index,
        )
        return {"index": current.index, "term": current.term}

    # -- delta snapshots (graft.storage.snapshots, delta mode) ---------------------------------

    def _begin_write(
        self,
    ) -> tuple[Callable[[BinaryIO], None], Callable[..., None], _Capture | None, bool]:
        """Pin the FSM's state: its writer, the storage call that saves what it writes, for
        a delta with a capture in steps (SQLite's) its ``prepare`` and ``finish``, and whether
        it is a delta.

        An FSM with ``begin_incremental_snapshot`` (SQLite) over a storage with
        ``save_snapshot_delta`` writes a delta over the latest snapshot when that snapshot is
        its own last one (the chain token the storage recorded), else a whole snapshot that
        starts a new chain; other FSMs write whole snapshots, as always."""
        incremental = getattr(self._fsm, "begin_incremental_snapshot", None)
        save_delta = getattr(self._storage, "save_snapshot_delta", None)
        if incremental is None or save_delta is None:
            return begin_snapshot(self._fsm), self._storage.save_snapshot, None, False
        info = self._storage.snapshot_info()
        base = getattr(info, "chain", None)
        plan: IncrementalSnapshot = incremental(base)
        writer = _ClosableWriter(plan.write, plan.close)
        if plan.delta and base is not None:
            self._metrics.snapshots_delta.inc()
            capture = None
            if plan.prepare is not None and plan.finish is not None:
                capture = (plan.prepare, plan.finish)
            save = functools.partial(save_delta, base_chain=base, chain=plan.token)
            return writer, save, capture, True
        # A storage with save_snapshot_delta (DurableLog) takes the chain token here too.
        save_full = cast(Any, self._storage).save_snapshot
        return writer, functools.partial(save_full, chain=plan.token), None, False

    def _save(
        self,
        capture: _Capture | None,
        save: Callable[..., None],
        meta: SnapshotMeta,
        write: Callable[[BinaryIO], None],
    ) -> Deferred[Any]:
        """Run ``save`` in a worker thread; for a delta captured in steps, first its
        ``prepare`` in a worker thread and its ``finish`` on this one (it resets the FSM's
        WAL: never while a restore runs, after it), so that the reactor thread only does
        what was written while the worker thread copied."""
        if capture is None:
            return self._run_in_thread(save, meta, self._settings.fsm_name, write)
        prepare, finish = capture
        d: Deferred[Any] = self._run_in_thread(prepare)
        d.addCallback(lambda _: self.fsm_work.turn())
        d.addCallback(lambda _: self._finish_capture(finish))
        d.addCallback(lambda _: self._run_in_thread(save, meta, self._settings.fsm_name, write))
        return d

    def _finish_capture(self, finish: Callable[[], None]) -> None:
        timer = time.perf_counter()
        finish()
        # The reactor's share of the snapshot: the pin at its start and this step.
        self._metrics.snapshot_last_pause.inc(time.perf_counter() - timer)

    def _delta_refused(self, failure: Failure) -> dict[str, Any]:
        """The storage kept no delta (its latest snapshot is not the one the delta follows,
        e.g. one the leader sent meanwhile): the FSM's next snapshot is a whole one."""
        failure.trap(DeltaRefused)
        current = self._storage.snapshot_meta()
        log.info(
            "delta snapshot dropped: {reason}; keeping snapshot {index}",
            reason=failure.value,
            index=current.index,
        )
        return {"index": current.index, "term": current.term}

    def _image_opener(self, info: Any) -> Callable[[], BinaryIO] | None:
        """Opens ``info``'s data file so that no delta is folded into it while it is read
        (a send to a follower, a download), where the storage folds deltas."""
        open_image = getattr(self._storage, "open_snapshot_image", None)
        if open_image is None:
            return None
        return functools.partial(open_image, info)


_Capture = tuple[Callable[[], None], Callable[[], None]]  # a delta's prepare and finish


class _ClosableWriter:
    """An FSM's snapshot writer with the ``close`` that ``take`` calls when it never runs."""

    def __init__(self, write: Callable[[BinaryIO], None], close: Callable[[], None]) -> None:
        self._write = write
        self.close = close

    def __call__(self, sink: BinaryIO) -> None:
        self._write(sink)


def _automatic_failed(failure: Failure) -> None:
    if failure.check(NoLeader):  # the node stops: nothing to retry
        return
    log.failure("automatic snapshot failed; will retry", failure=failure)
