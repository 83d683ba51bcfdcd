"""The driver's own snapshot raced by a snapshot installed from the leader (issue #15, item 3):
one node on a real DurableLog (temp dir, writes on the test's thread), its worker thread
replaced by a call the test runs at the chosen moment."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial import unittest

from graft.driver.settings import DriverSettings
from graft.driver.wiring import build_node
from graft.fsm.kv import KeyValueStateMachine
from graft.raft.config import RaftConfig
from graft.raft.node import RaftNode
from graft.raft.types import Membership, SnapshotMeta
from graft.storage import DurableLog
from graft.testing.kv import put
from tests.storage.test_snapshots import _HookedLock
from tests.support.driver import TICK, run_until

MEMBERS = Membership(voters=frozenset({"a"}))


class SnapshotInstallRaceTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.dir = Path(self.mktemp())
        self.dir.mkdir()
        self.data_dir = self.dir / "a"
        self.storage = self.open_storage()
        self.calls: list[tuple[Deferred[Any], Callable[..., Any], tuple[Any, ...]]] = []
        raft = RaftNode(RaftConfig(id="a", bootstrap=MEMBERS), self.storage, random.Random(0))
        self.node = build_node(
            raft=raft,
            storage=self.storage,
            fsm=KeyValueStateMachine(),
            clock=self.clock,
            run_in_thread=self.defer_to_test,
            settings=DriverSettings(
                tick_seconds=TICK,
                command_timeout=2.0,
                query_timeout=2.0,
                api_urls={"a": "http://127.0.0.1:18999"},
                fsm_name="kv",
            ),
        )
        self.node.startService()
        run_until(self.clock, self.node.is_leader, "a leads")
        done: list[object] = []
        self.node.submit([put("k", str(i)) for i in range(5)]).addBoth(done.append)
        run_until(self.clock, lambda: done, "the commands applied", seconds=20 * TICK)
        self.assertIsInstance(done[0], list)

    def open_storage(self) -> DurableLog:
        return DurableLog.open(
            self.data_dir, node_id="a", cluster="test", reactor=self.clock, threaded=False
        )

    def defer_to_test(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.calls.append((d, f, args))
        return d

    def run_worker(self) -> None:
        """The worker thread's turn: run the captured call, hand its outcome to the reactor."""
        d, f, args = self.calls.pop(0)
        outcome = maybeDeferred(f, *args)
        outcome.addBoth(lambda r: d.errback(r) if isinstance(r, Failure) else d.callback(r))

    def run_restore(self) -> None:
        """The worker thread's turn for the FSM's restore from the installed snapshot."""
        names = [getattr(f, "__name__", None) for _, f, _ in self.calls]
        self.calls.insert(0, self.calls.pop(names.index("restore_fsm")))
        self.run_worker()

    def received(self) -> tuple[SnapshotMeta, Path]:
        """A snapshot from the leader, well past this node's applied index."""
        applied = self.node._parts.applied.applied
        meta = SnapshotMeta(index=applied + 40, term=self.node._raft.term + 1, membership=MEMBERS)
        leader_fsm = KeyValueStateMachine()
        leader_fsm.apply(put("k", "leader"), 1)
        path = self.dir / "received.snap"
        with path.open("wb") as sink:
            leader_fsm.begin_snapshot()(sink)
        return meta, path

    def check_received_wins(self, meta: SnapshotMeta, taken: list[object]) -> None:
        self.assertEqual(len(taken), 1)
        self.assertEqual(taken[0], {"index": meta.index, "term": meta.term})
        self.assertEqual(self.storage.snapshot_meta(), meta)
        self.assertEqual(self.storage.term(meta.index), meta.term)
        self.assertEqual(self.node._parts.snapshots.index, meta.index)
        self.assertEqual(self.storage.snapshot_info().meta, meta)  # type: ignore[union-attr]
        self.node._parts.ticks.stop()
        self.successResultOf(self.storage.close())
        again = self.open_storage()
        self.assertEqual(again.snapshot_meta(), meta)
        self.assertEqual(again.first_index(), meta.index + 1)
        self.successResultOf(again.close())

    def test_install_during_the_snapshot_copy(self) -> None:
        """A snapshot from the leader installed while the node's own is being copied: the own
        one is dropped, the node keeps the leader's (storage, driver, after a restart)."""
        taken: list[object] = []
        self.node.take_snapshot().addBoth(taken.append)
        meta, path = self.received()
        _, save, (own, fsm_name, write) = self.calls[0]

        def copy_then_install(sink: Any) -> None:
            write(sink)
            self.node._parts.snapshots.install(meta, path)  # on the reactor, mid-copy

        self.calls[0] = (self.calls[0][0], save, (own, fsm_name, copy_then_install))
        self.run_worker()
        self.storage.write_pending()  # the writer's turn: the install
        self.storage.write_pending()  # the compaction the old code queued after its save
        self.run_restore()
        self.check_received_wins(meta, taken)

    def test_install_written_before_the_snapshot_file(self) -> None:
        """The install is written in full between the worker's start and its file write: the
        own snapshot must not then delete the leader's file (a node that cannot restart)."""
        taken: list[object] = []
        self.node.take_snapshot().addBoth(taken.append)
        meta, path = self.received()

        def install_now() -> None:
            self.node._parts.snapshots.install(meta, path)
            self.storage.write_pending()

        store = self.storage._snapshots
        store._lock = _HookedLock(store._lock, install_now)  # type: ignore[assignment]
        self.run_worker()
        self.storage.write_pending()
        self.run_restore()
        self.check_received_wins(meta, taken)

    def test_proposals_skipped_by_an_installed_snapshot_are_forgotten(self) -> None:
        """A proposal whose entry the node never applies itself (a snapshot from the leader
        covers it) leaves no proposal time behind in the driver."""
        self.node._parts.ticks.stop()
        pending = self.node.submit([put("k", "lost")])  # proposed; its Ready not taken yet
        pending.addErrback(lambda _: None)
        index = self.node._raft.status().last_index
        self.assertIn(index, self.node._parts.applier.proposed_at)
        meta, path = self.received()
        self.node._parts.snapshots.install(meta, path)
        self.storage.write_pending()
        self.run_restore()
        self.assertGreater(meta.index, index)
        self.assertEqual(self.node._parts.snapshots.index, meta.index)
        self.assertEqual(self.node._parts.applier.proposed_at, {})

    def test_writer_unused_when_superseded_is_released(self) -> None:
        """Storage refuses the node's own snapshot before writing it (the leader's, newer, was
        installed first): the FSM's writer is closed in the worker (a forked writer's child is
        reaped, a thread writer's overlay released) rather than left pinned for good."""
        taken: list[object] = []
        self.node.take_snapshot().addBoth(taken.append)
        meta, path = self.received()
        self.node._parts.snapshots.install(meta, path)
        self.storage.write_pending()
        self.run_restore()
        self.run_worker()  # the save: refused before it calls the writer
        self.storage.write_pending()
        self.assertEqual(len(self.calls), 1)
        _, close, _ = self.calls[0]
        self.assertEqual(getattr(close, "__name__", None), "close")
        self.run_worker()
        self.assertEqual(taken, [{"index": meta.index, "term": meta.term}])
