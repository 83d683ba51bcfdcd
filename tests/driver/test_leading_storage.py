"""The pipeline tells a leadership-aware storage whether this node leads (the durable log's
inline fsync is for followers only), before the write of the Ready that changed it."""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.defer import Deferred

from graft.raft.types import Entry, HardState
from tests.support.driver import TICK, DriverCluster, MemoryDurable


class _Recording(MemoryDurable):
    """Records set_leading and persisted entries, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.leading = False
        self.events: list[tuple[str, object]] = []

    def set_leading(self, leading: bool) -> None:
        self.leading = leading
        self.events.append(("leading", leading))

    def persist(self, hard_state: HardState | None, entries: Sequence[Entry]) -> Deferred[None]:
        if entries:
            self.events.append(("entries", self.leading))
        return super().persist(hard_state, entries)


class LeadingStorageTests(DriverCluster):
    def setUp(self) -> None:
        self.start_nodes(storage=_Recording)

    def recording(self, node: str) -> _Recording:
        storage = self.storages[node]
        assert isinstance(storage, _Recording)
        return storage

    def test_storage_follows_the_role(self) -> None:
        leader = self.leader()
        self.advance(TICK * 5)
        for node, graft in self.network.nodes.items():
            self.assertEqual(self.recording(node).leading, graft.is_leader(), node)
        # The new leader's first entry (its term's no-op) was written as a leader's.
        events = self.recording(leader).events
        became = events.index(("leading", True))
        self.assertEqual(events[became + 1], ("entries", True))
        target = next(n for n in self.network.nodes if n != leader)
        self.result(self.network.nodes[leader].transfer_leadership(target))
        self.assertEqual(self.leader(), target)
        self.advance(TICK * 5)
        self.assertTrue(self.recording(target).leading)
        self.assertFalse(self.recording(leader).leading)
