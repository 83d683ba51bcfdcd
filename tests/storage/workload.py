"""A scripted, seeded storage workload and the model of what it should leave on disk."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from graft.raft.types import Entry, EntryKind, HardState, Membership, encode_membership
from tests.storage.faultfs import FaultyFileSystem
from tests.support.storage import open_log

Record = tuple[int, int, bytes]  # index, term, data


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One call of the workload: a persist, a flush of the queued persists, or a sync call."""

    kind: str  # "persist" | "flush" | "append_sync" | "hard_state_sync"
    hard_state: HardState | None = None
    entries: tuple[Entry, ...] = ()


@dataclass(slots=True, kw_only=True)
class Script:
    steps: list[Step]
    # After each write (persist or sync call) in order: the whole log and the hard state.
    logs: list[tuple[Record, ...]] = field(default_factory=list)
    hard_states: list[HardState] = field(default_factory=list)


def make_script(seed: int, *, writes: int = 24) -> Script:
    """A random but valid Raft-like history: terms rise, suffixes above commit get replaced."""
    rng = random.Random(seed)
    log: list[Record] = []
    state = HardState()
    script = Script(steps=[], logs=[()], hard_states=[state])
    term = 1

    def wrote(step: Step, hard_state: HardState) -> None:
        script.steps.append(step)
        script.logs.append(tuple(log))
        script.hard_states.append(hard_state)

    for _ in range(writes):
        before = state
        hard_state: HardState | None = None
        if rng.random() < 0.15:
            term += 1
            state = HardState(term=term, vote=rng.choice(["n1", "n2", None]), commit=state.commit)
            hard_state = state
        first = len(log) + 1
        if log and rng.random() < 0.2:
            first = rng.randint(state.commit + 1, len(log) + 1)
        count = rng.choice([0, 1, 1, 2, 3, 5, 8])
        entries = []
        for index in range(first, first + count):
            kind = EntryKind.NORMAL
            data = rng.randbytes(rng.choice([0, 10, 100, 300]))
            if rng.random() < 0.05:
                kind = EntryKind.MEMBERSHIP
                data = encode_membership(Membership(voters=frozenset({"n1", f"n{index}"})))
            entries.append(Entry(index=index, term=term, kind=kind, data=data))
        if entries:
            log = log[: first - 1] + [(e.index, e.term, e.data) for e in entries]
        if log and rng.random() < 0.5:
            commit = rng.randint(state.commit, len(log))
            if commit != state.commit:
                state = HardState(term=state.term, vote=state.vote, commit=commit)
                hard_state = state
        roll = rng.random()
        if roll < 0.08 and entries:
            wrote(Step(kind="append_sync", entries=tuple(entries)), before)
            if hard_state is not None:
                wrote(Step(kind="hard_state_sync", hard_state=hard_state), state)
        else:
            wrote(Step(kind="persist", hard_state=hard_state, entries=tuple(entries)), state)
            if roll < 0.5:
                script.steps.append(Step(kind="flush"))
    script.steps.append(Step(kind="flush"))
    return script


class Runner:
    """Runs a script against a file system, counting the writes acknowledged as durable."""

    def __init__(self, script: Script, files: FaultyFileSystem) -> None:
        self.script = script
        self.files = files
        self.acked = 0  # writes 1..acked are durable (their Deferred fired / call returned)
        self.issued = 0

    def _ack(self, number: int) -> None:
        assert number == self.acked + 1, "acknowledgements out of order"
        self.acked = number

    def _acked(self, _: None, number: int) -> None:
        self._ack(number)

    def run(self) -> None:
        log = open_log(self.files)
        for step in self.script.steps:
            if step.kind == "flush":
                log.write_pending()
                continue
            self.issued += 1
            number = self.issued
            if step.kind == "persist":
                log.persist(step.hard_state, step.entries).addCallback(self._acked, number)
            elif step.kind == "append_sync":
                log.append_sync(step.entries)
                self._ack(number)
            else:
                assert step.hard_state is not None
                log.set_hard_state_sync(step.hard_state)
                self._ack(number)
        log.close()
