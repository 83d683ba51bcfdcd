"""One PySyncObj node: a replicated dict behind a small HTTP front (benchmark peer only).

    python -m benchmarks.suite.pysyncobj_node --raft 127.0.0.1:P --partner 127.0.0.1:Q ...
        --http-port H --journal FILE --election-ms 350 --heartbeat-ms 35

POST /put {"key", "value"} waits until the put is committed and applied (sync=True; a
follower forwards it to the leader); POST /get {"key"} reads the local copy; GET /status is
PySyncObj's own status. PySyncObj's journal is a memory-mapped file that is never fsynced, so
an acknowledged write does not survive a power cut: the results say so.

The front is the standard library's ThreadingHTTPServer with HTTP/1.1 keep-alive, one thread
per connection, because SyncObj's blocking calls want threads.
"""

from __future__ import annotations

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

try:
    from pysyncobj import SyncObj, SyncObjConf
    from pysyncobj.batteries import ReplDict
except ImportError as missing:  # pragma: no cover - explained to the user
    raise SystemExit(
        "PySyncObj is not installed; it is a benchmark peer only, not a Graft dependency: "
        "run `.venv/bin/pip install pysyncobj`"
    ) from missing


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes
    store: ReplDict
    node: SyncObj

    def log_message(self, format: str, *args: Any) -> None:
        return  # one line per request would cost more than the request

    def _answer(self, status: int, body: Any) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def do_POST(self) -> None:
        try:
            request = self._body()
        except ValueError:
            self._answer(400, {"error": "the body must be JSON"})
            return
        if self.path == "/put":
            try:
                self.store.set(request["key"], request["value"], sync=True, timeout=5)
            except Exception as error:  # no leader, timeout: the client retries
                self._answer(503, {"error": type(error).__name__})
                return
            self._answer(200, {"ok": True})
        elif self.path == "/get":
            self._answer(200, {"value": self.store.get(request["key"])})
        else:
            self._answer(404, {"error": "POST /put or /get"})

    def do_GET(self) -> None:
        if self.path == "/status":
            status = self.node.getStatus()
            self._answer(
                200,
                {
                    "self": str(status.get("self")),
                    "leader": str(status.get("leader")) if status.get("leader") else None,
                    "state": status.get("state"),
                    "commit_idx": status.get("commit_idx"),
                },
            )
        else:
            self._answer(404, {"error": "GET /status"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--raft", required=True)
    parser.add_argument("--partner", action="append", default=[])
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--journal", required=True)
    parser.add_argument("--election-ms", type=int, default=350)
    parser.add_argument("--heartbeat-ms", type=int, default=35)
    parser.add_argument("--tick-ms", type=float, default=50)
    parser.add_argument("--batch", choices=("on", "off"), default="on")
    args = parser.parse_args()
    conf = SyncObjConf(
        journalFile=args.journal,
        raftMinTimeout=args.election_ms / 1000,
        raftMaxTimeout=2 * args.election_ms / 1000,
        appendEntriesPeriod=args.heartbeat_ms / 1000,
        commandsWaitLeader=True,
        autoTickPeriod=args.tick_ms / 1000,
        appendEntriesUseBatch=args.batch == "on",
    )
    store = ReplDict()
    node = SyncObj(args.raft, args.partner, conf=conf, consumers=[store])
    _Handler.store = store
    _Handler.node = node
    server = ThreadingHTTPServer(("127.0.0.1", args.http_port), _Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
