# mypy: disable-error-code="no-untyped-call"
"""Deferreds waiting on the log: proposals waiting to be applied, reads waiting for an index.

The driver resolves them as entries are applied; each has its own deadline so a client never
waits forever. Kept apart from the driver so their bookkeeping can be tested on a Clock.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from twisted.internet.defer import Deferred

from graft.errors import GraftError

T = TypeVar("T")


@dataclass(slots=True)
class _Waiter(Generic[T]):
    deferred: Deferred[T]
    timer: Any = None
    term: int = 0


@dataclass(slots=True)
class ProposalWaiters:
    """Proposals by log index. A proposal succeeds when the entry applied at its index has the
    term it was proposed in; any other term there means it was overwritten and never applied."""

    clock: Any
    _by_index: dict[int, _Waiter[object]] = field(default_factory=dict)

    def add(
        self, index: int, term: int, timeout: float, on_timeout: Callable[[], GraftError]
    ) -> Deferred[object]:
        d: Deferred[object] = Deferred()
        waiter = _Waiter(deferred=d, term=term)

        def expire() -> None:
            if self._by_index.get(index) is waiter:
                del self._by_index[index]
                d.errback(on_timeout())

        waiter.timer = self.clock.callLater(timeout, expire)
        self._by_index[index] = waiter
        return d

    def resolve(
        self, index: int, term: int, result: object, overwritten: Callable[[], GraftError]
    ) -> None:
        waiter = self._by_index.pop(index, None)
        if waiter is None:
            return
        if waiter.timer is not None and waiter.timer.active():
            waiter.timer.cancel()
        if waiter.term == term:
            waiter.deferred.callback(result)
        else:
            waiter.deferred.errback(overwritten())

    def fail_all(self, error: Callable[[], GraftError]) -> None:
        waiters, self._by_index = self._by_index, {}
        for waiter in waiters.values():
            if waiter.timer is not None and waiter.timer.active():
                waiter.timer.cancel()
            waiter.deferred.errback(error())

    def __len__(self) -> int:
        return len(self._by_index)


@dataclass(slots=True)
class IndexWaiters:
    """Deferreds that fire once the FSM has applied up to an index (reads, min_index)."""

    clock: Any
    applied: int = 0
    _heap: list[tuple[int, int, _Waiter[int]]] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=itertools.count)

    def wait(
        self, index: int, timeout: float, on_timeout: Callable[[], GraftError]
    ) -> Deferred[int]:
        d: Deferred[int] = Deferred()
        if index <= self.applied:
            d.callback(self.applied)
            return d
        waiter: _Waiter[int] = _Waiter(deferred=d)

        def expire() -> None:
            if not d.called:
                d.errback(on_timeout())

        waiter.timer = self.clock.callLater(timeout, expire)
        heapq.heappush(self._heap, (index, next(self._seq), waiter))
        return d

    def advance(self, applied: int) -> None:
        self.applied = applied
        while self._heap and self._heap[0][0] <= applied:
            _, _, waiter = heapq.heappop(self._heap)
            if waiter.timer is not None and waiter.timer.active():
                waiter.timer.cancel()
            if not waiter.deferred.called:
                waiter.deferred.callback(applied)

    def fail_all(self, error: Callable[[], GraftError]) -> None:
        heap, self._heap = self._heap, []
        for _, _, waiter in heap:
            if waiter.timer is not None and waiter.timer.active():
                waiter.timer.cancel()
            if not waiter.deferred.called:
                waiter.deferred.errback(error())
