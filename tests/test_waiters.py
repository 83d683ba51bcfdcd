"""ProposalWaiters: how a batch of proposals is answered as its entries are applied."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial import unittest

from graft.errors import GraftError, NoLeader, Overloaded, Timeout
from graft.waiters import IndexWaiters, ProposalWaiters


def overwritten() -> GraftError:
    return NoLeader("not applied")


def partly() -> GraftError:
    return Timeout("partly applied")


class ProposalWaitersTests(unittest.SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.waiters = ProposalWaiters(self.clock)
        self.outcome: list[Any] = []
        d = self.waiters.add_batch(10, 3, 2, 5.0, lambda: Timeout("timed out"))
        d.addBoth(self.outcome.append)

    def resolve(self, index: int, term: int) -> None:
        self.waiters.resolve(index, term, f"r{index}", overwritten, partly)

    def test_batch_answers_in_order_once_all_applied(self) -> None:
        """A batch fires once, with every result in index order, after its last entry."""
        self.resolve(10, 2)
        self.resolve(11, 2)
        self.assertEqual(self.outcome, [])
        self.resolve(12, 2)
        self.assertEqual(self.outcome, [["r10", "r11", "r12"]])
        self.assertEqual(len(self.waiters), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_first_entry_overwritten_means_nothing_applied(self) -> None:
        """Another term at the batch's first index: none of it was applied (NoLeader)."""
        self.resolve(10, 3)
        [failure] = self.outcome
        self.assertIsInstance(failure, Failure)
        self.assertIsInstance(failure.value, NoLeader)
        self.assertEqual(len(self.waiters), 0)

    def test_later_entry_overwritten_means_partly_applied(self) -> None:
        """Another term in the middle: the first commands were applied and the rest were not,
        which the client must learn as an unknown outcome, never as 'not applied'."""
        self.resolve(10, 2)
        self.resolve(11, 3)
        [failure] = self.outcome
        self.assertIsInstance(failure.value, Timeout)
        self.assertEqual(str(failure.value), "partly applied")
        self.resolve(12, 3)
        self.assertEqual(len(self.outcome), 1)

    def test_timeout_fires_once_and_forgets_the_batch(self) -> None:
        """Past its deadline the batch fails with the timeout error; later applies are ignored."""
        self.clock.advance(5.0)
        [failure] = self.outcome
        self.assertIsInstance(failure.value, Timeout)
        self.resolve(10, 2)
        self.assertEqual(len(self.outcome), 1)
        self.assertEqual(len(self.waiters), 0)

    def test_resolve_applied_is_resolve_in_order(self) -> None:
        """resolve_applied answers what resolving each entry in turn would: batches fire in
        order with their results, an overwritten one fails, entries nobody waits on are
        skipped, and a callback that fails every waiter stops the rest from firing."""
        second: list[Any] = []
        third: list[Any] = []
        self.waiters.add_batch(13, 2, 2, 5.0, lambda: Timeout("timed out")).addBoth(second.append)
        self.waiters.add_batch(15, 1, 2, 5.0, lambda: Timeout("timed out")).addBoth(third.append)
        applied: list[tuple[int, int, object]] = [(9, 2, "r9")]
        applied += [(i, 2, f"r{i}") for i in (10, 11, 12)]
        applied += [(13, 3, "r13"), (14, 3, "r14"), (15, 2, "r15"), (16, 2, "r16")]
        self.waiters.resolve_applied(applied, overwritten, partly)
        self.assertEqual(self.outcome, [["r10", "r11", "r12"]])
        [failure] = second
        self.assertIsInstance(failure.value, NoLeader)
        self.assertEqual(third, [["r15"]])
        self.assertEqual(len(self.waiters), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_resolve_applied_after_fail_all_in_a_callback(self) -> None:
        """A batch's callback that fails every waiter (the node stopping) fails the later
        batches once; the later entries of the same call then find nobody to answer."""
        waiters = ProposalWaiters(self.clock)
        first: list[Any] = []
        later: list[Any] = []

        def stop(results: object) -> object:
            waiters.fail_all(lambda: NoLeader("stopping"))
            return results

        d = waiters.add_batch(10, 2, 2, 5.0, lambda: Timeout("timed out"))
        d.addCallback(stop).addBoth(first.append)
        waiters.add_batch(12, 1, 2, 5.0, lambda: Timeout("timed out")).addBoth(later.append)
        waiters.resolve_applied([(10, 2, "a"), (11, 2, "b"), (12, 2, "c")], overwritten, partly)
        self.assertEqual(first, [["a", "b"]])
        [failure] = later
        self.assertEqual(str(failure.value), "stopping")
        self.assertEqual(len(waiters), 0)


def _expired() -> GraftError:
    return Timeout("not applied in time")


class IndexWaitersLimitTests(unittest.SynchronousTestCase):
    """A far min_index (consistency=weak&min_index=10**18) used to leave its waiter in the heap
    until the log reached that index: forever. Issue 14, item 5."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.waiters = IndexWaiters(self.clock, applied=5)

    def test_expired_waiters_are_freed(self) -> None:
        """1,000 far waiters that expire leave nothing in the heap, and their Deferreds are
        not held once they fired."""
        outcomes: list[Any] = []
        for _ in range(1000):
            self.waiters.wait(10**18, 1.0, _expired).addBoth(outcomes.append)
        self.clock.advance(1.0)
        self.assertEqual(len(outcomes), 1000)
        self.assertTrue(all(isinstance(o, Failure) and o.check(Timeout) for o in outcomes))
        self.assertEqual(len(self.waiters._heap), 0)
        self.assertEqual(len(self.waiters), 0)

    def test_heap_stays_within_twice_the_live_waiters(self) -> None:
        """Expiries among live waiters shrink the heap as they go: it never holds more than
        about twice the waiters still waiting, and the live ones still fire in order."""
        fired: list[Any] = []
        for i in range(100):
            self.waiters.wait(10 + i, 10_000.0, _expired).addBoth(fired.append)
        for _ in range(1000):
            self.waiters.wait(10**18, 1.0, _expired).addErrback(lambda _: None)
            self.clock.advance(1.0)
            self.assertLessEqual(len(self.waiters._heap), 2 * len(self.waiters) + 1)
        self.waiters.advance(200)
        self.assertEqual(fired, [200] * 100)
        self.assertEqual(len(self.waiters._heap), 0)

    def test_bounded_in_number(self) -> None:
        """Beyond ``limit`` waiting, wait() fails at once with Overloaded (503 with
        Retry-After); an index already applied is still answered; room returns as waiters
        leave."""
        self.waiters.limit = 3
        for _ in range(3):
            self.waiters.wait(100, 1.0, _expired).addErrback(lambda _: None)
        refused = self.failureResultOf(self.waiters.wait(100, 1.0, _expired), Overloaded)
        self.assertIn("api.limits.max_read_waiters", refused.value.message)
        self.assertEqual(self.successResultOf(self.waiters.wait(5, 1.0, _expired)), 5)
        self.assertEqual(len(self.waiters), 3)
        self.clock.advance(1.0)
        self.assertNoResult(self.waiters.wait(100, 1.0, _expired))

    def test_fail_all_skips_expired(self) -> None:
        outcomes: list[Any] = []
        self.waiters.wait(10**18, 1.0, _expired).addBoth(outcomes.append)
        self.waiters.wait(10**18, 5.0, _expired).addBoth(outcomes.append)
        self.clock.advance(1.0)
        self.waiters.fail_all(lambda: NoLeader("stopping"))
        self.assertEqual([o.type for o in outcomes], [Timeout, NoLeader])
        self.assertEqual(len(self.waiters), 0)


class ProposalWaitersLimitTests(unittest.SynchronousTestCase):
    def test_check_room(self) -> None:
        """Proposals waiting are bounded: check_room refuses a batch that would pass the
        limit, and the room returns when entries are applied or time out."""
        waiters = ProposalWaiters(Clock(), limit=5)
        waiters.check_room(5)
        waiters.add_batch(1, 4, 1, 1.0, _expired)
        waiters.check_room(1)
        error = self.assertRaises(Overloaded, waiters.check_room, 2)
        self.assertIn("api.limits.max_pending_commands", error.message)
        waiters.resolve(1, 1, "r1", overwritten, partly)
        waiters.check_room(2)
