"""A fake Graft node over real HTTP: a stdlib server on 127.0.0.1 in a thread that answers
with canned replies, for the tests of graft.client and the graft command."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from twisted.trial.unittest import SynchronousTestCase


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


def json_reply(status: int, document: Any, **headers: str) -> Reply:
    return Reply(
        status=status,
        body=json.dumps(document).encode(),
        headers={"Content-Type": "application/json", **headers},
    )


def error_reply(status: int, code: str, message: str, **headers: str) -> Reply:
    return json_reply(status, {"error": {"code": code, "message": message}}, **headers)


@dataclass(frozen=True, slots=True, kw_only=True)
class Seen:
    method: str
    path: str
    body: bytes
    headers: Mapping[str, str]


# What a node from before client sessions answers to POST /sessions.
NO_SESSIONS = error_reply(404, "not_found", "no route /sessions")


class FakeNode:
    """A stdlib HTTP server in a thread. Replies are taken from ``script`` in order; when it is
    empty, ``default`` answers (a Reply, or a function of the request).

    ``POST /sessions`` is answered apart, by ``sessions`` (by default a 404, as a node from
    before client sessions answers, so graft.client sends its commands without one), and kept
    in ``registrations`` rather than ``seen``; ``sessions = None`` treats it like any path."""

    def __init__(self, default: Reply | Callable[[Seen], Reply] | None = None) -> None:
        self.script: list[Reply] = []
        self.default = default or Reply(status=200, body=b"ok")
        self.seen: list[Seen] = []
        self.sessions: Reply | None = NO_SESSIONS
        self.registrations: list[Seen] = []
        node = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = Seen(
                    method=self.command,
                    path=self.path,
                    body=self.rfile.read(length),
                    headers={k.lower(): v for k, v in self.headers.items()},
                )
                reply = node.reply_to(request)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            do_GET = do_POST = do_PUT = do_DELETE = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        # A short poll interval keeps shutdown() (and so each test's cleanup) quick.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()

    def reply_to(self, request: Seen) -> Reply:
        if self.sessions is not None and request.path.startswith("/sessions"):
            self.registrations.append(request)
            return self.sessions
        self.seen.append(request)
        if self.script:
            return self.script.pop(0)
        if callable(self.default):
            return self.default(request)
        return self.default

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_fake_node(test: SynchronousTestCase, default: Any = None) -> FakeNode:
    node = FakeNode(default)
    test.addCleanup(node.stop)
    return node
