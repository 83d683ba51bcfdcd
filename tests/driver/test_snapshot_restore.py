"""A follower restoring the leader's snapshot keeps serving (graft.driver.fsm_work): nodes on
real DurableLogs (temp dirs, writes on the Clock) with the kv FSM; the follower's worker
thread is replaced by one that holds the FSM's restore until the test lets it run, so the test
looks at the node while the restore is under way."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, BinaryIO

from graft.driver.port import Consistency
from graft.errors import NoLeader
from graft.fsm import digest
from graft.fsm.kv import KeyValueStateMachine
from graft.raft.ready import Role
from graft.testing.kv import put
from tests.support.driver import NODES, HeldThread
from tests.support.snapshot_cluster import VALUE, KvSnapshotCluster

GET_FIRST = b'{"op":"get","key":"key000000"}'


def held_restores() -> HeldThread:
    """A node's worker thread: everything runs at once on the test's thread, except the FSM's
    restore from a received snapshot, held until ``release``."""
    return HeldThread(lambda f: getattr(f, "__name__", None) == "restore_fsm")


class RecordingKv(KeyValueStateMachine):
    """The kv FSM, counting its restores and closes; ``fail`` makes its restore raise after
    reading part of the snapshot, as a disk error would."""

    def __init__(self) -> None:
        super().__init__(fork_min_keys=0)
        self.restores = 0
        self.closes = 0
        self.fail = False

    def restore(self, source: BinaryIO) -> None:
        self.restores += 1
        if self.fail:
            source.read(100)
            raise OSError("reading the snapshot: Input/output error")
        super().restore(source)

    def close(self) -> None:
        self.closes += 1
        super().close()


class SnapshotRestoreTests(KvSnapshotCluster):
    def setUp(self) -> None:
        self.threads: dict[str, HeldThread] = {}
        self.recording: dict[str, RecordingKv] = {}  # self.fsms, with their type
        self.stopped: dict[str, int] = {}
        self.addCleanup(self._release_all)
        self.start_cluster()
        self.follower = next(n for n in NODES if n != self.leader_id)

    def _release_all(self) -> None:
        for thread in self.threads.values():
            while thread.held:
                thread.release()

    def make_fsm(self, node_id: str) -> RecordingKv:
        self.recording[node_id] = RecordingKv()
        return self.recording[node_id]

    def worker(self, node_id: str) -> HeldThread:
        self.threads[node_id] = held_restores()
        return self.threads[node_id]

    def stop_process(self, node_id: str) -> Callable[[], None]:
        self.stopped[node_id] = 0

        def stop() -> None:
            self.stopped[node_id] += 1

        return stop

    def wait_restore_held(self, node_id: str, count: int = 1) -> None:
        thread = self.threads[node_id]
        self.wait_until(lambda: len(thread.held) >= count, f"{node_id} restores a snapshot")

    def last_key(self, fsm: RecordingKv) -> bytes:
        """The follower's answer for the last key written."""
        key = f"key{self.written - 1:06d}"
        return fsm.query(f'{{"op":"get","key":"{key}"}}'.encode())

    def test_follower_serves_while_restoring(self) -> None:
        """While the FSM's restore runs, the follower answers heartbeats (no election, the
        leader counts it active), acknowledges the snapshot and persists the appends after it,
        answers /status (not ready); but applies nothing and serves no read until the restore
        is done, then catches up."""
        follower, fsm = self.follower, self.recording[self.follower]
        node = self.network.nodes[follower]
        # Settled first: the leader's commit index reaches an idle follower a moment later.
        self.wait_applied(follower, self.network.nodes[self.leader_id].status().commit)
        applied_before = node.status().applied
        taken = self.cut_off_then_snapshot(follower)
        self.wait_restore_held(follower)
        term = self.network.nodes[self.leader_id].status().term
        installed = self.logs[follower].snapshot_meta().index
        self.assertGreaterEqual(installed, taken)
        read: list[object] = []
        node.query(GET_FIRST, Consistency.WEAK).addBoth(read.append)
        own: list[Any] = []
        node.take_snapshot().addBoth(own.append)  # not of a half-restored FSM: after it
        self.write(100)  # committed by the other two while the follower restores
        leader = self.network.nodes[self.leader_id]
        self.wait_until(
            lambda: self.logs[follower].last_index() == leader.status().last_index,
            "the follower persists the appends after the snapshot",
        )
        self.advance(1.5)  # several election timeouts: heartbeats keep it a follower
        progress = leader.status().progress
        assert progress is not None
        self.assertGreaterEqual(progress[follower].match, leader.status().commit)
        self.assertTrue(progress[follower].active)
        status = node.status()
        self.assertEqual((status.role, status.term), (Role.FOLLOWER.value, term))
        self.assertEqual(status.applied, applied_before)
        self.assertFalse(node.is_ready())
        self.assertEqual(self.stopped[follower], 0)
        self.assertEqual(fsm.query(GET_FIRST), b'{"value":null}')  # nothing applied to it
        self.assertEqual((read, own), ([], []))  # they wait for the restore
        self.threads[follower].release()
        self.agree(follower)
        self.assertEqual(fsm.restores, 1)
        self.assertEqual(len(read), 1, read)
        self.assertEqual(read[0].output, f'{{"value":"{VALUE}"}}'.encode())  # type: ignore[attr-defined]
        self.assertTrue(node.is_ready())
        self.wait_until(lambda: own, "the snapshot is taken")
        self.assertGreaterEqual(own[0]["index"], installed)

    def test_failed_restore_stops_the_node(self) -> None:
        """A restore that raises (a disk error mid-file) stops the node, and nothing is
        applied to the FSM after it, whatever commits meanwhile."""
        follower, fsm = self.follower, self.recording[self.follower]
        fsm.fail = True
        self.cut_off_then_snapshot(follower)
        self.wait_restore_held(follower)
        self.write(100)
        during = self.recording[self.leader_id].query(b'{"op":"get","key":"key001099"}')
        self.threads[follower].release()
        self.assertEqual(self.stopped[follower], 1)
        node = self.network.nodes[follower]
        self.assertTrue(node.stopping)
        self.write(100)
        self.advance(0.5)
        self.assertEqual(fsm.query(GET_FIRST), b'{"value":null}')
        self.assertNotEqual(during, b'{"value":null}')  # (on the leader)
        self.assertEqual(fsm.query(b'{"op":"get","key":"key001099"}'), b'{"value":null}')
        self.assertEqual(fsm.restores, 1)
        errors = self.flushLoggedErrors(OSError)
        self.assertEqual(len(errors), 1)

    def test_second_snapshot_waits_for_the_first_restore(self) -> None:
        """A newer snapshot arrives while the first is restored: storage adopts it, its restore
        waits for the first (never two at once), both run in order and the follower ends with
        the leader's state."""
        follower, fsm = self.follower, self.recording[self.follower]
        first = self.cut_off_then_snapshot(follower)
        self.wait_restore_held(follower)
        second = self.cut_off_then_snapshot(follower, count=1500)
        self.assertGreater(second, first)
        restores = self.network.nodes[follower]._parts.snapshots.fsm_work
        self.wait_until(lambda: restores.restoring_to >= second, "the follower installs the second")
        self.assertEqual(self.logs[follower].snapshot_meta().index, restores.restoring_to)
        self.assertEqual(len(self.threads[follower].held), 1)  # the second waits its turn
        self.threads[follower].release()
        self.assertEqual(fsm.restores, 1)
        self.wait_restore_held(follower)  # the second one's file survived the first's cleanup
        self.threads[follower].release()
        self.assertEqual(fsm.restores, 2)
        self.agree(follower)

    def test_leader_change_while_restoring(self) -> None:
        """The leader stops while the follower restores: the follower is elected, its first
        write commits (persisted on a quorum) but is applied and answered only once the
        restore is done; it then holds the same state as the other node."""
        follower = self.follower
        self.cut_off_then_snapshot(follower)
        self.wait_restore_held(follower)
        old = self.leader_id
        self.network.isolate(old)
        self.network.nodes.pop(old).stopService()
        self.leader_id = self.leader()
        self.assertNotEqual(self.leader_id, old)
        leader = self.network.nodes[self.leader_id]
        done: list[object] = []
        leader.submit([put("after", VALUE)]).addBoth(done.append)
        self.wait_until(
            lambda: leader.status().commit == self.logs[follower].last_index(),
            "the new leader's entry commits, persisted on the restoring follower",
        )
        # With these seeds the restoring follower wins: it leads, commits, and applies (and
        # answers) the write only after its restore.
        self.assertEqual(self.leader_id, follower)
        self.advance(0.5)
        self.assertEqual(done, [])
        self.assertEqual(self.recording[follower].query(GET_FIRST), b'{"value":null}')
        self.threads[follower].release()
        self.wait_until(lambda: done, "the write is answered")
        self.assertIsInstance(done[0], list, str(done[0]))
        other = next(n for n in NODES if n not in (old, follower))
        self.wait_applied(other, leader.status().applied)
        self.assertEqual(digest(self.recording[other]), digest(self.recording[follower]))

    def test_stop_while_restoring_closes_the_fsm_after_it(self) -> None:
        """The node is stopped while its FSM is restored: the FSM is closed only once the
        restore's thread is done (it cannot be interrupted), and nothing is applied after."""
        follower, fsm = self.follower, self.recording[self.follower]
        self.cut_off_then_snapshot(follower)
        self.wait_restore_held(follower)
        self.write(100)
        node = self.network.nodes[follower]
        stopped: list[object] = []
        node.stopService().addBoth(stopped.append)
        self.advance(0.5)
        self.assertEqual((stopped, fsm.closes), ([], 0))
        self.assertEqual(self.last_key(fsm), b'{"value":null}')  # nothing applied meanwhile
        self.threads[follower].release()
        self.assertEqual(stopped, [None])
        self.assertEqual(fsm.closes, 1)
        self.flushLoggedErrors(NoLeader)
