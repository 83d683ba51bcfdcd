"""examples/lock.py's Lock on three in-memory nodes: one fencing token per grant, increasing,
a lease that ends only by the latest time seen, and a resource that refuses stale tokens."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

from graft import Rejected, Replica, ReplicatedObject
from tests.support.driver import DriverCluster

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "lock.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("graft_example_lock", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = load_example()


class LockExample(DriverCluster):
    def setUp(self) -> None:
        self.start_nodes(fsm=lambda: ReplicatedObject(example.Lock()))
        leader = self.leader()
        self.follower = next(n for n in self.network.nodes if n != leader)
        self.lock = Replica(self.network.nodes[self.follower], example.Lock)

    def call(self, d: Any) -> Any:
        result = self.result(d)
        if hasattr(result, "raiseException"):
            result.raiseException()
        return result

    def test_grants_tokens_and_fences_stale_writes(self) -> None:
        first = self.call(self.lock.acquire("a", 100.0, 5))
        self.assertEqual((first["granted"], first["token"]), (True, 1))
        held = self.call(self.lock.acquire("b", 101.0, 5))
        self.assertEqual((held["granted"], held["holder"]), (False, "a"))
        # a stalls past its lease: b gets the lock with a newer token and writes.
        second = self.call(self.lock.acquire("b", 105.0, 5))
        self.assertEqual((second["granted"], second["token"]), (True, 2))
        self.assertEqual(self.call(self.lock.write(2, "k", "from b")), 2)
        # a wakes up and writes with its old token: refused, whatever a's clock says.
        with self.assertRaises(Rejected):
            self.call(self.lock.write(1, "k", "from a"))
        self.assertFalse(self.call(self.lock.release("a", 1)))
        # A clock running behind cannot bring b's lease back to life for someone else.
        behind = self.call(self.lock.acquire("c", 50.0, 5))
        self.assertFalse(behind["granted"])
        self.assertTrue(self.call(self.lock.release("b", 2)))
        third = self.call(self.lock.acquire("c", 50.0, 5))
        self.assertEqual((third["granted"], third["token"]), (True, 3))
        with self.assertRaises(Rejected):
            self.call(self.lock.write(4, "k", "never granted"))
        state = self.call(self.lock.holder_now(consistency="strong"))
        self.assertEqual(state, {"holder": "c", "until": 110.0, "token": 3})
