"""Moving a snapshot file from the leader to a follower over the peer channel.

The core deals in snapshot metadata only (an InstallSnapshot message). The leader's driver
hands that message to ``SnapshotSender``, which streams the leader's snapshot file in chunks,
one call at a time (the answer paces the next chunk: flow control for free), starting where
the follower's partial file ends, so a transfer broken by a lost connection resumes instead
of restarting. The follower's ``SnapshotReceiver`` appends chunks to a partial file in its
data dir and, once the file is complete and fsynced, steps the InstallSnapshot message into its
core, which then asks the driver (Ready.snapshot) to install it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from graft.errors import BadRequest
from graft.raft.messages import InstallSnapshot
from graft.raft.types import SnapshotMeta, membership_from_dict, membership_to_dict

log = Logger(namespace="graft.snapshot")

CHUNK_BYTES = 1 << 20
_PARTIAL = "incoming-snapshot-{index}-{term}.part"


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


class SnapshotSender:
    """Streams snapshots to followers, at most one transfer per follower at a time."""

    def __init__(
        self,
        *,
        peers: Callable[[], Caller | None],
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
        }
        offset = await self._chunk(peer, {**base, "offset": 0, "data": b"", "done": False})
        log.info(
            "sending snapshot {index} ({size} bytes) to {peer} from offset {offset}",
            index=snapshot.meta.index,
            size=snapshot.size,
            peer=peer,
            offset=offset,
        )
        with snapshot.path.open("rb") as source:
            while True:
                source.seek(offset)
                data = source.read(CHUNK_BYTES)
                done = offset + len(data) >= snapshot.size
                args = {**base, "offset": offset, "data": data, "done": done}
                offset = await self._chunk(peer, args)
                if done and offset >= snapshot.size:
                    return True

    async def _chunk(self, peer: str, args: dict[str, Any]) -> int:
        peers = self._peers()
        if peers is None:
            raise RuntimeError("no peer channel")
        answer = await peers.call(peer, "install_snapshot_chunk", args, timeout=self._call_timeout)
        return int(answer["next_offset"])


class SnapshotReceiver:
    """Assembles a snapshot file from chunks; steps InstallSnapshot once it is complete."""

    def __init__(
        self,
        *,
        incoming_dir: Path,
        current_term: Callable[[], int],
        deliver: Callable[[InstallSnapshot], None],
        node_id: str,
    ) -> None:
        self._dir = incoming_dir
        self._current_term = current_term
        self._deliver = deliver
        self._node_id = node_id
        self.complete: dict[tuple[int, int], Path] = {}

    def chunk(self, leader: str, args: dict[str, Any]) -> dict[str, Any]:
        term = self._current_term()
        if args["term"] < term:
            return {"term": term, "next_offset": 0}  # a deposed leader: it will learn our term
        index, snap_term = int(args["snapshot_index"]), int(args["snapshot_term"])
        path = self._dir / _PARTIAL.format(index=index, term=snap_term)
        if not path.exists():
            self._discard_others(path)
            path.touch()
        have = path.stat().st_size
        data: bytes = args["data"]
        if args["offset"] != have or not (data or args["done"]):
            return {"term": term, "next_offset": have}  # an offer, or out of order: resync
        with path.open("ab") as f:
            f.write(data)
            if args["done"]:
                f.flush()
                os.fsync(f.fileno())
        have += len(data)
        if args["done"]:
            if have != args["size"]:
                path.unlink()
                raise BadRequest(f"snapshot {index} arrived with {have} of {args['size']} bytes")
            try:
                membership = membership_from_dict(args["membership"])
            except ValueError as e:
                raise BadRequest(f"snapshot {index}: {e}") from None
            meta = SnapshotMeta(index=index, term=snap_term, membership=membership)
            self.complete[(index, snap_term)] = path
            log.info(
                "received snapshot {index} ({size} bytes) from {leader}",
                index=index,
                size=have,
                leader=leader,
            )
            self._deliver(
                InstallSnapshot(term=args["term"], sender=leader, to=self._node_id, snapshot=meta)
            )
        return {"term": term, "next_offset": have}

    def take(self, meta: SnapshotMeta) -> Path | None:
        """The complete file for a snapshot the core asked to install (None if unknown)."""
        return self.complete.pop((meta.index, meta.term), None)

    def _discard_others(self, keep: Path) -> None:
        for other in self._dir.glob(_PARTIAL.format(index="*", term="*")):
            if other != keep:
                other.unlink(missing_ok=True)
