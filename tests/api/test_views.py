"""The JSON documents of /status and /cluster/members (graft.api.views): their exact shape."""

from __future__ import annotations

import dataclasses

from twisted.trial.unittest import SynchronousTestCase

from graft.api.views import members_document, status_document
from graft.driver.port import MemberList, NodeStatus, PeerProgress
from graft.raft.progress import ProgressState
from graft.raft.types import MemberAddress

STATUS = NodeStatus(
    id="a",
    role="leader",
    term=4,
    leader="a",
    leader_api="http://127.0.0.1:8000",
    commit=12,
    applied=11,
    first_index=3,
    last_index=13,
    snapshot_index=2,
    snapshot_term=1,
    voters=("a", "b"),
    learners=("c",),
    peers_connected=("b",),
    non_voters=("c",),
)


class ViewTests(SynchronousTestCase):
    def test_status_document(self) -> None:
        """Every field, nested as clients read them; the optional parts absent when unset."""
        self.assertEqual(
            status_document(STATUS),
            {
                "id": "a",
                "role": "leader",
                "term": 4,
                "leader": "a",
                "leader_api": "http://127.0.0.1:8000",
                "commit": 12,
                "applied": 11,
                "first_index": 3,
                "last_index": 13,
                "snapshot": {"index": 2, "term": 1},
                "members": {"voters": ["a", "b"], "learners": ["c"], "non_voters": ["c"]},
                "peers_connected": ["b"],
            },
        )

    def test_status_document_with_check_space_and_progress(self) -> None:
        status = NodeStatus(
            **{
                **{f: getattr(STATUS, f) for f in NodeStatus.__dataclass_fields__},
                "last_check": {"ok": True, "index": 9},
                "space": {"alarm": False},
                "progress": {
                    "b": PeerProgress(
                        match=10, next=11, state=ProgressState.REPLICATE, lag=3, active=True
                    )
                },
            }
        )
        document = status_document(status)
        self.assertEqual(document["last_check"], {"ok": True, "index": 9})
        self.assertEqual(document["space"], {"alarm": False})
        self.assertEqual(
            document["progress"],
            {"b": {"match": 10, "next": 11, "state": "replicate", "lag": 3, "active": True}},
        )
        self.assertEqual(
            list(document),
            [
                "id", "role", "term", "leader", "leader_api", "commit", "applied",
                "first_index", "last_index", "snapshot", "members", "peers_connected",
                "last_check", "space", "progress",
            ],
        )  # fmt: skip

    def test_status_document_with_sizes_and_certificate(self) -> None:
        """The sizes and the certificate's expiry, when the node knows them (ISO 8601 in UTC
        and Unix time)."""
        status = dataclasses.replace(
            STATUS, log_bytes=4096, fsm_bytes=12288, certificate_not_after=1893456000.0
        )
        document = status_document(status)
        self.assertEqual(document["log_bytes"], 4096)
        self.assertEqual(document["fsm_bytes"], 12288)
        self.assertEqual(
            document["certificate"],
            {"not_after": "2030-01-01T00:00:00Z", "not_after_unix": 1893456000},
        )
        # The keys of before are unchanged.
        self.assertEqual(
            {
                k: v
                for k, v in document.items()
                if k not in ("log_bytes", "fsm_bytes", "certificate")
            },
            status_document(STATUS),
        )

    def test_members_document(self) -> None:
        members = MemberList(
            leader=None,
            voters=("a", "b"),
            learners=("c",),
            addresses={"a": MemberAddress(host="::1", p2p_port=9000, api_port=8000)},
            non_voters=("c",),
        )
        self.assertEqual(
            members_document(members),
            {
                "leader": None,
                "voters": ["a", "b"],
                "learners": ["c"],
                "non_voters": ["c"],
                "addresses": {"a": {"host": "::1", "p2p": 9000, "api": 8000}},
            },
        )
