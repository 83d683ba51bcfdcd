"""graft.fsm.kv_map: the kv FSM's map split by hash, so that no resize copies it all."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from graft.fsm.kv import KeyValueStateMachine
from graft.fsm.kv_map import SHARDS, ShardedMap
from graft.testing.kv import put


class ShardedMapTests(SynchronousTestCase):
    def test_behaves_like_a_dict(self) -> None:
        plain = {f"key-{i}": f"value-{i}" for i in range(3000)}
        sharded = ShardedMap(plain)
        self.assertEqual(len(sharded), len(plain))
        self.assertEqual(sharded.to_dict(), plain)
        self.assertEqual(dict(sharded.pairs()), plain)
        self.assertEqual(sorted(sharded), sorted(plain))
        self.assertEqual(sharded["key-7"], "value-7")
        self.assertIn("key-7", sharded)
        self.assertIsNone(sharded.get("absent"))
        self.assertEqual(sharded.get("absent", "d"), "d")
        self.assertRaises(KeyError, lambda: sharded["absent"])
        self.assertEqual(sharded.pop("key-7"), "value-7")
        self.assertIsNone(sharded.pop("key-7"))
        copy = sharded.copy()
        sharded["key-8"] = "changed"
        self.assertEqual(copy["key-8"], "value-8")
        self.assertEqual(len(copy), len(plain) - 1)

    def test_entries_spread_over_the_shards(self) -> None:
        # What bounds a resize: no shard holds more than a few times its share.
        sharded = ShardedMap({f"key-{i}": "v" for i in range(SHARDS * 100)})
        self.assertLess(sharded.largest_shard(), 300)


class KeyValueMapTests(SynchronousTestCase):
    def test_the_fsm_keeps_its_keys_in_shards(self) -> None:
        fsm = KeyValueStateMachine()
        count = SHARDS * 40
        for i in range(count):
            fsm.apply(put(f"k{i}", "v"), i + 1)
        largest = fsm._data.largest_shard()
        self.assertLess(largest, count // 16)
        self.assertEqual(sum(len(s) for s in fsm._data.shards), count)
