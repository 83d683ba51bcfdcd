"""The seeded random simulation: safety over many schedules, liveness, reproducibility."""

from __future__ import annotations

from random import Random

from twisted.trial import unittest

from graft.raft.node import RaftNode
from graft.raft.ready import Role
from graft.raft.types import HardState, Membership, NodeId
from graft.testing.simulation.__main__ import main as simulate_main
from graft.testing.simulation.checker import SafetyChecker, Violation
from graft.testing.simulation.run import simulate_seed
from graft.testing.simulation.schedule import MembershipOps, SimParams
from graft.testing.simulation.streams import stream_seed
from tests.raft.helpers import make_cluster

SEEDS = 300


class SimulationTests(unittest.SynchronousTestCase):
    def test_random_schedules_are_safe(self) -> None:
        """Hundreds of hostile schedules (drops, delays, duplicates, reordering, partitions,
        crashes) of 3- and 5-node clusters violate no safety property and stay live."""
        failures = []
        for seed in range(SEEDS):
            result = simulate_seed(seed, Random)
            if result.violation is not None:
                failures.append(f"seed {seed}: {result.violation}")
        self.assertEqual(failures, [])

    def test_same_seed_same_run(self) -> None:
        """A seed replays exactly: same commits, same reads, same trace."""
        a = simulate_seed(7, Random, params=SimParams(nodes=5, crash=0.05))
        b = simulate_seed(7, Random, params=SimParams(nodes=5, crash=0.05))
        self.assertEqual(a, b)
        self.assertGreater(a.commit, 0)

    def test_checker_reports_a_violation(self) -> None:
        """The checker is not blind: two leaders in one term are reported."""
        c = make_cluster()
        c.elect("n1")
        n2 = c.node("n2")
        n2._role = Role.LEADER
        with self.assertRaises(Violation):
            c.checker.observe(n2)

    def test_same_seed_same_run_with_transfers_and_membership(self) -> None:
        """Transfers and membership changes replay exactly too, and they do happen."""
        params = SimParams(nodes=3, transfer=0.03, membership=0.08)
        a = simulate_seed(11, Random, params=params)
        b = simulate_seed(11, Random, params=params)
        self.assertEqual(a, b)
        self.assertIsNone(a.violation)
        self.assertGreater(a.transfers_done, 0)
        self.assertGreater(a.memberships_committed, 0)

    def test_command_line_summary(self) -> None:
        """The command line ends with the summary line and exits 0 when all seeds pass."""
        import contextlib
        import io

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = simulate_main(["--seeds", "4", "--jobs", "1"])
        self.assertEqual(code, 0)
        self.assertEqual(out.getvalue().splitlines()[-1], "simulate: 4 seeds, 0 violations")


def four_voters() -> frozenset[str]:
    return frozenset({"n1", "n2", "n3", "n4"})


class StaleLeaderCheckTests(unittest.SynchronousTestCase):
    """SafetyChecker.stale_leaders: no leader of an older term can still gather a quorum."""

    def checker_with_leader_of(self, term: int) -> SafetyChecker:
        checker = SafetyChecker()
        checker.leaders_by_term[term] = "n2"
        checker.max_leader_term = term
        return checker

    def test_fires_when_two_disjoint_halves_could_commit(self) -> None:
        """n2 was elected in term 5, yet a stale leader n1 of term 3 whose membership has four
        voters still has three of them (itself, n4 at term 3 and a brand-new n5 at term 0)
        at or below its term: a second commit quorum, reported at once."""
        checker = self.checker_with_leader_of(5)
        terms = {"n1": 3, "n2": 5, "n3": 5, "n4": 3, "n5": 0}
        voters = frozenset({"n1", "n2", "n4", "n5"})
        with self.assertRaises(Violation) as caught:
            checker.stale_leaders([("n1", 3, voters)], terms.__getitem__)
        self.assertIn("two commit quorums", str(caught.exception))

    def test_silent_for_a_deposed_leader_that_cannot_commit(self) -> None:
        """A stale leader of term 3 beside the leader of term 5 is legitimate while a quorum
        of its voters has moved past term 3 (here two of three; one is still behind)."""
        checker = self.checker_with_leader_of(5)
        terms = {"n1": 3, "n2": 5, "n3": 4, "n4": 2}
        checker.stale_leaders([("n1", 3, frozenset({"n1", "n2", "n3"}))], terms.__getitem__)
        checker.stale_leaders([("n1", 3, four_voters())], terms.__getitem__)
        self.assertEqual(checker.stale_leaders_checked, 2)

    def test_newest_leader_is_not_checked(self) -> None:
        """The leader of the newest term may commit: it is never reported, even when every
        node is at its term."""
        checker = self.checker_with_leader_of(5)
        checker.stale_leaders([("n2", 5, four_voters())], lambda _node: 5)
        self.assertEqual(checker.stale_leaders_checked, 0)

    def test_cluster_partitioned_leader_is_legitimate(self) -> None:
        """In a real cluster, a leader cut off while the others elect a new one coexists with
        it without a report; if a voter of the new term then comes back from disk with its
        term lost (a storage bug), the old leader could commit again, and it is reported."""
        c = make_cluster()
        old = c.elect("n1")
        c.isolate("n1")
        c.elect("n2")
        self.assertIs(old.role, Role.LEADER)
        c.check_leaders()
        self.assertGreater(c.checker.stale_leaders_checked, 0)
        c.crash("n3")
        c.nodes["n3"].storage.set_hard_state(HardState(term=old.term))
        with self.assertRaises(Violation):
            c.check_leaders()


class Scripted:
    """An Rng that returns the given floats from random() and the low end from randrange."""

    def __init__(self, *floats: float) -> None:
        self.floats = list(floats)

    def random(self) -> float:
        return self.floats.pop(0)

    def randrange(self, start: int, stop: int) -> int:
        return start


class MembershipOpsTests(unittest.SynchronousTestCase):
    def test_learner_joins_catches_up_and_is_promoted(self) -> None:
        """A brand-new node joins as a learner; it is promoted only once the leader sees it
        caught up, and then votes."""
        c = make_cluster()
        c.elect("n1")
        c.propose("n1", [b"a", b"b"])
        c.stabilize()
        ids = ["n1", "n2", "n3"]
        ops = MembershipOps(c, ids, ["n4"], Scripted(0.1))
        ops.step()
        self.assertEqual(c.node("n1").membership.learners, {"n4"})
        self.assertEqual(ids, ["n1", "n2", "n3", "n4"])
        c.stabilize()
        ops.step()
        c.stabilize()
        self.assertEqual(c.node("n1").membership, Membership(voters=four_voters()))
        self.assertIs(c.node("n4").role, Role.FOLLOWER)

    def test_replacing_the_leader_hands_over_first(self) -> None:
        """Replacing the leader transfers leadership to the most caught-up voter, and the new
        leader then removes the old one."""
        c = make_cluster()
        c.elect("n1")
        c.stabilize()
        ops = MembershipOps(c, ["n1", "n2", "n3"], [], Scripted(0.8))
        ops.step()
        c.stabilize()
        new = c.leader()
        assert new is not None
        self.assertNotEqual(new.id, "n1")
        self.assertEqual(c.transfers_done, 1)
        c.run(2)
        ops.step()
        c.stabilize()
        self.assertEqual(new.membership.voters, {"n2", "n3"})
        ops.step()  # sees the removal done: free for the next change
        self.assertIsNone(ops.retiring)


class LivenessTests(unittest.SynchronousTestCase):
    def test_stable_majority_elects_and_commits(self) -> None:
        """With a majority up and connected (two of five nodes crashed, others partitioned
        away), a leader is elected and a proposal commits within a bounded number of ticks,
        for many different random timeouts."""
        bound = 100
        for seed in range(40):
            c = make_cluster(["a", "b", "c", "d", "e"], seed=seed)
            c.crash("d")
            c.crash("e")
            ticks = 0
            leader = None
            while ticks < bound:
                c.run(1)
                ticks += 1
                leader = c.leader()
                if leader is not None and leader.lease_read_index() is not None:
                    break
            self.assertIsNotNone(leader, f"seed {seed}: no leader in {bound} ticks")
            assert leader is not None
            index = c.propose(leader.id, [b"x"])[0]
            c.run(3)
            for nid in ("a", "b", "c"):
                self.assertGreaterEqual(c.node(nid).log.committed, index, f"seed {seed}")


class PlantedBugTests(unittest.SynchronousTestCase):
    """The random schedules catch a read shortcut that counts a leader outside its own
    membership (a leader that proposed its own removal, then was cut off with one voter)."""

    def test_requester_shortcut_counting_a_non_voter_leader_is_caught(self) -> None:
        def old_shortcut(self: RaftNode, requester: NodeId | None) -> bool:
            # Before issue #15: the leader itself need not be a voter.
            return (
                requester is not None
                and requester in self._membership.voters
                and self._membership.quorum() <= 2
            )

        self.assertIsNone(simulate_seed(401, Random).violation)
        self.patch(RaftNode, "_requester_completes_quorum", old_shortcut)
        violation = simulate_seed(401, Random).violation
        self.assertIsNotNone(violation)
        self.assertIn("linearizability", str(violation))


class PlantedNonVoterBugTests(unittest.SynchronousTestCase):
    """The schedules with non-voters catch a leader that counts them toward a commit."""

    def test_commit_counting_non_voters_is_caught(self) -> None:
        def counts_learners(self: RaftNode) -> bool:
            # _maybe_commit as it would be with non-voters counted like voters.
            members = self._membership.members
            matches = sorted(
                (
                    self._log.persisted_index() if p == self._id else self._progress[p].match
                    for p in members
                    if p == self._id or p in self._progress
                ),
                reverse=True,
            )
            quorum = self._membership.quorum()
            if len(matches) < quorum:
                return False
            index = matches[quorum - 1]
            if index <= self._log.committed or self._log.term_or_none(index) != self._term:
                return False
            self._log.commit_to(index)
            return True

        seed = 356  # a schedule with non-voters (the non_voters stream draws them)
        self.assertIsNone(simulate_seed(seed, Random).violation)
        self.patch(RaftNode, "_maybe_commit", counts_learners)
        violation = simulate_seed(seed, Random).violation
        self.assertIsNotNone(violation)
        self.assertIn("leader completeness", str(violation))


class StreamTests(unittest.SynchronousTestCase):
    """Named random streams (graft.testing.simulation.streams)."""

    def test_streams_named_before_keep_their_seeds(self) -> None:
        """The streams that predate their names draw from the seeds they always had, so every
        seed replays its old schedule (and the seeds named in these tests their bugs)."""
        seed = 4288
        expected = {
            "schedule": 4288,
            "snapshots": 4288 * 7919 + 17,
            "ops": 4288 * 104729 + 29,
            "disk": 4288 * 104729 + 5,
            "flaps": 4288 * 7907 + 41,
            "markers": 4288 * 7883 + 53,
            "slow_disks": 4288 * 7877 + 61,
            "cut": 4288 * 7877 + 61,
            "clocks": 4288 * 7877 + 67,
        }
        self.assertEqual({name: stream_seed(seed, name) for name in expected}, expected)
        self.assertEqual(stream_seed(seed, "node", 3), 4288 * 1000003 + 3)

    def test_new_names_need_no_numbers(self) -> None:
        """A stream with a new name gets its own seed from the name: the same every time,
        different for another name, another schedule seed or another index."""
        base = stream_seed(5, "gossip")
        self.assertEqual(stream_seed(5, "gossip"), base)
        others = {stream_seed(5, "chatter"), stream_seed(6, "gossip"), stream_seed(5, "gossip", 1)}
        self.assertNotIn(base, others)
        self.assertEqual(len(others), 3)
