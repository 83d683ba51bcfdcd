# mypy: disable-error-code="no-untyped-call"
"""Deferreds waiting on the log: proposals waiting to be applied, reads waiting for an index.

The driver resolves them as entries are applied; each has its own deadline so a client never
waits forever. Kept apart from the driver so their bookkeeping can be tested on a Clock.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from twisted.internet.defer import Deferred

from graft.errors import GraftError, Overloaded

T = TypeVar("T")


# Defaults of api.limits (graft.config.ApiLimits); the node sets the configured ones.
DEFAULT_MAX_PENDING_COMMANDS = 100_000
DEFAULT_MAX_READ_WAITERS = 10_000


@dataclass(slots=True)
class _Waiter(Generic[T]):
    deferred: Deferred[T] | None  # None once answered or expired: nothing is kept for it
    timer: Any = None
    term: int = 0


@dataclass(slots=True)
class _Batch:
    """Proposals appended together: consecutive indexes of one term, answered together."""

    deferred: Deferred[list[object]]
    first: int
    term: int
    results: list[object]
    remaining: int
    timer: Any = None


@dataclass(slots=True)
class ProposalWaiters:
    """Proposals by log index. A proposal succeeds when the entry applied at its index has the
    term it was proposed in; any other term there means it was overwritten and never applied.

    A batch costs one Deferred and one timer however many commands it holds: under load the
    per-command Deferreds and timers were a large share of the leader's time.
    """

    clock: Any
    _by_index: dict[int, _Batch] = field(default_factory=dict)
    # Commands waiting at most (api.limits.max_pending_commands): check_room before proposing.
    limit: int = DEFAULT_MAX_PENDING_COMMANDS

    def check_room(self, count: int) -> None:
        """Raise Overloaded if ``count`` more proposals would pass the limit; called before
        proposing, since a proposed entry must get its waiter."""
        waiting = len(self._by_index)
        if waiting + count > self.limit:
            raise Overloaded(
                f"{waiting} commands are waiting to be applied on this leader and {count} more "
                f"would pass its limit of {self.limit} (api.limits.max_pending_commands): "
                "nothing was proposed; retry shortly"
            )

    def add_batch(
        self,
        first: int,
        count: int,
        term: int,
        timeout: float,
        on_timeout: Callable[[], GraftError],
    ) -> Deferred[list[object]]:
        batch = _Batch(
            deferred=Deferred(), first=first, term=term, results=[None] * count, remaining=count
        )
        for index in range(first, first + count):
            self._by_index[index] = batch

        def expire() -> None:
            if not batch.deferred.called:
                self._forget(batch)
                batch.deferred.errback(on_timeout())

        batch.timer = self.clock.callLater(timeout, expire)
        return batch.deferred

    def add(
        self, index: int, term: int, timeout: float, on_timeout: Callable[[], GraftError]
    ) -> Deferred[object]:
        d: Deferred[Any] = self.add_batch(index, 1, term, timeout, on_timeout)
        return d.addCallback(lambda results: results[0])

    def resolve(
        self,
        index: int,
        term: int,
        result: object,
        overwritten: Callable[[], GraftError],
        partly_applied: Callable[[], GraftError],
    ) -> None:
        self.resolve_applied([(index, term, result)], overwritten, partly_applied)

    def resolve_applied(
        self,
        applied: Iterable[tuple[int, int, object]],
        overwritten: Callable[[], GraftError],
        partly_applied: Callable[[], GraftError],
    ) -> None:
        """``resolve`` for each (index, term, result) in order, in one call: the driver applies
        entries by the hundred, and a call per entry was a good part of its cost."""
        for index, term, result in applied:
            # self._by_index each time: a callback fired below may replace it (fail_all).
            batch = self._by_index.pop(index, None)
            if batch is None or batch.deferred.called:
                continue
            if batch.term != term:
                # Entries commit in index order, so everything before this one in the batch was
                # applied and everything after it was overwritten too.
                self._forget(batch)
                error = overwritten() if index == batch.first else partly_applied()
                batch.deferred.errback(error)
                continue
            batch.results[index - batch.first] = result
            batch.remaining -= 1
            if batch.remaining == 0:
                if batch.timer is not None and batch.timer.active():
                    batch.timer.cancel()
                batch.deferred.callback(batch.results)

    def _forget(self, batch: _Batch) -> None:
        if batch.timer is not None and batch.timer.active():
            batch.timer.cancel()
        for index in range(batch.first, batch.first + len(batch.results)):
            if self._by_index.get(index) is batch:
                del self._by_index[index]

    def fail_all(self, error: Callable[[], GraftError]) -> None:
        batches = {id(b): b for b in self._by_index.values()}
        self._by_index = {}
        for batch in batches.values():
            if batch.timer is not None and batch.timer.active():
                batch.timer.cancel()
            if not batch.deferred.called:
                batch.deferred.errback(error())

    def __len__(self) -> int:
        return len(self._by_index)

    def __contains__(self, index: int) -> bool:
        return index in self._by_index


@dataclass(slots=True)
class IndexWaiters:
    """Deferreds that fire once the FSM has applied up to an index (reads, min_index).

    At most ``limit`` wait at once (api.limits.max_read_waiters); one more is refused with
    Overloaded. An expired waiter lets go of its Deferred and timer at once and stops counting;
    its slot in the heap is reclaimed when expired slots make up half the heap, so the heap never
    holds more than about twice the live waiters (a far ``min_index`` used to stay in it until
    the log reached that index, that is forever).
    """

    clock: Any
    applied: int = 0
    limit: int = DEFAULT_MAX_READ_WAITERS
    _heap: list[tuple[int, int, _Waiter[int]]] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=itertools.count)
    _live: int = 0  # waiters in the heap still waiting
    _expired: int = 0  # slots in the heap whose waiter expired

    def wait(
        self, index: int, timeout: float, on_timeout: Callable[[], GraftError]
    ) -> Deferred[int]:
        d: Deferred[int] = Deferred()
        if index <= self.applied:
            d.callback(self.applied)
            return d
        if self._live >= self.limit:
            d.errback(
                Overloaded(
                    f"{self._live} reads are waiting for this node to apply their index, its "
                    f"limit (api.limits.max_read_waiters): retry shortly"
                )
            )
            return d
        waiter: _Waiter[int] = _Waiter(deferred=d)

        def expire() -> None:
            waiting = waiter.deferred
            if waiting is None:
                return
            self._drop(waiter)
            if not waiting.called:
                waiting.errback(on_timeout())

        waiter.timer = self.clock.callLater(timeout, expire)
        heapq.heappush(self._heap, (index, next(self._seq), waiter))
        self._live += 1
        return d

    def _drop(self, waiter: _Waiter[int]) -> None:
        waiter.deferred = None
        waiter.timer = None
        self._live -= 1
        self._expired += 1
        self._compact()

    def _compact(self) -> None:
        """Drop the expired slots once they are half the heap (amortized O(log n) each)."""
        if self._expired and self._expired * 2 >= len(self._heap):
            self._heap = [entry for entry in self._heap if entry[2].deferred is not None]
            heapq.heapify(self._heap)
            self._expired = 0

    def advance(self, applied: int) -> None:
        self.applied = applied
        # self._heap each time: a callback fired below may wait again, expire or fail_all.
        while self._heap and self._heap[0][0] <= applied:
            _, _, waiter = heapq.heappop(self._heap)
            d = waiter.deferred
            if d is None:
                self._expired -= 1
                continue
            waiter.deferred = None
            self._live -= 1
            if waiter.timer is not None and waiter.timer.active():
                waiter.timer.cancel()
            waiter.timer = None
            if not d.called:
                d.callback(applied)
        self._compact()  # the live waiters left may now be outnumbered by expired slots

    def fail_all(self, error: Callable[[], GraftError]) -> None:
        heap, self._heap = self._heap, []
        self._live = self._expired = 0
        for _, _, waiter in heap:
            d = waiter.deferred
            if d is None:
                continue
            waiter.deferred = None
            if waiter.timer is not None and waiter.timer.active():
                waiter.timer.cancel()
            if not d.called:
                d.errback(error())

    def __len__(self) -> int:
        """Waiters still waiting (expired ones are not counted)."""
        return self._live
