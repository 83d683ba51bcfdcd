"""Graft's Python client: the operations of the HTTP API, as ``graft`` and programs use them.

This is the public API module: users write ``from graft.client import GraftClient,
ClientError, OutcomeUnknown, Unreachable, Response, SavedSnapshot`` (docs/api.md). The
exceptions are defined in graft/client_errors.py and Response in graft/client_requests.py;
they are imported here because they are part of this API (``__all__``), not left behind for
old callers. Graft's own modules import them from where they are defined.

:class:`GraftClient` is a :class:`~graft.client_requests.RequestLoop` (the members, the
connection settings, redirects, retries, backoff, deadline) with the operations on top:
commands, queries, SQL, membership and the other admin calls, snapshot download, shutdown.
Commands go under a client session by default (graft/client_sessions.py): numbered, so that
a timeout, a dropped connection or a leader change is retried and still applied once.

Only the standard library is used, so the CLI starts fast and needs no reactor; the CLI's
use of it lives in graft/cli/.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import tempfile
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from graft.client_errors import ClientError, OutcomeUnknown, Unreachable
from graft.client_requests import RETRYABLE, RETRYABLE_READS, RequestLoop, Response, int_header
from graft.client_sessions import SessionCommands
from graft.sql_form import SqlStatement, sql_request

__all__ = [
    "ClientError",
    "GraftClient",
    "OutcomeUnknown",
    "Response",
    "SavedSnapshot",
    "Unreachable",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class SavedSnapshot:
    """A snapshot downloaded to ``path``: where it came from and what it is."""

    node: str
    path: Path
    size: int
    index: int | None
    term: int | None
    fsm: str | None


@dataclass(kw_only=True)
class GraftClient(RequestLoop):
    """The operations of Graft's HTTP API on the members at ``urls``.

    Made with the RequestLoop's fields (``urls``, ``names``, ``timeout``, ``token``,
    ``ssl_context``, ``sleep``, ``clock``, ``retry_unreachable``, ``attempt_timeout``,
    ``jitter``) and ``session``.
    """

    # Commands under a client session (exactly once, retried until the deadline); False sends
    # them as before sessions: a timeout or a dropped connection ends the command, unknown.
    session: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self._commands: SessionCommands = SessionCommands(self)

    @property
    def session_id(self) -> str | None:
        """The id of the client session commands go under: None before the first command,
        with ``session=False`` or when the cluster has no sessions."""
        return self._commands.book.session_id

    # -- operations across the cluster ---------------------------------------------------------

    def command(self, data: bytes) -> Response:
        """POST /command. The node asked forwards to the leader itself. Under a session (the
        default) a timeout, a dropped connection and the other answers listed in
        graft.client_sessions are retried on any member until the deadline, and the command
        is applied once. Without one we only move on to the next member when a node is
        unreachable, and retry RETRYABLE until the deadline; other failures are not retried:
        after a timeout the command may still commit."""
        return self._send_commands("/command", data, _content_type(data), count=1)

    def commands(self, batch: Sequence[bytes]) -> Response:
        """POST /commands: the commands in order, one log entry each, as one request (under a
        session it takes one sequence number per command). The answer is the JSON array of
        per-command results (docs/api.md)."""
        if not batch:
            raise ValueError("a batch needs at least one command")
        body = json.dumps([_batch_element(command) for command in batch]).encode("utf-8")
        return self._send_commands(
            "/commands", body, {"Content-Type": "application/json"}, count=len(batch)
        )

    def _send_commands(
        self, path: str, body: bytes, headers: Mapping[str, str], *, count: int
    ) -> Response:
        if self.session:
            return self._commands.send(path, body, headers, count=count)
        return self.retrying("POST", path, body=body, headers=headers)

    def execute(
        self, statements: Sequence[SqlStatement], *, transaction: bool = True
    ) -> list[dict[str, Any]]:
        """Run SQL ``statements`` with bound parameters as one command (the SQLite FSM's JSON
        form, see ``sql_request``); the result of each statement, in order, failed ones as
        ``{"error": ...}``. E.g. ``execute([("INSERT INTO t(a) VALUES (?)", [1])])``."""
        request = sql_request(statements, transaction)
        return _results(
            self._send_commands("/command", request, {"Content-Type": "application/json"}, count=1)
        )

    def select(
        self,
        statements: Sequence[SqlStatement],
        *,
        consistency: str = "default",
        min_index: int | None = None,
    ) -> list[dict[str, Any]]:
        """Run read-only ``statements`` with bound parameters as one query: the result of each,
        ``{"columns", "types", "values"}`` (or ``{"error": ...}``)."""
        params = {"consistency": consistency}
        if min_index is not None:
            params["min_index"] = str(min_index)
        path = "/query?" + urllib.parse.urlencode(params)
        return _results(
            self._json_post(path, sql_request(statements), retry_codes=("no_leader", "timeout"))
        )

    def _json_post(
        self, path: str, body: bytes, retry_codes: Sequence[str] = ("no_leader",)
    ) -> Response:
        return self.retrying(
            "POST",
            path,
            body=body,
            retry_codes=retry_codes,
            headers={"Content-Type": "application/json"},
        )

    def query(
        self,
        query: bytes,
        *,
        consistency: str = "default",
        min_index: int | None = None,
        max_lag_ms: int | None = None,
    ) -> Response:
        """POST /query (same as GET with a body). Reads are idempotent, so a timeout or a
        RETRYABLE answer may be retried until the deadline too."""
        params: dict[str, str] = {"consistency": consistency}
        if min_index is not None:
            params["min_index"] = str(min_index)
        if max_lag_ms is not None:
            params["max_lag_ms"] = str(max_lag_ms)
        path = "/query?" + urllib.parse.urlencode(params)
        return self.retrying(
            "POST",
            path,
            body=query,
            retry_codes=RETRYABLE_READS,
            headers=_content_type(query),
        )

    # -- cluster administration ----------------------------------------------------------------
    # Any member may be asked: a follower has the leader carry the operation out. Like commands,
    # they are retried only while nobody answers or there is no leader (nothing was accepted).

    def members(self) -> dict[str, Any]:
        """GET /cluster/members: ``{"leader", "voters", "learners", "addresses"}``."""
        return self._admin("GET", "/cluster/members", None, retry_codes=RETRYABLE_READS)

    def add_member(
        self, node_id: str, host: str, p2p_port: int, api_port: int, *, non_voter: bool = False
    ) -> dict[str, Any]:
        """POST /cluster/members; answers once the new member caught up and is a voter, so give
        the client a timeout that allows for the catch-up. A non-voter (``non_voter``) is
        answered once it is added; it catches up afterwards."""
        member: dict[str, Any] = {
            "id": node_id,
            "host": host,
            "ports": {"p2p": p2p_port, "api": api_port},
        }
        if non_voter:
            member["non_voter"] = True
        return self._admin("POST", "/cluster/members", member)

    def promote_member(self, node_id: str) -> dict[str, Any]:
        """POST /cluster/members/{id}/promote: a learner (non-voter) becomes a voter."""
        return self._admin("POST", _member_path(node_id) + "/promote")

    def demote_member(self, node_id: str) -> dict[str, Any]:
        """POST /cluster/members/{id}/demote: a voter becomes a non-voter."""
        return self._admin("POST", _member_path(node_id) + "/demote")

    def update_member(
        self, node_id: str, host: str, p2p_port: int | None = None, api_port: int | None = None
    ) -> dict[str, Any]:
        """PUT /cluster/members/{id}: its new advertised addresses (a port left None is kept)."""
        ports = {k: v for k, v in (("p2p", p2p_port), ("api", api_port)) if v is not None}
        document: dict[str, Any] = {"host": host}
        if ports:
            document["ports"] = ports
        return self._admin("PUT", _member_path(node_id), document)

    def remove_member(self, node_id: str) -> dict[str, Any]:
        """DELETE /cluster/members/{id}; answers the membership without it."""
        return self._admin("DELETE", _member_path(node_id))

    def transfer_leadership(self, target: str | None = None) -> dict[str, Any]:
        """POST /cluster/leader; answers ``{"leader", "term"}`` once leadership moved."""
        return self._admin("POST", "/cluster/leader", {"id": target})

    def take_snapshot(self) -> dict[str, Any]:
        """POST /cluster/snapshot; answers ``{"index", "term"}``."""
        return self._admin("POST", "/cluster/snapshot", None)

    def check_replicas(self) -> dict[str, Any]:
        """GET /cluster/check: every member's FSM digest at one log index (graft.consistency)."""
        return self._admin("GET", "/cluster/check", None)

    def shutdown(self, url: str) -> dict[str, Any]:
        """POST /shutdown to the node at ``url`` (not retried elsewhere: it concerns that node)."""
        return _json_object(self.request("POST", url.rstrip("/") + "/shutdown", body=b""))

    def wait_until_down(self, url: str, *, poll_s: float = 0.1) -> bool:
        """Poll GET /health at ``url`` until nothing answers there (True) or the client's
        timeout passes (False)."""
        deadline = self.clock() + self.timeout
        while True:
            remaining = deadline - self.clock()
            try:
                self.request("GET", url.rstrip("/") + "/health", timeout=min(1.0, remaining))
            except ClientError as err:
                # Refused, reset or closed mid-answer: the process has let go of its port.
                if err.code in ("unreachable", "connection"):
                    return True
            if self.clock() + poll_s >= deadline:
                return False
            self.sleep(poll_s)

    def save_snapshot(self, destination: Path, *, url: str | None = None) -> SavedSnapshot:
        """GET /cluster/snapshot from ``url`` (else the first member that answers), streamed to
        ``destination`` atomically: a temp file in the same directory, fsynced, renamed over it.
        The client's timeout bounds each wait for data, not the whole download."""
        candidates = [url.rstrip("/")] if url else list(self.urls)
        last: ClientError | None = None
        for base in candidates:
            try:
                return self._download(base, destination)
            except Unreachable as err:
                last = err
        assert last is not None
        if len(candidates) > 1:
            raise Unreachable(f"no member answered ({len(candidates)} tried, last: {last.message})")
        raise last

    def _download(self, base: str, destination: Path) -> SavedSnapshot:
        headers = {"Accept": "application/octet-stream"}
        with self._open("GET", base + "/cluster/snapshot", headers=headers) as (raw, final):
            node = self.name_of(final)
            expected = int_header(raw.headers.get("Content-Length"))
            temp = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed or removed below)
                dir=destination.parent, prefix=f".{destination.name}.", suffix=".part", delete=False
            )
            try:
                with temp:
                    size = _copy(raw, temp, lambda e: self._transport_error(final, e))
                    temp.flush()
                    os.fsync(temp.fileno())
                if expected is not None and size != expected:
                    raise ClientError(
                        "connection",
                        None,
                        f"the snapshot from node {node} was cut off after {size} of {expected} "
                        "bytes: retry the download",
                    )
                os.replace(temp.name, destination)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp.name)
                raise
            _fsync_directory(destination.parent)
            return SavedSnapshot(
                node=node,
                path=destination,
                size=size,
                index=int_header(raw.headers.get("Graft-Snapshot-Index")),
                term=int_header(raw.headers.get("Graft-Snapshot-Term")),
                fsm=raw.headers.get("Graft-Snapshot-Fsm"),
            )

    def _admin(
        self,
        method: str,
        path: str,
        document: Any = None,
        *,
        retry_codes: Sequence[str] = RETRYABLE,
    ) -> dict[str, Any]:
        body = None if document is None else json.dumps(document).encode("utf-8")
        # A POST without a body still sends an empty one, with a length, for strict proxies.
        if body is None and method == "POST":
            body = b""
        response = self.retrying(
            method,
            path,
            body=body,
            retry_codes=retry_codes,
            headers={"Content-Type": "application/json"},
        )
        return _json_object(response)


def _content_type(body: bytes) -> dict[str, str]:
    """application/json for a body that is a JSON object (the SQLite FSM's JSON form, the kv
    FSM's commands), else the default text/plain."""
    if body.lstrip()[:1] == b"{":
        return {"Content-Type": "application/json"}
    return {}


def _batch_element(command: bytes) -> str | dict[str, str]:
    """A command of a /commands batch: its text when it is UTF-8, else ``{"b64": ...}``."""
    try:
        return command.decode("utf-8")
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(command).decode("ascii")}


def _results(response: Response) -> list[dict[str, Any]]:
    results = _json_object(response).get("results")
    if not isinstance(results, list):
        raise ClientError(
            "bad_answer",
            response.status,
            f"{response.url} answered without a results list: does the cluster run the SQLite "
            "state machine?",
        )
    return results


def _json_object(response: Response) -> dict[str, Any]:
    try:
        document = response.json()
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise ClientError(
            "bad_answer",
            response.status,
            f"{response.url} answered with something other than a JSON object: is it a Graft "
            "node's API?",
        )
    return document


COPY_CHUNK_BYTES = 1024 * 1024


def _copy(source: Any, sink: IO[bytes], failed: Callable[[BaseException], ClientError]) -> int:
    """Copy an HTTP body to a file chunk by chunk; a broken connection becomes ``failed(e)``."""
    size = 0
    while True:
        try:
            chunk = source.read(COPY_CHUNK_BYTES)
        except http.client.IncompleteRead as e:
            sink.write(e.partial)
            return size + len(e.partial)  # the Content-Length check reports it
        except (OSError, http.client.HTTPException) as e:
            raise failed(e) from None
        if not chunk:
            return size
        sink.write(chunk)
        size += len(chunk)


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable (not every filesystem allows opening a directory: best effort)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _member_path(node_id: str) -> str:
    return "/cluster/members/" + urllib.parse.quote(node_id, safe="")
