"""The interface between the Raft driver and a replicated state machine (DESIGN.md section 6).

The driver calls ``apply`` once per committed command entry, in log order, on the reactor
thread; or, for an FSM whose class sets ``apply_in_thread = True`` (SQLite's), in a worker
thread, one batch at a time, while the reactor keeps the node's Raft timing and nothing else
touches the FSM but ``query_in_thread`` (graft.driver.fsm_work). Every replica must turn the
same commands into the same state and the same answers, so ``apply`` may not read clocks,
random sources or anything else outside the command. An FSM that needs the time or randomness
implements ``apply_stamped`` (StampedStateMachine) and takes them from the leader's stamp,
which every replica reads from the log alike.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, Protocol, cast, runtime_checkable

from graft.stamp import Stamp


class CommandRejected(Exception):
    """The FSM refuses a committed command, deterministically: every replica refuses it the same
    way and the state is unchanged. The message is shown to the client (HTTP 422)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class QueryRejected(Exception):
    """The FSM refuses a query (malformed, or it would change the state); nothing changed.
    The message is shown to the client (HTTP 400)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class QueryTimedOut(Exception):
    """A query ran into its deadline and was stopped (see ThreadedQueries); nothing changed."""


class FSMFailure(Exception):
    """The FSM failed for a reason local to this machine (disk full, I/O error): replicas
    could diverge if the node went on, so the node must stop with this message."""


class CorruptSnapshot(Exception):
    """``restore`` was given bytes that are not a snapshot of this kind of FSM; the node should
    stop rather than run with an unknown state."""


@runtime_checkable
class StateMachine(Protocol):
    """A deterministic state machine.

    Any exception from ``apply`` other than CommandRejected is a bug in the FSM: the driver must
    stop the node rather than let replicas diverge.
    """

    # The media type of what apply and query return (the HTTP API sends it as Content-Type).
    content_type: str

    def apply(self, command: bytes, index: int) -> bytes:
        """Apply a committed command at log ``index`` and return its result."""
        ...

    def query(self, query: bytes) -> bytes:
        """Answer a read from the current state, without changing it."""
        ...

    def snapshot(self, sink: BinaryIO) -> None:
        """Write the whole current state to ``sink``; ``restore`` must read it back."""
        ...

    def begin_snapshot(self) -> Callable[[BinaryIO], None]:
        """Pin the current state for a snapshot and return the function that writes it.

        Called on the reactor thread at a consistent point (the applied index the caller
        records); must return quickly (milliseconds even for a large state). The returned
        function runs in a worker thread, possibly while ``apply`` keeps running on the reactor
        thread, and writes exactly the state as of the ``begin_snapshot`` call to the sink, in
        the format ``restore`` reads. It must be called exactly once: it releases what
        ``begin_snapshot`` took (for SQLite, a read transaction that keeps the WAL from being
        checkpointed). Use ``graft.fsm.begin_snapshot(fsm)`` to also support FSMs without it.
        """
        ...

    def restore(self, source: BinaryIO) -> None:
        """Replace the whole state with one written by ``snapshot``."""
        ...

    def close(self) -> None:
        """Release files and connections; the instance is not used afterwards."""
        ...


@runtime_checkable
class StampedStateMachine(Protocol):
    """Optional: an FSM that reads the leader's stamp (graft.stamp.Stamp) of each command.

    The driver calls ``apply_stamped`` instead of ``apply`` when the FSM has it (see
    ``stamped_apply``). ``stamp`` is the time and random seed the leader wrote into the entry,
    the same on every replica and in every replay; the time never goes backwards along the log.
    It is None for a command the log holds without a stamp (written by a Graft before stamps):
    the FSM must then answer as it did before stamps existed, e.g. refuse what needs the time,
    so that replaying an old log gives the state it gave then.
    """

    def apply_stamped(self, command: bytes, index: int, stamp: Stamp | None) -> bytes:
        """``apply``, with the command's stamp."""
        ...


def stamped_apply(fsm: StateMachine) -> Callable[[bytes, int, Stamp | None], bytes]:
    """``fsm.apply_stamped`` when the FSM has it, else ``fsm.apply`` ignoring the stamp (FSMs
    written for ``apply(command, index)`` keep working unchanged)."""
    method: Callable[[bytes, int, Stamp | None], bytes] | None = getattr(fsm, "apply_stamped", None)
    if method is not None:
        return method
    apply = fsm.apply

    def without_stamp(command: bytes, index: int, stamp: Stamp | None) -> bytes:
        return apply(command, index)

    return without_stamp


def begin_snapshot(fsm: StateMachine) -> Callable[[BinaryIO], None]:
    """``fsm.begin_snapshot()`` when the FSM has it; otherwise the whole snapshot is serialised
    into memory now, on the calling thread, and the returned function only copies the bytes.

    The fallback keeps FSMs written before ``begin_snapshot`` existed working, at the price of
    blocking the caller for as long as their ``snapshot`` takes.
    """
    begin: Callable[[], Callable[[BinaryIO], None]] | None = getattr(fsm, "begin_snapshot", None)
    if begin is not None:
        return begin()
    buffer = io.BytesIO()
    fsm.snapshot(buffer)
    image = buffer.getvalue()

    def write(sink: BinaryIO) -> None:
        sink.write(image)

    return write


# --- incremental snapshots -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IncrementalSnapshot:
    """What ``begin_incremental_snapshot(base)`` returns (an optional FSM method, the SQLite
    FSM's): the writer, to run in a worker thread as ``begin_snapshot``'s; whether it writes
    a *delta* (only what changed since the snapshot whose token is ``base``, in a format the
    snapshot store folds: an SQLite WAL) or a whole snapshot; and this snapshot's own token,
    which the store records and the next call receives as ``base``.

    The FSM writes a delta only when ``base`` is the token it handed out last and nothing
    broke the chain since (a restore, a plain ``begin_snapshot``). ``close`` releases what
    the writer holds if it is never run."""

    write: Callable[[BinaryIO], None]
    delta: bool
    token: str
    close: Callable[[], None]
    # A delta's capture in two more steps, when given: ``prepare`` in a worker thread
    # before ``write`` (the copy of what changed, off the thread that applies commands), then
    # ``finish`` on that thread, between two commands (resets what the capture read), then
    # ``write``. ``write`` runs ``prepare`` itself if it was not run.
    prepare: Callable[[], None] | None = None
    finish: Callable[[], None] | None = None


# --- the replica consistency check -------------------------------------------------------------


class _HashSink:
    """A write-only binary file that only hashes what is written to it."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        return len(data)


def begin_digest(fsm: StateMachine) -> Callable[[], str]:
    """Pin the FSM's current state and return the function that digests it (hex).

    The optional FSM method ``begin_digest() -> Callable[[], str]`` has the contract of
    ``begin_snapshot``: called on the reactor thread at the point of the log to digest, it must
    return quickly; the returned function runs once, in a worker thread, while ``apply`` goes on,
    and digests exactly the pinned state. Replicas in the same state must give the same digest
    however they reached it (replay, restore from a snapshot), so it describes the state
    logically, never a file's bytes that depend on history. Without the method, the digest is
    the sha256 of the snapshot bytes (``begin_snapshot``): right for FSMs whose snapshot is
    canonical (kv and script write sorted JSON).
    """
    begin: Callable[[], Callable[[], str]] | None = getattr(fsm, "begin_digest", None)
    if begin is not None:
        return begin()
    write = begin_snapshot(fsm)

    def compute() -> str:
        sink = _HashSink()
        write(cast(BinaryIO, sink))
        return sink.hash.hexdigest()

    return compute


def digest(fsm: StateMachine) -> str:
    """The digest of the FSM's current state, computed on the calling thread (for tests and
    offline tools: two FSMs in the same state give the same digest)."""
    return begin_digest(fsm)()


@runtime_checkable
class ThreadedQueries(Protocol):
    """Optional: an FSM whose queries run in worker threads, with a deadline.

    The driver uses it when the FSM has it (see ``threaded_query``), so that a heavy query never
    holds the reactor thread (heartbeats, ``/health``, commands); FSMs without it (kv, whose
    queries are O(1)) keep answering ``query`` on the reactor thread.
    """

    def query_in_thread(self, query: bytes, deadline: float) -> bytes:
        """Answer ``query`` as ``query`` would, from a worker thread.

        Several calls may run at once, and at the same time as ``apply`` (on the reactor
        thread, or the apply thread), ``begin_snapshot``, ``restore`` and ``close``. The answer
        must come from a state that includes every command applied before the driver handed
        the call to its thread pool, and never from a state that ``restore`` replaced before
        the call started reading.

        ``deadline`` is a ``time.monotonic()`` value: past it (also before the query starts,
        after waiting for a thread), stop the query and raise QueryTimedOut. A refused query
        raises QueryRejected, as in ``query``. After ``close`` any exception may be raised.
        """
        ...


def threaded_query(fsm: StateMachine) -> Callable[[bytes, float], bytes] | None:
    """``fsm.query_in_thread`` when the FSM offers it, else None (query on the reactor)."""
    method: Callable[[bytes, float], bytes] | None = getattr(fsm, "query_in_thread", None)
    return method
