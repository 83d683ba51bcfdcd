"""The register linearizability checker on hand-written histories, good and bad."""

from __future__ import annotations

import itertools
import random

from twisted.trial import unittest

from graft.testing.linearizability import (
    Operation,
    Verdict,
    check_history,
    check_key,
    prune_unobserved,
    step,
)

_ids = itertools.count()


def put(
    value: str, invoke: float, complete: float | None, prev: str | None = None, key: str = "k"
) -> Operation:
    return Operation(
        id=next(_ids), kind="put", key=key, invoke=invoke, complete=complete, value=value, prev=prev
    )


def get(current: str | None, invoke: float, complete: float, key: str = "k") -> Operation:
    return Operation(
        id=next(_ids), kind="get", key=key, invoke=invoke, complete=complete, current=current
    )


def cas(
    expect: str | None,
    value: str,
    invoke: float,
    complete: float | None,
    ok: bool | None = None,
    current: str | None = None,
) -> Operation:
    return Operation(
        id=next(_ids),
        kind="cas",
        key="k",
        invoke=invoke,
        complete=complete,
        expect=expect,
        value=value,
        ok=ok,
        current=current,
    )


class ModelTests(unittest.SynchronousTestCase):
    def test_register_model(self) -> None:
        """put checks its recorded prev; cas applies only on a match and reports the value after;
        get must see the state; an unknown outcome fits any state."""
        self.assertEqual(step(None, put("a", 0, 1, prev=None)), (True, "a"))
        self.assertFalse(step("x", put("a", 0, 1, prev=None))[0])
        self.assertEqual(step("a", cas("a", "b", 0, 1, ok=True, current="b")), (True, "b"))
        self.assertEqual(step("z", cas("a", "b", 0, 1, ok=False, current="z")), (True, "z"))
        self.assertFalse(step("z", cas("a", "b", 0, 1, ok=True, current="b"))[0])
        self.assertEqual(step("z", cas("z", "b", 0, None)), (True, "b"))
        self.assertEqual(step("a", get("a", 0, 1)), (True, "a"))
        self.assertFalse(step("a", get(None, 0, 1))[0])


class _HistoryAssertions(unittest.SynchronousTestCase):
    def assertLinearizable(self, ops: list[Operation]) -> None:
        result = check_key("k", ops)
        self.assertEqual(result.verdict, Verdict.LINEARIZABLE, result)

    def assertNotLinearizable(self, ops: list[Operation]) -> None:
        result = check_key("k", ops)
        self.assertEqual(result.verdict, Verdict.NOT_LINEARIZABLE, result)


class GoodHistoryTests(_HistoryAssertions):
    def test_sequential_history(self) -> None:
        """A history with no overlap is linearizable exactly when it is a legal sequence."""
        self.assertLinearizable(
            [
                put("a", 0, 1),
                get("a", 2, 3),
                cas("a", "b", 4, 5, ok=True, current="b"),
                get("b", 6, 7),
                put("c", 8, 9, prev="b"),
                get("c", 10, 11),
            ]
        )

    def test_concurrent_operations_may_take_effect_in_either_order(self) -> None:
        """Two overlapping puts and reads that see them in an order consistent with some
        linearization (the second-invoked put taking effect first) are accepted."""
        self.assertLinearizable(
            [
                put("a", 0, 10, prev="b"),
                put("b", 1, 9, prev=None),
                get("b", 2, 3),
                get("a", 11, 12),
            ]
        )

    def test_read_concurrent_with_a_write_sees_old_or_new(self) -> None:
        """A read that overlaps a write may return the value before or after it."""
        self.assertLinearizable([put("a", 0, 1), put("b", 2, 10, prev="a"), get("a", 3, 4)])
        self.assertLinearizable([put("a", 0, 1), put("b", 2, 10, prev="a"), get("b", 3, 4)])

    def test_unknown_write_that_happened(self) -> None:
        """A write whose outcome is unknown (a timeout) may have taken effect: a later read of
        its value is fine, even long after the client gave up."""
        self.assertLinearizable([put("a", 0, 1), put("b", 2, None), get("b", 50, 51)])

    def test_unknown_write_that_did_not_happen(self) -> None:
        """A write whose outcome is unknown may never take effect: reads that keep seeing the
        old value are fine."""
        self.assertLinearizable([put("a", 0, 1), put("b", 2, None), get("a", 50, 51)])

    def test_unknown_cas_takes_effect_late(self) -> None:
        """An unknown cas may take effect at any point after its invocation: before one read
        and after another."""
        self.assertLinearizable(
            [put("a", 0, 1), cas("a", "b", 2, None), get("a", 3, 4), get("b", 5, 6)]
        )

    def test_many_unknown_operations_are_decided_quickly(self) -> None:
        """Forty unknown writes interleaved with reads are checked within the budget."""
        ops = [put("v0", 0, 1)]
        for i in range(1, 41):
            ops.append(put(f"v{i}", 2 * i, None))
            ops.append(get(f"v{i}", 2 * i + 1, 2 * i + 1.5))
        result = check_key("k", ops, budget=200_000)
        self.assertEqual(result.verdict, Verdict.LINEARIZABLE, result)


class BadHistoryTests(_HistoryAssertions):
    def test_stale_read(self) -> None:
        """A read that starts after a write was acknowledged and returns the value before it is
        a stale read: not linearizable."""
        self.assertNotLinearizable([put("a", 0, 1), put("b", 2, 3, prev="a"), get("a", 4, 5)])

    def test_lost_write(self) -> None:
        """An acknowledged write that no later read sees, with nothing overwriting it, is lost."""
        self.assertNotLinearizable([put("a", 0, 1), get(None, 2, 3)])

    def test_failed_write_that_became_visible(self) -> None:
        """A write reported as failed is left out of the history by the harness; a read of its
        value then has no explanation."""
        self.assertNotLinearizable([put("a", 0, 1), get("b", 5, 6)])

    def test_unknown_write_cannot_take_effect_before_its_invocation(self) -> None:
        """An unknown write may happen late but never early: a read that finished before the
        write was invoked cannot see it."""
        self.assertNotLinearizable([put("a", 0, 1), get("b", 2, 3), put("b", 4, None)])

    def test_reads_cannot_go_back_in_time(self) -> None:
        """Once a read has seen the new value, a later read cannot see the old one, even while
        the write is still in flight (unknown)."""
        self.assertNotLinearizable(
            [put("a", 0, 1), put("b", 2, None), get("b", 3, 4), get("a", 5, 6)]
        )

    def test_put_prev_must_match(self) -> None:
        """A put whose reported previous value is not what the register held is a lost update."""
        self.assertNotLinearizable([put("a", 0, 1), put("b", 2, 3, prev=None)])

    def test_cas_success_on_wrong_value(self) -> None:
        """A cas that reports success although the register held something else is rejected."""
        self.assertNotLinearizable([put("a", 0, 1), cas("z", "b", 2, 3, ok=True, current="b")])

    def test_report_names_stuck_operations(self) -> None:
        """A failing key's result lists the operations that could not be placed."""
        stale = get("a", 4, 5)
        result = check_key("k", [put("a", 0, 1), put("b", 2, 3, prev="a"), stale])
        self.assertIn(stale.id, result.stuck)


class HistoryTests(unittest.SynchronousTestCase):
    def test_keys_are_checked_independently(self) -> None:
        """A bad key does not hide behind a good one, and each key gets its own verdict."""
        ops = [
            put("a", 0, 1, key="good"),
            get("a", 2, 3, key="good"),
            put("a", 0, 1, key="bad"),
            get(None, 2, 3, key="bad"),
        ]
        results = check_history(ops)
        self.assertEqual(results["good"].verdict, Verdict.LINEARIZABLE)
        self.assertEqual(results["bad"].verdict, Verdict.NOT_LINEARIZABLE)

    def test_budget_gives_undecided(self) -> None:
        """A search that exceeds its budget says undecided instead of running on."""
        writes = [put(f"v{i}", 0, None) for i in range(12)]
        reads = [get(f"v{i}", 1, 100) for i in range(12)]
        ops = [*writes, *reads, get("never-written", 200, 201)]
        self.assertEqual(check_key("k", ops, budget=50).verdict, Verdict.UNDECIDED)

    def test_random_sequential_histories_pass_and_a_corrupted_read_fails(self) -> None:
        """Histories produced by a real register, with random overlaps, are linearizable; the
        same history with one read's answer changed to a never-written value is not."""
        rng = random.Random(7)
        for _ in range(30):
            state: str | None = None
            ops: list[Operation] = []
            t = 0.0
            for i in range(40):
                t += rng.random()
                # Each op takes effect at t; its interval stretches a little either side.
                invoke, complete = t - rng.random() * 0.4, t + rng.random() * 0.4
                roll = rng.random()
                if roll < 0.4:
                    ops.append(put(f"v{i}", invoke, complete, prev=state))
                    state = f"v{i}"
                elif roll < 0.6:
                    expect = state if rng.random() < 0.5 else "other"
                    ok = expect == state
                    state = f"v{i}" if ok else state
                    ops.append(cas(expect, f"v{i}", invoke, complete, ok=ok, current=state))
                else:
                    ops.append(get(state, invoke, complete))
            self.assertEqual(check_key("k", ops).verdict, Verdict.LINEARIZABLE)
            reads = [i for i, op in enumerate(ops) if op.kind == "get"]
            victim = rng.choice(reads)
            ops[victim] = get("never-written", ops[victim].invoke, ops[victim].complete or 0.0)
            self.assertEqual(check_key("k", ops).verdict, Verdict.NOT_LINEARIZABLE)


class PruneTests(unittest.SynchronousTestCase):
    def test_unobserved_unknown_writes_are_dropped(self) -> None:
        """Unknown writes whose value nothing observed are dropped; an observed one, a cas's
        expected value and every known operation stay."""
        seen = put("seen", 1, None)
        expected = put("expected", 2, None)
        unseen = put("unseen", 3, None)
        reader = get("seen", 4, 5)
        hopeful = cas("expected", "x", 6, 7, ok=False, current="seen")
        kept = prune_unobserved([seen, expected, unseen, reader, hopeful])
        self.assertEqual(kept, [seen, expected, reader, hopeful])

    def test_pruning_keeps_verdicts(self) -> None:
        """Hundreds of unobserved unknown writes between two reads neither hide a stale read nor
        slow the search down."""
        noise = [put(f"n{i}", 2 + i * 0.01, None) for i in range(300)]
        good = [put("a", 0, 1), *noise, put("b", 10, 11, prev="a"), get("b", 12, 13)]
        self.assertEqual(check_key("k", good, budget=10_000).verdict, Verdict.LINEARIZABLE)
        bad = [put("a", 0, 1), *noise, put("b", 10, 11, prev="a"), get("a", 12, 13)]
        self.assertEqual(check_key("k", bad, budget=10_000).verdict, Verdict.NOT_LINEARIZABLE)
