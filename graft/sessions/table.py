"""The session table: per client session, the results of the commands it applied.

Every replica holds the same table, built only from the log: registrations, numbered commands
and settings entries, applied in log order, with time taken from the leader's stamp on each
entry (graft.stamp), never from this replica's clock. So replaying the log and restoring a
snapshot (``encode``/``decode``) give the same table, and its ``digest`` is part of the state's.

A session answers a numbered command (sequence n, acknowledged floor k) with one verdict:

- NEW: never applied; the caller applies it and ``record``s its result;
- DUPLICATE: applied before; the stored first result is the answer, nothing is applied;
- EXPIRED: the session is unknown (never registered, idle longer than ``idle_ns``, or
  evicted as the least recently used when ``max_sessions`` were full);
- FORGOTTEN: n is below the session's floor: its result was discarded (the client
  acknowledged it, or more than ``max_results`` results were kept), so whether it applied
  cannot be told.

Pure: no Twisted, clock or random source (the simulation runs it as the driver does).
"""

from __future__ import annotations

import base64
import enum
import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

# The defaults of the replicated settings (docs/api.md, "Sessions").
DEFAULT_IDLE_NS = 3600 * 10**9  # one hour
DEFAULT_MAX_SESSIONS = 4096
DEFAULT_MAX_RESULTS = 256  # per session
TABLE_FORMAT = "graft.sessions/1"


class TableFormatError(ValueError):
    """Bytes that are not a session table this build can read."""


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """The cluster's bounds on sessions, replicated through the log (a settings entry)."""

    idle_ns: int = DEFAULT_IDLE_NS
    max_sessions: int = DEFAULT_MAX_SESSIONS
    max_results: int = DEFAULT_MAX_RESULTS

    def problems(self) -> list[str]:
        """Why these settings cannot be used (empty: they can)."""
        found = []
        if not 10**9 <= self.idle_ns <= 365 * 86400 * 10**9:
            found.append("idle time must be between 1 s and 365 days")
        if not 1 <= self.max_sessions <= 1_000_000:
            found.append("max_sessions must be between 1 and 1000000")
        if not 1 <= self.max_results <= 100_000:
            found.append("max_results must be between 1 and 100000")
        return found


@dataclass(frozen=True, slots=True)
class StoredResult:
    """The first result of a numbered command: the entry that applied it and the FSM's answer
    (``output``, or ``error``, its deterministic rejection message)."""

    index: int
    term: int
    output: bytes
    error: str | None


class Verdict(enum.Enum):
    NEW = "new"
    DUPLICATE = "duplicate"
    EXPIRED = "session_expired"
    FORGOTTEN = "sequence_forgotten"


@dataclass(slots=True)
class _Session:
    registered: int  # the index of its registration entry
    last_ns: int  # stamp time of its latest entry
    floor: int = 1  # sequences below it are forgotten
    results: dict[int, StoredResult] = field(default_factory=dict)


def session_id(index: int, seed: int) -> str:
    """The id of the session registered by the entry at ``index`` with stamp seed ``seed``:
    unique (one entry per index) and the same on every replica."""
    return f"{index}-{seed & 0xFFFFFFFFFFFFFFFF:016x}"


class SessionTable:
    """The sessions, least recently active first (stamp times never go back along the log,
    so that order is also the order of their last activity)."""

    def __init__(self, settings: SessionSettings | None = None) -> None:
        self.settings = settings or SessionSettings()
        self._sessions: OrderedDict[str, _Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session: object) -> bool:
        return session in self._sessions

    # -- the entries ---------------------------------------------------------------------

    def register(self, index: int, seed: int, now_ns: int) -> str:
        """A registration entry at ``index``: a new session, the least recently active ones
        evicted when the table is full."""
        self.expire(now_ns)
        sessions = self._sessions
        while len(sessions) >= self.settings.max_sessions:
            sessions.popitem(last=False)
        sid = session_id(index, seed)
        sessions[sid] = _Session(registered=index, last_ns=now_ns)
        return sid

    def check(
        self, session: str, sequence: int, acked: int, now_ns: int
    ) -> tuple[Verdict, StoredResult | None]:
        """The verdict on command ``sequence`` of ``session``, its acknowledged floor ``acked``
        (0: none sent) at stamp time ``now_ns``; the stored result with DUPLICATE. A known
        session counts as active and drops the results below ``acked``."""
        self.expire(now_ns)
        entry = self._sessions.get(session)
        if entry is None:
            return Verdict.EXPIRED, None
        entry.last_ns = now_ns
        self._sessions.move_to_end(session)
        if acked > entry.floor:
            _raise_floor(entry, acked)
        if sequence < entry.floor:
            return Verdict.FORGOTTEN, None
        stored = entry.results.get(sequence)
        if stored is not None:
            return Verdict.DUPLICATE, stored
        return Verdict.NEW, None

    def record(self, session: str, sequence: int, result: StoredResult) -> None:
        """The first result of a command ``check`` called NEW; the smallest sequences are
        forgotten past ``max_results``."""
        entry = self._sessions[session]
        entry.results[sequence] = result
        if len(entry.results) > self.settings.max_results:
            _raise_floor(entry, min(entry.results) + 1)

    def configure(self, settings: SessionSettings) -> None:
        """A settings entry: new bounds, applied at once to the sessions there are."""
        self.settings = settings
        while len(self._sessions) > settings.max_sessions:
            self._sessions.popitem(last=False)
        for entry in self._sessions.values():
            while len(entry.results) > settings.max_results:
                _raise_floor(entry, min(entry.results) + 1)

    def expire(self, now_ns: int) -> None:
        """Drop the sessions idle for longer than the idle time as of ``now_ns``."""
        sessions = self._sessions
        deadline = now_ns - self.settings.idle_ns
        while sessions:
            sid, oldest = next(iter(sessions.items()))
            if oldest.last_ns >= deadline:
                return
            del sessions[sid]

    # -- snapshots and digests -----------------------------------------------------------

    def to_document(self) -> dict[str, Any]:
        s = self.settings
        return {
            "format": TABLE_FORMAT,
            "settings": [s.idle_ns, s.max_sessions, s.max_results],
            # In order of last activity, which decides eviction and expiry.
            "sessions": [
                [
                    sid,
                    e.registered,
                    e.last_ns,
                    e.floor,
                    [
                        [seq, r.index, r.term, base64.b64encode(r.output).decode("ascii"), r.error]
                        for seq, r in sorted(e.results.items())
                    ],
                ]
                for sid, e in self._sessions.items()
            ],
        }

    def encode(self) -> bytes:
        """The table as canonical bytes (the same table gives the same bytes)."""
        return json.dumps(self.to_document(), separators=(",", ":"), sort_keys=True).encode()

    def digest(self) -> str:
        return hashlib.sha256(self.encode()).hexdigest()

    @property
    def empty(self) -> bool:
        """No session, default settings: the state of a cluster that never used sessions."""
        return not self._sessions and self.settings == SessionSettings()

    @classmethod
    def decode(cls, data: bytes) -> SessionTable:
        """The table ``encode`` wrote; TableFormatError for anything else."""
        try:
            document = json.loads(data.decode("utf-8"))
            if not isinstance(document, dict) or document.get("format") != TABLE_FORMAT:
                raise TableFormatError(f"not a {TABLE_FORMAT} session table")
            idle_ns, max_sessions, max_results = (int(v) for v in document["settings"])
            table = cls(SessionSettings(idle_ns, max_sessions, max_results))
            for sid, registered, last_ns, floor, results in document["sessions"]:
                entry = _Session(registered=int(registered), last_ns=int(last_ns), floor=int(floor))
                for seq, index, term, output, error in results:
                    entry.results[int(seq)] = StoredResult(
                        index=int(index),
                        term=int(term),
                        output=base64.b64decode(output, validate=True),
                        error=None if error is None else str(error),
                    )
                table._sessions[str(sid)] = entry
            return table
        except TableFormatError:
            raise
        except (ValueError, TypeError, KeyError) as e:
            raise TableFormatError(f"the session table cannot be read ({e})") from None


def _raise_floor(entry: _Session, floor: int) -> None:
    entry.floor = floor
    for seq in [s for s in entry.results if s < floor]:
        del entry.results[seq]
