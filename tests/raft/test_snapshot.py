"""Snapshots in the core: InstallSnapshot on the follower (paper Figure 13) and the leader's
side (sending, report_snapshot, retrying a lost snapshot)."""

from __future__ import annotations

from random import Random

from twisted.trial import unittest

from graft.raft.config import RaftConfig
from graft.raft.errors import LogCompacted
from graft.raft.memory import MemoryStorage
from graft.raft.messages import AppendEntries, AppendEntriesResponse, Heartbeat, InstallSnapshot
from graft.raft.node import RaftNode
from graft.raft.progress import ProgressState
from graft.raft.ready import Ready, Role
from graft.raft.types import (
    Entry,
    EntryKind,
    HardState,
    Membership,
    SnapshotMeta,
    encode_membership,
)
from graft.testing.simulation.cluster import Cluster
from tests.raft.helpers import Recorder, make_cluster, storage_with

THREE = Membership(voters=frozenset({"n1", "n2", "n3"}))


def follower(storage: MemoryStorage, bootstrap: Membership = THREE) -> RaftNode:
    return RaftNode(RaftConfig(id="n2", bootstrap=bootstrap), storage, Random(7))


def drive(node: RaftNode, storage: MemoryStorage) -> Ready:
    """Carry out one Ready as the driver does: install the snapshot, persist, advance."""
    ready = node.ready()
    if ready.snapshot is not None:
        storage.apply_snapshot(ready.snapshot)
    if ready.hard_state is not None:
        storage.set_hard_state(ready.hard_state)
    storage.append(ready.entries)
    node.advance(ready)
    return ready


def install(meta: SnapshotMeta, term: int = 3) -> InstallSnapshot:
    return InstallSnapshot(term=term, sender="n1", to="n2", snapshot=meta)


def answers(ready: Ready) -> list[AppendEntriesResponse]:
    return [m for m in ready.messages if isinstance(m, AppendEntriesResponse)]


def behind_cluster() -> tuple[Cluster, Recorder]:
    """n1 leads; n3 was down while n1 committed entries and compacted its log past them."""
    c = make_cluster(seed=3)
    rec = Recorder(c)
    c.elect("n1")
    c.propose("n1", [b"a", b"b"])
    c.stabilize()
    c.crash("n3")
    c.propose("n1", [b"c", b"d", b"e"])
    c.stabilize()
    return c, rec


class FollowerInstallTests(unittest.SynchronousTestCase):
    def test_conflicting_log_is_replaced_and_appends_follow(self) -> None:
        """A follower whose log conflicts with the snapshot drops it, takes the snapshot's
        index as commit and applied, hands the snapshot (not entries) to the driver with its
        answer in the same Ready, and then accepts entries after the snapshot."""
        storage = storage_with([1, 1, 2, 2], term=2, commit=2)
        node = follower(storage)
        meta = SnapshotMeta(index=5, term=3, membership=THREE)
        node.step(install(meta))
        # Before the driver installs it, the pending snapshot is what the log starts after.
        self.assertEqual(node.log.first_index(), 6)
        self.assertEqual(node.log.last_index(), 5)
        self.assertEqual(node.log.term(5), 3)
        self.assertRaises(LogCompacted, node.log.term, 4)
        self.assertEqual(node.status().snapshot, meta)
        ready = drive(node, storage)
        self.assertEqual(ready.snapshot, meta)
        self.assertEqual(ready.committed_entries, ())
        self.assertEqual(ready.entries, ())
        self.assertIsNotNone(ready.hard_state)
        assert ready.hard_state is not None
        self.assertEqual((ready.hard_state.term, ready.hard_state.commit), (3, 5))
        [answer] = answers(ready)
        self.assertTrue(answer.success)
        self.assertEqual(answer.match_index, 5)
        status = node.status()
        self.assertEqual((status.commit, status.applied, status.first_index), (5, 5, 6))
        self.assertFalse(node.has_ready(), "the snapshot is handed out once")

        after = (Entry(index=6, term=3, data=b"f"), Entry(index=7, term=3, data=b"g"))
        node.step(
            AppendEntries(
                term=3, sender="n1", to="n2", prev_index=5, prev_term=3, entries=after, commit=7
            )
        )
        ready = drive(node, storage)
        self.assertIsNone(ready.snapshot)
        self.assertEqual(ready.entries, after)
        [answer] = answers(ready)
        self.assertEqual((answer.success, answer.match_index), (True, 7))
        ready = drive(node, storage) if not ready.committed_entries else ready
        self.assertEqual([e.index for e in ready.committed_entries], [6, 7])
        self.assertEqual(storage.entries(6, 8), list(after))

    def test_appends_before_the_install_are_written_after_it(self) -> None:
        """Entries that arrive after the restore but before the driver installed the snapshot
        are appended after the snapshot's index and come in the next Ready, and the answer
        to them waits for that Ready; nothing at or below the snapshot is ever applied."""
        storage = storage_with([1, 1, 2, 2], term=2, commit=2)
        node = follower(storage)
        meta = SnapshotMeta(index=5, term=3, membership=THREE)
        node.step(install(meta))
        first = node.ready()
        entry = Entry(index=6, term=3, data=b"f")
        node.step(
            AppendEntries(
                term=3, sender="n1", to="n2", prev_index=5, prev_term=3, entries=(entry,), commit=6
            )
        )
        self.assertEqual(node.log.last_index(), 6)
        storage.apply_snapshot(meta)
        node.advance(first)
        second = drive(node, storage)
        self.assertEqual(second.entries, (entry,))
        self.assertEqual([a.match_index for a in answers(second)], [6])
        applied = [e.index for e in second.committed_entries]
        if not applied:
            applied = [e.index for e in drive(node, storage).committed_entries]
        self.assertEqual(applied, [6])
        self.assertEqual(storage.last_index(), 6)

    def test_log_holding_the_snapshot_entry_only_commits(self) -> None:
        """When the follower's log already has the snapshot's last entry (same index and
        term), it keeps its log, advances its commit there and installs nothing."""
        storage = storage_with([1, 1, 2, 2], term=2, commit=1)
        node = follower(storage)
        node.step(install(SnapshotMeta(index=3, term=2, membership=THREE)))
        ready = drive(node, storage)
        self.assertIsNone(ready.snapshot)
        self.assertEqual([a.match_index for a in answers(ready)], [3])
        self.assertEqual(node.log.committed, 3)
        self.assertEqual(node.log.last_index(), 4)
        self.assertEqual(node.log.first_index(), 1)
        committed = ready.committed_entries or drive(node, storage).committed_entries
        # Nothing was applied before (applied starts at 0): entries up to the new commit.
        self.assertEqual([e.index for e in committed], [1, 2, 3])

    def test_stale_snapshot_is_answered_without_restore(self) -> None:
        """A snapshot at or below the follower's commit is answered with its commit index;
        the log and the applied index stay as they were."""
        storage = storage_with([1, 1, 2, 2], term=3, commit=4)
        node = follower(storage)
        node.step(install(SnapshotMeta(index=3, term=2, membership=THREE)))
        ready = drive(node, storage)
        self.assertIsNone(ready.snapshot)
        self.assertEqual([(a.success, a.match_index) for a in answers(ready)], [(True, 4)])
        self.assertEqual((node.log.first_index(), node.log.last_index()), (1, 4))
        self.assertEqual(storage.snapshot_meta(), SnapshotMeta())

    def test_membership_comes_from_the_snapshot(self) -> None:
        """After a restore the membership is the snapshot's, and a node the snapshot lists
        as a learner becomes a learner; a restart reads the same membership back."""
        storage = storage_with([1, 1], term=1, commit=1)
        node = follower(storage)
        new = Membership(voters=frozenset({"n1", "n3", "n4"}), learners=frozenset({"n2"}))
        node.step(install(SnapshotMeta(index=9, term=3, membership=new)))
        drive(node, storage)
        self.assertEqual(node.membership, new)
        self.assertEqual(node.status().membership, new)
        self.assertIs(node.role, Role.LEARNER)
        restarted = follower(storage)
        self.assertEqual(restarted.membership, new)
        self.assertEqual(restarted.status().applied, 9)


class KeepingStorage(MemoryStorage):
    """A storage that, like DurableLog.install_snapshot, keeps its log when it holds the
    snapshot's last entry."""

    def apply_snapshot(self, meta: SnapshotMeta) -> None:
        holds = self.first_index() <= meta.index <= self.last_index()
        if holds and self.term(meta.index) == meta.term:
            self.compact(meta.index, meta.membership)
            return
        super().apply_snapshot(meta)


class KeptSuffixTests(unittest.SynchronousTestCase):
    def test_entries_storage_keeps_after_the_snapshot_are_applied(self) -> None:
        """If storage keeps durable entries after the snapshot (the core had shadowed them
        with a conflicting append it then dropped), the core counts them as written: they
        are applied once committed, and a MEMBERSHIP entry among them is the membership."""
        storage = KeepingStorage()
        five = Membership(voters=frozenset({"n1", "n2", "n3", "n4"}))
        storage.append(
            [
                Entry(index=1, term=1),
                Entry(index=2, term=2),
                Entry(index=3, term=2),
                Entry(index=4, term=2, kind=EntryKind.MEMBERSHIP, data=encode_membership(five)),
            ]
        )
        storage.set_hard_state(HardState(term=2, commit=1))
        node = follower(storage)
        # A term-3 leader that lacks index 2 overwrites it (not yet handed to the driver) ...
        node.step(
            AppendEntries(
                term=3,
                sender="n3",
                to="n2",
                prev_index=1,
                prev_term=1,
                entries=(Entry(index=2, term=3),),
                commit=1,
            )
        )
        # ... then the term-4 leader's snapshot, which holds the term-2 entries, arrives.
        meta = SnapshotMeta(index=3, term=2, membership=THREE)
        node.step(install(meta, term=4))
        self.assertEqual(node.membership, THREE)
        drive(node, storage)
        self.assertEqual(storage.last_index(), 4)
        self.assertEqual(node.log.last_index(), 4)
        self.assertEqual(node.membership, five)
        node.step(Heartbeat(term=4, sender="n1", to="n2", commit=4, seq=1))
        ready = drive(node, storage)
        self.assertEqual([e.index for e in ready.committed_entries], [4])


class LeaderSnapshotTests(unittest.SynchronousTestCase):
    def test_follower_behind_first_index_gets_snapshot_then_entries(self) -> None:
        """A follower that needs compacted entries receives InstallSnapshot at the leader's
        snapshot; after its answer the leader replicates the entries after the snapshot."""
        c, rec = behind_cluster()
        self.assertTrue(c.compact("n1"))
        compacted = c.nodes["n1"].storage.snapshot_meta()
        self.assertEqual(compacted.index, c.node("n1").log.committed)
        c.propose("n1", [b"after"])
        c.start("n3")
        c.run(3)
        c.stabilize()
        sent = rec.of(InstallSnapshot, sender="n1", to="n3")
        self.assertEqual([m.snapshot for m in sent], [compacted])
        n3 = c.nodes["n3"]
        self.assertEqual(n3.storage.snapshot_meta(), compacted)
        leader = c.node("n1")
        self.assertEqual(c.node("n3").log.last_index(), leader.log.last_index())
        self.assertEqual(c.node("n3").log.committed, leader.log.committed)
        self.assertEqual(n3.applied[-1].data, b"after")
        # Entries the snapshot covers are not applied again, the next one is.
        applied = [e.index for e in n3.applied]
        self.assertNotIn(compacted.index, applied)
        self.assertIn(compacted.index + 1, applied)
        self.assertIs(leader.status().progress["n3"].state, ProgressState.REPLICATE)

    def test_failed_report_makes_the_leader_retry(self) -> None:
        """report_snapshot(ok=False) returns the follower to probing, and the next heartbeat
        answer sends InstallSnapshot again (well before the retry timeout)."""
        c, rec = behind_cluster()
        c.report_snapshots = False
        c.compact("n1")
        rec.drop = [InstallSnapshot]
        c.start("n3")
        c.run(2)
        leader = c.node("n1")
        self.assertEqual(len(rec.of(InstallSnapshot, to="n3")), 1)
        self.assertIs(leader.status().progress["n3"].state, ProgressState.SNAPSHOT)
        c.run(2)
        self.assertEqual(len(rec.of(InstallSnapshot, to="n3")), 1, "paused while in flight")
        leader.report_snapshot("n3", False)
        self.assertIs(leader.status().progress["n3"].state, ProgressState.PROBE)
        rec.drop = []
        c.run(2)
        self.assertEqual(len(rec.of(InstallSnapshot, to="n3")), 2)
        c.stabilize()
        self.assertEqual(c.node("n3").log.committed, leader.log.committed)

    def test_lost_snapshot_is_resent_after_an_election_timeout(self) -> None:
        """With neither a report nor an answer, the leader sends InstallSnapshot again once
        an election timeout has passed, so a lost message cannot wedge the follower."""
        c, rec = behind_cluster()
        c.report_snapshots = False
        c.compact("n1")
        rec.drop = [InstallSnapshot]
        c.start("n3")
        c.run(2)
        self.assertEqual(len(rec.of(InstallSnapshot, to="n3")), 1)
        rec.drop = []
        c.run(5)
        self.assertEqual(len(rec.of(InstallSnapshot, to="n3")), 1)
        c.run(10)
        self.assertEqual(len(rec.of(InstallSnapshot, to="n3")), 2)
        c.stabilize()
        self.assertEqual(
            c.nodes["n3"].storage.snapshot_meta().index, c.nodes["n1"].storage.snapshot_meta().index
        )

    def test_successful_report_waits_for_the_follower(self) -> None:
        """report_snapshot(ok=True) moves the follower to probing just after the snapshot but
        sends nothing until the follower answers, so an append cannot overtake the install."""
        c, rec = behind_cluster()
        c.report_snapshots = False
        c.compact("n1")
        snap = c.nodes["n1"].storage.snapshot_meta()
        rec.drop = [InstallSnapshot]
        c.start("n3")
        c.run(2)
        leader = c.node("n1")
        before = len(rec.of(AppendEntries, to="n3"))
        leader.report_snapshot("n3", True)
        c.process("n1")
        progress = leader.status().progress["n3"]
        self.assertEqual((progress.state, progress.next), (ProgressState.PROBE, snap.index + 1))
        self.assertEqual(len(rec.of(AppendEntries, to="n3")), before)
