"""Streaming a snapshot file between a SnapshotSender and a SnapshotReceiver, in memory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.trial import unittest

from graft.raft.messages import InstallSnapshot
from graft.raft.types import Membership, SnapshotMeta
from graft.snapshot_transfer import LocalSnapshot, SnapshotReceiver, SnapshotSender
from graft.transport import PeerUnavailable

META = SnapshotMeta(index=500, term=3, membership=Membership(voters=frozenset({"a", "b"})))


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
        self.receiver = SnapshotReceiver(
            incoming_dir=base / "follower",
            current_term=lambda: 3,
            deliver=self.delivered.append,
            node_id="b",
        )
        self.link = Link(self.receiver)
        self.reports: list[tuple[str, bool]] = []
        self.sender = SnapshotSender(
            peers=lambda: self.link,
            latest=lambda: LocalSnapshot(
                meta=META, fsm_name="kv", size=len(self.data), path=self.source
            ),
            report=lambda peer, ok: self.reports.append((peer, ok)),
        )
        self.message = InstallSnapshot(term=3, sender="a", to="b", snapshot=META)

    def test_whole_file_arrives_and_is_delivered_once(self) -> None:
        """The receiver gets the file byte for byte, steps exactly one InstallSnapshot with the
        leader's metadata, and the sender reports success."""
        self.sender.send(self.message)
        self.assertEqual(self.reports, [("b", True)])
        self.assertEqual(self.delivered, [self.message])
        path = self.receiver.take(META)
        assert path is not None
        self.assertEqual(path.read_bytes(), self.data)

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

    def test_stale_leader_is_told_the_newer_term(self) -> None:
        """A chunk from an older term is not written; the answer carries the current term."""
        answer = self.receiver.chunk(
            "a",
            {
                "term": 2,
                "snapshot_index": 500,
                "snapshot_term": 2,
                "membership": {"voters": ["a"], "learners": []},
                "fsm": "kv",
                "size": 3,
                "offset": 0,
                "data": b"abc",
                "done": True,
            },
        )
        self.assertEqual(answer, {"term": 3, "next_offset": 0})
        self.assertEqual(self.delivered, [])
