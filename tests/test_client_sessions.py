"""graft.client's sessions against a stub node that keeps sessions as the API's contract says
(tests/support/session_stub.py): a command whose answer was lost is applied once, the acked
floor follows the answers, 410 registers anew, 409 and a deadline after a try that may have
been applied are an unknown outcome, and --no-session sends no session at all.

The stub runs on the trial reactor, so the (blocking) client runs in a thread."""

from __future__ import annotations

import socket
from collections.abc import Callable, Generator
from typing import Any, TypeVar

from twisted.internet import defer, task
from twisted.internet import reactor as global_reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from graft.client import ClientError, GraftClient, OutcomeUnknown
from graft.client_sessions import SessionBook
from tests.support.http_node import error_reply, start_fake_node
from tests.support.session_stub import SessionStub, error_answer, start_session_stub
from tests.test_cli import run
from tests.test_client import FakeTime

T = TypeVar("T")
Test = Generator[defer.Deferred[Any], Any, None]


def client_of(stub: SessionStub, *, timeout: float = 5.0, **kwargs: Any) -> GraftClient:
    """A client of the stub on fake time (its pauses take no time), jitter at its highest."""
    fake = FakeTime()
    kwargs.setdefault("jitter", lambda: 0.999)
    return GraftClient(
        urls=[stub.url], timeout=timeout, sleep=fake.sleep, clock=fake.clock, **kwargs
    )


def in_thread(call: Callable[..., T], *args: Any) -> defer.Deferred[T]:
    return deferToThread(call, *args)


def until(condition: Callable[[], bool]) -> Test:
    """Yield to the reactor until ``condition`` holds (the client's thread is doing its part)."""
    for _ in range(1000):
        if condition():
            return
        yield task.deferLater(global_reactor, 0.01, lambda: None)
    raise AssertionError("the condition did not come true in 10 s")


NO_LEADER = error_answer(503, "no_leader", "no leader is known: an election is under way; retry")


class ExactlyOnceTests(TestCase):
    @defer.inlineCallbacks
    def test_a_command_whose_answer_was_lost_is_applied_once(self) -> Test:
        """The stub applies the command and cuts the connection; the client retries with the
        same session and number, and gets the first answer back, marked as a duplicate."""
        stub = start_session_stub(self)
        stub.drop = 1
        response = yield in_thread(client_of(stub).command, b"add 1")
        self.assertEqual(stub.applied, [("stub-1", 1, b"add 1")])
        self.assertTrue(response.duplicate)
        self.assertEqual(response.json(), {"index": 1, "command": "add 1"})
        self.assertEqual([(s.session, s.sequence) for s in stub.sent], [("stub-1", "1")] * 2)

    @defer.inlineCallbacks
    def test_a_retry_goes_to_the_next_member(self) -> Test:
        """After a cut connection the retry goes to the next member, with the same number."""
        stub = start_session_stub(self, members=2)
        stub.drop = 1
        fake = FakeTime()
        client = GraftClient(urls=stub.urls, sleep=fake.sleep, clock=fake.clock)
        response = yield in_thread(client.command, b"add 1")
        self.assertTrue(response.duplicate)
        ports = [int(url.rsplit(":", 1)[1]) for url in stub.urls]
        self.assertEqual(
            [(s.port, s.sequence) for s in stub.sent], [(ports[0], "1"), (ports[1], "1")]
        )
        self.assertEqual(len(stub.applied), 1)

    @defer.inlineCallbacks
    def test_a_member_that_never_answers_is_left_for_the_next(self) -> Test:
        """attempt_timeout bounds each try, the registration's too: a member that accepts
        connections and never answers costs one such wait, not the whole deadline (real
        clock: without the bound the first wait would use up the 5 s)."""
        silent = socket.socket()
        self.addCleanup(silent.close)
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        stub = start_session_stub(self)
        client = GraftClient(
            urls=[f"http://127.0.0.1:{silent.getsockname()[1]}", stub.url],
            timeout=5.0,
            attempt_timeout=0.5,
        )
        yield in_thread(client.command, b"a")
        self.assertEqual(stub.applied, [("stub-1", 1, b"a")])

    @defer.inlineCallbacks
    def test_a_redirect_keeps_the_session_headers(self) -> Test:
        """A follower's 307 is followed with the same session, number and floor."""
        stub = start_session_stub(self, members=2)
        stub.followers = {stub.urls[1]}
        yield in_thread(GraftClient(urls=[stub.urls[1]]).command, b"a")
        self.assertEqual(
            [(s.session, s.sequence, s.acked) for s in stub.sent], [("stub-1", "1", "1")] * 2
        )
        self.assertEqual(stub.applied, [("stub-1", 1, b"a")])

    @defer.inlineCallbacks
    def test_a_504_after_applying_is_retried_and_applied_once(self) -> Test:
        """A node's 504 timeout (the command may still commit) is retried the same way."""
        stub = start_session_stub(self)
        stub.late = 1
        response = yield in_thread(client_of(stub).command, b"add 1")
        self.assertEqual(len(stub.applied), 1)
        self.assertTrue(response.duplicate)
        self.assertEqual(len(stub.sent), 2)

    @defer.inlineCallbacks
    def test_numbers_and_the_acked_floor_advance(self) -> Test:
        """One session for the client's life; each command the next number, and the floor is
        the number of the command in flight, so the stub forgets the answers before it."""
        stub = start_session_stub(self)
        client = client_of(stub)
        for command in (b"a", b"b", b"c"):
            yield in_thread(client.command, command)
        self.assertEqual(stub.registrations, 1)
        self.assertEqual(
            [(s.sequence, s.acked) for s in stub.sent], [("1", "1"), ("2", "2"), ("3", "3")]
        )
        self.assertEqual(list(stub.sessions["stub-1"].answers), [3])

    @defer.inlineCallbacks
    def test_the_floor_is_the_lowest_command_in_flight(self) -> Test:
        """Two threads share a client: while the first command waits for its answer, the
        second carries the first's number as the floor, not its own."""
        stub = start_session_stub(self)
        client = GraftClient(urls=[stub.url], timeout=10.0)
        stub.holding = True
        first = in_thread(client.command, b"first")
        yield from until(lambda: len(stub.sent) == 1)
        second = in_thread(client.command, b"second")
        yield from until(lambda: len(stub.sent) == 2)
        self.assertEqual((stub.sent[1].sequence, stub.sent[1].acked), ("2", "1"))
        stub.holding = False
        stub.release()
        yield first
        yield second
        yield in_thread(client.command, b"third")
        self.assertEqual((stub.sent[2].sequence, stub.sent[2].acked), ("3", "3"))

    @defer.inlineCallbacks
    def test_a_batch_takes_one_number_per_command(self) -> Test:
        """/commands carries the batch's first number and reserves as many as it holds."""
        stub = start_session_stub(self)
        client = client_of(stub)
        response = yield in_thread(client.commands, [b"a", b"\xff", b"c"])
        yield in_thread(client.command, b"d")
        self.assertEqual([s.sequence for s in stub.sent], ["1", "4"])
        self.assertEqual(
            [a[1:] for a in stub.applied], [(1, b"a"), (2, b"\xff"), (3, b"c"), (4, b"d")]
        )
        self.assertEqual(len(response.json()), 3)


class ExpiredAndForgottenTests(TestCase):
    @defer.inlineCallbacks
    def test_an_expired_session_is_replaced(self) -> Test:
        """410: the client registers a new session and sends the command under it, from
        number 1; it was not applied under the old one."""
        stub = start_session_stub(self)
        client = client_of(stub)
        yield in_thread(client.command, b"a")
        stub.expire("stub-1")
        yield in_thread(client.command, b"b")
        self.assertEqual(stub.registrations, 2)
        self.assertEqual(stub.applied, [("stub-1", 1, b"a"), ("stub-2", 1, b"b")])
        self.assertEqual(
            [(s.session, s.sequence) for s in stub.sent],
            [("stub-1", "1"), ("stub-1", "2"), ("stub-2", "1")],
        )

    @defer.inlineCallbacks
    def test_expired_after_a_try_that_may_have_applied_is_unknown(self) -> Test:
        """The first try was applied, its answer lost, and the session evicted before the
        retry: resending under a new session could apply it twice, so it is not resent."""
        stub = start_session_stub(self)
        stub.drop, stub.expire_on_drop = 1, True
        error = yield self.assertFailure(
            in_thread(client_of(stub).command, b"add 1"), OutcomeUnknown
        )
        self.assertEqual((error.code, error.status), ("session_expired", 410))
        self.assertIn("outcome is unknown", error.message)
        self.assertEqual((len(stub.applied), stub.registrations), (1, 1))

    @defer.inlineCallbacks
    def test_a_forgotten_sequence_is_an_unknown_outcome(self) -> Test:
        """409: the cluster discarded the result, so neither it nor the client can tell: an
        OutcomeUnknown at once, never a blind retry."""
        stub = start_session_stub(self)
        client = client_of(stub)
        yield in_thread(client.command, b"a")
        stub.forget_below("stub-1", 100)
        error = yield self.assertFailure(in_thread(client.command, b"b"), OutcomeUnknown)
        self.assertEqual((error.code, error.status), ("sequence_forgotten", 409))
        self.assertIn("outcome is unknown", error.message)
        self.assertIn("check with a query", error.message)
        self.assertEqual(len(stub.sent), 2)
        self.assertEqual(len(stub.applied), 1)


class DeadlineTests(TestCase):
    @defer.inlineCallbacks
    def test_backoff_grows_with_jitter_and_stops_at_the_deadline(self) -> Test:
        """no_leader forever: pauses between half and all of a doubling backoff (capped at
        1 s), none beyond the deadline; the error is no_leader, not an unknown outcome
        (nothing was done)."""
        stub = start_session_stub(self)
        stub.before = [NO_LEADER] * 1000
        fake = FakeTime()
        draws = iter([0.0, 0.999] * 500)
        client = GraftClient(
            urls=[stub.url],
            timeout=3.0,
            sleep=fake.sleep,
            clock=fake.clock,
            jitter=lambda: next(draws),
        )
        error = yield self.assertFailure(in_thread(client.command, b"x"), ClientError)
        self.assertNotIsInstance(error, OutcomeUnknown)
        self.assertEqual(error.code, "no_leader")
        self.assertLessEqual(fake.now, 3.0)
        self.assertEqual(len(stub.sent), len(fake.sleeps) + 1)
        backoffs = [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
        for pause, backoff in zip(fake.sleeps, backoffs, strict=False):
            self.assertTrue(backoff / 2 <= pause < backoff, (pause, backoff))
        # The jitter's draws 0.0 and 0.999 give half the backoff and nearly all of it.
        self.assertEqual(fake.sleeps[:2], [0.05 * 0.5, 0.1 * (0.5 + 0.5 * 0.999)])
        self.assertEqual(stub.applied, [])

    @defer.inlineCallbacks
    def test_dropped_until_the_deadline_is_unknown_and_applied_once(self) -> Test:
        """Every answer cut: the command is retried until the deadline under one number (the
        stub applied it once), and then its outcome is unknown."""
        stub = start_session_stub(self)
        stub.drop = 1000
        client = client_of(stub, timeout=2.0)
        error = yield self.assertFailure(in_thread(client.command, b"add 1"), OutcomeUnknown)
        self.assertEqual(error.code, "connection")
        self.assertIn("outcome is unknown", error.message)
        self.assertIn("sequence 1", error.message)
        self.assertGreater(len(stub.sent), 3)
        self.assertEqual({(s.session, s.sequence) for s in stub.sent}, {("stub-1", "1")})
        self.assertEqual(len(stub.applied), 1)

    @defer.inlineCallbacks
    def test_a_4xx_is_not_retried(self) -> Test:
        """A refusal is the same on every try: reported at once."""
        stub = start_session_stub(self)
        stub.before = [error_answer(403, "forbidden", "this token may not write")]
        error = yield self.assertFailure(in_thread(client_of(stub).command, b"x"), ClientError)
        self.assertEqual(error.code, "forbidden")
        self.assertEqual(len(stub.sent), 1)


class WithoutSessionTests(TestCase):
    @defer.inlineCallbacks
    def test_session_false_sends_no_headers_and_does_not_retry_a_drop(self) -> Test:
        """session=False: no registration, no Graft-Session/Sequence/Acked, and a dropped
        connection ends the command (resending could apply it twice)."""
        stub = start_session_stub(self)
        client = client_of(stub, session=False)
        yield in_thread(client.command, b"a")
        stub.drop = 1
        error = yield self.assertFailure(in_thread(client.command, b"b"), ClientError)
        self.assertEqual(error.code, "connection")
        self.assertEqual(stub.registrations, 0)
        self.assertEqual([(s.session, s.sequence, s.acked) for s in stub.sent], [(None,) * 3] * 2)

    @defer.inlineCallbacks
    def test_cli_no_session_sends_no_headers(self) -> Test:
        """`graft command --no-session` registers nothing and sends no session headers;
        without it the command carries them."""
        stub = start_session_stub(self)
        result = yield in_thread(run, ["command", "--url", stub.url, "--no-session", "a"])
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertEqual((stub.registrations, stub.sent[0].session), (0, None))
        self.assertEqual((stub.sent[0].sequence, stub.sent[0].acked), (None, None))
        result = yield in_thread(run, ["command", "--url", stub.url, "b"])
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertEqual(stub.registrations, 1)
        self.assertEqual((stub.sent[1].session, stub.sent[1].sequence), ("stub-1", "1"))

    @defer.inlineCallbacks
    def test_cli_says_when_a_retry_got_the_first_answer(self) -> Test:
        """The answer to a retry is printed like any other, and stderr says it was applied
        once."""
        stub = start_session_stub(self)
        stub.drop = 1
        result = yield in_thread(run, ["command", "--url", stub.url, "add 1"])
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertIn("not a second application", result.stderr)
        self.assertEqual(len(stub.applied), 1)


class FallbackTests(SynchronousTestCase):
    def test_a_node_without_sessions_gets_plain_commands(self) -> None:
        """A 404 on /sessions (a node from before sessions): the client asks once and then
        sends its commands without a session."""
        node = start_fake_node(self)
        client = GraftClient(urls=[node.url], timeout=5.0)
        client.command(b"a")
        client.command(b"b")
        self.assertEqual(len(node.registrations), 1)
        self.assertEqual([s.body for s in node.seen], [b"a", b"b"])
        self.assertFalse(any("graft-session" in s.headers for s in node.seen))

    def test_a_refused_registration_says_the_command_was_not_sent(self) -> None:
        node = start_fake_node(self)
        node.sessions = error_reply(403, "forbidden", "this token may not write")
        error = self.assertRaises(ClientError, GraftClient(urls=[node.url]).command, b"a")
        self.assertEqual(error.code, "forbidden")
        self.assertIn("the command was not sent", error.message)
        self.assertEqual(node.seen, [])

    def test_a_registration_without_an_answer_was_not_sent(self) -> None:
        """No answer to the registration: the command was not sent, which the CLI says
        instead of an unknown outcome."""
        silent = socket.socket()
        self.addCleanup(silent.close)
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        result = run(["command", "--url", url, "--timeout", "0.3", "x"])
        self.assertEqual(result.exit_code, 1)
        self.assertIn("the command was not sent", result.stderr)
        self.assertNotIn("outcome is unknown", result.stderr)


class SessionBookTests(SynchronousTestCase):
    def test_floor_is_the_lowest_open_number(self) -> None:
        book = SessionBook()
        a = book.take(1, lambda: "s")
        b = book.take(3, lambda: "never asked")
        c = book.take(1, lambda: "never asked")
        assert a is not None and b is not None and c is not None
        self.assertEqual([t.first for t in (a, b, c)], [1, 2, 5])
        self.assertEqual(book.headers(c)["Graft-Acked"], "1")
        book.done(a)
        self.assertEqual(book.headers(c)["Graft-Acked"], "2")
        book.done(b)
        book.done(c)
        d = book.take(1, lambda: "never asked")
        assert d is not None
        self.assertEqual(
            book.headers(d), {"Graft-Session": "s", "Graft-Sequence": "6", "Graft-Acked": "6"}
        )
