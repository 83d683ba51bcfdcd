"""The resource the lock guards in a lock fault run: a tiny HTTP server in the run driver.

``POST /write`` with ``{"client": ..., "token": N, "key": ..., "value": ...}`` is accepted
(200) unless ``token`` is older than the newest token accepted so far (409, fenced): the
fencing-token check a real storage service would make. Every decision is logged, in the order
made, as a ResourceWrite for the checker. It listens on 127.0.0.1, outside the node addresses
the partitions cut, so every lock client can always reach it: the lock, not the network, is
what has to keep stale writes out.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from graft.testing.faults.lock_checker import ResourceWrite

MAX_BODY = 4096


class GuardedResource:
    def __init__(self, clock: Callable[[], float], host: str = "127.0.0.1", port: int = 0) -> None:
        self.clock = clock
        self.newest = 0
        self.data: dict[str, str] = {}
        self.log: list[ResourceWrite] = []
        self._lock = threading.Lock()
        resource = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    if self.path != "/write" or not 0 < length <= MAX_BODY:
                        raise ValueError("POST /write with a JSON body")
                    status, answer = resource.write(json.loads(self.rfile.read(length)))
                except (ValueError, KeyError, TypeError) as e:
                    status, answer = 400, {"error": str(e)}
                body = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the decisions are in the resource's own log

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.address = f"{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="resource")

    def write(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Decide one write: accept it unless its token is older than the newest accepted."""
        token, client = request["token"], str(request["client"])
        if not isinstance(token, int) or isinstance(token, bool) or token <= 0:
            raise ValueError("token must be a positive integer")
        with self._lock:
            accepted = token >= self.newest
            self.log.append(
                ResourceWrite(
                    t=self.clock(),
                    client=client,
                    token=token,
                    accepted=accepted,
                    newest=self.newest,
                )
            )
            if not accepted:
                return 409, {"accepted": False, "newest": self.newest}
            self.newest = token
            self.data[str(request["key"])] = str(request["value"])
            return 200, {"accepted": True, "newest": token}

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def decisions(self) -> list[ResourceWrite]:
        with self._lock:
            return list(self.log)
