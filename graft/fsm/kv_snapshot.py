"""The kv FSM's snapshot file (format ``graft.kv/2``): its writers and its streaming reader.

The file is lines of ASCII JSON, one record per line::

    {"format":"graft.kv/2"}
    "key":"value"            one line per key, keys in strictly increasing code-point order
    {"count":N}              the number of key lines: a file cut anywhere is refused

Sorted keys and one fixed encoding make equal states give equal bytes, so the replica check's
digest (the sha256 of these bytes, graft.fsm.base.begin_digest) is the same after a restore
as after a replay.

Writing. A large map is written by a forked child process (``ForkedWriter``): ``os.fork`` on
the reactor thread at the snapshot's index gives the child a copy-on-write image of the map as
it is at that instant, and the child sorts, encodes and streams it into a pipe; a worker thread
of the node copies the pipe into the snapshot file. The node's own interpreter never encodes
the state, so the reactor keeps the GIL: the cost on the reactor is the fork itself (copying
the page tables, a few ms per GiB of memory), not the 1-1.6 s of Python a 500k-key map takes
to encode in a thread that competes for the GIL with the reactor. The price is memory: pages
the child or the node touch while the child runs are copied (the child touches every key's and
value's reference count, so up to about the map's size). Delta snapshots (a base plus deltas
compacted in the background) were the alternative; they would still encode the whole map on
every compaction in this interpreter, and they complicate restore and install. The child
closes every file descriptor it does not need, puts the default signal handlers back, turns
the garbage collector off, lowers its own priority (``WRITER_NICE``: three nodes forking at
the same index would otherwise take a 2-core machine's CPU from their reactors for seconds),
and leaves by ``os._exit`` (no atexit, no Twisted, no flushing of the node's buffers)
whatever happens. A small map (below ``fork_min_keys``) is written by a
thread instead (``write_records`` over ``sorted_in_pieces``), where a fork would cost more
than the encoding, and on platforms without ``os.fork``.

Reading. ``read_records`` streams the file in blocks of ``_READ_CHUNK`` bytes: each block's
complete lines are decoded by one C call, as the members of one JSON object (the way
``graft.kv/1`` was read, and faster than a list per line), and checked (one string member per
line, keys in order, no lone surrogates, the count at the end), so memory is bounded by a
block plus one record (at most ``MAX_RECORD_BYTES``), never the whole file. Every byte is
treated as hostile: anything else raises CorruptSnapshot naming what is wrong. A
``graft.kv/1`` file (one JSON object, written before this format) is still read, whole.
"""

from __future__ import annotations

import contextlib
import gc
import heapq
import json
import os
import signal
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, BinaryIO, NoReturn

from graft.fsm.base import CorruptSnapshot
from graft.fsm.kv_map import ShardedMap
from graft.pause_journal import note

__all__ = [
    "FORMAT",
    "MAX_RECORD_BYTES",
    "ForkedWriter",
    "SnapshotWriteFailed",
    "ThreadWriter",
    "can_fork",
    "read_records",
    "sorted_in_pieces",
    "write_records",
]

FORMAT = "graft.kv/2"
_HEADER = b'{"format":"graft.kv/2"}\n'
_LEGACY_FORMAT = "graft.kv/1"
_LEGACY_PREFIX = b'{"data":'
# Keys sorted or records encoded per piece: in the thread writer each piece holds the GIL.
_PIECE = 2000
# Bytes read from the file per block, and copied from the child's pipe per read.
_READ_CHUNK = 512 * 1024
# The longest record line the reader accepts. An entry is at most a peer frame (16 MiB by
# default) and JSON's \\u escapes can make text up to six times longer.
MAX_RECORD_BYTES = 128 * 1024 * 1024
_encode = json.encoder.encode_basestring_ascii
# How much nicer (lower priority) than the node the forked writer runs: it gets the CPU the
# node leaves, so a snapshot takes longer on a saturated machine but delays no command.
WRITER_NICE = 10


class SnapshotWriteFailed(Exception):
    """The child process writing a snapshot failed or died; the snapshot is not usable."""


# -- writing -------------------------------------------------------------------------------------


def sorted_in_pieces(data: Mapping[str, str]) -> Iterator[str]:
    """The keys in sorted order, sorted piecewise and merged (one sorted() of a million keys
    would hold the GIL for most of a second; this is for the thread writer)."""
    keys = list(data)
    runs = [sorted(keys[i : i + _PIECE]) for i in range(0, len(keys), _PIECE)]
    return heapq.merge(*runs)


def write_records(data: Mapping[str, str], keys: Iterable[str], sink: BinaryIO) -> None:
    """Write ``data`` as a graft.kv/2 file, its keys in the order ``keys`` gives (sorted)."""
    sink.write(_HEADER)
    encode = _encode
    piece: list[str] = []
    count = 0
    for key in keys:
        piece.append(f"{encode(key)}:{encode(data[key])}\n")
        if len(piece) == _PIECE:
            sink.write("".join(piece).encode("ascii"))
            count += len(piece)
            piece = []
    count += len(piece)
    sink.write("".join(piece).encode("ascii"))
    sink.write(b'{"count":%d}\n' % count)


class ThreadWriter:
    """Writes a pinned map in the calling (worker) thread; ``done`` is set once it no longer
    reads the map (also by ``close`` when the writer is dropped unused)."""

    def __init__(self, data: Mapping[str, str], done: threading.Event) -> None:
        self._data = data
        self._done = done

    def __call__(self, sink: BinaryIO) -> None:
        try:
            write_records(self._data, sorted_in_pieces(self._data), sink)
        finally:
            self._done.set()

    def close(self) -> None:
        self._done.set()


def can_fork() -> bool:
    return hasattr(os, "fork")


class ForkedWriter:
    """Forks at construction (call it on the reactor thread, at the snapshot's index); calling
    it copies what the child writes into ``sink`` (in a worker thread) and reaps the child.
    ``close`` drops an unused writer: the child sees a broken pipe and exits."""

    def __init__(
        self, data: Mapping[str, str], overlay: Mapping[str, str | None] | None = None
    ) -> None:
        read_fd, write_fd = os.pipe()
        started = time.perf_counter()
        try:
            pid = os.fork()
        except BaseException:
            os.close(read_fd)
            os.close(write_fd)
            raise
        if pid == 0:  # the child
            _child(data, overlay, read_fd, write_fd)
        os.close(write_fd)
        note("fork", ms=round((time.perf_counter() - started) * 1000, 2), keys=len(data))
        self.pid = pid
        self._read_fd: int | None = read_fd
        self._lock = threading.Lock()

    def __call__(self, sink: BinaryIO) -> None:
        fd = self._take_fd()
        if fd is None:
            raise SnapshotWriteFailed("this snapshot writer was already used or closed")
        tail = b""
        try:
            with open(fd, "rb", buffering=0) as pipe:  # closes fd
                while chunk := pipe.read(_READ_CHUNK):
                    sink.write(chunk)
                    tail = (tail + chunk)[-64:]
        finally:
            code = self._reap()
            note("fork_writer_done", pid=self.pid, status=code)
        if code != 0:
            raise SnapshotWriteFailed(
                f"the snapshot writer process {self.pid} exited with status {code}; "
                "its stderr says why"
            )
        if not tail.endswith(b"}\n"):
            raise SnapshotWriteFailed(
                f"the snapshot writer process {self.pid} exited before the end of the snapshot"
            )

    def close(self) -> None:
        fd = self._take_fd()
        if fd is not None:
            os.close(fd)
            self._reap()

    def _take_fd(self) -> int | None:
        with self._lock:
            fd, self._read_fd = self._read_fd, None
            return fd

    def _reap(self) -> int:
        while True:
            try:
                _, status = os.waitpid(self.pid, 0)
            except InterruptedError:  # pragma: no cover (retried by Python since 3.5)
                continue
            except ChildProcessError:  # reaped elsewhere: its status is lost
                return 0
            return os.waitstatus_to_exitcode(status)


def _child(
    data: Mapping[str, str], overlay: Mapping[str, str | None] | None, read_fd: int, write_fd: int
) -> NoReturn:
    """The forked child: write the snapshot into ``write_fd`` and leave by os._exit, never
    returning into the node's code (its reactor, its atexit handlers, its buffered files)."""
    code = 1
    try:
        os.close(read_fd)
        gc.disable()  # a collection would touch (copy) every object's page for nothing
        # Below the node's threads: the nodes of a cluster fork at the same index, and on a
        # busy machine their writers would take the CPU their reactors need (tail latency).
        with contextlib.suppress(OSError):
            os.nice(WRITER_NICE)
        if threading.current_thread() is threading.main_thread():
            signal.set_wakeup_fd(-1)  # the node's reactor wakes on it
            for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
                signal.signal(number, signal.SIG_DFL)
        # Sockets, the log's files, the listening ports: none stays open in the child.
        os.closerange(3, write_fd)
        os.closerange(write_fd + 1, max(write_fd + 2, os.sysconf("SC_OPEN_MAX")))
        state: Mapping[str, str] = data
        if isinstance(data, ShardedMap) or overlay:
            # A plain dict of the child's own: the writer reads each key once and a dict's
            # lookups are C calls; the overlay (commands since an earlier writer's begin)
            # is applied to it.
            flat = data.to_dict() if isinstance(data, ShardedMap) else dict(data)
            for key, value in (overlay or {}).items():
                if value is None:
                    flat.pop(key, None)
                else:
                    flat[key] = value
            state = flat
        with open(write_fd, "wb", buffering=_READ_CHUNK) as out:
            write_records(state, sorted(state), out)
        code = 0
    except BrokenPipeError:
        pass  # the node closed the pipe: it no longer wants this snapshot
    except BaseException as e:
        with contextlib.suppress(BaseException):
            os.write(2, f"graft kv snapshot writer: {type(e).__name__}: {e}\n".encode())
    finally:
        os._exit(code)


# -- reading -------------------------------------------------------------------------------------


def read_records(source: BinaryIO) -> dict[str, str]:
    """The map a kv snapshot file holds; CorruptSnapshot if it is not exactly one."""
    head = source.read(len(_HEADER))
    if head == _HEADER:
        return _Reader().read(source)
    if head.startswith(_LEGACY_PREFIX):
        return _read_legacy(head + source.read())
    raise CorruptSnapshot(
        f"the file does not start like a {FORMAT} snapshot; restore one taken by graft.fsm.kv"
    )


class _Reader:
    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.count = 0
        self.last_key: str | None = None
        self.end: int | None = None  # the count the end record gives, once read

    def read(self, source: BinaryIO) -> dict[str, str]:
        pending: list[bytes] = []  # the start of a line whose end is not read yet
        pending_bytes = 0
        while chunk := source.read(_READ_CHUNK):
            cut = chunk.rfind(b"\n")
            if cut < 0:
                pending.append(chunk)
                pending_bytes += len(chunk)
                if pending_bytes > MAX_RECORD_BYTES:
                    raise _corrupt(f"a line longer than {MAX_RECORD_BYTES} bytes")
                continue
            pending.append(chunk[: cut + 1])
            block = b"".join(pending)
            pending, pending_bytes = [chunk[cut + 1 :]], len(chunk) - cut - 1
            self._block(block)
        if pending_bytes:
            raise _corrupt("it ends inside a line (truncated?)")
        if self.end is None:
            raise _corrupt("its end record is missing (truncated?)")
        return self.data

    def _block(self, block: bytes) -> None:
        if self.end is not None:
            raise _corrupt("it goes on after its end record")
        try:
            text = block.decode("ascii")
        except UnicodeDecodeError:
            raise _corrupt("it holds a byte that is not ASCII") from None
        lines = text.split("\n")
        lines.pop()  # the block ends with a newline
        end = lines.pop() if lines[-1].startswith("{") else None
        body = text if end is None else text[: len(text) - len(end) - 1]
        if body.startswith("{") or "\n{" in body:  # records start with '"'
            raise _corrupt("it goes on after its end record")
        if lines:
            self._records(text, lines)
        if end is not None:
            self._end(end)

    def _records(self, text: str, lines: list[str]) -> None:
        try:
            records = json.loads("{" + ",".join(lines) + "}")
        except (ValueError, RecursionError) as e:
            raise _corrupt(f"a record is not valid JSON ({type(e).__name__}: {e})") from None
        # One member per line (no line holds two, no key comes twice), strings only.
        if len(records) != len(lines) or set(map(type, records.values())) != {str}:
            raise _corrupt('a line is not one "key":"value" member of strings')
        keys = list(records)
        if (self.last_key is not None and not self.last_key < keys[0]) or not all(
            map(str.__lt__, keys, keys[1:])
        ):
            raise _corrupt("its keys are not in strictly increasing order")
        if "\\ud" in text or "\\uD" in text:
            _check_surrogates(records)
        self.last_key = keys[-1]
        self.data.update(records)
        self.count += len(records)

    def _end(self, line: str) -> None:
        try:
            end = json.loads(line)
        except (ValueError, RecursionError):
            end = None
        if type(end) is not dict or list(end) != ["count"] or type(end["count"]) is not int:
            raise _corrupt(f'its end record is not {{"count":N}} ({line[:60]!r})')
        self.end = end["count"]
        if self.end != self.count:
            raise _corrupt(f"its end record counts {self.end} keys but {self.count} came before")


def _check_surrogates(records: Mapping[str, str]) -> None:
    for pair in records.items():
        for text in pair:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise _corrupt(
                    "a key or value holds a lone UTF-16 surrogate, which no command can write"
                ) from None


def _corrupt(what: str) -> CorruptSnapshot:
    return CorruptSnapshot(f"the {FORMAT} snapshot is corrupt: {what}")


def _read_legacy(raw: bytes) -> dict[str, str]:
    try:
        document: Any = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CorruptSnapshot(f"the kv snapshot is not valid JSON ({e})") from None
    data = document.get("data") if isinstance(document, dict) else None
    if (
        not isinstance(document, dict)
        or document.get("format") != _LEGACY_FORMAT
        or not isinstance(data, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items())
    ):
        raise CorruptSnapshot(
            f"the snapshot is not a {_LEGACY_FORMAT} snapshot; restore one taken by graft.fsm.kv"
        )
    _check_surrogates(data)
    return dict(data)
