"""The layer between the driver and the FSM: session operations, and the table in snapshots.

``SessionedMachine`` wraps any StateMachine (graft.fsm) and is one itself, so the driver's
snapshots, restores, digests and queries need no other change:

- ``apply_operation`` applies what a format-2 stamped entry carries (graft.sessions.envelope):
  a registration, a numbered command (through the session table, so the inner FSM sees each
  (session, sequence) at most once), or new session settings;
- ``begin_snapshot``/``snapshot`` write a container, the table beside the FSM's own snapshot::

      b"GRAFTSES" | format u8 (1) | table length u64 | table | the FSM's snapshot bytes

  and ``restore`` reads it back; a file without the magic is an FSM snapshot as written
  before sessions (or a plain FSM file): it restores with an empty table. While the table is
  empty (no session, default settings) the snapshot is the FSM's alone, so a cluster that
  never used sessions writes the snapshots it wrote before. ``extract_fsm``
  copies the FSM's own part out (e.g. the plain SQLite database of a `graft snapshot save`);
- ``begin_digest`` is the FSM's digest while no session was ever used, else a digest of both;
- ``begin_incremental_snapshot`` (only where the inner FSM has it: SQLite's delta snapshots)
  is the inner FSM's while the table is empty; once it is not, every snapshot is a whole
  container, so that the stored snapshot always holds the table.

Pure: no Twisted (the simulation applies operations with it as the driver does).
"""

from __future__ import annotations

import hashlib
import io
import shutil
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

from graft.fsm.base import (
    CommandRejected,
    IncrementalSnapshot,
    StateMachine,
    begin_digest,
    begin_snapshot,
)
from graft.sessions.envelope import EnvelopeError, NumberedCommand, Register, SetSettings, decode
from graft.sessions.table import (
    SessionSettings,
    SessionTable,
    StoredResult,
    TableFormatError,
    Verdict,
)
from graft.stamp import Stamp

MAGIC = b"GRAFTSES"
CONTAINER_FORMAT = 1
_HEADER = struct.Struct("<8sBQ")
_COPY_CHUNK = 1024 * 1024

ApplyStamped = Callable[[bytes, int, Stamp | None], bytes]


class SnapshotContainerError(ValueError):
    """A snapshot container this build cannot read."""


@dataclass(frozen=True, slots=True)
class Applied:
    """What a session operation answers: the FSM's ``output`` or ``error`` (its rejection, or
    why the session refused) with ``refusal`` the error code of a session refusal
    (``session_expired``, ``sequence_forgotten``, ``bad_request``); ``index``/``term`` of the
    entry that first applied the command (an earlier one for a ``duplicate``)."""

    index: int
    term: int
    output: bytes = b""
    error: str | None = None
    refusal: str | None = None
    duplicate: bool = False


def _nothing() -> None:
    pass


class SessionedMachine:
    """A StateMachine with the session table in front of it (see the module's text)."""

    content_type: str

    def __init__(self, inner: StateMachine, table: SessionTable | None = None) -> None:
        self.inner = inner
        self.table = table or SessionTable()
        self.content_type = inner.content_type

    def __getattr__(self, name: str) -> Any:
        # The inner FSM's optional methods (apply_stamped, query_in_thread, ...) and
        # attributes, as graft.fsm's helpers look them up with getattr.
        if name == "begin_incremental_snapshot":
            # Only where the inner FSM has it, and never the inner one itself: its deltas
            # would leave the session table out of the stored snapshot.
            getattr(self.inner, name)
            return self._begin_incremental_snapshot
        return getattr(self.inner, name)

    def _begin_incremental_snapshot(self, base: str | None) -> IncrementalSnapshot:
        """The inner FSM's delta snapshots while no session was ever used (its snapshot is
        then the stored one, as in ``begin_snapshot``); afterwards a whole snapshot, the
        container, each time (its token is no FSM's, so the next one is whole too)."""
        if self.table.empty:
            inner: Any = self.inner
            return cast(IncrementalSnapshot, inner.begin_incremental_snapshot(base))
        write = self.begin_snapshot()
        return IncrementalSnapshot(
            write=write,
            delta=False,
            token=uuid.uuid4().hex,
            close=getattr(write, "close", _nothing),
        )

    def apply(self, command: bytes, index: int) -> bytes:
        return self.inner.apply(command, index)

    def query(self, query: bytes) -> bytes:
        return self.inner.query(query)

    def close(self) -> None:
        self.inner.close()

    # -- session operations --------------------------------------------------------------

    def apply_operation(
        self, body: bytes, index: int, term: int, stamp: Stamp, apply: ApplyStamped
    ) -> Applied:
        """``apply_operation`` on this machine's table (``apply``: the inner FSM's)."""
        return apply_operation(self.table, body, index, term, stamp, apply)

    # -- snapshots and digests -----------------------------------------------------------

    def begin_snapshot(self) -> Callable[[BinaryIO], None]:
        write_fsm = begin_snapshot(self.inner)
        if self.table.empty:
            # No session (and default settings): the FSM's snapshot alone, as before sessions;
            # ``restore`` reads it back as exactly this state.
            return write_fsm
        table = self.table.encode()  # now, on the caller's thread: the consistent point

        def write(sink: BinaryIO) -> None:
            sink.write(_HEADER.pack(MAGIC, CONTAINER_FORMAT, len(table)))
            sink.write(table)
            write_fsm(sink)

        return write

    def snapshot(self, sink: BinaryIO) -> None:
        self.begin_snapshot()(sink)

    def restore(self, source: BinaryIO) -> None:
        head = source.read(_HEADER.size)
        if len(head) == _HEADER.size and head[:8] == MAGIC:
            table = _read_table(head, source)
            self.inner.restore(source)
        else:
            # An FSM snapshot without the container: written before sessions existed.
            table = SessionTable()
            self.inner.restore(cast(BinaryIO, _Prefixed(head, source)))
        self.table = table

    def begin_digest(self) -> Callable[[], str]:
        inner = begin_digest(self.inner)
        if self.table.empty:
            return inner
        table = self.table.digest()

        def compute() -> str:
            both = f"sessions {table} fsm {inner()}".encode("ascii")
            return hashlib.sha256(both).hexdigest()

        return compute


def apply_operation(
    table: SessionTable, body: bytes, index: int, term: int, stamp: Stamp, apply: ApplyStamped
) -> Applied:
    """Apply the session operation ``body`` of the entry at ``index`` to ``table``
    (``apply`` is the inner FSM's stamped apply). CommandRejected from the FSM becomes
    ``error``; any other exception from it propagates (the node stops, as for a plain
    command)."""
    try:
        operation = decode(body)
    except EnvelopeError as e:
        # Deterministic on every replica: refused, nothing changes.
        return Applied(index, term, error=f"{e}; upgrade this node", refusal="bad_request")
    if isinstance(operation, Register):
        sid = table.register(index, stamp.seed, stamp.time_ns)
        output = b'{"session":"%s","index":%d}' % (sid.encode("ascii"), index)
        return Applied(index, term, output=output)
    if isinstance(operation, SetSettings):
        # A zero field keeps the current value (an entry with none changes nothing).
        asked, current = operation.settings, table.settings
        settings = SessionSettings(
            idle_ns=asked.idle_ns or current.idle_ns,
            max_sessions=asked.max_sessions or current.max_sessions,
            max_results=asked.max_results or current.max_results,
        )
        problems = settings.problems()
        if problems:
            return Applied(index, term, error="; ".join(problems), refusal="bad_request")
        table.configure(settings)
        return Applied(index, term, output=_settings_json(table))
    return _numbered(table, operation, index, term, stamp, apply)


def _numbered(
    table: SessionTable,
    op: NumberedCommand,
    index: int,
    term: int,
    stamp: Stamp,
    apply: ApplyStamped,
) -> Applied:
    verdict, stored = table.check(op.session, op.sequence, op.acked, stamp.time_ns)
    if verdict is Verdict.NEW:
        output, error = b"", None
        try:
            output = apply(op.command, index, stamp)
        except CommandRejected as e:
            error = str(e)
        table.record(op.session, op.sequence, StoredResult(index, term, output, error))
        return Applied(index, term, output=output, error=error)
    if verdict is Verdict.DUPLICATE:
        assert stored is not None
        return Applied(stored.index, stored.term, stored.output, stored.error, duplicate=True)
    if verdict is Verdict.EXPIRED:
        message = (
            f"session {op.session} is unknown or expired (idle too long, or evicted from a "
            "full table): the command was not applied; register a new session and send it "
            "again under that one"
        )
    else:
        message = (
            f"sequence {op.sequence} of session {op.session} is below what the client "
            "acknowledged (or its result was discarded): whether it was applied is unknown; "
            "check before sending it again"
        )
    return Applied(index, term, error=message, refusal=verdict.value)


def with_sessions(fsm: StateMachine) -> SessionedMachine:
    """``fsm`` with the session layer in front (itself when it already has it)."""
    if isinstance(fsm, SessionedMachine):
        return fsm
    return SessionedMachine(fsm)


def _read_table(head: bytes, source: BinaryIO) -> SessionTable:
    _, version, size = _HEADER.unpack(head)
    if version != CONTAINER_FORMAT:
        raise SnapshotContainerError(
            f"the snapshot container has format {version}, this build reads "
            f"{CONTAINER_FORMAT}: it was written by a newer Graft; upgrade this node"
        )
    data = source.read(size)
    if len(data) != size:
        raise SnapshotContainerError("the snapshot is cut short inside its session table")
    try:
        return SessionTable.decode(data)
    except TableFormatError as e:
        raise SnapshotContainerError(str(e)) from None


def _settings_json(table: SessionTable) -> bytes:
    s = table.settings
    return b'{"idle_ms":%d,"max_sessions":%d,"max_results":%d,"sessions":%d}' % (
        s.idle_ns // 10**6,
        s.max_sessions,
        s.max_results,
        len(table),
    )


def extract_fsm(container: BinaryIO, sink: BinaryIO) -> bool:
    """Copy the FSM's own snapshot out of a snapshot file (``graft snapshot save``'s) into
    ``sink``; True if it was a container, False if the file is the FSM's snapshot already
    (it is copied whole)."""
    head = container.read(_HEADER.size)
    if len(head) == _HEADER.size and head[:8] == MAGIC:
        _read_table(head, container)
        shutil.copyfileobj(container, sink, _COPY_CHUNK)
        return True
    sink.write(head)
    shutil.copyfileobj(container, sink, _COPY_CHUNK)
    return False


class _Prefixed(io.RawIOBase):
    """Bytes already read from a stream, then the rest of it."""

    def __init__(self, prefix: bytes, rest: BinaryIO) -> None:
        self._prefix = prefix
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        # Fills the buffer from the prefix and then the stream in one call: readers such as
        # the kv FSM's read(n) a fixed-size header and take a short read for the file's end.
        view = memoryview(buffer).cast("B")
        n = min(len(view), len(self._prefix))
        view[:n] = self._prefix[:n]
        self._prefix = self._prefix[n:]
        if n < len(view):
            data = self._rest.read(len(view) - n)
            view[n : n + len(data)] = data
            n += len(data)
        return n
