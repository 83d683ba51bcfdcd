"""Turn a fault run's records into verdicts: linearizability, weak-read progress, agreement.

How an HTTP outcome counts (``classify``):

- 200: ok. A command's answer is checked against the register model (put's ``prev``, cas's
  ``ok`` and ``value``); a read's ``value`` must be the register's value.
- 422 fsm_error: the command committed and the FSM refused it; it changed nothing (our
  commands are always well formed, so this should not happen at all).
- any other 4xx: failed, changed nothing.
- 503 no_leader: the API's contract (DESIGN.md section 5) says the command was not applied,
  so by default it counts as failed: if one did take effect, the checker finds a read that
  has no explanation. When a key fails, it is checked again with 503s as unknown, to tell a
  broken 503 promise from a plain linearizability violation.
- connection refused: failed; the request never reached a node.
- 504 timeout, 500, no answer at all (timeout, reset, a closed connection): unknown; the command
  may take effect at any later time, or never.
- Reads that are not 200 changed nothing and are left out.

Strong and default reads are checked for linearizability together with every command. Weak
reads are not (they may be stale by design); for them the checker asks for monotonic progress
per node: on one node, within one process lifetime (a SIGKILL restarts the FSM from the log),
a weak read that starts after another one finished never reports a lower applied index
(Graft-Index); and a weak read only returns null or a value some command tried to write.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from graft.testing.faults.history import NemesisEvent, OpRecord
from graft.testing.linearizability import Operation, Verdict, check_history

OK, FAIL, UNKNOWN = "ok", "fail", "unknown"
CHECKED_READS = ("strong", "default")


def classify(op: OpRecord, *, no_leader_applied: bool = False) -> str:
    """ok, fail or unknown (see the module docstring)."""
    if op.kind == "get":
        return OK if op.status == 200 else FAIL
    if op.status == 200:
        return OK
    if op.status is None and (op.error or "").startswith("ConnectionRefusedError"):
        return FAIL
    if op.status is None or (op.status >= 500 and op.status != 503):
        return UNKNOWN
    if op.status == 503:
        return UNKNOWN if no_leader_applied else FAIL
    return FAIL


def to_operations(
    records: Iterable[OpRecord], *, no_leader_applied: bool = False
) -> list[Operation]:
    """The operations the linearizability checker sees: commands and strong/default reads."""
    ops: list[Operation] = []
    for r in records:
        if r.kind == "get" and r.consistency not in CHECKED_READS:
            continue
        outcome = classify(r, no_leader_applied=no_leader_applied)
        if outcome == FAIL:
            continue
        out = r.output or {}
        known = outcome == OK
        ops.append(
            Operation(
                id=r.id,
                kind=r.kind,
                key=r.key,
                invoke=r.invoke,
                complete=r.complete if known else None,
                value=r.value,
                expect=r.expect,
                prev=out.get("prev") if known else None,
                ok=out.get("ok") if known else None,
                current=out.get("value") if known else None,
            )
        )
    return ops


@dataclass(frozen=True, slots=True, kw_only=True)
class Anomaly:
    kind: str
    message: str
    key: str | None = None
    ops: tuple[int, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "key": self.key, "ops": list(self.ops)}


def describe(r: OpRecord) -> str:
    """One line naming an operation, for anomaly messages."""
    what = f"#{r.id} {r.kind}"
    if r.kind == "get":
        what += f"({r.consistency})"
    if r.kind == "cas":
        what += f" expect={r.expect!r}"
    if r.value is not None:
        what += f" value={r.value!r}"
    return (
        f"{what} by {r.client} on {r.node} at {r.invoke:.3f}..{r.complete:.3f}s -> "
        f"{r.status} {r.output if r.output is not None else r.error} (index {r.index})"
    )


def check_linearizability(
    records: Sequence[OpRecord], budget_per_key: int = 2_000_000
) -> tuple[list[Anomaly], list[str]]:
    """Anomalies per failing key, and the keys whose search ran out of budget."""
    anomalies: list[Anomaly] = []
    undecided: list[str] = []
    results = check_history(to_operations(records), budget_per_key=budget_per_key)
    for key, result in results.items():
        if result.verdict is Verdict.UNDECIDED:
            undecided.append(key)
        if result.verdict is not Verdict.NOT_LINEARIZABLE:
            continue
        key_records = [r for r in records if r.key == key]
        by_id = {r.id: r for r in key_records}
        # The stuck operation that completed first is where every explanation ran out.
        stuck = sorted(result.stuck, key=lambda i: by_id[i].complete)[:10]
        first = by_id[stuck[0]] if stuck else None
        relaxed = check_history(
            to_operations(key_records, no_leader_applied=True), budget_per_key=budget_per_key
        )[key]
        if relaxed.verdict is Verdict.LINEARIZABLE:
            kind = "no_leader_applied"
            message = (
                f"key {key}: a command answered 503 no_leader (documented as not applied) "
                "took effect; the history is linearizable only if it did"
            )
        else:
            kind = "not_linearizable"
            message = (
                f"key {key}: no order of its {result.operations} operations explains every "
                f"answer; {len(result.best_order)} could be placed"
            )
            if first is not None:
                message += f"; the first that cannot is {describe(first)}"
        anomalies.append(Anomaly(kind=kind, message=message, key=key, ops=tuple(stuck)))
    return anomalies, undecided


def check_weak_reads(records: Sequence[OpRecord], events: Sequence[NemesisEvent]) -> list[Anomaly]:
    """Monotonic applied index per node lifetime, and no value nobody wrote."""
    anomalies: list[Anomaly] = []
    # A kill event spans the SIGKILLs (one victim after another, each waited for) and the
    # restart at its end: when in that span a node died is not known, so only a read that
    # started after the span is known to come from the new process.
    kills: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for e in events:
        if e.kind.startswith("kill"):
            for node in e.nodes:
                kills[node].append((e.start, e.end if e.end is not None else float("inf")))
    written: dict[str, set[str]] = defaultdict(set)
    for r in records:
        if r.kind in ("put", "cas") and r.value is not None:
            written[r.key].add(r.value)
    lifetimes: dict[tuple[str, int], list[OpRecord]] = defaultdict(list)
    for r in records:
        if r.kind != "get" or r.consistency != "weak" or r.status != 200:
            continue
        value = (r.output or {}).get("value")
        if value is not None and value not in written[r.key]:
            anomalies.append(
                Anomaly(
                    kind="weak_read_unwritten_value",
                    message=f"weak read {r.id} on {r.node} returned {value!r} for {r.key}, "
                    "a value no command wrote",
                    key=r.key,
                    ops=(r.id,),
                )
            )
        if r.index is None:
            continue
        node_kills = kills[r.node]
        if any(r.invoke <= end and start <= r.complete for start, end in node_kills):
            continue  # the read overlaps a kill and restart: which lifetime answered is unclear
        lifetime = sum(1 for start, _ in node_kills if start < r.invoke)
        lifetimes[(r.node, lifetime)].append(r)
    for (node, _), reads in sorted(lifetimes.items()):
        # Sweep by invocation; `done` holds finished reads, `best` the highest index among
        # reads that finished before the current read began.
        reads.sort(key=lambda r: r.invoke)
        by_complete = sorted(reads, key=lambda r: r.complete)
        j = 0
        best: tuple[int, int] | None = None  # (index, op id)
        for r in reads:
            while j < len(by_complete) and by_complete[j].complete < r.invoke:
                c = by_complete[j]
                assert c.index is not None
                if best is None or c.index > best[0]:
                    best = (c.index, c.id)
                j += 1
            assert r.index is not None
            if best is not None and r.index < best[0]:
                anomalies.append(
                    Anomaly(
                        kind="weak_read_went_back",
                        message=f"weak read {r.id} on {node} reported applied index {r.index} "
                        f"after read {best[1]} on the same node had reported {best[0]}",
                        key=r.key,
                        ops=(best[1], r.id),
                    )
                )
    return anomalies
