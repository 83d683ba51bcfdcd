"""ApiRoot's direct routes when the client leaves before its answer is written."""

# twisted.web's test helpers are untyped.
# mypy: disable-error-code="arg-type,union-attr"

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from twisted.web.test.requesthelper import DummyChannel

from graft.api.root import ApiRoot


def _request() -> Request:
    request = Request(DummyChannel(), False)
    request.method = b"POST"
    request.path = b"/command"
    return request


class ClientGoneTests(SynchronousTestCase):
    def test_an_answer_fired_but_waiting_on_another_is_dropped_if_the_client_left(self) -> None:
        """A handler's Deferred can be called yet wait on an inner one (``called`` is true
        while it is paused): the client that leaves meanwhile gets nothing written, and no
        error is logged."""
        inner: Deferred[bytes] = Deferred()
        outer: Deferred[Any] = succeed(None)
        outer.addCallback(lambda _: inner)
        self.assertTrue(outer.called)
        root = ApiRoot({(b"POST", b"/command"): lambda request: outer}, Resource())
        request = _request()
        self.assertIs(root.render(request), NOT_DONE_YET)
        request.connectionLost(Failure(ConnectionError("client left")))
        inner.callback(b'{"ok": true}')
        result: list[object] = []
        outer.addBoth(result.append)  # what the chain ended with, before the GC logs it
        self.assertEqual(result, [None])
        self.assertFalse(request.finished)

    def test_an_answer_at_once_is_written(self) -> None:
        root = ApiRoot({(b"POST", b"/command"): lambda request: succeed(b"{}")}, Resource())
        request = _request()
        channel = request.channel
        root.render(request)
        self.assertTrue(request.finished)
        self.assertIn(b"\r\n\r\n{}", channel.transport.written.getvalue())
