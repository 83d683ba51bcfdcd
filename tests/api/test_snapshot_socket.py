"""GET /cluster/snapshot over a real loopback socket: the push producer against twisted.web's
real HTTP channel and TCP transport (which pauses it), a complete download and a client that
leaves mid-way."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, protocol
from twisted.internet import reactor as global_reactor
from twisted.trial.unittest import TestCase

from graft.api import make_api_site
from graft.api.snapshot_download import CHUNK_BYTES
from tests.api.fakes import ClosingFile, FakeBackend, Settings
from tests.api.test_body_limit import split_response

SIZE = 8 * 1024 * 1024
REQUEST = b"GET /cluster/snapshot HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"


class WatchedFile(ClosingFile):
    """Fires ``was_closed`` the first time it is closed."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.was_closed: defer.Deferred[None] = defer.Deferred()

    def close(self) -> None:
        super().close()
        if not self.was_closed.called:
            self.was_closed.callback(None)


class _Downloader(protocol.Protocol):
    """Sends the request; keeps everything, or hangs up after the first bytes."""

    def __init__(self, *, hang_up: bool) -> None:
        self.hang_up = hang_up
        self.received = bytearray()
        self.closed: defer.Deferred[bytes] = defer.Deferred()

    def connectionMade(self) -> None:
        transport: Any = self.transport
        transport.write(REQUEST)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.hang_up:
            transport: Any = self.transport
            transport.abortConnection()

    def connectionLost(self, reason: object = None) -> None:
        if not self.closed.called:
            self.closed.callback(bytes(self.received))


class SnapshotSocketTests(TestCase):
    timeout = 20

    def serve(self, snapshot: WatchedFile) -> int:
        reactor: Any = global_reactor
        backend = FakeBackend()
        backend.snapshot = ({"index": 7, "term": 2, "fsm": "sqlite", "size": SIZE}, snapshot)
        port = reactor.listenTCP(
            0, make_api_site(backend, Settings(), reactor=reactor), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        number: int = port.getHost().port
        return number

    def connect(self, port: int, client: _Downloader) -> defer.Deferred[Any]:
        connected: defer.Deferred[Any] = protocol.ClientCreator(
            global_reactor, lambda: client
        ).connectTCP("127.0.0.1", port)
        return connected

    @defer.inlineCallbacks
    def test_full_download(self) -> Any:
        """An 8 MiB snapshot arrives whole with its headers, read in chunks of at most
        CHUNK_BYTES, and the file is closed afterwards."""
        data = bytes(range(256)) * (SIZE // 256)
        snapshot = WatchedFile(data)
        client = _Downloader(hang_up=False)
        yield self.connect(self.serve(snapshot), client)
        raw = yield client.closed
        status, headers, body = split_response(raw)
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-length"], str(SIZE))
        self.assertEqual(headers["graft-snapshot-index"], "7")
        self.assertEqual(len(body), SIZE)
        self.assertTrue(body == data)
        yield snapshot.was_closed
        self.assertLessEqual(snapshot.largest_read, CHUNK_BYTES)

    @defer.inlineCallbacks
    def test_client_leaves(self) -> Any:
        """A client that aborts after the first bytes makes the server close the snapshot
        file (nothing is left open on a download nobody reads)."""
        snapshot = WatchedFile(b"s" * SIZE)
        client = _Downloader(hang_up=True)
        yield self.connect(self.serve(snapshot), client)
        yield client.closed
        yield snapshot.was_closed
        self.assertTrue(snapshot.closed)
