"""The lock workload's records and the rules its history must keep (``--workload lock``).

Two histories come out of a lock run:

- ``LockRecord``: what each lock client saw (graft.testing.faults.lock_node writes one JSON line
  per finished call): an ``acquire`` (granted or not, its fencing token, the log index of the
  command that granted it), a ``write`` to the guarded resource (accepted, fenced, or no answer)
  and a ``release``;
- ``ResourceWrite``: what the guarded resource (graft.testing.faults.lock_resource) decided, in
  the order it decided, with the newest token it had accepted before.

The rules (``check_lock_history``), one anomaly kind each:

1. ``duplicate_token``: every grant has a fencing token of its own (no two granted acquires
   carry the same token; a log index answers one acquire only).
2. ``token_order``: tokens increase grant after grant, in the order of the replicated log
   (grants sorted by the log index of their command).
3. ``stale_write_accepted``: the resource never accepted a write carrying a token older than one
   it had already accepted (its own log, in the order it decided).
4. ``unfenced_overlap``: two holders may overlap in real time (a lease is judged on clocks that
   step, and a paused holder does not know its lease ran out); when they do, the older holder's
   writes must be fenced: an older holder's write that started after a newer holder's write was
   already accepted must have been refused. A hold lasts from the acquire's answer to the
   release's start (or the holder's last write, when it never released: killed, or gave up).
   Writes of the older holder that landed before the newer holder wrote anything are fine: the
   resource saw the tokens in order.

Times are seconds on the monotonic clock since the run started (the driver passes its start to
every lock process; CLOCK_MONOTONIC is the machine's, and the clock-step nemesis leaves it).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from graft.testing.faults.checker import Anomaly

OK, REFUSED, ERROR = "ok", "refused", "error"  # LockRecord.outcome


@dataclass(frozen=True, slots=True, kw_only=True)
class LockRecord:
    client: str  # the lock owner: "n1-c0" (node n1's client 0), the same across restarts
    node: str
    kind: str  # acquire | write | release
    invoke: float
    complete: float
    outcome: str  # ok (answered), refused (Rejected, or fenced by the resource), error (unknown)
    token: int | None = None  # acquire: the token granted; write/release: the token sent
    granted: bool | None = None  # acquire: did the lock grant it
    index: int | None = None  # acquire: the log index of the command
    error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ResourceWrite:
    t: float  # when the resource decided
    client: str
    token: int
    accepted: bool
    newest: int  # the newest token accepted before this write


@dataclass(slots=True)
class Hold:
    """One grant, seen by its holder."""

    client: str
    token: int
    start: float  # the acquire's answer
    end: float  # the release's start, or the holder's last write
    writes: list[LockRecord]


def grants(records: Sequence[LockRecord]) -> list[LockRecord]:
    return [r for r in records if r.kind == "acquire" and r.outcome == OK and r.granted]


def holds(records: Sequence[LockRecord]) -> list[Hold]:
    """Each grant's hold: its writes (with its token, by its client) and when it ended."""
    by_grant: dict[tuple[str, int], Hold] = {}
    for g in grants(records):
        if g.token is not None:
            by_grant[(g.client, g.token)] = Hold(g.client, g.token, g.complete, g.complete, [])
    for r in sorted(records, key=lambda r: r.invoke):
        hold = by_grant.get((r.client, r.token)) if r.token is not None else None
        if hold is None or r.kind == "acquire":
            continue
        if r.kind == "write":
            hold.writes.append(r)
            hold.end = max(hold.end, r.complete)
        elif r.kind == "release":
            hold.end = max(hold.end, r.invoke)
    return sorted(by_grant.values(), key=lambda h: h.start)


def _describe(r: LockRecord) -> str:
    return f"{r.client}'s {r.kind} [{r.invoke:.3f}, {r.complete:.3f}] token {r.token}"


def check_unique_tokens(records: Sequence[LockRecord]) -> list[Anomaly]:
    anomalies = []
    by_token: dict[int, list[LockRecord]] = defaultdict(list)
    by_index: dict[int, set[int]] = defaultdict(set)
    for g in grants(records):
        if g.token is not None:
            by_token[g.token].append(g)
        if g.index is not None and g.token is not None:
            by_index[g.index].add(g.token)
    for token, same in sorted(by_token.items()):
        if len(same) > 1:
            who = "; ".join(f"{_describe(g)} at index {g.index}" for g in same)
            anomalies.append(
                Anomaly(kind="duplicate_token", message=f"token {token} granted twice: {who}")
            )
    for index, tokens in sorted(by_index.items()):
        if len(tokens) > 1:
            anomalies.append(
                Anomaly(
                    kind="duplicate_token",
                    message=f"log index {index} answered grants with tokens {sorted(tokens)}",
                )
            )
    return anomalies


def check_token_order(records: Sequence[LockRecord]) -> list[Anomaly]:
    ordered = sorted(
        (g for g in grants(records) if g.index is not None), key=lambda g: g.index or 0
    )
    anomalies = []
    for before, after in itertools.pairwise(ordered):
        if before.index != after.index and (after.token or 0) <= (before.token or 0):
            anomalies.append(
                Anomaly(
                    kind="token_order",
                    message=f"the grant at log index {after.index} ({_describe(after)}) has a "
                    f"token no newer than the grant before it at index {before.index} "
                    f"({_describe(before)})",
                )
            )
    return anomalies


def check_resource(writes: Sequence[ResourceWrite]) -> list[Anomaly]:
    anomalies = []
    newest = 0
    for w in writes:  # in the order the resource decided
        if w.accepted:
            if w.token < newest:
                anomalies.append(
                    Anomaly(
                        kind="stale_write_accepted",
                        message=f"at {w.t:.3f} the resource accepted {w.client}'s write with "
                        f"token {w.token} after it had accepted token {newest}",
                    )
                )
            newest = max(newest, w.token)
    return anomalies


def check_overlaps(records: Sequence[LockRecord]) -> tuple[list[Anomaly], dict[str, int]]:
    """Rule 4; also counts the overlapping holds and how they ended."""
    all_holds = holds(records)
    anomalies = []
    counts = {"overlaps": 0, "overlaps_fenced": 0}
    for i, old in enumerate(all_holds):
        for new in all_holds[i + 1 :]:
            if new.start >= old.end:
                break  # sorted by start: no later hold starts before old ended
            if new.token == old.token:
                continue
            older, newer = (old, new) if old.token < new.token else (new, old)
            counts["overlaps"] += 1
            if any(w.outcome == REFUSED for w in older.writes):
                counts["overlaps_fenced"] += 1
            accepted = [w.complete for w in newer.writes if w.outcome == OK]
            if not accepted:
                continue
            first_new = min(accepted)
            for w in older.writes:
                if w.outcome == OK and w.invoke > first_new:
                    anomalies.append(
                        Anomaly(
                            kind="unfenced_overlap",
                            message=f"{_describe(w)} was accepted although {newer.client}'s "
                            f"write with the newer token {newer.token} had been accepted at "
                            f"{first_new:.3f}, before it started; the two holds overlapped",
                        )
                    )
    return anomalies, counts


def check_final_token(records: Sequence[LockRecord], final_token: int, at: float) -> list[Anomaly]:
    """Every grant answered before the final read has a token the final state has reached."""
    return [
        Anomaly(
            kind="token_beyond_final",
            message=f"{_describe(g)} was granted, but the lock's last token after the heal is "
            f"{final_token}",
        )
        for g in grants(records)
        if g.complete < at and (g.token or 0) > final_token
    ]


def check_lock_history(
    records: Sequence[LockRecord], writes: Sequence[ResourceWrite]
) -> tuple[list[Anomaly], dict[str, Any]]:
    """Every rule of the module docstring; the anomalies and the run's counts."""
    anomalies = check_unique_tokens(records)
    anomalies += check_token_order(records)
    anomalies += check_resource(writes)
    overlap_anomalies, counts = check_overlaps(records)
    anomalies += overlap_anomalies
    acquires = [r for r in records if r.kind == "acquire"]
    counts.update(
        {
            "acquires": len(acquires),
            "grants": len(grants(records)),
            "acquire_errors": sum(1 for r in acquires if r.outcome == ERROR),
            "writes_accepted": sum(1 for w in writes if w.accepted),
            "writes_fenced": sum(1 for w in writes if not w.accepted),
            "writes_unknown": sum(1 for r in records if r.kind == "write" and r.outcome == ERROR),
            "releases": sum(1 for r in records if r.kind == "release" and r.outcome == OK),
        }
    )
    return anomalies, counts
