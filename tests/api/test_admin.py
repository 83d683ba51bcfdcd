"""Cluster administration routes (/cluster/..., /shutdown) against a FakeBackend, in memory."""

from __future__ import annotations

import json
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.trial.unittest import SynchronousTestCase

from graft.api.admin import ADMIN_TIMEOUT_S
from graft.api.auth import Role
from graft.api.snapshot_download import CHUNK_BYTES, FileSender
from graft.api.views import members_document
from graft.errors import BadRequest, NoLeader, NotFound
from tests.api.fakes import (
    ADMIN,
    READER,
    TOKEN_OF,
    WRITER,
    ApiTestCase,
    ClosingFile,
    Settings,
    bearer,
    tokens,
)

NEW_MEMBER: dict[str, Any] = {
    "id": "hopper",
    "host": "10.0.0.4",
    "ports": {"p2p": 9083, "api": 8083},
}


def body(document: Any) -> bytes:
    return json.dumps(document).encode("utf-8")


class MembersTests(ApiTestCase):
    def test_list(self) -> None:
        """GET /cluster/members answers the backend's membership as JSON."""
        answer = self.call("GET", "/cluster/members")
        self.assertEqual(answer.status, 200)
        self.assertEqual(answer.json(), members_document(self.backend.members()))
        self.assertEqual(answer.length, len(answer.body))

    def test_add(self) -> None:
        """POST /cluster/members passes id, host and ports to add_member and answers the new
        membership."""
        answer = self.call("POST", "/cluster/members", data=body(NEW_MEMBER))
        self.assertEqual(answer.status, 200, answer.body)
        self.assertEqual(self.backend.admin_calls, [("add", "hopper", "10.0.0.4", 9083, 8083)])
        self.assertIn("hopper", answer.json()["voters"])
        self.assertEqual(
            answer.json()["addresses"]["hopper"], {"host": "10.0.0.4", "p2p": 9083, "api": 8083}
        )

    def test_add_accepts_host_names_and_ipv6(self) -> None:
        """A DNS name and an IPv6 address are valid hosts."""
        for host in ("node-4.example.internal", "::1"):
            member = dict(NEW_MEMBER, host=host)
            self.assertEqual(self.call("POST", "/cluster/members", data=body(member)).status, 200)
        self.assertEqual(
            [c[2] for c in self.backend.admin_calls], ["node-4.example.internal", "::1"]
        )

    def test_add_validation(self) -> None:
        """Malformed members are 400 bad_request naming the problem, and the backend is not
        asked."""
        ports = NEW_MEMBER["ports"]
        cases: list[tuple[bytes, str]] = [
            (b"", "not JSON"),
            (b"not json", "not JSON"),
            (b'["hopper"]', "not a JSON object"),
            (body({k: v for k, v in NEW_MEMBER.items() if k != "host"}), '"host"'),
            (body({k: v for k, v in NEW_MEMBER.items() if k != "id"}), '"id"'),
            (body({k: v for k, v in NEW_MEMBER.items() if k != "ports"}), '"ports"'),
            (body(dict(NEW_MEMBER, extra=1)), "unknown keys"),
            (body(dict(NEW_MEMBER, id="Hopper")), "not a node id"),
            (body(dict(NEW_MEMBER, id="-hopper")), "not a node id"),
            (body(dict(NEW_MEMBER, id="a" * 64)), "not a node id"),
            (body(dict(NEW_MEMBER, id="hop.per")), "not a node id"),
            (body(dict(NEW_MEMBER, id=7)), "not a node id"),
            (body(dict(NEW_MEMBER, host="")), "host"),
            (body(dict(NEW_MEMBER, host="bad host")), "host"),
            (body(dict(NEW_MEMBER, host=["x"])), "host"),
            (body(dict(NEW_MEMBER, ports=[9083, 8083])), "not an object"),
            (body(dict(NEW_MEMBER, ports={"p2p": 9083})), '"api"'),
            (body(dict(NEW_MEMBER, ports=dict(ports, admin=1))), "unknown keys"),
            (body(dict(NEW_MEMBER, ports={"p2p": 0, "api": 8083})), "ports.p2p"),
            (body(dict(NEW_MEMBER, ports={"p2p": 9083, "api": 65536})), "ports.api"),
            (body(dict(NEW_MEMBER, ports={"p2p": "9083", "api": 8083})), "ports.p2p"),
            (body(dict(NEW_MEMBER, ports={"p2p": True, "api": 8083})), "ports.p2p"),
            (body(dict(NEW_MEMBER, ports={"p2p": 9083.0, "api": 8083})), "ports.p2p"),
            (body(dict(NEW_MEMBER, ports={"p2p": 8083, "api": 8083})), "two ports"),
        ]
        for data, fragment in cases:
            answer = self.call("POST", "/cluster/members", data=data)
            detail = self.assertError(answer, 400, "bad_request")
            self.assertIn(fragment, detail["message"], data)
        self.assertEqual(self.backend.admin_calls, [])

    def test_backend_refusal(self) -> None:
        """A GraftError from the backend (already a member, change in progress) keeps its
        code."""
        self.backend.admin_failure = BadRequest("hopper is already a member: remove it first")
        answer = self.call("POST", "/cluster/members", data=body(NEW_MEMBER))
        self.assertIn("already a member", self.assertError(answer, 400, "bad_request")["message"])

    def test_add_outlives_the_command_timeout(self) -> None:
        """Adding a member waits past api.command_timeout_ms (catch-up takes long), and is a
        504 only after the admin deadline."""
        self.serve(Settings(command_timeout_ms=100))
        self.backend.hold_admin = True
        pending = self.start("POST", "/cluster/members", data=body(NEW_MEMBER))
        self.stub.flush()
        self.clock.advance(ADMIN_TIMEOUT_S - 1)
        self.assertNoResult(pending)
        self.backend.pending_admin[0].callback(self.backend.members())
        self.assertEqual(self.finish(pending).status, 200)

        pending = self.start("POST", "/cluster/members", data=body(NEW_MEMBER))
        self.stub.flush()
        self.clock.advance(ADMIN_TIMEOUT_S)
        detail = self.assertError(self.finish(pending), 504, "timeout")
        self.assertIn("graft members list", detail["message"])
        # The late outcome is consumed quietly.
        self.backend.pending_admin[1].callback({})

    def test_remove(self) -> None:
        """DELETE /cluster/members/{id} calls remove_member and answers the new membership."""
        answer = self.call("DELETE", "/cluster/members/ritchie")
        self.assertEqual(answer.status, 200, answer.body)
        self.assertEqual(self.backend.admin_calls, [("remove", "ritchie")])
        self.assertNotIn("ritchie", answer.json()["voters"])

    def test_remove_unknown_and_invalid(self) -> None:
        """An unknown member is the backend's 404; an invalid id is 400 without asking it."""
        answer = self.call("DELETE", "/cluster/members/NOPE")
        self.assertError(answer, 400, "bad_request")
        self.assertEqual(self.backend.admin_calls, [])
        self.backend.admin_failure = NotFound("hopper is not a member: see graft members list")
        self.assertError(self.call("DELETE", "/cluster/members/hopper"), 404, "not_found")

    def test_no_leader(self) -> None:
        """NoLeader from an administrative operation is 503 with Retry-After."""
        self.backend.admin_failure = NoLeader("no leader: retry", retry_after=2.0)
        answer = self.call("DELETE", "/cluster/members/ritchie")
        self.assertError(answer, 503, "no_leader")
        self.assertEqual(answer.header("Retry-After"), "2")


class MemberRolesTests(ApiTestCase):
    """Non-voters, promotion, demotion and address updates (graft.driver.member_roles)."""

    def test_add_non_voter(self) -> None:
        """ "non_voter": true adds through add_non_voter; the answer lists it as a learner and
        a non-voter; false is a plain add."""
        member = dict(NEW_MEMBER, non_voter=True)
        answer = self.call("POST", "/cluster/members", data=body(member))
        self.assertEqual(answer.status, 200, answer.body)
        self.assertEqual(
            self.backend.admin_calls, [("add_non_voter", "hopper", "10.0.0.4", 9083, 8083)]
        )
        self.assertEqual(answer.json()["non_voters"], ["hopper"])
        self.assertEqual(answer.json()["learners"], ["hopper"])
        member = dict(NEW_MEMBER, id="knuth", non_voter=False)
        self.assertEqual(self.call("POST", "/cluster/members", data=body(member)).status, 200)
        self.assertEqual(self.backend.admin_calls[-1][0], "add")

    def test_non_voter_flag_is_a_boolean(self) -> None:
        for value in ("yes", 1, None):
            member = dict(NEW_MEMBER, non_voter=value)
            answer = self.call("POST", "/cluster/members", data=body(member))
            self.assertIn("non_voter", self.assertError(answer, 400, "bad_request")["message"])
        self.assertEqual(self.backend.admin_calls, [])

    def test_promote_and_demote(self) -> None:
        """POST .../demote and .../promote call the backend and answer the new membership."""
        answer = self.call("POST", "/cluster/members/ritchie/demote")
        self.assertEqual(answer.status, 200, answer.body)
        self.assertEqual(answer.json()["non_voters"], ["ritchie"])
        self.assertNotIn("ritchie", answer.json()["voters"])
        answer = self.call("POST", "/cluster/members/ritchie/promote")
        self.assertEqual(answer.status, 200, answer.body)
        self.assertIn("ritchie", answer.json()["voters"])
        self.assertEqual(answer.json()["non_voters"], [])
        self.assertEqual(self.backend.admin_calls, [("demote", "ritchie"), ("promote", "ritchie")])
        self.assertError(self.call("POST", "/cluster/members/NOPE/promote"), 400, "bad_request")
        self.backend.admin_failure = NotFound("hopper is not a member")
        self.assertError(self.call("POST", "/cluster/members/hopper/demote"), 404, "not_found")

    def test_update_addresses(self) -> None:
        """PUT /cluster/members/{id} passes the host and the ports given (None for those left
        out) and answers the new membership."""
        answer = self.call("PUT", "/cluster/members/lovelace", data=body({"host": "db3.example"}))
        self.assertEqual(answer.status, 200, answer.body)
        self.assertEqual(
            answer.json()["addresses"]["lovelace"],
            {"host": "db3.example", "p2p": 9082, "api": 8082},
        )
        change = {"host": "10.0.0.9", "ports": {"p2p": 9182}}
        self.assertEqual(
            self.call("PUT", "/cluster/members/lovelace", data=body(change)).status, 200
        )
        self.assertEqual(
            self.backend.admin_calls,
            [
                ("update", "lovelace", "db3.example", None, None),
                ("update", "lovelace", "10.0.0.9", 9182, None),
            ],
        )

    def test_update_validation(self) -> None:
        """Malformed new addresses are 400 naming the problem; the backend is not asked."""
        cases: list[tuple[bytes, str]] = [
            (b"", "not JSON"),
            (body({}), '"host"'),
            (body({"host": "bad host"}), "host"),
            (body({"host": "h", "id": "x"}), "unknown keys"),
            (body({"host": "h", "ports": {"p2p": 0}}), "ports.p2p"),
            (body({"host": "h", "ports": {"p2p": 9000, "api": 9000}}), "two ports"),
            (body({"host": "h", "ports": {"peer": 9000}}), "unknown keys"),
            (body({"host": "h", "ports": 9000}), "not an object"),
        ]
        for data, fragment in cases:
            answer = self.call("PUT", "/cluster/members/lovelace", data=data)
            detail = self.assertError(answer, 400, "bad_request")
            self.assertIn(fragment, detail["message"], data)
        self.assertError(
            self.call("PUT", "/cluster/members/Lovelace", data=body({"host": "h"})),
            400,
            "bad_request",
        )
        self.assertEqual(self.backend.admin_calls, [])


class LeaderTests(ApiTestCase):
    def test_transfer_to_target(self) -> None:
        """POST /cluster/leader {"id": X} transfers to X and answers leader and term."""
        answer = self.call("POST", "/cluster/leader", data=body({"id": "lovelace"}))
        self.assertEqual(answer.status, 200, answer.body)
        self.assertEqual(self.backend.admin_calls, [("transfer", "lovelace")])
        self.assertEqual(answer.json(), {"leader": "lovelace", "term": 4})

    def test_transfer_to_any(self) -> None:
        """An empty body, {} and {"id": null} let the backend choose the target."""
        for data in (b"", b"{}", b'{"id": null}'):
            self.assertEqual(self.call("POST", "/cluster/leader", data=data).status, 200)
        self.assertEqual(self.backend.admin_calls, [("transfer", None)] * 3)

    def test_transfer_validation(self) -> None:
        """A bad body or target is 400 and nothing is transferred."""
        for data in (b"lovelace", b'["lovelace"]', b'{"id": "Love Lace"}', b'{"to": "x"}'):
            self.assertError(self.call("POST", "/cluster/leader", data=data), 400, "bad_request")
        self.assertEqual(self.backend.admin_calls, [])


class SnapshotTests(ApiTestCase):
    def test_take(self) -> None:
        """POST /cluster/snapshot answers the snapshot's index and term."""
        answer = self.call("POST", "/cluster/snapshot")
        self.assertEqual(answer.status, 200, answer.body)
        self.assertEqual(answer.json(), {"index": 9, "term": 3})
        self.assertEqual(self.backend.admin_calls, [("snapshot",)])

    def test_download_streams_the_data(self) -> None:
        """GET /cluster/snapshot sends the data from the file's position, in chunks, with the
        manifest's headers and Content-Length, and closes the file."""
        data = bytes(range(256)) * 1024  # 256 KiB: several chunks
        snapshot = ClosingFile(b"HEADER" + data + b"TRAILER")
        snapshot.seek(6)
        manifest = {"index": 41, "term": 5, "fsm": "sqlite", "size": len(data)}
        self.backend.snapshot = (manifest, snapshot)
        answer = self.call("GET", "/cluster/snapshot")
        self.assertEqual(answer.status, 200)
        self.assertEqual(answer.body, data)
        self.assertEqual(answer.header("Content-Type"), "application/octet-stream")
        self.assertEqual(answer.length, len(data))
        self.assertEqual(answer.header("Graft-Snapshot-Index"), "41")
        self.assertEqual(answer.header("Graft-Snapshot-Term"), "5")
        self.assertEqual(answer.header("Graft-Snapshot-Fsm"), "sqlite")
        self.assertTrue(snapshot.closed)
        self.assertLessEqual(snapshot.largest_read, 64 * 1024)

    def test_head_reads_nothing(self) -> None:
        """HEAD /cluster/snapshot answers the headers, reads nothing and closes the file."""
        snapshot = ClosingFile(b"z" * 100_000)
        self.backend.snapshot = ({"index": 3, "term": 1, "fsm": "kv", "size": 100_000}, snapshot)
        answer = self.call("HEAD", "/cluster/snapshot")
        self.assertEqual((answer.status, answer.body), (200, b""))
        self.assertEqual(answer.header("Graft-Snapshot-Index"), "3")
        self.assertEqual((snapshot.largest_read, snapshot.closed), (0, True))

    def test_download_empty_snapshot(self) -> None:
        """A zero-byte snapshot is a 200 with an empty body, and the file is closed."""
        snapshot = ClosingFile(b"")
        self.backend.snapshot = ({"index": 1, "term": 1, "fsm": "kv", "size": 0}, snapshot)
        answer = self.call("GET", "/cluster/snapshot")
        self.assertEqual((answer.status, answer.body, answer.length), (200, b"", 0))
        self.assertTrue(snapshot.closed)

    def test_no_snapshot(self) -> None:
        """Without a snapshot GET /cluster/snapshot is 404 not_found saying how to take one."""
        detail = self.assertError(self.call("GET", "/cluster/snapshot"), 404, "not_found")
        self.assertIn("graft snapshot take", detail["message"])


class PausingRequest:
    """The part of a request FileSender uses, whose transport is full after every write: shows
    chunking, the end, and a client that leaves."""

    def __init__(self) -> None:
        self.producer: Any = None
        self.streaming: bool | None = None
        self.written: list[bytes] = []
        self.finished = False
        self.dropped = False
        self.done: Deferred[None] = Deferred()

    def notifyFinish(self) -> Deferred[None]:
        return self.done

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer, self.streaming = producer, streaming

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self.written.append(data)
        if self.producer is not None:
            self.producer.pauseProducing()

    def finish(self) -> None:
        self.finished = True

    def loseConnection(self) -> None:
        self.dropped = True


class FileSenderTests(SynchronousTestCase):
    def test_one_chunk_per_resume(self) -> None:
        """Nothing more is read while the transport is paused: one chunk of at most
        CHUNK_BYTES per resume. The request finishes and the file closes after the declared
        size, even if the file goes on."""
        request = PausingRequest()
        data = ClosingFile(b"a" * CHUNK_BYTES + b"b" * 10 + b"not part of the snapshot")
        sender = FileSender(cast(Any, request), data, CHUNK_BYTES + 10)
        sender.start()
        self.assertTrue(request.streaming)
        self.assertEqual(request.written, [b"a" * CHUNK_BYTES])
        self.assertEqual(data.tell(), CHUNK_BYTES)
        self.assertFalse(data.closed)
        sender.resumeProducing()
        self.assertEqual(request.written[1], b"b" * 10)
        self.assertEqual((request.finished, request.producer, data.closed), (True, None, True))

    def test_client_leaves(self) -> None:
        """A client that disconnects mid-download closes the file; a later resume writes
        nothing."""
        request = PausingRequest()
        data = ClosingFile(b"x" * (3 * CHUNK_BYTES))
        sender = FileSender(cast(Any, request), data, 3 * CHUNK_BYTES)
        sender.start()
        request.done.errback(ConnectionDone("gone"))
        self.assertTrue(data.closed)
        sender.resumeProducing()
        self.assertEqual(len(request.written), 1)
        self.assertFalse(request.finished)

    def test_short_file_drops_the_connection(self) -> None:
        """A file shorter than its manifest says drops the connection (the client sees a short
        body against Content-Length) instead of hanging or finishing as if complete."""
        request = PausingRequest()
        data = ClosingFile(b"12345")
        sender = FileSender(cast(Any, request), data, 10)
        sender.start()
        sender.resumeProducing()
        self.assertEqual((request.dropped, request.finished, data.closed), (True, False, True))


class ShutdownTests(ApiTestCase):
    def test_shutdown_after_answer(self) -> None:
        """POST /shutdown answers 202 {"stopping": id}; the backend stops only on the next
        reactor turn after the answer was written."""
        answer = self.call("POST", "/shutdown")
        self.assertEqual(answer.status, 202)
        self.assertEqual(answer.json(), {"stopping": "turing"})
        self.assertEqual(self.backend.shutdowns, 0)
        self.clock.advance(0)
        self.assertEqual(self.backend.shutdowns, 1)


# (method, path, body, role needed) for every administrative route.
ROUTES: list[tuple[str, str, bytes | None, Role]] = [
    ("GET", "/cluster/members", None, Role.READ),
    ("POST", "/cluster/members", body(NEW_MEMBER), Role.ADMIN),
    ("DELETE", "/cluster/members/ritchie", None, Role.ADMIN),
    ("POST", "/cluster/leader", None, Role.ADMIN),
    ("POST", "/cluster/snapshot", None, Role.ADMIN),
    ("GET", "/cluster/snapshot", None, Role.ADMIN),
    ("POST", "/shutdown", None, Role.ADMIN),
]


class AdminRoleTests(ApiTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.serve(Settings(tokens=tokens(read=READER, write=WRITER, admin=ADMIN)))

    def fresh(self) -> None:
        """Undo what a successful call changed, so every role meets the same cluster."""
        self.backend.voters = ["turing", "ritchie", "lovelace"]
        self.backend.addresses.setdefault(
            "ritchie", {"host": "127.0.0.1", "p2p": 9081, "api": 8081}
        )
        self.backend.addresses.pop("hopper", None)
        self.backend.snapshot = (
            {"index": 1, "term": 1, "fsm": "kv", "size": 2},
            ClosingFile(b"ok"),
        )

    def test_roles(self) -> None:
        """Without a token every administrative route is 401; below its role 403; at or above
        it the route works. Membership reads need read, everything else admin."""
        for method, path, data, needed in ROUTES:
            self.fresh()
            self.assertError(self.call(method, path, data=data), 401, "unauthorized")
            for role, token in TOKEN_OF.items():
                self.fresh()
                headers = bearer(token)
                answer = self.call(method, path, data=data, headers=headers)
                if role >= needed:
                    self.assertIn(answer.status, (200, 202), (path, role, answer.body))
                else:
                    detail = self.assertError(answer, 403, "forbidden")
                    self.assertIn(needed.name.lower(), detail["message"])
        self.clock.advance(0)
        self.assertEqual(self.backend.shutdowns, 1)
        self.assertEqual(
            [call[0] for call in self.backend.admin_calls],
            ["add", "remove", "transfer", "snapshot"],
        )
