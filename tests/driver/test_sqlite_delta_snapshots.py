"""Delta snapshots end to end in the driver: nodes on real DurableLogs (temp dirs, writes on
the Clock) with the SQLite FSM. After its first whole snapshot a node takes deltas (its WAL
since the previous one) that the store folds into its full copy; a follower cut off while the
leader compacts catches up from that full copy, sent as today; a restarted node restores it;
a download holds folds off."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import formatEvent, globalLogPublisher

from graft.errors import SnapshotBusy
from graft.fsm.sqlite import SQLiteStateMachine
from tests.support.driver import NODES
from tests.support.snapshot_cluster import RunInThread, SnapshotCluster, run_now


class SQLiteDriverCase(SnapshotCluster):
    """Nodes on DurableLogs with the SQLite FSM; the snapshot settings by subclass."""

    fsm_name = "sqlite"

    def setUp(self) -> None:
        self.in_thread: list[str] = []
        self.start_cluster()
        self.submit([b"CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT UNIQUE, v TEXT)"])

    def make_fsm(self, node_id: str) -> SQLiteStateMachine:
        fsm = SQLiteStateMachine(data_dir=self.base / f"{node_id}-fsm")
        self.addCleanup(fsm.close)
        return fsm

    def snapshot_settings(self) -> dict[str, Any]:
        return {"snapshot_entries": 40, "snapshot_log_ratio": 0.0, "snapshot_trailing": 0}

    def worker(self, node_id: str) -> RunInThread:
        return self.run_in_thread

    def run_in_thread(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        """The worker thread, on the test's thread (``run_now``); the names of the functions
        run "in a thread" are kept."""
        self.in_thread.append(getattr(getattr(f, "func", f), "__name__", repr(f)))
        return run_now(f, *args)

    def submit(self, commands: list[bytes]) -> None:
        node = self.network.nodes[self.leader_id]
        results = self.result(node.submit(commands))
        self.assertIsInstance(results, list, results)

    def write(self, count: int) -> None:
        """``count`` inserts of new rows and updates of old ones, in batches of 20."""
        for start in range(self.written, self.written + count, 20):
            self.submit(
                [
                    b"INSERT INTO t (k, v) VALUES ('k%06d', printf('%%0100d', %d));"
                    b"UPDATE t SET v = 'u' || v WHERE id = %d" % (i, i, i // 2 + 1)
                    for i in range(start, start + 20)
                ]
            )
        self.written += count


class SQLiteDeltaSnapshotTests(SQLiteDriverCase):
    def test_deltas_then_catch_up_from_the_full_copy(self) -> None:
        """The leader's snapshots after its first are deltas; a follower cut off while it
        compacts receives the full copy (the deltas folded in), installs it and holds the
        leader's state; the follower then starts its own chain with a whole snapshot."""
        lagging = next(n for n in NODES if n != self.leader_id)
        self.network.isolate(lagging)
        behind = self.logs[lagging].last_index()
        self.write(400)
        leader_log = self.logs[self.leader_id]
        self.wait_until(
            lambda: leader_log.first_index() > behind + 1, "the leader compacts past it"
        )
        metrics = self.metrics[self.leader_id]
        taken = metrics.snapshots_taken._value.get()
        self.assertGreaterEqual(taken, 3)
        self.assertEqual(metrics.snapshots_delta._value.get(), taken - 1)
        info = leader_log.snapshot_info()
        assert info is not None and info.chain is not None and info.pending is None
        self.assertEqual(
            sorted(p.name.split(".")[-1] for p in info.data_path.parent.glob("snap-*")),
            ["data", "manifest"],
        )
        self.network.heal()
        self.agree(lagging)
        self.assertEqual(self.metrics[lagging].snapshots_installed._value.get(), 1)
        self.write(200)
        self.agree(lagging)
        installed = self.metrics[lagging]
        self.wait_until(lambda: installed.snapshots_taken._value.get() >= 2, "it snapshots")
        # Its first snapshot after the install is whole: the received one has no token.
        self.assertEqual(
            installed.snapshots_delta._value.get(), installed.snapshots_taken._value.get() - 1
        )

    def test_a_delta_is_copied_in_a_worker_thread(self) -> None:
        """A delta's capture copies the pages in a worker thread (its ``prepare``), then its
        ``finish`` resets the WAL on the reactor thread, then the store saves it in a worker
        thread again: the reactor thread never runs the copy."""
        self.write(100)
        metrics = self.metrics[self.leader_id]
        self.wait_until(lambda: metrics.snapshots_delta._value.get() >= 1, "a delta")
        self.assertIn("prepare", self.in_thread)
        self.assertNotIn("finish", self.in_thread)
        after = self.in_thread[self.in_thread.index("prepare") + 1 :]
        self.assertIn("save_snapshot_delta", after)
        self.assertLess(self.fsms[self.leader_id].wal_bytes(), 512 * 1024)

    def test_restarted_node_restores_the_folded_snapshot(self) -> None:
        """A follower that took delta snapshots is stopped and started again: it restores the
        folded full copy, replays the log after it and holds the leader's state."""
        node_id = next(n for n in NODES if n != self.leader_id)
        self.write(300)
        metrics = self.metrics[node_id]
        self.wait_until(lambda: metrics.snapshots_delta._value.get() >= 2, f"{node_id} deltas")
        self.agree(node_id)
        node = self.network.nodes.pop(node_id)
        stopped: list[object] = []
        node.stopService().addBoth(stopped.append)
        self.wait_until(lambda: stopped, f"{node_id} stops")
        self.fsms[node_id].close()
        self.write(100)
        self.start(node_id, seed=7)
        self.assertGreater(self.logs[node_id].first_index(), 1)
        self.agree(node_id)

    def test_a_download_holds_folds_off(self) -> None:
        """While the latest snapshot is open for a download (GET /cluster/snapshot), the
        snapshot the node takes is not folded into it: the download reads the bytes of the
        snapshot it asked for, and the delta is dropped once the wait is over; opening the
        file while a fold runs answers SnapshotBusy (503, retry)."""
        self.write(100)
        node = self.network.nodes[self.leader_id]
        self.wait_until(
            lambda: self.metrics[self.leader_id].snapshots_delta._value.get() >= 1, "a delta"
        )
        latest = node.latest_snapshot()
        assert latest is not None
        manifest, data = latest
        store = self.logs[self.leader_id]._snapshots
        store_info = self.logs[self.leader_id].snapshot_info()
        assert store_info is not None
        before = store_info.data_path.read_bytes()
        folded: list[str] = []
        store.step = folded.append
        # The fold would wait up to 120 s for the download on this thread: make it short.
        original = store.save_delta
        store.save_delta = lambda *a, **k: original(*a, **{**k, "wait": 0.05})  # type: ignore[method-assign]
        self.write(60)
        self.assertNotIn("manifest-written", folded)
        self.assertEqual(data.read(), before)
        data.close()
        self.assertEqual(manifest["index"], store_info.meta.index)

        def busy_open(name: str) -> None:
            if name == "manifest-written":
                with self.assertRaises(SnapshotBusy):
                    node.latest_snapshot()
                folded.append("refused")

        store.step = busy_open
        self.write(120)  # a whole snapshot (the dropped delta broke the chain), then deltas
        self.assertIn("refused", folded)


class SQLiteWalTriggerTests(SQLiteDriverCase):
    """The WAL's growth as a snapshot trigger (graft.driver.snapshot_policy), with
    the entry and log rules set so that they never fire."""

    def snapshot_settings(self) -> dict[str, Any]:
        return {
            "snapshot_entries": 10**9,
            "snapshot_log_ratio": 10**6,
            "snapshot_trailing": 0,
            "snapshot_wal_bytes": 256 * 1024,
        }

    def test_the_wal_passing_its_bound_takes_a_snapshot(self) -> None:
        """Writes grow the leader's WAL past the bound: it snapshots (whole, then deltas),
        and its WAL stays near the bound instead of growing with everything written."""
        metrics = self.metrics[self.leader_id]
        fsm = self.fsms[self.leader_id]
        peak = 0
        for _ in range(10):
            self.write(100)
            peak = max(peak, fsm.wal_bytes())
        self.assertGreaterEqual(metrics.snapshots_delta._value.get(), 2)
        self.assertLess(peak, 2 * 256 * 1024 + 512 * 1024)
        self.assertGreater(self.logs[self.leader_id].snapshot_meta().index, 0)


class SQLiteSnapshotLogTests(SQLiteDriverCase):
    def test_log_line_says_whole_or_delta(self) -> None:
        """Each snapshot's log line ends with how it was written: each node's first
        "whole", the next ones "a delta" (the fault suite counts them from the node logs)."""
        logged: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            if event.get("log_namespace") == "graft.node" and "kind" in event:
                logged.append(formatEvent(event))

        observer: Any = observe
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.write(200)
        metrics = self.metrics[self.leader_id]
        self.wait_until(lambda: metrics.snapshots_delta._value.get() >= 2, "two deltas")
        lines = [line for line in logged if "written in" in line]
        kinds = [line.rsplit(", ", 1)[-1] for line in lines]
        self.assertEqual(kinds[0], "whole", lines)
        self.assertEqual(set(kinds), {"whole", "a delta"}, lines)
        self.assertLessEqual(kinds.count("whole"), len(NODES), lines)
        self.assertGreaterEqual(kinds.count("a delta"), 2, lines)
