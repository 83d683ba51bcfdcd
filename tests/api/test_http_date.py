"""The Date header: formatted once a second (graft.api.http_date), as twisted.web would."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import datetimeToString

from graft.api import make_api_site
from graft.api.http_date import DateCache
from tests.api.fakes import FakeBackend, Settings
from tests.api.test_connections import GET_HEALTH, PEER


class DateCacheTests(SynchronousTestCase):
    def test_formats_each_second_once_and_follows_the_clock(self) -> None:
        """Within a second the value is the one formatted for it; the next second gets its
        own, equal to twisted.web's formatting of that second."""
        now = [1_700_000_000.2]
        dates = DateCache(lambda: now[0])
        first = dates.now()
        self.assertEqual(first, datetimeToString(1_700_000_000))
        now[0] = 1_700_000_000.9
        self.assertIs(dates.now(), first)
        now[0] = 1_700_000_001.0
        self.assertEqual(dates.now(), datetimeToString(1_700_000_001))
        now[0] = 1_699_999_990.5  # the wall clock stepped back: the value follows it
        self.assertEqual(dates.now(), datetimeToString(1_699_999_990))


class ResponseHeaderTests(SynchronousTestCase):
    def test_answers_carry_date_and_server(self) -> None:
        """A response through the API's Site has the Date and Server headers twisted.web
        puts on every response, and is answered as before."""
        site: Any = make_api_site(FakeBackend(), Settings(), reactor=Clock())
        channel = site.buildProtocol(PEER)
        transport = StringTransport()
        channel.makeConnection(transport)
        self.addCleanup(channel.connectionLost, None)
        channel.dataReceived(GET_HEALTH)
        head = transport.value().split(b"\r\n\r\n")[0].split(b"\r\n")
        self.assertEqual(head[0], b"HTTP/1.1 200 OK")
        headers = dict(line.split(b": ", 1) for line in head[1:])
        self.assertRegex(headers[b"Date"], rb"^\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} GMT$")
        self.assertIn(b"Server", headers)
