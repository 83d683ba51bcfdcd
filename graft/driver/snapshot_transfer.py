"""Moving a snapshot file from the leader to a follower over the peer channel.

The core deals in snapshot metadata only (an InstallSnapshot message). The leader's driver
hands that message to ``SnapshotSender``, which streams the leader's snapshot file in chunks,
one call at a time (the answer paces the next chunk: flow control for free), starting where
the follower's partial file ends, so a transfer broken by a lost connection resumes instead
of restarting. The follower's ``SnapshotReceiver`` appends chunks to a partial file in its
data dir and, once the file is complete and its crc32 matches the leader's, steps the
InstallSnapshot message into its core, which then asks the driver (Ready.snapshot) to install it
(storage copies it into the snapshot store, fsynced, off the reactor thread).

The receiver trusts no sender: it takes chunks only from the node it knows as the leader of its
current term, never writes past the size the leader announced, and keeps at most one partial
file. A complete file is kept only until it is installed, a newer one completes, or the node
restarts.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from graft.errors import BadRequest
from graft.raft.messages import InstallSnapshot
from graft.raft.types import SnapshotMeta, membership_from_dict, membership_to_dict
from graft.wire.commands import INSTALL_SNAPSHOT_CHUNK

log = Logger(namespace="graft.snapshot")

CHUNK_BYTES = 1 << 20
# The leader's crc32 is part of the name: two leaders' snapshots at the same index and term
# may differ byte for byte (an SQLite file), and a resumed transfer must not mix them.
_PARTIAL = "incoming-snapshot-{index}-{term}-{crc}.part"
_COMPLETE = "incoming-snapshot-{index}-{term}-{crc}.snap"
_READ_BYTES = 1 << 20


class Caller(Protocol):
    def call(
        self, peer: str, command: str, args: dict[str, Any], *, timeout: float | None = None
    ) -> Deferred[dict[str, Any]]: ...


@dataclass(frozen=True, slots=True)
class LocalSnapshot:
    meta: SnapshotMeta
    fsm_name: str
    size: int
    path: Path
    crc32: int  # of the whole file, from the snapshot's manifest
    # Opens the file so that it does not change while read (the store's delta mode folds
    # into it in place otherwise); None: open ``path``.
    open: Callable[[], BinaryIO] | None = None


class SnapshotSender:
    """Streams snapshots to followers, at most one transfer per follower at a time."""

    def __init__(
        self,
        *,
        peers: Caller,
        latest: Callable[[], LocalSnapshot | None],
        report: Callable[[str, bool], None],
        call_timeout: float = 10.0,
    ) -> None:
        self._peers = peers
        self._latest = latest
        self._report = report
        self._call_timeout = call_timeout
        self._active: set[str] = set()

    def send(self, message: InstallSnapshot) -> None:
        peer = message.to
        if peer in self._active:
            return
        self._active.add(peer)
        d = Deferred.fromCoroutine(self._stream(message))

        def done(result: object) -> None:
            self._active.discard(peer)
            ok = result is True
            if not ok:
                log.warn(
                    "snapshot {index} to {peer} failed: {why}; it will be retried",
                    index=message.snapshot.index,
                    peer=peer,
                    why=getattr(result, "value", result),
                )
            self._report(peer, ok)

        d.addBoth(done)

    async def _stream(self, message: InstallSnapshot) -> bool:
        snapshot = self._latest()
        if snapshot is None or snapshot.meta.index != message.snapshot.index:
            return False  # compacted again meanwhile: the core asks again with the new one
        peer = message.to
        base = {
            "term": message.term,
            "snapshot_index": snapshot.meta.index,
            "snapshot_term": snapshot.meta.term,
            "membership": membership_to_dict(snapshot.meta.membership),
            "fsm": snapshot.fsm_name,
            "size": snapshot.size,
            "crc32": snapshot.crc32,
            "stamp_floor_ns": snapshot.meta.stamp_floor_ns,
        }
        offset = await self._chunk(peer, {**base, "offset": 0, "data": b"", "done": False})
        log.info(
            "sending snapshot {index} ({size} bytes) to {peer} from offset {offset}",
            index=snapshot.meta.index,
            size=snapshot.size,
            peer=peer,
            offset=offset,
        )
        with snapshot.open() if snapshot.open is not None else snapshot.path.open("rb") as source:
            while True:
                source.seek(offset)
                data = source.read(CHUNK_BYTES)
                done = offset + len(data) >= snapshot.size
                args = {**base, "offset": offset, "data": data, "done": done}
                offset = await self._chunk(peer, args)
                if done and offset >= snapshot.size:
                    return True

    async def _chunk(self, peer: str, args: dict[str, Any]) -> int:
        answer = await self._peers.call(
            peer, INSTALL_SNAPSHOT_CHUNK.name, args, timeout=self._call_timeout
        )
        return int(answer["next_offset"])


class SnapshotReceiver:
    """Assembles a snapshot file from the leader's chunks; steps InstallSnapshot once it is
    complete and its checksum matches."""

    def __init__(
        self,
        *,
        incoming_dir: Path,
        current_term: Callable[[], int],
        current_leader: Callable[[], str | None],
        deliver: Callable[[InstallSnapshot], None],
        node_id: str,
    ) -> None:
        self._dir = incoming_dir
        self._current_term = current_term
        self._current_leader = current_leader
        self._deliver = deliver
        self._node_id = node_id
        # Verified files not yet claimed by an install, by (index, term).
        self.complete: dict[tuple[int, int], Path] = {}
        # The partial file being written and the crc32 of its bytes so far: (path, size, crc).
        self._running: tuple[Path, int, int] | None = None
        # Complete files left by an earlier run were never installed (an install removes its
        # file): the core has forgotten them, so the leader will send again if it must.
        for stale in self._dir.glob(_COMPLETE.format(index="*", term="*", crc="*")):
            stale.unlink(missing_ok=True)

    def chunk(self, sender: str, args: dict[str, Any]) -> dict[str, Any]:
        """One call of install_snapshot_chunk from ``sender`` (the authenticated peer).

        A refusal (BadRequest) writes nothing, except that a partial file the chunk proves
        wrong (past the announced size, a checksum mismatch) is removed; the leader's sender
        then reports a failure and the core retries from scratch later."""
        term = self._current_term()
        leader = self._current_leader()
        if args["term"] != term or sender != leader:
            raise BadRequest(
                f"refused snapshot chunk from {sender} in term {args['term']}: this node is in "
                f"term {term} and its leader is {leader or 'unknown'}"
            )
        index, snap_term = int(args["snapshot_index"]), int(args["snapshot_term"])
        size, offset, crc = int(args["size"]), int(args["offset"]), int(args["crc32"])
        data: bytes = args["data"]
        done: bool = args["done"]
        if index < 1 or snap_term < 0 or size < 0 or offset < 0 or not 0 <= crc <= 0xFFFFFFFF:
            raise BadRequest(f"snapshot {index}: malformed chunk header")
        names = {"index": index, "term": snap_term, "crc": f"{crc:08x}"}
        complete = self.complete.get((index, snap_term))
        if complete is not None and complete.name == _COMPLETE.format(**names):
            # Already here and verified (the core may have passed over the first delivery).
            if done and offset == size:
                self._deliver_to_core(sender, args, index, snap_term, size)
            return {"term": term, "next_offset": size}
        path = self._dir / _PARTIAL.format(**names)
        if offset > size or offset + len(data) > size:
            self._remove_partial(path)
            raise BadRequest(
                f"snapshot {index}: a chunk at offset {offset} of {len(data)} bytes goes past "
                f"the announced size of {size} bytes"
            )
        if not path.exists():
            self._discard_partials(keep=path)
            path.touch()
        have = path.stat().st_size
        if have > size:  # left by an earlier run or leader: it cannot be this snapshot
            self._remove_partial(path)
            path.touch()
            have = 0
        if offset != have or not (data or done):
            return {"term": term, "next_offset": have}  # an offer, or out of order: resync
        running = self._crc_of(path, have)
        # No fsync, which would hold the reactor for as long as the disk takes to write the
        # whole file: storage's install copies the file into the snapshot store and fsyncs
        # that copy before the core's acknowledgement leaves. A crash loses nothing that
        # counts: complete files are removed at start, and a partial file that lost its tail
        # resumes, or fails the whole file's crc32 and is sent again.
        with path.open("ab") as f:
            f.write(data)
        have += len(data)
        self._running = (path, have, zlib.crc32(data, running))
        if not done:
            return {"term": term, "next_offset": have}
        self._running = None
        if have != size:
            self._remove_partial(path)
            raise BadRequest(f"snapshot {index} arrived with {have} of {size} bytes")
        got = zlib.crc32(data, running)
        if got != crc:
            self._remove_partial(path)
            log.warn(
                "snapshot {index} from {leader} failed its checksum (crc32 {got:08x}, the leader "
                "sent {crc:08x}); removed it, the leader will send it again",
                index=index,
                leader=sender,
                got=got,
                crc=crc,
            )
            raise BadRequest(
                f"snapshot {index}: crc32 of the {size} bytes received is {got:08x}, not the "
                f"{crc:08x} announced; removed, send it again"
            )
        final = path.rename(self._dir / _COMPLETE.format(**names))
        # A newer snapshot supersedes the unclaimed ones; one an install has claimed stays.
        for key, other in list(self.complete.items()):
            if other != final:
                other.unlink(missing_ok=True)
                del self.complete[key]
        self.complete[(index, snap_term)] = final
        log.info(
            "received snapshot {index} ({size} bytes, crc32 {crc:08x}) from {leader}",
            index=index,
            size=have,
            crc=crc,
            leader=sender,
        )
        self._deliver_to_core(sender, args, index, snap_term, size)
        return {"term": term, "next_offset": have}

    def take(self, meta: SnapshotMeta) -> Path | None:
        """Claim the complete file for a snapshot the core asked to install (None if unknown):
        from now on only the installer removes it."""
        return self.complete.pop((meta.index, meta.term), None)

    def installed(self, meta: SnapshotMeta) -> None:
        """A snapshot is installed: every file up to its index, complete or partial, is moot."""
        for key, path in list(self.complete.items()):
            if key[0] <= meta.index:
                path.unlink(missing_ok=True)
                del self.complete[key]
        for path in self._dir.glob(_PARTIAL.format(index="*", term="*", crc="*")):
            index = _index_of(path)
            if index is None or index <= meta.index:
                self._remove_partial(path)

    def _deliver_to_core(
        self, sender: str, args: dict[str, Any], index: int, snap_term: int, size: int
    ) -> None:
        try:
            membership = membership_from_dict(args["membership"])
        except ValueError as e:
            raise BadRequest(f"snapshot {index}: {e}") from None
        meta = SnapshotMeta(
            index=index,
            term=snap_term,
            membership=membership,
            stamp_floor_ns=int(args["stamp_floor_ns"]),
        )
        self._deliver(
            InstallSnapshot(term=args["term"], sender=sender, to=self._node_id, snapshot=meta)
        )

    def _crc_of(self, path: Path, have: int) -> int:
        """The crc32 of the partial file's first ``have`` bytes: carried from chunk to chunk,
        read back from the file only when a transfer resumes after a restart."""
        if self._running is not None and self._running[:2] == (path, have):
            return self._running[2]
        crc = 0
        with path.open("rb") as f:
            while block := f.read(_READ_BYTES):
                crc = zlib.crc32(block, crc)
        return crc

    def _remove_partial(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        if self._running is not None and self._running[0] == path:
            self._running = None

    def _discard_partials(self, keep: Path) -> None:
        for other in self._dir.glob(_PARTIAL.format(index="*", term="*", crc="*")):
            if other != keep:
                self._remove_partial(other)


def _index_of(path: Path) -> int | None:
    parts = path.name.split("-")
    try:
        return int(parts[2])
    except (IndexError, ValueError):
        return None
