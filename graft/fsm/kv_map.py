"""The kv FSM's map: a dict of strings split into ``SHARDS`` dicts by the key's hash.

Why not one dict: a dict grows by building a new table twice as large and re-inserting every
entry, in the one insert that finds the table full. For the kv FSM that insert is an applied
command on the reactor thread, on every node at about the same index: at 700,000 keys it held
the thread for ~50 ms, at 1.4 million ~100 ms, and the pause doubles with the state. Split
into ``SHARDS`` dicts, each grows on its own at 1/SHARDS of the size (well under a
millisecond at millions of keys), and since the shards fill at slightly different rates their
resizes fall on different commands. The price is one ``hash()`` (cached in the str object, and
needed by the dict anyway) and one list index per access, and a little memory per shard.

The shard of a key depends on the interpreter's string hash, which differs between processes
(PYTHONHASHSEED): nothing outside this process may depend on it. Snapshots sort the keys, and
iteration order here is not insertion order, so nothing may depend on that either.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["SHARDS", "ShardedMap"]

SHARDS = 256  # a power of two: the shard is hash(key) & (SHARDS - 1)
MASK = SHARDS - 1


class ShardedMap(Mapping[str, str]):
    """A mapping of str to str held in ``SHARDS`` dicts (``shards``, indexed by
    ``hash(key) & MASK``). Hot paths may index ``shards`` themselves; ``pairs`` iterates
    faster than ``items``."""

    __slots__ = ("shards",)

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        self.shards: list[dict[str, str]] = [{} for _ in range(SHARDS)]
        if items:
            self.update(items)

    def get(self, key: str, default: Any = None) -> Any:
        return self.shards[hash(key) & MASK].get(key, default)

    def __getitem__(self, key: str) -> str:
        return self.shards[hash(key) & MASK][key]

    def __setitem__(self, key: str, value: str) -> None:
        self.shards[hash(key) & MASK][key] = value

    def __contains__(self, key: object) -> bool:
        return key in self.shards[hash(key) & MASK]

    def pop(self, key: str, default: str | None = None) -> str | None:
        return self.shards[hash(key) & MASK].pop(key, default)

    def __len__(self) -> int:
        return sum(map(len, self.shards))

    def __iter__(self) -> Iterator[str]:
        for shard in self.shards:
            yield from shard

    def pairs(self) -> Iterator[tuple[str, str]]:
        for shard in self.shards:
            yield from shard.items()

    def update(self, items: Mapping[str, str]) -> None:
        shards = self.shards
        for key, value in items.items():
            shards[hash(key) & MASK][key] = value

    def copy(self) -> ShardedMap:
        new = ShardedMap()
        new.shards = [shard.copy() for shard in self.shards]
        return new

    def to_dict(self) -> dict[str, str]:
        """One plain dict holding every entry (for a writer that reads every key once)."""
        flat: dict[str, str] = {}
        for shard in self.shards:
            flat.update(shard)
        return flat

    def largest_shard(self) -> int:
        """The entries in the fullest shard: what one resize may have to copy."""
        return max(map(len, self.shards))
