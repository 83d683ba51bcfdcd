"""The web console's routes (graft.api.console): the page and its files, and /ui/cluster,
which gathers every member's /status on the node that served the page."""

from __future__ import annotations

from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError

from graft.api.app import GraftApi
from graft.api.settings import ApiSettings
from tests.api.fakes import READER, ApiTestCase, Settings, bearer, tokens


class FakeFetcher:
    """Answers members' /status from a dict by URL; a missing URL is a refused connection."""

    def __init__(self, answers: dict[str, dict[str, Any]]) -> None:
        self.answers = answers
        self.raises: dict[str, str] = {}  # url -> the message of an exception raised at once
        self.calls: list[tuple[str, bytes | None]] = []

    def __call__(self, url: str, authorization: bytes | None) -> Deferred[dict[str, Any]]:
        self.calls.append((url, authorization))
        if url in self.raises:
            raise ValueError(self.raises[url])
        if url in self.answers:
            return succeed(self.answers[url])
        return fail(ConnectionRefusedError("Connection was refused"))


class ConsoleTests(ApiTestCase):
    def serve(self, settings: ApiSettings) -> None:
        self.settings = settings
        self.fetcher = FakeFetcher({"http://127.0.0.1:8081/status": {"id": "ritchie", "term": 3}})
        api = GraftApi(self.backend, settings, reactor=self.clock)
        api._status_fetcher = self.fetcher
        self.stub: Any = StubTreq(api.resource())

    def test_page_and_files_need_no_token(self) -> None:
        """With tokens configured the page still loads (it asks for a token itself), with a
        policy that allows only this node's own script, style and fetches."""
        self.serve(Settings(tokens=tokens(read=READER)))
        for path, kind in (
            ("/ui", "text/html"),
            ("/ui/", "text/html"),
            ("/ui/console.js", "text/javascript"),
            ("/ui/console.css", "text/css"),
        ):
            with self.subTest(path):
                answer = self.call("GET", path)
                self.assertEqual(answer.status, 200, answer.body)
                self.assertTrue(str(answer.header("Content-Type")).startswith(kind))
                policy = str(answer.header("Content-Security-Policy"))
                self.assertIn("default-src 'none'", policy)
                self.assertIn("connect-src 'self'", policy)
        page = self.call("GET", "/ui").body
        self.assertIn(b'src="/ui/console.js"', page)
        self.assertNotIn(b"http", page.replace(b"http-equiv", b""))  # nothing from elsewhere

    def test_cluster_needs_a_read_token(self) -> None:
        self.serve(Settings(tokens=tokens(read=READER)))
        self.assertError(self.call("GET", "/ui/cluster"), 401, "unauthorized")
        self.assertEqual(self.fetcher.calls, [], "no member is asked for an unauthorized caller")
        answer = self.call("GET", "/ui/cluster", headers=bearer(READER))
        self.assertEqual(answer.status, 200, answer.body)
        # The caller's token goes along to the members, which share the API tokens.
        self.assertIn(
            ("http://127.0.0.1:8081/status", f"Bearer {READER}".encode()), self.fetcher.calls
        )

    def test_cluster_shows_every_member_and_who_is_unreachable(self) -> None:
        self.backend.learners = ["hopper"]
        self.backend.api_urls["hopper"] = "http://127.0.0.1:8083"
        del self.backend.api_urls["lovelace"]
        document = self.call("GET", "/ui/cluster").json()
        self.assertEqual((document["node"], document["leader"]), ("turing", "turing"))
        members = {m["id"]: m for m in document["members"]}
        self.assertEqual(list(members), ["hopper", "lovelace", "ritchie", "turing"])
        self.assertEqual(members["turing"]["status"]["id"], "turing")  # its own, not fetched
        self.assertTrue(members["turing"]["reachable"])
        self.assertEqual(members["ritchie"]["status"], {"id": "ritchie", "term": 3})
        self.assertTrue(members["ritchie"]["reachable"])
        self.assertFalse(members["hopper"]["reachable"])
        self.assertIn("refused", members["hopper"]["error"])
        self.assertEqual((members["hopper"]["learner"], members["hopper"]["voter"]), (True, False))
        self.assertFalse(members["hopper"]["non_voter"])
        self.assertFalse(members["lovelace"]["reachable"])
        self.assertIn("API address is not known", members["lovelace"]["error"])
        self.assertEqual([url for url, _ in self.fetcher.calls].count(f"{_TURING}/status"), 0)

    def test_cluster_marks_non_voters(self) -> None:
        self.backend.learners = ["hopper"]
        self.backend.non_voters = ["hopper"]
        self.backend.api_urls["hopper"] = "http://127.0.0.1:8083"
        members = {m["id"]: m for m in self.call("GET", "/ui/cluster").json()["members"]}
        self.assertEqual(
            (members["hopper"]["learner"], members["hopper"]["non_voter"]), (True, True)
        )
        self.assertFalse(members["ritchie"]["non_voter"])

    def test_a_fetch_that_raises_makes_the_member_unreachable_not_a_500(self) -> None:
        self.fetcher.raises["https://10.0.0.3:8082/status"] = "no route to that address"
        answer = self.call("GET", "/ui/cluster")
        self.assertEqual(answer.status, 200, answer.body)
        members = {m["id"]: m for m in answer.json()["members"]}
        self.assertFalse(members["lovelace"]["reachable"])
        self.assertEqual(members["lovelace"]["error"], "no route to that address")
        self.assertTrue(members["ritchie"]["reachable"])

    def test_cluster_counts_this_nodes_writes_and_reads(self) -> None:
        self.assertEqual(self.call("POST", "/command", data=b"x").status, 200)
        self.assertEqual(self.call("POST", "/commands", data=b'["a", "b"]').status, 200)
        self.assertEqual(self.call("GET", "/query?q=x").status, 200)
        document = self.call("GET", "/ui/cluster").json()
        self.assertEqual(document["requests"], {"writes": 2.0, "reads": 1.0})

    def test_cluster_gives_the_histogram_of_this_nodes_writes_only(self) -> None:
        """The page reads p50/p99 off these buckets: cumulative, sorted by bound, ending
        with +Inf (null), and counting writes (single and batched), never reads."""
        empty = self.call("GET", "/ui/cluster").json()["write_latency"]
        self.assertEqual(empty, [])
        self.assertEqual(self.call("POST", "/command", data=b"x").status, 200)
        self.assertEqual(self.call("POST", "/commands", data=b'["a", "b"]').status, 200)
        self.assertEqual(self.call("GET", "/query?q=x").status, 200)
        buckets = self.call("GET", "/ui/cluster").json()["write_latency"]
        bounds = [bound for bound, _ in buckets]
        self.assertIsNone(bounds[-1], "the last bucket is +Inf")
        self.assertEqual(bounds[:-1], sorted(bounds[:-1]))
        counts = [count for _, count in buckets]
        self.assertEqual(counts, sorted(counts), "cumulative counts never fall")
        self.assertEqual(counts[-1], 2.0, "two write requests, the query not among them")

    def test_page_posts_from_its_own_origin_pass(self) -> None:
        """The console's own POSTs carry the node's origin: the Origin check lets them in."""
        answer = self.call(
            "POST",
            "/query?consistency=strong",
            data=b"SELECT 1",
            headers={"Origin": "http://127.0.0.1:8080", "Sec-Fetch-Site": "same-origin"},
        )
        self.assertEqual(answer.status, 200, answer.body)


_TURING = "http://127.0.0.1:8080"
