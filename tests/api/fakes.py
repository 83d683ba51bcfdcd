"""A ClusterBackend and ClusterAdmin whose answers the tests control, and helpers to talk to the
API in memory."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from graft.api import make_api_resource
from graft.api.auth import Role, token_digest
from graft.api.settings import ApiSettings
from graft.config import ApiLimits
from graft.driver.port import (
    CommandResult,
    Consistency,
    MemberList,
    NodeStatus,
    PeerProgress,
    QueryResult,
)
from graft.errors import NotFound
from graft.fsm import CommandRejected
from graft.raft.progress import ProgressState
from graft.raft.types import MemberAddress
from graft.sessions.machine import apply_operation
from graft.sessions.table import SessionTable
from graft.stamp import Stamp

BASE = "http://127.0.0.1:8080"
API_URLS = {
    "turing": "http://127.0.0.1:8080",
    "ritchie": "http://127.0.0.1:8081",
    "lovelace": "https://10.0.0.3:8082/",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Stands in for graft.config.ApiConfig."""

    tokens: Mapping[str, frozenset[str]] = field(default_factory=dict)
    max_body_bytes: int = 1024 * 1024
    command_timeout_ms: int = 5000
    query_timeout_ms: int = 5000
    limits: ApiLimits = field(default_factory=ApiLimits)
    allowed_origins: frozenset[str] = frozenset()
    max_query_timeout_ms: int = 60000


def tokens(**by_role: str) -> dict[str, frozenset[str]]:
    """role=token pairs -> the digests a config would hold."""
    return {role: frozenset({token_digest(token)}) for role, token in by_role.items()}


# One bearer token per role for the API tests: Settings(tokens=tokens(read=READER, ...)).
READER, WRITER, ADMIN = "r3ad-token", "wr1te-token", "adm1n-token"
TOKEN_OF = {Role.READ: READER, Role.WRITE: WRITER, Role.ADMIN: ADMIN}


def bearer(token: str) -> dict[str, str]:
    """The Authorization header that presents ``token``."""
    return {"Authorization": f"Bearer {token}"}


@dataclass(frozen=True, slots=True, kw_only=True)
class QueryCall:
    query: bytes
    consistency: Consistency
    min_index: int | None
    max_lag_ms: int | None
    timeout: float | None = None


class FakeBackend:
    """Answers at once by default; ``hold_commands``/``hold_queries`` make it hand back pending
    Deferreds (in ``pending_commands``/``pending_queries``) for the test to fire."""

    def __init__(
        self,
        *,
        node_id: str = "turing",
        leader: str | None = "turing",
        content_type: str = "application/json",
    ) -> None:
        self._node_id = node_id
        self.leader = leader
        self._content_type = content_type
        self.api_urls: dict[str, str] = dict(API_URLS)
        self.term = 3
        self.next_index = 10
        self.apply_lag = 0  # committed entries not applied yet: not ready while above 0
        self.submitted: list[list[bytes]] = []
        # Client sessions: the operations submitted, the commands the "FSM" applied, the
        # table and the stamp time (nanoseconds) of the next operations.
        self.submitted_operations: list[list[bytes]] = []
        self.applied: list[bytes] = []
        self.sessions = SessionTable()
        self.now_ns = 1_700_000_000 * 10**9
        self.queries: list[QueryCall] = []
        self.hold_commands = False
        self.hold_queries = False
        self.pending_commands: list[Deferred[list[CommandResult]]] = []
        self.pending_queries: list[Deferred[QueryResult]] = []
        self.rejected: set[bytes] = set()  # commands the "FSM" refuses
        self.output_for: Callable[[bytes], bytes] = lambda command: json.dumps(
            {"applied": command.decode("utf-8", errors="replace")}
        ).encode("utf-8")
        self.query_output = b'{"columns":["name"],"rows":[["turing"]]}'
        self.failure: Exception | None = None  # raised by submit, query and status
        self._metrics = CollectorRegistry()
        # Administration: the membership, what was asked, and how to answer.
        self.voters = ["turing", "ritchie", "lovelace"]
        self.learners: list[str] = []
        self.non_voters: list[str] = []  # a subset of learners
        self.addresses: dict[str, dict[str, Any]] = {
            "turing": {"host": "127.0.0.1", "p2p": 9080, "api": 8080},
            "ritchie": {"host": "127.0.0.1", "p2p": 9081, "api": 8081},
            "lovelace": {"host": "10.0.0.3", "p2p": 9082, "api": 8082},
        }
        self.admin_calls: list[tuple[Any, ...]] = []
        self.admin_failure: Exception | None = None  # raised by the admin operations
        self.hold_admin = False
        self.pending_admin: list[Deferred[Any]] = []
        self.snapshot: tuple[dict[str, Any], ClosingFile] | None = None
        self.shutdowns = 0

    @property
    def node_id(self) -> str:
        return self._node_id

    @property
    def content_type(self) -> str:
        return self._content_type

    @property
    def metrics(self) -> CollectorRegistry:
        return self._metrics

    def leader_id(self) -> str | None:
        return self.leader

    def is_leader(self) -> bool:
        return self.leader == self._node_id

    def api_url(self, node_id: str) -> str | None:
        return self.api_urls.get(node_id)

    def results_for(self, commands: list[bytes]) -> list[CommandResult]:
        results = []
        for command in commands:
            index = self.next_index
            self.next_index += 1
            if command in self.rejected:
                error: str | None = f"rejected {command!r}"
                output = b""
            else:
                error, output = None, self.output_for(command)
            results.append(
                CommandResult(
                    index=index,
                    term=self.term,
                    leader=self.leader or "?",
                    output=output,
                    error=error,
                )
            )
        return results

    def submit(self, commands: Any) -> Deferred[list[CommandResult]]:
        self.submitted.append(list(commands))
        if self.failure is not None:
            raise self.failure
        if self.hold_commands:
            pending: Deferred[list[CommandResult]] = Deferred()
            self.pending_commands.append(pending)
            return pending
        return succeed(self.results_for(list(commands)))

    def submit_operations(self, operations: Any) -> Deferred[list[CommandResult]]:
        """Session operations, through the real session table (graft.sessions), stamped with
        ``now_ns``; ``submitted_operations`` records them."""
        self.submitted_operations.append(list(operations))
        if self.failure is not None:
            raise self.failure
        results = []
        for operation in operations:
            index = self.next_index
            self.next_index += 1
            applied = apply_operation(
                self.sessions, operation, index, self.term, Stamp(self.now_ns, index), self._apply
            )
            results.append(
                CommandResult(
                    index=applied.index,
                    term=applied.term,
                    leader=self.leader or "?",
                    output=applied.output,
                    error=applied.error,
                    refusal=applied.refusal,
                    duplicate=applied.duplicate,
                )
            )
        if self.hold_commands:
            pending: Deferred[list[CommandResult]] = Deferred()
            self.pending_commands.append(pending)
            return pending
        return succeed(results)

    def _apply(self, command: bytes, index: int, stamp: Stamp | None) -> bytes:
        self.applied.append(command)
        if command in self.rejected:
            raise CommandRejected(f"rejected {command!r}")
        return self.output_for(command)

    def query(
        self,
        query: bytes,
        consistency: Consistency,
        *,
        min_index: int | None = None,
        max_lag_ms: int | None = None,
        timeout: float | None = None,
    ) -> Deferred[QueryResult]:
        self.queries.append(
            QueryCall(
                query=query,
                consistency=consistency,
                min_index=min_index,
                max_lag_ms=max_lag_ms,
                timeout=timeout,
            )
        )
        if self.failure is not None:
            raise self.failure
        if self.hold_queries:
            pending: Deferred[QueryResult] = Deferred()
            self.pending_queries.append(pending)
            return pending
        return succeed(
            QueryResult(
                output=self.query_output, applied_index=self.next_index - 1, leader=self.leader
            )
        )

    def status(self) -> NodeStatus:
        """What GraftNode.status() returns (tests/api/test_fake_contract.py holds the two to
        the same shape), built from the fake's state."""
        if self.failure is not None:
            raise self.failure
        commit = self.next_index - 1
        progress = None
        if self.is_leader():
            progress = {
                member: PeerProgress(
                    match=commit,
                    next=commit + 1,
                    state=ProgressState.REPLICATE,
                    lag=0,
                    active=True,
                )
                for member in sorted([*self.voters, *self.learners])
            }
        return NodeStatus(
            id=self._node_id,
            role="leader" if self.is_leader() else "follower",
            term=self.term,
            leader=self.leader,
            leader_api=self.api_urls.get(self.leader) if self.leader else None,
            commit=commit,
            applied=commit - self.apply_lag,
            first_index=1,
            last_index=commit,
            snapshot_index=0,
            snapshot_term=0,
            voters=tuple(sorted(self.voters)),
            learners=tuple(sorted(self.learners)),
            non_voters=tuple(sorted(self.non_voters)),
            peers_connected=tuple(sorted(m for m in self.addresses if m != self._node_id)),
            progress=progress,
            log_bytes=0,  # as the in-memory node's storage and kv FSM, which tell their sizes
            fsm_bytes=0,
        )

    def is_ready(self) -> bool:
        """As GraftNode.is_ready(): a leader is known and everything committed is applied."""
        return self.leader is not None and self.apply_lag == 0

    # -- ClusterAdmin ----------------------------------------------------------------------

    def members(self) -> MemberList:
        if self.admin_failure is not None:
            raise self.admin_failure
        return MemberList(
            leader=self.leader,
            voters=tuple(self.voters),
            learners=tuple(self.learners),
            non_voters=tuple(self.non_voters),
            addresses={
                k: MemberAddress(host=v["host"], p2p_port=v["p2p"], api_port=v["api"])
                for k, v in self.addresses.items()
            },
        )

    def _admin(self, call: tuple[Any, ...], change: Callable[[], Any]) -> Any:
        self.admin_calls.append(call)
        if self.admin_failure is not None:
            raise self.admin_failure
        if self.hold_admin:
            pending: Deferred[Any] = Deferred()
            self.pending_admin.append(pending)
            return pending
        return succeed(change())

    def add_member(
        self, node_id: str, host: str, p2p_port: int, api_port: int
    ) -> Deferred[MemberList]:
        def change() -> MemberList:
            self.voters.append(node_id)
            self.addresses[node_id] = {"host": host, "p2p": p2p_port, "api": api_port}
            return self.members()

        result: Deferred[MemberList] = self._admin(
            ("add", node_id, host, p2p_port, api_port), change
        )
        return result

    def remove_member(self, node_id: str) -> Deferred[MemberList]:
        def change() -> MemberList:
            self.voters.remove(node_id)
            del self.addresses[node_id]
            return self.members()

        result: Deferred[MemberList] = self._admin(("remove", node_id), change)
        return result

    def add_non_voter(
        self, node_id: str, host: str, p2p_port: int, api_port: int
    ) -> Deferred[MemberList]:
        def change() -> MemberList:
            self.learners.append(node_id)
            self.non_voters.append(node_id)
            self.addresses[node_id] = {"host": host, "p2p": p2p_port, "api": api_port}
            return self.members()

        result: Deferred[MemberList] = self._admin(
            ("add_non_voter", node_id, host, p2p_port, api_port), change
        )
        return result

    def promote_member(self, node_id: str) -> Deferred[MemberList]:
        def change() -> MemberList:
            if node_id not in self.learners:
                raise NotFound(f"{node_id} is not a learner")
            self.learners.remove(node_id)
            if node_id in self.non_voters:
                self.non_voters.remove(node_id)
            self.voters.append(node_id)
            return self.members()

        result: Deferred[MemberList] = self._admin(("promote", node_id), change)
        return result

    def demote_member(self, node_id: str) -> Deferred[MemberList]:
        def change() -> MemberList:
            if node_id not in self.voters:
                raise NotFound(f"{node_id} is not a voter")
            self.voters.remove(node_id)
            self.learners.append(node_id)
            self.non_voters.append(node_id)
            return self.members()

        result: Deferred[MemberList] = self._admin(("demote", node_id), change)
        return result

    def update_member(
        self, node_id: str, host: str, p2p_port: int | None, api_port: int | None
    ) -> Deferred[MemberList]:
        def change() -> MemberList:
            old = self.addresses[node_id]
            self.addresses[node_id] = {
                "host": host,
                "p2p": old["p2p"] if p2p_port is None else p2p_port,
                "api": old["api"] if api_port is None else api_port,
            }
            return self.members()

        result: Deferred[MemberList] = self._admin(
            ("update", node_id, host, p2p_port, api_port), change
        )
        return result

    def transfer_leadership(self, target: str | None) -> Deferred[dict[str, Any]]:
        def change() -> dict[str, Any]:
            self.leader = target or "ritchie"
            self.term += 1
            return {"leader": self.leader, "term": self.term}

        result: Deferred[dict[str, Any]] = self._admin(("transfer", target), change)
        return result

    def take_snapshot(self) -> Deferred[dict[str, Any]]:
        result: Deferred[dict[str, Any]] = self._admin(
            ("snapshot",), lambda: {"index": self.next_index - 1, "term": self.term}
        )
        return result

    def latest_snapshot(self) -> tuple[dict[str, Any], ClosingFile] | None:
        if self.admin_failure is not None:
            raise self.admin_failure
        return self.snapshot

    def shutdown(self) -> None:
        self.shutdowns += 1

    def check_replicas(self) -> Deferred[dict[str, Any]]:
        def check() -> dict[str, Any]:
            digests = {m: {"digest": "ab" * 32, "error": None} for m in self.voters}
            return {
                "check": "0123456789abcdef",
                "index": self.next_index - 1,
                "ok": True,
                "complete": True,
                "mismatch": [],
                "members": digests,
            }

        result: Deferred[dict[str, Any]] = self._admin(("check",), check)
        return result


class ClosingFile(io.BytesIO):
    """A snapshot file that remembers being closed and how much was read from it at most."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.largest_read = 0

    def read(self, size: int | None = -1, /) -> bytes:
        chunk = super().read(size)
        self.largest_read = max(self.largest_read, len(chunk))
        return chunk


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: Any  # twisted.web.http_headers.Headers
    body: bytes
    length: object  # the declared Content-Length (the client keeps it out of headers)

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name.encode("latin-1"))
        return None if values is None else values[0].decode("latin-1")

    def json(self) -> Any:
        assert self.header("Content-Type") == "application/json", self.header("Content-Type")
        return json.loads(self.body)

    def error(self) -> dict[str, Any]:
        document = self.json()
        assert set(document) == {"error"}, document
        detail: dict[str, Any] = document["error"]
        return detail


class ApiTestCase(SynchronousTestCase):
    """An API over a FakeBackend, called in memory through StubTreq on a Clock."""

    def setUp(self) -> None:
        self.backend = FakeBackend()
        self.clock = Clock()
        self.serve(Settings())

    def serve(self, settings: ApiSettings) -> None:
        self.settings = settings
        self.stub: Any = StubTreq(make_api_resource(self.backend, settings, reactor=self.clock))

    def start(self, method: str, path: str, **kwargs: Any) -> Deferred[Any]:
        """Send a request; the Deferred fires with the treq response."""
        pending: Deferred[Any] = self.stub.request(method, BASE + path, **kwargs)
        return pending

    def finish(self, pending: Deferred[Any]) -> Answer:
        self.stub.flush()
        response = self.successResultOf(pending)
        body = self.successResultOf(self.stub.content(response))
        return Answer(response.code, response.headers, body, response.length)

    def call(self, method: str, path: str, **kwargs: Any) -> Answer:
        return self.finish(self.start(method, path, **kwargs))

    def assertError(self, answer: Answer, status: int, code: str) -> dict[str, Any]:
        """The answer is the JSON error model with this status and code; returns the detail."""
        self.assertEqual(answer.status, status, answer.body)
        detail = answer.error()
        self.assertEqual(detail["code"], code)
        self.assertIsInstance(detail["message"], str)
        self.assertNotIn("Traceback", answer.body.decode("utf-8", errors="replace"))
        return detail
