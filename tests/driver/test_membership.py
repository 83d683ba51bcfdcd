"""The driver's membership changes and their refusals, through GraftNode's public methods on
the in-memory cluster: a node started with ``--join`` (no membership) never campaigns until it
is a member, a voter is not added twice, a learner that never catches up is refused at the
catch-up timeout, a change whose leader loses leadership says so, and a leadership transfer
answers who leads once the old leader hears of it, or a 504 when the target never took over."""

from __future__ import annotations

from typing import Any

from twisted.python.failure import Failure

from graft.driver.port import MemberList
from graft.errors import BadRequest, GraftError, MemberUnreachable, NoLeader, Timeout
from graft.raft.messages import AppendEntries, InstallSnapshot, Message, RequestVote
from graft.raft.types import Membership
from graft.testing.kv import put
from tests.support.driver import NODES, TICK, DriverCluster

NEW = "d"


class MembershipTests(DriverCluster):
    def setUp(self) -> None:
        self.sent: list[Message] = []

    def start(self, catch_up_timeout: float = 1.0, **options: Any) -> None:
        self.start_nodes(catch_up_timeout=catch_up_timeout, **options)
        self.leader_id = self.leader()
        self.node = self.network.nodes[self.leader_id]

    def watch_votes(self, node_id: str) -> None:
        """Record every vote request ``node_id`` sends (pre-votes included)."""
        channel = self.network.nodes[node_id].peers
        assert channel is not None
        send_all = channel.send_all

        def recording(messages: Any) -> None:
            self.sent.extend(m for m in messages if isinstance(m, RequestVote))
            send_all(messages)

        channel.send_all = recording  # type: ignore[method-assign]

    def error(self, d: Any, seconds: float = 5.0) -> GraftError:
        """The error ``d`` fails with, within ``seconds`` of clock time."""
        result = self.result(d, seconds)
        self.assertIsInstance(result, Failure)
        self.assertIsInstance(result.value, GraftError)
        error: GraftError = result.value
        return error

    def test_joining_node_never_campaigns_until_it_is_a_member(self) -> None:
        """A node started in joining mode (no membership) that hears from nobody stays a
        follower in term 0 and sends no vote request, for many election timeouts; once added it
        is a voter with the cluster's term, and once cut off from everyone it campaigns."""
        self.start()
        joining = self.add_node(NEW, Membership(), seed=7)
        self.watch_votes(NEW)
        for other in NODES:
            self.network.cut.add(frozenset((NEW, other)))
        self.advance(5.0)  # about 14 election timeouts of 0.35 s
        self.assertEqual(self.sent, [], "a node outside the membership asked for votes")
        self.assertEqual((joining.status().role, joining.status().term), ("learner", 0))
        self.assertIsNone(joining.status().leader)
        self.network.heal()
        members = self.result(self.node.add_member(NEW, "127.0.0.1", 9004, 8004))
        self.assertIsInstance(members, MemberList, repr(members))
        self.assertIn(NEW, members.voters)
        self.wait_until(lambda: NEW in joining.status().voters, "d knows it votes")
        self.assertEqual(joining.status().term, self.node.status().term)
        for node_id in self.network.nodes:
            self.network.isolate(node_id)
        self.wait_until(lambda: self.sent, "d, a voter now, asked for votes", seconds=10.0)

    def test_adding_a_voter_again_is_refused(self) -> None:
        """add_member of a voting member is a 400 saying so, on the leader and forwarded from
        a follower, and changes nothing."""
        self.start()
        follower = self.network.nodes[next(n for n in NODES if n != self.leader_id)]
        before = self.node.members()
        for node in (self.node, follower):
            for member in NODES:
                error = self.error(node.add_member(member, "127.0.0.1", 9100, 8100))
                self.assertIsInstance(error, BadRequest)
                self.assertEqual(error.status, 400)
                self.assertIn(f"{member} is already a voting member", error.message)
        self.advance(10 * TICK)
        self.assertEqual(self.node.members(), before)

    def test_learner_that_never_catches_up_is_refused_at_the_timeout(self) -> None:
        """A new member that runs and is connected but never catches up (the leader's appends
        to it are held back) is added as a learner and, at catch_up_timeout (1 s here) of
        clock time and not before, the add fails with a 504 naming how far it got; it stays a
        learner and the cluster still commits."""
        self.start(catch_up_timeout=1.0)
        self.add_node(NEW, Membership(), seed=7)
        self.network.hold(self.leader_id, NEW, AppendEntries, InstallSnapshot)
        pending = self.node.add_member(NEW, "127.0.0.1", 9004, 8004)
        box: list[Any] = []
        pending.addBoth(box.append)
        self.wait_until(lambda: NEW in self.node.members().learners, "d added as a learner")
        self.advance(0.8)
        self.assertEqual(box, [], "gave up before catch_up_timeout")
        self.wait_until(lambda: box, "the add failed", seconds=1.0)
        error = box[0].value
        self.assertIsInstance(error, Timeout)
        self.assertEqual(error.status, 504)
        self.assertIn(f"{NEW} did not catch up within 1 s", error.message)
        self.assertIn("stays a learner", error.message)
        members = self.node.members()
        self.assertEqual((members.voters, members.learners), (tuple(sorted(NODES)), (NEW,)))
        self.assertIsInstance(self.result(self.node.submit([put("k", "1")])), list)

    def test_member_that_does_not_run_is_reported_then_promoted_once_it_runs(self) -> None:
        """Adding a node that does not run (asked on a follower, which forwards to the leader):
        after member_unreachable_after (3 s), not the 30 s catch-up timeout, the add fails with
        409 member_unreachable saying it was added as a learner the leader cannot reach at its
        address and why, and that it is promoted once it runs; once started, it is."""
        self.start(catch_up_timeout=30.0, member_unreachable_after=3.0)
        follower = next(n for n in NODES if n != self.leader_id)
        pending = self.network.nodes[follower].add_member(NEW, "127.0.0.1", 9004, 8004)
        box: list[Any] = []
        pending.addBoth(box.append)
        self.wait_until(lambda: NEW in self.node.members().learners, "d added as a learner")
        self.wait_until(lambda: box, "the add answered", seconds=4.0)
        error = box[0].value
        self.assertIsInstance(error, MemberUnreachable)
        self.assertEqual((error.code, error.status), ("member_unreachable", 409))
        self.assertIn(
            f"{NEW} was added as a learner; the leader {self.leader_id} cannot reach it at "
            "127.0.0.1:9004 (no connection to it yet); it is promoted once it is running and "
            "caught up",
            error.message,
        )
        self.assertEqual(self.node.members().learners, (NEW,))
        self.add_node(NEW, Membership(), seed=7)
        self.wait_until(lambda: NEW in self.node.members().voters, "d promoted", seconds=5.0)
        self.assertEqual(self.node.members().learners, ())

    def test_leadership_moving_during_catch_up_is_reported(self) -> None:
        """When leadership moves while a new member catches up, the add fails with a 503
        saying so (the member stays a learner) instead of waiting or promoting it."""
        self.start(catch_up_timeout=30.0)  # the catch-up outlasts the transfer below
        pending = self.node.add_member(NEW, "127.0.0.1", 9004, 8004)
        box: list[Any] = []
        pending.addBoth(box.append)
        self.wait_until(lambda: NEW in self.node.members().learners, "d added as a learner")
        target = next(n for n in NODES if n != self.leader_id)
        moved = self.result(self.node.transfer_leadership(target))
        self.assertEqual(moved["leader"], target)
        self.wait_until(lambda: box, "the add failed", seconds=1.0)
        error = box[0].value
        self.assertIsInstance(error, NoLeader)
        self.assertEqual(error.status, 503)
        self.assertIn(f"leadership moved while {NEW} was catching up", error.message)
        members = self.network.nodes[target].members()
        self.assertNotIn(NEW, members.voters)
        self.assertIn(NEW, members.learners)

    def test_leadership_lost_while_a_change_waits_its_turn_is_reported(self) -> None:
        """A change that waits for an earlier, uncommitted one (the leader is cut off, so that
        one cannot commit) fails with a 503 saying leadership moved once the leader steps
        down, rather than proposing on a node that no longer leads; the earlier one fails too."""
        self.start(catch_up_timeout=1.0)
        first, second = (n for n in NODES if n != self.leader_id)
        self.network.isolate(self.leader_id)
        earlier = self.node.remove_member(first)
        self.advance(TICK)
        waiting = self.node.remove_member(second)
        error = self.error(waiting)
        self.assertFalse(self.node.is_leader())
        self.assertIsInstance(error, NoLeader)
        self.assertEqual(error.status, 503)
        self.assertIn("leadership moved during the membership change", error.message)
        self.assertIsInstance(self.error(earlier), NoLeader | Timeout)

    def test_transfer_answers_once_the_old_leader_hears_the_new_one_late(self) -> None:
        """The old leader steps down at once but hears from the new leader only after its wait
        of two election timeouts (the new leader's messages to it are held back): the transfer
        was done, and it answers who leads instead of a 504."""
        self.start()
        target = next(n for n in NODES if n != self.leader_id)
        self.network.hold(target, self.leader_id)
        box: list[Any] = []
        self.node.transfer_leadership(target).addBoth(box.append)
        self.advance(3 * 10 * TICK)  # three election timeouts (ten ticks each)
        self.assertFalse(self.node.is_leader())
        self.assertEqual(box, [], "answered before it knew who leads")
        self.network.release(target, self.leader_id)
        self.wait_until(lambda: box, "the transfer answered")
        self.assertEqual(
            box[0], {"leader": target, "term": self.network.nodes[target].status().term}
        )

    def test_transfer_to_a_cut_off_voter_times_out_while_still_leading(self) -> None:
        """A transfer whose target never takes over leaves this node leading: it answers the
        504 after two election timeouts, not the longer wait of a node that stepped down."""
        self.start()
        target = next(n for n in NODES if n != self.leader_id)
        self.network.isolate(target)
        box: list[Any] = []
        self.node.transfer_leadership(target).addBoth(box.append)
        self.advance(2 * 10 * TICK + 2 * TICK)
        self.assertEqual(len(box), 1, "no answer after two election timeouts")
        self.assertIsInstance(box[0], Failure)
        self.assertIsInstance(box[0].value, Timeout)
        self.assertIn(f"leadership did not move to {target}", box[0].value.message)
        self.assertTrue(self.node.is_leader())

    def test_a_stopping_leaders_hand_over_gives_up_at_two_election_timeouts(self) -> None:
        """The hand-over of a stopping leader does not wait longer to hear who leads once it
        stepped down (that wait is an operator's request's): its stop is not held up, as with
        `graft dev` stopping every node at once."""
        self.start()
        for other in (n for n in NODES if n != self.leader_id):
            self.network.hold(other, self.leader_id)
        box: list[Any] = []
        self.node._parts.membership.hand_over().addBoth(box.append)
        self.advance(2 * 10 * TICK + 2 * TICK)
        self.assertEqual(box, [None])
        self.assertFalse(self.node.is_leader())
