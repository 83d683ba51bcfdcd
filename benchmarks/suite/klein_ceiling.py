"""The reference: one Klein process answering a fixed JSON body, no Raft, no disk.

    python -m benchmarks.suite.klein_ceiling PORT

It reads the request body and routes like Graft's API (Klein on twisted.web, a POST route
with a query string, no form parsing of bodies), so the load generator measures the HTTP
stack's own ceiling on this machine in the same run as the servers.
"""

from __future__ import annotations

import subprocess
import sys
from typing import IO, Any

from benchmarks.suite.http import call, wait_until
from graft.testing.cluster import HOST, free_ports

FIXED_BODY = b'{"prev":null}'
PATH = "/command"


def serve(port: int) -> None:
    from klein import Klein
    from twisted.internet import reactor as installed_reactor
    from twisted.web.server import Request, Site

    reactor: Any = installed_reactor

    app = Klein()

    @app.route(PATH, methods=["POST"])
    def answer(request: Request) -> bytes:
        if request.content is not None:
            request.content.read()
        request.setHeader(b"Content-Type", b"application/json")
        return FIXED_BODY

    # As Graft's ApiSite: bodies are never parsed as forms. With Twisted's default the
    # Content-Type header (the load sends application/json) goes through the email package's
    # parser on every POST, about 80 us a request here, which would lower the ceiling below
    # what the HTTP stack itself costs.
    site = Site(app.resource(), parsePOSTFormSubmission=False)
    site.noisy = False
    reactor.listenTCP(port, site, interface=HOST)
    reactor.run()


class KleinCeiling:
    """The ceiling endpoint as a process the suite starts and stops."""

    name = "klein"

    def __init__(self, log: IO[bytes]) -> None:
        self.port = free_ports(1)[0]
        self._log = log
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}{PATH}"

    def start(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.suite.klein_ceiling", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_until(
            lambda: call(self.url, b"{}", timeout=1)[0] == 200,
            timeout=20,
            what="the Klein ceiling endpoint answering",
        )

    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def close(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(10)


if __name__ == "__main__":
    serve(int(sys.argv[1]))
