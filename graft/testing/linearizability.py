"""A linearizability checker for a key-value register with compare-and-set (pure Python).

The algorithm is Wing and Gong's search, with Lowe's just-in-time linearization and the
memoisation Porcupine popularised:

- Keys are independent registers, so a history is checked one key at a time (P-compositionality).
- A key's operations become call and return entries sorted by time. Walking the list, the search
  tries to linearize the next pending call (apply it to the model state); if the model accepts
  it, the call and its return are lifted out of the list and the walk restarts at the head. On a
  return entry whose operation is not yet linearized, the last choice is undone (backtrack).
- A (set of linearized operations, model state) pair already explored is never explored again:
  the set is a bitmask, the state a string or None.
- An operation whose outcome is unknown (a timeout, a dropped connection) never returns: it may
  take effect at any point after its invocation, or not at all. The search succeeds as soon as
  every operation that did return is linearized; unknown ones left over simply never happened.
- Unknown writes whose value nobody ever observed are dropped before the search (see
  ``prune_unobserved``): they cannot change any answer, and each one would double the space.
- Each key's search has a step budget; past it the verdict for that key is "undecided" rather
  than a hang.

Operations that definitely failed are left out by the caller: they changed nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum

__all__ = [
    "KeyResult",
    "Operation",
    "Verdict",
    "check_history",
    "check_key",
]


class Verdict(Enum):
    LINEARIZABLE = "linearizable"
    NOT_LINEARIZABLE = "not_linearizable"
    UNDECIDED = "undecided"  # the search budget ran out


@dataclass(frozen=True, slots=True, kw_only=True)
class Operation:
    """One client operation on one key.

    ``kind`` is "put" (``value``; output ``prev``), "cas" (``expect``, ``value``; outputs
    ``ok`` and ``current``, the value after the command) or "get" (output ``current``).
    ``complete`` is None when the outcome is unknown; the outputs are then ignored.
    """

    id: int
    kind: str
    key: str
    invoke: float
    complete: float | None
    value: str | None = None
    expect: str | None = None
    prev: str | None = None
    ok: bool | None = None
    current: str | None = None

    @property
    def known(self) -> bool:
        return self.complete is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyResult:
    key: str
    verdict: Verdict
    operations: int
    steps: int
    # When not linearizable: the ids of the longest linearizable prefix found, in order, and
    # the operations that could not be placed after it (for the report).
    best_order: tuple[int, ...] = ()
    stuck: tuple[int, ...] = field(default=())


def step(state: str | None, op: Operation) -> tuple[bool, str | None]:
    """The register model: (does op's recorded output fit this state, the state after op)."""
    if op.kind == "put":
        if op.known and op.prev != state:
            return False, state
        return True, op.value
    if op.kind == "cas":
        applies = state == op.expect
        after = op.value if applies else state
        if op.known and (op.ok is not applies or op.current != after):
            return False, state
        return True, after
    if op.kind == "get":
        return (not op.known or op.current == state), state
    raise ValueError(f"unknown operation kind {op.kind!r}; expected put, cas or get")


_SENTINEL = Operation(id=-1, kind="get", key="", invoke=0.0, complete=0.0)


class _Entry:
    """A node of the doubly linked call/return list."""

    __slots__ = ("is_call", "match", "next", "op", "prev", "slot")

    def __init__(self, op: Operation, slot: int, is_call: bool) -> None:
        self.op = op
        self.slot = slot
        self.is_call = is_call
        self.match: _Entry | None = None  # the call's return entry (None: never returns)
        self.prev: _Entry | None = None
        self.next: _Entry | None = None


def _build(ops: Sequence[Operation]) -> _Entry:
    """The list head (a sentinel) of call/return entries in time order."""
    events: list[tuple[float, int, int, _Entry]] = []
    for slot, op in enumerate(ops):
        call = _Entry(op, slot, True)
        events.append((op.invoke, 0, slot, call))
        if op.complete is not None:
            ret = _Entry(op, slot, False)
            call.match = ret
            # On equal timestamps a call sorts before a return: the operations overlap, which
            # is the permissive reading of a tie.
            events.append((op.complete, 1, slot, ret))
    events.sort(key=lambda e: (e[0], e[1], e[2]))
    head = _Entry(_SENTINEL, -1, False)
    last = head
    for *_, entry in events:
        last.next = entry
        entry.prev = last
        last = entry
    return head


def _lift(entry: _Entry) -> None:
    assert entry.prev is not None
    entry.prev.next = entry.next
    if entry.next is not None:
        entry.next.prev = entry.prev
    ret = entry.match
    if ret is not None:
        assert ret.prev is not None
        ret.prev.next = ret.next
        if ret.next is not None:
            ret.next.prev = ret.prev


def _unlift(entry: _Entry) -> None:
    ret = entry.match
    if ret is not None:
        assert ret.prev is not None
        ret.prev.next = ret
        if ret.next is not None:
            ret.next.prev = ret
    assert entry.prev is not None
    entry.prev.next = entry
    if entry.next is not None:
        entry.next.prev = entry


def prune_unobserved(ops: Sequence[Operation]) -> list[Operation]:
    """Drop unknown-outcome writes whose value no answer and no cas expectation mentions.

    Why this is sound: every operation with a known outcome observes the register (put's
    ``prev``, cas's ``current``, get's ``current``). If such an unobserved write took effect, the
    next known operation would see its value unless an unknown write replaced it first; only an
    unknown put can be that replacement (an unknown cas would have needed to expect the value).
    Removing the write leaves every state from that put on unchanged, and the unknown
    operations in between have no recorded outputs to contradict. Values must be unique per
    write for this to hold, which the fault workload guarantees.
    """
    observed: set[str | None] = set()
    for op in ops:
        if op.known:
            observed.add(op.prev if op.kind == "put" else op.current)
        if op.kind == "cas":
            observed.add(op.expect)
    return [op for op in ops if op.known or op.kind == "get" or op.value in observed]


def check_key(
    key: str, ops: Sequence[Operation], *, initial: str | None = None, budget: int = 2_000_000
) -> KeyResult:
    """Is this one key's history linearizable? See the module docstring for the search."""
    ops = prune_unobserved(ops)
    if not ops:
        return KeyResult(key=key, verdict=Verdict.LINEARIZABLE, operations=0, steps=0)
    head = _build(ops)
    to_place = sum(1 for op in ops if op.known)
    placed = 0
    state = initial
    linearized = 0  # bitmask of slots
    seen: set[tuple[int, str | None]] = set()
    stack: list[tuple[_Entry, str | None]] = []
    best: list[int] = []
    steps = 0
    entry = head.next
    while placed < to_place:
        steps += 1
        if steps > budget:
            return KeyResult(key=key, verdict=Verdict.UNDECIDED, operations=len(ops), steps=steps)
        if entry is None or not entry.is_call:
            # A return whose call is not linearized yet (or, defensively, the end of the
            # list): every order from this prefix is wrong, so undo the last choice.
            if not stack:
                return _failure(key, ops, steps, best)
            entry, state, placed, linearized = _undo(placed, linearized, stack)
            continue
        fits, after = step(state, entry.op)
        if fits:
            mask = linearized | (1 << entry.slot)
            if (mask, after) not in seen:
                seen.add((mask, after))
                stack.append((entry, state))
                linearized = mask
                state = after
                placed += entry.op.known
                _lift(entry)
                if len(stack) > len(best):
                    best = [e.op.id for e, _ in stack]
                entry = head.next
                continue
        entry = entry.next
    return KeyResult(key=key, verdict=Verdict.LINEARIZABLE, operations=len(ops), steps=steps)


def _undo(
    placed: int,
    linearized: int,
    stack: list[tuple[_Entry, str | None]],
) -> tuple[_Entry | None, str | None, int, int]:
    """Pop the last linearized call, restore the state before it, continue after it."""
    entry, before = stack.pop()
    _unlift(entry)
    return entry.next, before, placed - entry.op.known, linearized & ~(1 << entry.slot)


def _failure(key: str, ops: Sequence[Operation], steps: int, best: list[int]) -> KeyResult:
    placed = set(best)
    stuck = tuple(op.id for op in ops if op.known and op.id not in placed)
    return KeyResult(
        key=key,
        verdict=Verdict.NOT_LINEARIZABLE,
        operations=len(ops),
        steps=steps,
        best_order=tuple(best),
        stuck=stuck,
    )


def check_history(
    ops: Iterable[Operation], *, budget_per_key: int = 2_000_000
) -> dict[str, KeyResult]:
    """Check every key of a history independently; the result for each key."""
    by_key: dict[str, list[Operation]] = defaultdict(list)
    for op in ops:
        if op.complete is not None and op.complete < op.invoke:
            raise ValueError(f"operation {op.id} completes before it is invoked; fix the clock")
        by_key[op.key].append(op)
    return {
        key: check_key(key, key_ops, budget=budget_per_key)
        for key, key_ops in sorted(by_key.items())
    }
