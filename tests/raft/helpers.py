"""Shared helpers for the core's tests: seeded clusters and hand-made logs."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from random import Random
from typing import TypeVar

from graft.raft.config import RaftConfig
from graft.raft.memory import MemoryStorage
from graft.raft.messages import Message
from graft.raft.types import Entry, HardState, Membership
from graft.testing.simulation.cluster import Cluster

M = TypeVar("M")


def make_cluster(
    ids: Iterable[str] = ("n1", "n2", "n3"),
    *,
    seed: int = 1,
    storages: dict[str, MemoryStorage] | None = None,
    **config: object,
) -> Cluster:
    """A cluster whose nodes use RaftConfig defaults overridden by ``config``."""
    ids = sorted(ids)
    base = RaftConfig(id="", bootstrap=Membership(voters=frozenset(ids)), **config)  # type: ignore[arg-type]
    return Cluster(ids, Random, config=base, seed=seed, storages=storages)


def storage_with(
    terms: Sequence[int], *, term: int | None = None, commit: int = 0
) -> MemoryStorage:
    """A storage whose log has one entry per element of ``terms`` (its term).

    The data of an entry depends only on its index and term, so equal (index, term) pairs on
    different nodes are equal entries, as the Log Matching property demands.
    """
    storage = MemoryStorage()
    storage.append(
        [Entry(index=k + 1, term=t, data=f"{k + 1}@{t}".encode()) for k, t in enumerate(terms)]
    )
    storage.set_hard_state(
        HardState(term=term if term is not None else max(terms, default=0), commit=commit)
    )
    return storage


def log_terms(cluster: Cluster, nid: str) -> list[int]:
    log = cluster.node(nid).log
    return [log.term(i) for i in range(1, log.last_index() + 1)]


class Recorder:
    """Wraps a cluster's network to remember every message sent (and optionally drop some)."""

    def __init__(self, cluster: Cluster) -> None:
        self.sent: list[Message] = []
        self.drop: list[type] = []
        cluster.delays = self._delays

    def _delays(self, msg: Message) -> list[int]:
        self.sent.append(msg)
        if any(isinstance(msg, t) for t in self.drop):
            return []
        return [0]

    def of(self, kind: type[M], sender: str | None = None, to: str | None = None) -> list[M]:
        return [
            m
            for m in self.sent
            if isinstance(m, kind)
            and (sender is None or m.sender == sender)
            and (to is None or m.to == to)
        ]
