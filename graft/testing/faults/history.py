"""What a fault run records: client operations, nemesis events, status samples (JSON lines).

Times are seconds on the monotonic clock since the run started, taken by the process that saw
the event (the driver: clients, nemeses and the status poller are all threads of it).

A command's outcome is recorded as the client saw it; turning it into ok / fail / unknown is
the checker's job (graft.testing.faults.checker.classify), so the rule can be changed after
the fact.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class OpRecord:
    id: int
    client: str  # "c0".."c4", or "final" for the reads after the heal
    node: str  # the node the client asked
    kind: str  # put | cas | get
    key: str
    consistency: str | None = None  # reads: strong | default | weak
    value: str | None = None  # put and cas: the value written
    expect: str | None = None  # cas: the value expected
    invoke: float
    complete: float  # when the client saw an answer, an error or gave up
    status: int | None = None  # HTTP status; None: no HTTP answer (timeout, reset, refused)
    error: str | None = None  # the error code from the body, or the exception
    output: dict[str, Any] | None = None  # the FSM's answer on 200
    index: int | None = None  # Graft-Index: the command's index, or the applied index of a read
    # The FSM's own answer on 200 when ``output`` is its translation into the register model's
    # terms (SQL: graft.testing.faults.sql_registers); None for kv, whose answer is ``output``.
    answer: Any = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NemesisEvent:
    start: float
    end: float | None  # None while active; set when healed
    kind: str
    nodes: tuple[str, ...] = ()
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusSample:
    t: float
    node: str
    role: str  # leader | follower | candidate | ... | "down" when /status did not answer
    term: int | None = None
    leader: str | None = None
    applied: int | None = None


def write_jsonl(path: Path, records: Iterable[Any]) -> None:
    with path.open("w") as f:
        for record in records:
            f.write(json.dumps(dataclasses.asdict(record), sort_keys=True) + "\n")


def read_jsonl(path: Path, cls: type[T]) -> Iterator[T]:
    with path.open() as f:
        for line in f:
            if line.strip():
                raw = json.loads(line)
                if "nodes" in raw and isinstance(raw["nodes"], list):
                    raw["nodes"] = tuple(raw["nodes"])
                yield cls(**raw)
