"""Log replication claims of the Raft paper, one test per claim (section 5.3, 5.4)."""

from __future__ import annotations

from twisted.trial import unittest

from graft.raft.messages import AppendEntries, AppendEntriesResponse
from graft.raft.progress import ProgressState
from graft.raft.ready import Role
from graft.raft.types import EntryKind
from tests.raft.helpers import Recorder, log_terms, make_cluster, storage_with

# Figure 7 of the paper: the leader of term 8 and six possible follower logs.
FIGURE_7_LEADER = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]
FIGURE_7_FOLLOWERS = {
    "a": [1, 1, 1, 4, 4, 5, 5, 6, 6],
    "b": [1, 1, 1, 4],
    "c": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
    "d": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
    "e": [1, 1, 1, 4, 4, 4, 4],
    "f": [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
}


class ReplicationTests(unittest.SynchronousTestCase):
    def test_figure_7_followers_converge(self) -> None:
        """Each follower log of Figure 7 (missing, extra and conflicting entries) ends up equal
        to the leader's, with the leader's term-8 entry committed everywhere."""
        for name, follower in FIGURE_7_FOLLOWERS.items():
            c = make_cluster(
                storages={
                    "n1": storage_with(FIGURE_7_LEADER, term=7),
                    "n2": storage_with(follower, term=7),
                    "n3": storage_with(FIGURE_7_LEADER, term=7),
                }
            )
            leader = c.elect("n1")
            self.assertEqual(leader.term, 8, name)
            c.stabilize()
            expected = [*FIGURE_7_LEADER, 8]
            self.assertEqual(log_terms(c, "n2"), expected, name)
            self.assertEqual(c.node("n2").log.committed, len(expected), name)

    def test_figure_8_no_commit_by_counting_old_term_replicas(self) -> None:
        """A leader does not commit an entry of an earlier term because a majority stores it;
        only its own term's entry, once on a majority, commits it (paper Figure 8)."""
        ids = ["s1", "s2", "s3", "s4", "s5"]
        c = make_cluster(
            ids,
            max_msg_entries=1,
            max_inflight=1,
            storages={
                # (c) of Figure 8: s1 leads term 4 with index 2 from term 2 on s1, s2; s5 has
                # a term-3 entry at index 2.
                "s1": storage_with([1, 2], term=3, commit=1),
                "s2": storage_with([1, 2], term=3, commit=1),
                "s3": storage_with([1], term=3, commit=1),
                "s4": storage_with([1], term=3, commit=1),
                "s5": storage_with([1, 3], term=3, commit=1),
            },
        )
        c.isolate("s5")
        leader = c.node("s1")
        from graft.raft.messages import TimeoutNow

        leader.step(TimeoutNow(term=3, sender="s1", to="s1"))
        c.process("s1")
        seen_old_term_majority = False
        for _ in range(500):
            if not c.in_flight:
                break
            item = min(c.in_flight, key=lambda m: m.order)
            c.in_flight.remove(item)
            c.deliver(item)
            holders_2 = sum(1 for n in ids if c.node(n).log.term_or_none(2) == 2 and n != "s5")
            holders_3 = sum(1 for n in ids if c.node(n).log.term_or_none(3) == 4)
            if leader.role is Role.LEADER and holders_2 >= 3 and holders_3 < 3:
                seen_old_term_majority = True
                self.assertEqual(leader.log.committed, 1)
        self.assertTrue(seen_old_term_majority, "the scenario never reached Figure 8 (c)")
        self.assertEqual(leader.term, 4)
        self.assertGreaterEqual(leader.log.committed, 3)
        # s5 (Figure 8 (d)) can no longer win: its term-3 entry is not up to date.
        c.heal()
        c.run(100)
        self.assertEqual(log_terms(c, "s5")[:3], [1, 2, 4])

    def test_partitioned_old_leader_rejoins(self) -> None:
        """A leader cut off with uncommitted entries rejoins as a follower; its entries are
        replaced by the new leader's and the committed log is the same everywhere."""
        c = make_cluster()
        old = c.elect("n1")
        c.propose("n1", [b"committed"])
        c.stabilize()
        c.isolate("n1")
        c.propose("n1", [b"lost-1", b"lost-2", b"lost-3"])
        c.stabilize()
        new = c.elect("n2")
        c.propose("n2", [b"new"])
        c.stabilize()
        c.heal()
        c.run(30)
        self.assertIsNot(old.role, Role.LEADER)
        self.assertEqual(old.leader, "n2")
        datas = [e.data for e in old.log.entries(1, old.log.last_index() + 1)]
        self.assertNotIn(b"lost-1", datas)
        self.assertIn(b"new", datas)
        self.assertEqual(log_terms(c, "n1"), log_terms(c, "n2"))
        self.assertEqual(old.log.committed, new.log.committed)

    def test_long_conflicting_follower_repaired_in_few_round_trips(self) -> None:
        """Fast back-tracking skips a whole conflicting term per round trip: 1000 conflicting
        entries are repaired after a handful of rejections, not 1000."""
        leader_log = [1] * 100 + [3] * 1000
        follower_log = [1] * 100 + [2] * 1000
        c = make_cluster(
            storages={
                "n1": storage_with(leader_log),
                "n2": storage_with(follower_log),
                "n3": storage_with(leader_log),
            }
        )
        rec = Recorder(c)
        c.elect("n1")
        c.stabilize()
        rejections = [m for m in rec.of(AppendEntriesResponse, sender="n2") if not m.success]
        self.assertLessEqual(len(rejections), 3)
        self.assertEqual(log_terms(c, "n2"), [*leader_log, 4])

    def test_flow_control_limits_messages(self) -> None:
        """AppendEntries carry at most max_msg_entries entries and max_msg_bytes of data, and
        at most max_inflight of them are unacknowledged per follower."""
        c = make_cluster(max_msg_entries=5, max_msg_bytes=250, max_inflight=2)
        rec = Recorder(c)
        c.elect("n1")
        c.in_flight.clear()  # hold everything: nothing is acknowledged
        rec.sent.clear()
        c.propose("n1", [b"x" * 100] * 20)
        appends = rec.of(AppendEntries, to="n2")
        self.assertEqual(len(appends), 2)
        for m in appends:
            self.assertLessEqual(len(m.entries), 5)
            self.assertLessEqual(sum(len(e.data) for e in m.entries), 250)
        self.assertEqual(c.node("n1").status().progress["n2"].inflight, 2)
        c.stabilize()
        self.assertEqual(c.node("n2").log.last_index(), 21)

    def test_probe_then_replicate(self) -> None:
        """A new leader probes each follower, then streams once it found the match."""
        c = make_cluster()
        leader = c.elect("n1")
        self.assertIs(leader._progress["n2"].state, ProgressState.REPLICATE)
        c.crash("n2")
        c.propose("n1", [b"a"])
        c.stabilize()
        st = leader.status().progress["n2"]
        self.assertIs(st.state, ProgressState.REPLICATE)
        self.assertLess(st.match, leader.log.last_index())

    def test_committed_entries_include_all_kinds(self) -> None:
        """Ready.committed_entries carries NOOP entries too; proposals are NORMAL."""
        c = make_cluster()
        c.elect("n1")
        c.propose("n1", [b"cmd"])
        c.stabilize()
        kinds = [(e.kind, e.data) for e in c.nodes["n2"].applied]
        self.assertEqual(kinds, [(EntryKind.NOOP, b""), (EntryKind.NORMAL, b"cmd")])
