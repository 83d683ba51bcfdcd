"""graft.client against tiny in-test HTTP servers on 127.0.0.1 that answer with canned replies."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from graft.client import ClientError, GraftClient, Unreachable
from graft.cluster_status import status_all
from graft.testing.ports import dead_url
from tests.support.http_node import (
    Reply,
    error_reply,
    json_reply,
    start_fake_node,
)


class FakeTime:
    """A clock that only moves when the client sleeps, so retry tests never wait."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def make_client(urls: list[str], *, timeout: float = 5.0, **kwargs: Any) -> GraftClient:
    """A client on fake time; without a session unless ``session=True`` (these tests are of
    the request loop as it is without one)."""
    kwargs.setdefault("session", False)
    fake = FakeTime()
    return GraftClient(urls=urls, timeout=timeout, sleep=fake.sleep, clock=fake.clock, **kwargs)


class CommandTests(SynchronousTestCase):
    def test_command_posts_body_and_returns_answer(self) -> None:
        """A command is POSTed as raw bytes to /command; the answer keeps the Graft headers."""
        node = start_fake_node(self, Reply(body=b'{"rows": 1}', headers={"Graft-Index": "7"}))
        response = make_client([node.url]).command(b"INSERT INTO t VALUES (1);")
        self.assertEqual(response.body, b'{"rows": 1}')
        self.assertEqual(response.header_int("Graft-Index"), 7)
        self.assertEqual(
            [(s.method, s.path, s.body) for s in node.seen],
            [("POST", "/command", b"INSERT INTO t VALUES (1);")],
        )

    def test_follows_307_to_the_leader_with_same_body(self) -> None:
        """A 307 from a follower is followed: the leader receives the same POST and body."""
        leader = start_fake_node(self, Reply(body=b"done", headers={"Graft-Leader": "b"}))
        follower = start_fake_node(
            self, Reply(status=307, headers={"Location": leader.url + "/command?redirect=true"})
        )
        response = make_client([follower.url]).command(b"payload")
        self.assertEqual(response.body, b"done")
        self.assertEqual(response.url, leader.url + "/command?redirect=true")
        self.assertEqual([(s.method, s.body) for s in leader.seen], [("POST", b"payload")])

    def test_redirect_loop_is_an_error(self) -> None:
        """Two nodes pointing at each other forever give a redirect_loop error, not a hang."""
        a = start_fake_node(self)
        b = start_fake_node(self, Reply(status=307, headers={"Location": a.url + "/command"}))
        a.default = Reply(status=307, headers={"Location": b.url + "/command"})
        error = self.assertRaises(ClientError, make_client([a.url]).command, b"x")
        self.assertEqual(error.code, "redirect_loop")
        self.assertIn("graft status", error.message)

    def test_no_leader_is_retried_with_backoff(self) -> None:
        """503 no_leader answers are retried after growing pauses until a leader answers."""
        node = start_fake_node(self, Reply(body=b"ok"))
        node.script = [error_reply(503, "no_leader", "election in progress")] * 2
        fake = FakeTime()
        client = GraftClient(
            urls=[node.url], timeout=5.0, sleep=fake.sleep, clock=fake.clock, session=False
        )
        self.assertEqual(client.command(b"x").body, b"ok")
        self.assertEqual(len(node.seen), 3)
        self.assertEqual(fake.sleeps, [0.05, 0.1])

    def test_no_leader_until_deadline_fails_with_advice(self) -> None:
        """When no leader appears before the timeout, the error says so and what to check."""
        node = start_fake_node(self, error_reply(503, "no_leader", "no leader known"))
        error = self.assertRaises(ClientError, make_client([node.url], timeout=1.0).command, b"x")
        self.assertEqual((error.code, error.status), ("no_leader", 503))
        self.assertIn("graft status", error.message)
        self.assertGreater(len(node.seen), 3)

    def test_unreachable_member_is_skipped(self) -> None:
        """A member where nothing listens is skipped in favour of the next one."""
        node = start_fake_node(self, Reply(body=b"ok"))
        client = make_client([dead_url(), node.url])
        self.assertEqual(client.command(b"x").body, b"ok")
        self.assertEqual(len(node.seen), 1)

    def test_all_unreachable_names_the_node(self) -> None:
        """Connection refused everywhere gives an Unreachable error naming the node and URL."""
        url = dead_url()
        client = make_client([url], timeout=0.5, names={url: "turing"})
        error = self.assertRaises(Unreachable, client.command, b"x")
        self.assertIn(f"node turing at {url} is unreachable", error.message)
        self.assertIn("check that it is running", error.message)

    def test_timeout_is_not_retried(self) -> None:
        """A 504 for a command is reported at once: its outcome is unknown, resending could
        apply it twice."""
        node = start_fake_node(self, error_reply(504, "timeout", "not committed in time"))
        error = self.assertRaises(ClientError, make_client([node.url]).command, b"x")
        self.assertEqual((error.code, error.status), ("timeout", 504))
        self.assertEqual(len(node.seen), 1)

    def test_error_body_is_parsed(self) -> None:
        """The API's JSON error becomes code, status and a message naming the node."""
        node = start_fake_node(self, error_reply(400, "bad_request", "bad base64"))
        client = make_client([node.url], names={node.url: "ritchie"})
        error = self.assertRaises(ClientError, client.command, b"x")
        self.assertEqual((error.code, error.status), ("bad_request", 400))
        self.assertEqual(error.message, "ritchie: bad_request (400): bad base64")

    def test_fsm_error_carries_index(self) -> None:
        """A 422 fsm_error keeps the index the rejected command was committed at."""
        node = start_fake_node(
            self,
            json_reply(
                422, {"error": {"code": "fsm_error", "message": "no such table: t"}, "index": 9}
            ),
        )
        error = self.assertRaises(ClientError, make_client([node.url]).command, b"x")
        self.assertEqual((error.code, error.index), ("fsm_error", 9))

    def test_non_json_error(self) -> None:
        """A non-JSON error answer (e.g. from a proxy) still gives a one-line error."""
        node = start_fake_node(self, Reply(status=502, body=b"Bad Gateway\nmore\n"))
        error = self.assertRaises(ClientError, make_client([node.url]).command, b"x")
        self.assertEqual((error.code, error.status), ("http_502", 502))
        self.assertNotIn("\n", error.message)

    def test_token_is_sent(self) -> None:
        """With a token, requests carry it as a bearer Authorization header."""
        node = start_fake_node(self)
        make_client([node.url], token="s3cret").command(b"x")
        self.assertEqual(node.seen[0].headers["authorization"], "Bearer s3cret")


class QueryTests(SynchronousTestCase):
    def test_query_parameters(self) -> None:
        """Consistency, min_index and max_lag_ms travel as query parameters; the body is the
        query."""
        node = start_fake_node(self, Reply(body=b"{}"))
        make_client([node.url]).query(b"SELECT 1;", consistency="weak", min_index=4, max_lag_ms=100)
        self.assertEqual(node.seen[0].path, "/query?consistency=weak&min_index=4&max_lag_ms=100")
        self.assertEqual(node.seen[0].body, b"SELECT 1;")

    def test_query_timeout_is_retried(self) -> None:
        """Reads are idempotent, so a 504 is retried like no_leader."""
        node = start_fake_node(self, Reply(body=b"{}"))
        node.script = [error_reply(504, "timeout", "read index not confirmed")]
        make_client([node.url]).query(b"q", consistency="strong")
        self.assertEqual(len(node.seen), 2)

    def test_bad_query_is_not_retried(self) -> None:
        """A 400 (e.g. a write statement sent as a query) is reported at once."""
        node = start_fake_node(self, error_reply(400, "bad_request", "queries must not write"))
        error = self.assertRaises(ClientError, make_client([node.url]).query, b"DELETE FROM t")
        self.assertEqual(error.code, "bad_request")
        self.assertEqual(len(node.seen), 1)


class StatusTests(SynchronousTestCase):
    def test_status_all_includes_unreachable_members(self) -> None:
        """Every member gets a row in order; an unreachable one has an error, not an exception."""
        a = start_fake_node(self, json_reply(200, {"id": "a", "role": "leader"}))
        b = start_fake_node(self, json_reply(200, {"id": "b", "role": "follower"}))
        dead = dead_url()
        names = {a.url: "a", dead: "c", b.url: "b"}
        members = status_all(make_client([a.url, dead, b.url], names=names))
        self.assertEqual([m.node for m in members], ["a", "c", "b"])
        self.assertEqual([m.reachable for m in members], [True, False, True])
        self.assertEqual(members[0].status, {"id": "a", "role": "leader"})
        error = members[1].error
        assert error is not None
        self.assertIn("unreachable", error)

    def test_status_non_json_is_a_row_error(self) -> None:
        """A member answering /status with something that is not JSON is shown as an error."""
        node = start_fake_node(self, Reply(body=b"<html>"))
        [member] = status_all(make_client([node.url]))
        self.assertFalse(member.reachable)
        self.assertEqual(member.error, "answered /status with non-JSON")


MEMBERS = {
    "leader": "alpha",
    "voters": ["alpha", "beta"],
    "learners": ["gamma"],
    "addresses": {
        "alpha": {"host": "127.0.0.1", "p2p": 19080, "api": 18080},
        "beta": {"host": "127.0.0.1", "p2p": 19081, "api": 18081},
        "gamma": {"host": "127.0.0.1", "p2p": 19082, "api": 18082},
    },
}


class RawNode:
    """A one-shot server on 127.0.0.1 that answers any request with ``raw`` bytes and closes:
    for answers FakeNode cannot give (a body shorter than its Content-Length)."""

    def __init__(self, raw: bytes) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(1)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, args=(raw,), daemon=True)
        self._thread.start()

    def _serve(self, raw: bytes) -> None:
        try:
            conn, _ = self._sock.accept()
        except OSError:
            return
        with conn:
            conn.recv(65536)
            conn.sendall(raw)

    def stop(self) -> None:
        self._sock.close()
        self._thread.join(timeout=5)


class AdminTests(SynchronousTestCase):
    def test_members(self) -> None:
        """members() GETs /cluster/members and returns the document."""
        node = start_fake_node(self, json_reply(200, MEMBERS))
        self.assertEqual(make_client([node.url]).members(), MEMBERS)
        self.assertEqual([(s.method, s.path) for s in node.seen], [("GET", "/cluster/members")])

    def test_add_member_sends_json(self) -> None:
        """add_member POSTs the member as JSON with id, host and ports."""
        node = start_fake_node(self, json_reply(200, MEMBERS))
        make_client([node.url]).add_member("delta", "10.0.0.4", 9083, 8083)
        seen = node.seen[0]
        self.assertEqual((seen.method, seen.path), ("POST", "/cluster/members"))
        self.assertEqual(seen.headers["content-type"], "application/json")
        self.assertEqual(
            json.loads(seen.body),
            {"id": "delta", "host": "10.0.0.4", "ports": {"p2p": 9083, "api": 8083}},
        )

    def test_admin_retries_no_leader_but_not_refusals(self) -> None:
        """A no_leader answer is retried (nothing was accepted); a refusal is raised at once."""
        node = start_fake_node(self, json_reply(200, MEMBERS))
        node.script.append(error_reply(503, "no_leader", "election"))
        make_client([node.url]).remove_member("gamma")
        self.assertEqual([s.path for s in node.seen], ["/cluster/members/gamma"] * 2)
        self.assertEqual(node.seen[0].method, "DELETE")
        node.script.append(error_reply(400, "bad_request", "a change is in progress"))
        with self.assertRaises(ClientError) as caught:
            make_client([node.url]).remove_member("gamma")
        self.assertEqual(caught.exception.code, "bad_request")
        self.assertEqual(len(node.seen), 3)

    def test_transfer_and_snapshot(self) -> None:
        """transfer_leadership POSTs {"id": target} (null for any); take_snapshot POSTs an empty
        body; both return the JSON answer."""
        node = start_fake_node(self, json_reply(200, {"leader": "beta", "term": 4}))
        client = make_client([node.url])
        self.assertEqual(client.transfer_leadership("beta"), {"leader": "beta", "term": 4})
        client.transfer_leadership()
        client.take_snapshot()
        self.assertEqual(
            [json.loads(s.body or b"null") for s in node.seen], [{"id": "beta"}, {"id": None}, None]
        )
        self.assertEqual(
            [s.path for s in node.seen], ["/cluster/leader"] * 2 + ["/cluster/snapshot"]
        )

    def test_non_json_answer(self) -> None:
        """A 200 that is not a JSON object is a bad_answer error, not a crash."""
        node = start_fake_node(self, Reply(body=b"<html>"))
        with self.assertRaises(ClientError) as caught:
            make_client([node.url]).members()
        self.assertEqual(caught.exception.code, "bad_answer")

    def test_shutdown_and_wait(self) -> None:
        """shutdown POSTs /shutdown to that node; wait_until_down is False while /health still
        answers and True once nothing listens."""
        node = start_fake_node(self, json_reply(202, {"stopping": "alpha"}))
        client = make_client([node.url], timeout=0.5)
        self.assertEqual(client.shutdown(node.url), {"stopping": "alpha"})
        self.assertEqual((node.seen[0].method, node.seen[0].path), ("POST", "/shutdown"))
        self.assertFalse(client.wait_until_down(node.url))
        self.assertEqual({s.path for s in node.seen[1:]}, {"/health"})
        self.assertTrue(make_client([dead_url()]).wait_until_down(dead_url()))


class SaveSnapshotTests(SynchronousTestCase):
    def target(self) -> Path:
        directory = Path(self.mktemp())
        directory.mkdir()
        return directory / "backup.snap"

    def test_saved_with_metadata(self) -> None:
        """The body lands in the file; index, term, fsm and size come from the headers; no
        temporary file is left behind; a dead member is skipped."""
        data = bytes(range(256)) * 8192  # 2 MiB, several copy chunks
        headers = {
            "Content-Type": "application/octet-stream",
            "Graft-Snapshot-Index": "41",
            "Graft-Snapshot-Term": "5",
            "Graft-Snapshot-Fsm": "sqlite",
        }
        node = start_fake_node(self, Reply(body=data, headers=headers))
        path = self.target()
        path.write_bytes(b"older backup")
        saved = make_client([dead_url(), node.url]).save_snapshot(path)
        self.assertEqual(path.read_bytes(), data)
        self.assertEqual(
            (saved.index, saved.term, saved.fsm, saved.size), (41, 5, "sqlite", len(data))
        )
        self.assertEqual(list(path.parent.iterdir()), [path])
        self.assertEqual(node.seen[0].path, "/cluster/snapshot")

    def test_cut_off_download_leaves_nothing(self) -> None:
        """A body shorter than its Content-Length is an error; the old file stays and the
        temporary file is removed."""
        raw = (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Length: 1000\r\nConnection: close\r\n\r\n" + b"x" * 10
        )
        node = RawNode(raw)
        self.addCleanup(node.stop)
        path = self.target()
        path.write_bytes(b"older backup")
        with self.assertRaises(ClientError) as caught:
            make_client([node.url]).save_snapshot(path)
        self.assertIn("cut off after 10 of 1000 bytes", caught.exception.message)
        self.assertEqual(path.read_bytes(), b"older backup")
        self.assertEqual(list(path.parent.iterdir()), [path])

    def test_no_snapshot(self) -> None:
        """A 404 is the node's not_found error and no file is created."""
        node = start_fake_node(self, error_reply(404, "not_found", "no snapshot yet"))
        path = self.target()
        with self.assertRaises(ClientError) as caught:
            make_client([node.url]).save_snapshot(path)
        self.assertEqual(caught.exception.code, "not_found")
        self.assertEqual(list(path.parent.iterdir()), [])


class RetryUnreachableTests(SynchronousTestCase):
    def test_unreachable_fails_at_once_when_asked(self) -> None:
        """With retry_unreachable=False a dead member is an Unreachable error without any
        sleep, instead of being retried until the deadline."""
        fake = FakeTime()
        client = GraftClient(
            urls=[dead_url()],
            timeout=60.0,
            sleep=fake.sleep,
            clock=fake.clock,
            retry_unreachable=False,
        )
        with self.assertRaises(Unreachable):
            client.add_member("delta", "127.0.0.1", 1, 2)
        self.assertEqual(fake.sleeps, [])


class RedirectCredentialTests(SynchronousTestCase):
    """The token goes only where the client was told to talk (issue 14, item 5): it used to be
    re-sent on any redirect, to another host or from https to http."""

    def test_token_dropped_on_redirect_to_another_origin(self) -> None:
        """A 307 to a host the client was not given gets the request without Authorization."""
        stranger = start_fake_node(self, Reply(body=b"done"))
        elsewhere = stranger.url.replace("127.0.0.1", "localhost")  # another origin
        member = start_fake_node(
            self, Reply(status=307, headers={"Location": elsewhere + "/command"})
        )
        response = make_client([member.url], token="s3cret").command(b"x")
        self.assertEqual(response.body, b"done")
        self.assertEqual(member.seen[0].headers.get("authorization"), "Bearer s3cret")
        self.assertEqual([s.body for s in stranger.seen], [b"x"])
        self.assertNotIn("authorization", stranger.seen[0].headers)

    def test_token_kept_to_a_known_member_and_same_origin(self) -> None:
        """A redirect to another member the client knows (a follower pointing at the leader)
        or within the same origin keeps the token."""
        leader = start_fake_node(self, Reply(body=b"done"))
        follower = start_fake_node(
            self, Reply(status=307, headers={"Location": leader.url + "/command"})
        )
        make_client([follower.url, leader.url], token="s3cret").command(b"x")
        self.assertEqual(leader.seen[0].headers.get("authorization"), "Bearer s3cret")
        leader.script.append(Reply(status=307, headers={"Location": "/command?again=1"}))
        make_client([leader.url], token="s3cret").command(b"y")
        self.assertEqual(
            [s.headers.get("authorization") for s in leader.seen[1:]], ["Bearer s3cret"] * 2
        )

    def test_once_dropped_stays_dropped(self) -> None:
        """A redirect chain that leaves for a stranger and comes back does not get it back."""
        member = start_fake_node(self)
        stranger = start_fake_node(
            self, Reply(status=307, headers={"Location": member.url + "/command"})
        )
        member.script.append(
            Reply(
                status=307,
                headers={"Location": stranger.url.replace("127.0.0.1", "localhost") + "/c"},
            )
        )
        make_client([member.url], token="s3cret").command(b"x")
        self.assertEqual(
            [s.headers.get("authorization") for s in member.seen], ["Bearer s3cret", None]
        )

    def test_https_to_http_never_carries_it(self) -> None:
        client = make_client(["https://a.example:8443", "http://b.example:8080"], token="t")
        may = client._may_carry_credentials
        self.assertFalse(may("https://a.example:8443/command", "http://a.example:8443/command"))
        self.assertFalse(may("https://a.example:8443/command", "http://b.example:8080/command"))
        self.assertTrue(may("https://a.example:8443/x", "https://a.example:8443/y"))
        self.assertTrue(may("http://b.example:8080/x", "https://a.example:8443/y"))
        self.assertTrue(may("https://a.example/x", "https://A.example:443/y"))
        self.assertFalse(may("https://a.example:8443/x", "https://c.example:8443/y"))
        self.assertFalse(may("http://b.example:8080/x", "http://b.example:8081/y"))


class PublicNamesTests(SynchronousTestCase):
    def test_documented_names_import_from_graft_client(self) -> None:
        """What users import from graft.client (docs/api.md) is there, listed in its
        ``__all__``, and is the very class Graft's own modules raise and return."""
        import graft.client
        import graft.client_errors
        import graft.client_requests

        documented = {
            "GraftClient": graft.client.GraftClient,
            "ClientError": graft.client_errors.ClientError,
            "OutcomeUnknown": graft.client_errors.OutcomeUnknown,
            "Unreachable": graft.client_errors.Unreachable,
            "Response": graft.client_requests.Response,
            "SavedSnapshot": graft.client.SavedSnapshot,
        }
        for name, defined in documented.items():
            self.assertIs(getattr(graft.client, name, None), defined, name)
        self.assertEqual(set(graft.client.__all__), set(documented))
