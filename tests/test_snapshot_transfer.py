"""Streaming a snapshot file between a SnapshotSender and a SnapshotReceiver, in memory."""

from __future__ import annotations

import io
import os
import zlib
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.trial import unittest

from graft.driver.snapshot_transfer import LocalSnapshot, SnapshotReceiver, SnapshotSender
from graft.errors import BadRequest
from graft.raft.messages import InstallSnapshot
from graft.raft.types import Membership, SnapshotMeta
from graft.storage import SnapshotBusy
from graft.transport import PeerUnavailable

# With a stamp floor: the receiver's InstallSnapshot must carry the leader's.
META = SnapshotMeta(
    index=500,
    term=3,
    membership=Membership(voters=frozenset({"a", "b"})),
    stamp_floor_ns=1_733_400_000_000_000_000,
)


class Link:
    """Calls the receiver directly; can fail every call after a number of successes."""

    def __init__(self, receiver: SnapshotReceiver) -> None:
        self.receiver = receiver
        self.fail_after: int | None = None
        self.calls = 0

    def call(
        self, peer: str, command: str, args: dict[str, Any], *, timeout: float | None = None
    ) -> Deferred[dict[str, Any]]:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            return fail(PeerUnavailable(peer, "connection lost"))
        return succeed(self.receiver.chunk("a", args))


class TransferTests(unittest.TestCase):
    def setUp(self) -> None:
        base = Path(self.mktemp())
        (base / "leader").mkdir(parents=True)
        (base / "follower").mkdir()
        self.data = bytes(range(256)) * 12_000  # about 3 MB: several chunks
        self.source = base / "leader" / "snap.data"
        self.source.write_bytes(self.data)
        self.delivered: list[InstallSnapshot] = []
        self.incoming = base / "follower"
        self.leader: str | None = "a"
        self.receiver = self.make_receiver()
        self.link = Link(self.receiver)
        self.reports: list[tuple[str, bool]] = []
        self.crc = zlib.crc32(self.data)
        self.sender = SnapshotSender(
            peers=self.link,
            latest=lambda: LocalSnapshot(
                meta=META, fsm_name="kv", size=len(self.data), path=self.source, crc32=self.crc
            ),
            report=lambda peer, ok: self.reports.append((peer, ok)),
        )
        self.message = InstallSnapshot(term=3, sender="a", to="b", snapshot=META)

    def make_receiver(self) -> SnapshotReceiver:
        return SnapshotReceiver(
            incoming_dir=self.incoming,
            current_term=lambda: 3,
            current_leader=lambda: self.leader,
            deliver=self.delivered.append,
            node_id="b",
        )

    def files(self) -> list[str]:
        return sorted(p.name for p in self.incoming.iterdir())

    def complete(self, index: int, data: bytes) -> None:
        """Send a whole snapshot at ``index`` in one done chunk, from the leader a."""
        self.receiver.chunk("a", chunk(index=index, data=data, size=len(data), done=True))

    def test_whole_file_arrives_and_is_delivered_once(self) -> None:
        """The receiver gets the file byte for byte, steps exactly one InstallSnapshot with the
        leader's metadata, and the sender reports success."""
        self.sender.send(self.message)
        self.assertEqual(self.reports, [("b", True)])
        self.assertEqual(self.delivered, [self.message])
        path = self.receiver.take(META)
        assert path is not None
        self.assertEqual(path.read_bytes(), self.data)

    def test_receiver_never_fsyncs_on_the_reactor_thread(self) -> None:
        """The received file is not fsynced where chunks arrive (the reactor thread: a 1 GB
        file on a slow disk held it for seconds); storage's install fsyncs its own copy."""
        synced: list[int] = []
        self.patch(os, "fsync", synced.append)
        self.patch(os, "fdatasync", synced.append)
        self.sender.send(self.message)
        self.assertEqual(self.reports, [("b", True)])
        self.assertEqual(self.delivered, [self.message])
        self.assertEqual(synced, [])

    def test_broken_transfer_resumes_where_it_stopped(self) -> None:
        """A transfer cut after two chunks reports failure; the next one asks where to resume
        and sends only the rest."""
        self.link.fail_after = 3  # the offer and two chunks
        self.sender.send(self.message)
        self.assertEqual(self.reports, [("b", False)])
        self.assertEqual(self.delivered, [])
        self.link.fail_after = None
        self.link.calls = 0
        self.sender.send(self.message)
        self.assertEqual(self.reports[-1], ("b", True))
        self.assertLess(self.link.calls, 4, "the resumed transfer started over")
        path = self.receiver.take(META)
        assert path is not None
        self.assertEqual(path.read_bytes(), self.data)

    def test_stale_leader_is_refused_and_nothing_is_written(self) -> None:
        """A chunk from an older term is refused (an error the sender reports as a failure,
        not an answer it would keep resending from offset 0), and nothing is written."""
        args = chunk(term=2, data=b"abc", size=3, done=True)
        self.assertRaises(BadRequest, self.receiver.chunk, "a", args)
        self.assertEqual(self.delivered, [])
        self.assertEqual(self.files(), [])

    def test_member_that_is_not_the_leader_is_refused(self) -> None:
        """Only the leader of the current term, as this node knows it, may send a snapshot: a
        chunk from another member (even of the current term) writes nothing, delivers nothing."""
        for sender, leader in (("c", "a"), ("a", None)):
            self.leader = leader
            args = chunk(data=b"abc", size=3, done=True)
            with self.assertRaises(BadRequest) as caught:
                self.receiver.chunk(sender, args)
            self.assertIn(f"its leader is {leader or 'unknown'}", caught.exception.message)
        self.assertEqual(self.delivered, [])
        self.assertEqual(self.files(), [])

    def test_more_bytes_than_announced_are_refused_and_the_partial_removed(self) -> None:
        """A chunk that would make the file larger than the announced size is refused and the
        partial file removed, before the file grows past it."""
        self.receiver.chunk("a", chunk(data=b"abc", size=5))
        self.assertEqual(len(self.files()), 1)
        with self.assertRaises(BadRequest) as caught:
            self.receiver.chunk("a", chunk(offset=3, data=b"x" * 4096, size=5))
        self.assertIn("announced size of 5 bytes", caught.exception.message)
        self.assertEqual(self.files(), [])
        self.assertEqual(self.delivered, [])

    def test_offset_beyond_the_announced_size_is_refused(self) -> None:
        """An offset past the announced size is refused and the partial file removed (not
        answered with a resync)."""
        self.receiver.chunk("a", chunk(data=b"abc", size=5))
        self.assertRaises(BadRequest, self.receiver.chunk, "a", chunk(offset=9, size=5))
        self.assertEqual(self.files(), [])

    def test_checksum_mismatch_is_refused_removed_and_the_retry_succeeds(self) -> None:
        """A file whose crc32 differs from the leader's is never delivered to the core: the
        receiver removes it and refuses, the sender reports a failure, and the next transfer
        (with the right file) starts from offset 0 and succeeds."""
        self.crc ^= 1  # as if a byte had changed on the way or on the follower's disk
        self.sender.send(self.message)
        self.assertEqual(self.reports, [("b", False)])
        self.assertEqual(self.delivered, [])
        self.assertEqual(self.files(), [])
        self.crc ^= 1
        self.link.calls = 0
        self.sender.send(self.message)
        self.assertEqual(self.reports[-1], ("b", True))
        self.assertEqual(self.delivered, [self.message])
        path = self.receiver.take(META)
        assert path is not None
        self.assertEqual(path.read_bytes(), self.data)

    def test_chunk_without_a_checksum_is_refused_by_the_schema(self) -> None:
        """The wire schema requires the crc32, so a sender cannot skip the check."""
        from graft.wire import COMMANDS
        from graft.wire.errors import ProtocolError

        command = COMMANDS.get("install_snapshot_chunk")
        assert command is not None
        args = chunk(data=b"abc", size=3)
        command.check_arguments(args, "install_snapshot_chunk")
        del args["crc32"]
        self.assertRaises(ProtocolError, command.check_arguments, args, "install_snapshot_chunk")

    def test_newer_complete_snapshot_removes_unclaimed_older_ones_only(self) -> None:
        """When a newer snapshot completes, an older complete one nobody claimed is removed; one
        an install has claimed (take) stays until that install removes it."""
        self.complete(100, b"first")
        claimed = self.receiver.take(SnapshotMeta(index=100, term=3))
        assert claimed is not None
        self.complete(200, b"second")  # unclaimed
        self.complete(300, b"third")
        self.assertTrue(claimed.exists(), "a claimed file was removed under its install")
        self.assertIsNone(self.receiver.take(SnapshotMeta(index=200, term=3)))
        self.assertEqual(len(self.files()), 2)  # the claimed 100 and the newest 300
        newest = self.receiver.take(SnapshotMeta(index=300, term=3))
        assert newest is not None
        self.assertEqual(newest.read_bytes(), b"third")

    def test_complete_files_left_by_an_earlier_run_are_removed_at_start(self) -> None:
        """A complete file never installed is moot after a restart (the core forgot it); a
        partial one stays, so the transfer can resume."""
        self.complete(100, b"first")
        crc = zlib.crc32(b"second")
        self.receiver.chunk("a", chunk(index=200, data=b"sec", size=6, crc=crc))
        self.assertEqual(len(self.files()), 2)
        self.receiver = self.make_receiver()
        self.assertEqual(len(self.files()), 1)
        answer = self.receiver.chunk("a", chunk(index=200, size=6, crc=crc))
        self.assertEqual(answer["next_offset"], 3)
        self.receiver.chunk(
            "a", chunk(index=200, offset=3, data=b"ond", size=6, done=True, crc=crc)
        )
        self.assertEqual(self.delivered[-1].snapshot.index, 200)

    def test_install_removes_files_up_to_its_index(self) -> None:
        """Once a snapshot is installed, complete and partial files at or below its index go."""
        self.complete(100, b"first")
        self.complete(200, b"second")
        taken = self.receiver.take(SnapshotMeta(index=200, term=3))
        assert taken is not None
        self.receiver.chunk("a", chunk(index=150, data=b"pa", size=5))
        taken.unlink()  # what the driver does once the FSM is restored from it
        self.receiver.installed(SnapshotMeta(index=200, term=3))
        self.assertEqual(self.files(), [])

    def test_reads_through_open_and_closes_it(self) -> None:
        """The sender reads through the snapshot's ``open`` when it has one (the store's
        open_image, which holds delta folds off until the file is closed): the file comes
        from ``open`` (not ``path``, which does not exist here), whole, and is closed when
        the transfer ends."""
        opened: list[_Tracked] = []

        def open_image() -> _Tracked:
            opened.append(_Tracked(self.data))
            return opened[-1]

        self.sender = SnapshotSender(
            peers=self.link,
            latest=lambda: LocalSnapshot(
                meta=META,
                fsm_name="kv",
                size=len(self.data),
                path=self.source.with_name("missing"),
                crc32=self.crc,
                open=open_image,
            ),
            report=lambda peer, ok: self.reports.append((peer, ok)),
        )
        self.sender.send(self.message)
        self.assertEqual(self.reports, [("b", True)])
        path = self.receiver.take(META)
        assert path is not None
        self.assertEqual(path.read_bytes(), self.data)
        self.assertEqual([f.closed for f in opened], [True])

    def test_busy_snapshot_is_a_failed_send(self) -> None:
        """When ``open`` refuses (a fold is running), the send fails and is retried later."""

        def busy() -> _Tracked:
            raise SnapshotBusy("being folded")

        self.sender = SnapshotSender(
            peers=self.link,
            latest=lambda: LocalSnapshot(
                meta=META,
                fsm_name="kv",
                size=len(self.data),
                path=self.source,
                crc32=self.crc,
                open=busy,
            ),
            report=lambda peer, ok: self.reports.append((peer, ok)),
        )
        self.sender.send(self.message)
        self.assertEqual(self.reports, [("b", False)])
        self.flushLoggedErrors(SnapshotBusy)


def chunk(
    *,
    term: int = 3,
    index: int = 500,
    offset: int = 0,
    data: bytes = b"",
    size: int,
    done: bool = False,
    crc: int | None = None,
) -> dict[str, Any]:
    """install_snapshot_chunk arguments; the crc32 defaults to that of ``data`` alone in a done
    chunk (the whole file sent at once), else to 0 (the same for every chunk of a transfer)."""
    return {
        "term": term,
        "snapshot_index": index,
        "snapshot_term": 3,
        "membership": {"voters": ["a", "b"], "learners": []},
        "fsm": "kv",
        "size": size,
        "offset": offset,
        "data": data,
        "done": done,
        "crc32": crc if crc is not None else zlib.crc32(data) if done else 0,
        "stamp_floor_ns": 0,
    }


class _Tracked(io.BytesIO):
    pass
