"""Streaming a snapshot file to an HTTP client (GET /cluster/snapshot).

A snapshot may be gigabytes: it is sent from the open file in chunks as the transport takes
them (a push producer the transport pauses), never read whole. The file is closed when the last
byte is written, when the client goes away, and when the file turns out shorter than its
manifest says (then the connection is dropped, so the client sees a short body against the
declared Content-Length instead of a silently truncated backup).
"""

# twisted.web is untyped; its calls are checked by the tests.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, BinaryIO

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

_log = Logger()
CHUNK_BYTES = 64 * 1024


def snapshot_size(manifest: Mapping[str, Any], data: BinaryIO) -> int:
    """The data's length: the manifest's ``size``, else what is left of the file."""
    size = manifest.get("size")
    if isinstance(size, int) and not isinstance(size, bool) and size >= 0:
        return size
    return os.fstat(data.fileno()).st_size - data.tell()


class SnapshotResource(Resource):
    """Renders one snapshot: headers from its manifest, then the data through FileSender."""

    isLeaf = True

    def __init__(self, manifest: Mapping[str, Any], data: BinaryIO) -> None:
        super().__init__()
        self._manifest = manifest
        self._data = data
        self._size = snapshot_size(manifest, data)

    def render_GET(self, request: Request) -> int | bytes:
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", b"application/octet-stream")
        request.setHeader(b"Content-Length", str(self._size).encode("ascii"))
        for header, key in (
            (b"Graft-Snapshot-Index", "index"),
            (b"Graft-Snapshot-Term", "term"),
            (b"Graft-Snapshot-Fsm", "fsm"),
        ):
            value = self._manifest.get(key)
            if value is not None:
                request.setHeader(header, str(value).encode("utf-8"))
        if request.method == b"HEAD":
            # twisted.web drops a HEAD body, but producing it would still read the whole file.
            self._data.close()
            return b""
        FileSender(request, self._data, self._size).start()
        return NOT_DONE_YET


class FileSender:
    """A push producer writing ``size`` bytes of ``data`` to ``request``, then finishing it.

    It writes chunk after chunk until the transport pauses it (its buffer is full) and goes on
    when resumed, so at most a buffer's worth is in memory. Push rather than pull: twisted.web
    turns a pull producer into a push one on the global cooperator, which an injected reactor
    (or a test's Clock) does not drive.
    """

    def __init__(self, request: Request, data: BinaryIO, size: int) -> None:
        self._request: Request | None = request
        self._data = data
        self._left = size
        self._paused = False
        self._producing = False

    def start(self) -> None:
        assert self._request is not None
        self._request.notifyFinish().addErrback(self._client_left)
        if self._left == 0:
            self._done()
            return
        self._request.registerProducer(self, True)
        self._produce()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._produce()

    def stopProducing(self) -> None:
        self._request = None
        self._data.close()

    def _produce(self) -> None:
        if self._producing:
            return  # resumed from inside our own write: the running loop goes on
        self._producing = True
        try:
            while self._request is not None and not self._paused and self._left > 0:
                chunk = self._data.read(min(CHUNK_BYTES, self._left))
                if not chunk:
                    self._cut_short(self._request)
                    return
                self._left -= len(chunk)
                self._request.write(chunk)  # may pause us, or stop us if the client left
            if self._request is not None and self._left == 0:
                self._request.unregisterProducer()
                self._done()
        finally:
            self._producing = False

    def _cut_short(self, request: Request) -> None:
        _log.error(
            "snapshot file ended {left} bytes early: the download is cut off", left=self._left
        )
        self.stopProducing()
        request.unregisterProducer()
        request.loseConnection()

    def _done(self) -> None:
        request = self._request
        self.stopProducing()
        if request is not None:
            request.finish()

    def _client_left(self, reason: Failure) -> None:
        self.stopProducing()
