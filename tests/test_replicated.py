"""Replicated objects (graft.replicated) and the embedding API (graft.embed) on three in-memory
GraftNodes on a Clock (tests/support/driver.py): calls on any node become commands applied on
every replica, Rejected reaches the caller, snapshots carry the declared state."""

from __future__ import annotations

import io
from typing import Any

from twisted.trial import unittest

from graft import Consistency, EmbeddedNode, Rejected, Replica, ReplicatedObject, command, query
from graft.fsm import CommandRejected, CorruptSnapshot
from graft.replicated import NotJSON
from tests.support.driver import TICK, DriverCluster


class Counter:
    """The state machine under test: a counter with a history, refusing non-positive steps."""

    def __init__(self) -> None:
        self.value = 0
        self.history: list[int] = []

    @command
    def add(self, amount: int, note: str = "") -> dict[str, Any]:
        if not isinstance(amount, int) or amount <= 0:
            raise Rejected(f"amount must be a positive integer, not {amount!r}")
        self.value += amount
        self.history.append(amount)
        return {"value": self.value, "note": note}

    @command
    def explode(self) -> None:
        self.value += 1000
        raise KeyError("a bug in the command")

    @query
    def get(self) -> int:
        return self.value

    @query
    def last(self, count: int) -> list[int]:
        if count < 0:
            raise Rejected("count must not be negative")
        return self.history[-count:] if count else []


class Replicas(DriverCluster):
    def setUp(self) -> None:
        self.objects: dict[str, Counter] = {}
        self.fatal: list[str] = []
        ids = iter(("a", "b", "c"))

        def fsm() -> ReplicatedObject:
            node_id = next(ids)
            obj = self.objects[node_id] = Counter()
            return ReplicatedObject(obj)

        self.start_nodes(fsm=fsm, stop_process=lambda: self.fatal.append("stopped"))

    def follower(self) -> str:
        leader = self.leader()
        return next(n for n in self.network.nodes if n != leader)

    def replica(self, node_id: str) -> Replica:
        return Replica(self.network.nodes[node_id], Counter)

    def test_a_call_on_a_follower_runs_on_every_replica(self) -> None:
        follower = self.follower()
        answer = self.result(self.replica(follower).add(5, note="hi"))
        self.assertEqual(answer, {"value": 5, "note": "hi"})
        answer = self.result(self.replica(self.leader()).add(2))
        self.assertEqual(answer, {"value": 7, "note": ""})
        self.wait_until(
            lambda: all(o.value == 7 for o in self.objects.values()), "every replica at 7"
        )
        self.assertEqual({tuple(o.history) for o in self.objects.values()}, {(5, 2)})

    def test_rejected_reaches_the_caller_and_changes_nothing(self) -> None:
        follower = self.follower()
        self.result(self.replica(follower).add(3))
        failure = self.result(self.replica(follower).add(-1))
        failure.trap(Rejected)
        self.assertEqual(failure.value.message, "amount must be a positive integer, not -1")
        index = self.network.nodes[self.leader()].status().commit
        for node_id in self.network.nodes:
            self.wait_applied(node_id, index)
        self.assertEqual([o.value for o in self.objects.values()], [3, 3, 3])

    def test_queries_at_each_consistency(self) -> None:
        follower = self.follower()
        replica = self.replica(follower)
        self.result(replica.add(4))
        self.assertEqual(self.result(replica.get(consistency="strong")), 4)
        self.assertEqual(self.result(replica.get(consistency=Consistency.DEFAULT)), 4)
        self.wait_until(lambda: self.objects[follower].value == 4, "the follower applied")
        self.assertEqual(self.result(replica.get(consistency="weak")), 4)
        self.assertEqual(self.result(replica.last(1)), [4])
        self.result(replica.last(-1)).trap(Rejected)
        self.assertRaises(ValueError, replica.get, consistency="eventual")

    def test_bad_arguments_are_refused_before_anything_is_sent(self) -> None:
        replica = self.replica(self.leader())
        before = self.network.nodes[self.leader()].status().last_index
        self.assertRaises(NotJSON, replica.add, {1, 2})
        self.assertRaises(NotJSON, replica.add, 1, note={1: "int key"})
        self.assertRaises(NotJSON, replica.add, float("nan"))
        self.assertRaises(TypeError, replica.add, 1, 2, 3)
        self.assertRaises(TypeError, replica.add, colour="red")
        self.assertRaises(AttributeError, getattr, replica, "value")
        self.assertEqual(self.network.nodes[self.leader()].status().last_index, before)

    def test_hostile_commands_are_rejected_and_the_node_goes_on(self) -> None:
        node = self.network.nodes[self.leader()]
        hostile = [
            b"\xff",
            b"[]",
            b'{"method": "add", "args": [1]}',
            b'{"method": "get", "args": [], "kwargs": {}}',  # a query is not a command
            b'{"method": "__init__", "args": [], "kwargs": {}}',
            b'{"method": "add", "args": [1, 2, 3], "kwargs": {}}',
            b'{"method": "add", "args": [' + b"1" * 200 + b'], "kwargs": {}}',
            b'{"method": "add", "args": [' + b"[" * 100 + b"]" * 100 + b'], "kwargs": {}}',
            b'{"method": "add", "args": [NaN], "kwargs": {}}',
        ]
        results = self.result(node.submit(hostile))
        self.assertEqual([r.error is not None for r in results], [True] * len(hostile))
        # Refused by the decoder's bounds, before the method could see them.
        self.assertIn("more than 100 digits", results[6].error)
        self.assertIn("nested deeper than 32 levels", results[7].error)
        self.assertEqual(self.fatal, [])
        self.assertEqual(self.result(self.replica(self.leader()).add(1))["value"], 1)

    def test_any_other_exception_stops_the_node(self) -> None:
        self.result(self.replica(self.leader()).explode())
        self.wait_until(lambda: len(self.fatal) == 3, "every replica stopped")
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 3)

    def test_snapshot_restores_the_declared_state(self) -> None:
        self.result(self.replica(self.leader()).add(6))
        source = ReplicatedObject(self.objects[self.leader()])
        image = io.BytesIO()
        source.snapshot(image)
        fresh = Counter()
        ReplicatedObject(fresh).restore(io.BytesIO(image.getvalue()))
        self.assertEqual((fresh.value, fresh.history), (6, [6]))
        self.assertRaises(
            CorruptSnapshot, ReplicatedObject(Other()).restore, io.BytesIO(image.getvalue())
        )


class Other:
    def __init__(self) -> None:
        self.value = 0

    @command
    def add(self, amount: int) -> None:
        self.value += amount


class Declaring(unittest.TestCase):
    def test_a_command_using_a_clock_is_refused(self) -> None:
        def stamped(self: object) -> float:
            import time

            return time.time()

        def rolled(self: object) -> Any:
            return random.random()  # type: ignore[name-defined] # noqa: F821

        self.assertRaises(TypeError, command, stamped)
        self.assertRaises(TypeError, command, rolled)

    def test_custom_state_is_used_for_snapshots(self) -> None:
        class Pair:
            def __init__(self) -> None:
                self.items = ["x"]
                self.cache = object()  # not state: left out by __getstate__

            def __getstate__(self) -> Any:
                return self.items

            def __setstate__(self, state: Any) -> None:
                self.items = state

            @command
            def push(self, item: str) -> int:
                self.items.append(item)
                return len(self.items)

        fsm = ReplicatedObject(Pair())
        self.assertEqual(fsm.apply(b'{"args":["y"],"kwargs":{},"method":"push"}', 1), b"2")
        image = io.BytesIO()
        fsm.snapshot(image)
        fresh = Pair()
        ReplicatedObject(fresh).restore(io.BytesIO(image.getvalue()))
        self.assertEqual(fresh.items, ["x", "y"])

    def test_a_result_that_is_not_json_is_a_bug(self) -> None:
        class Leaky:
            @command
            def leak(self) -> Any:
                return {1, 2}

        self.assertRaises(
            NotJSON, ReplicatedObject(Leaky()).apply, b'{"args":[],"kwargs":{},"method":"leak"}', 1
        )

    def test_rejected_becomes_the_fsm_rejection(self) -> None:
        fsm = ReplicatedObject(Counter())
        with self.assertRaises(CommandRejected) as caught:
            fsm.apply(b'{"args":[0],"kwargs":{},"method":"add"}', 1)
        self.assertIn("positive", str(caught.exception))


class Embedded(DriverCluster):
    """EmbeddedNode around the in-memory nodes: leadership callbacks and stop."""

    def setUp(self) -> None:
        self.start_nodes(fsm=lambda: ReplicatedObject(Counter()))

    def embed(self, node_id: str) -> EmbeddedNode:
        embedded = EmbeddedNode(
            self.network.nodes[node_id], clock=self.clock, poll_seconds=TICK, cls=Counter
        )
        self.addCleanup(embedded.stop)
        return embedded

    def test_leader_changes_are_reported(self) -> None:
        watcher = self.embed("a")
        seen: list[str | None] = []
        watcher.on_leader_change(seen.append)
        first = self.result(watcher.wait_for_leader())
        self.wait_until(lambda: seen == [first], "the first leader reported")
        self.assertEqual(watcher.leader(), first)
        if first == "a":  # watch from a node that stays in the majority
            watcher = self.embed("b")
            seen = []
            watcher.on_leader_change(seen.append)
            self.wait_until(lambda: seen == [first], "b saw the leader")
        self.network.isolate(first)
        self.wait_until(
            lambda: seen and seen[-1] not in (None, first), "a new leader reported", seconds=10
        )
        self.assertEqual(seen[-1], watcher.leader())

    def test_replica_and_raw_calls_through_the_embedded_node(self) -> None:
        self.leader()
        embedded = self.embed("c")
        self.assertEqual(self.result(embedded.replica.add(9))["value"], 9)
        answer = self.result(embedded.query(b'{"args":[],"kwargs":{},"method":"get"}', "strong"))
        self.assertEqual(answer.output, b"9")

    def test_stop_stops_the_node_once(self) -> None:
        self.leader()
        embedded = self.embed("a")
        first, second = embedded.stop(), embedded.stop()
        self.assertIsNone(self.result(first))
        self.assertIsNone(self.result(second))
        self.assertFalse(self.network.nodes["a"].running)
        self.assertIsNone(self.result(embedded.stop()))
