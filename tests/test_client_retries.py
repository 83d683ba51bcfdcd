"""graft.client retries only what retrying can fix: ``no_leader`` (and a read's ``timeout``)
until the deadline, ``no_quorum`` on the other members only, never ``stale`` or any 4xx; and
its final words repeat no advice."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from graft.client import ClientError, GraftClient
from graft.testing.ports import dead_url
from tests.support.http_node import Reply, error_reply, start_fake_node
from tests.test_client import make_client


class NotRetriedTests(SynchronousTestCase):
    def test_stale_is_not_retried(self) -> None:
        """A 409 stale weak read is reported at once, with its own code, not as no leader."""
        node = start_fake_node(
            self, error_reply(409, "stale", "b last heard from a leader 12 ms ago")
        )
        client = make_client([node.url])
        error = self.assertRaises(ClientError, client.query, b"q", consistency="weak", max_lag_ms=1)
        self.assertEqual((error.code, error.status), ("stale", 409))
        self.assertNotIn("no leader", error.message)
        self.assertEqual(len(node.seen), 1)

    def test_no_4xx_is_retried(self) -> None:
        """A 4xx is never retried, whatever its code, even one a caller named retryable."""
        for status, code in ((400, "min_index_beyond_log"), (409, "stale"), (400, "no_leader")):
            node = start_fake_node(self, error_reply(status, code, "no"))
            client = make_client([node.url])
            error = self.assertRaises(ClientError, client.query, b"q", min_index=10**6)
            self.assertEqual(error.code, code)
            self.assertEqual(len(node.seen), 1, code)


class RetriedTests(SynchronousTestCase):
    def test_no_quorum_moves_on_to_a_member_in_the_majority(self) -> None:
        """A node in a minority answers no_quorum; the next member (in the majority) answers."""
        minority = start_fake_node(self, error_reply(503, "no_quorum", "a reaches 1 of 3"))
        majority = start_fake_node(self, Reply(body=b"ok"))
        answer = make_client([minority.url, majority.url]).command(b"x")
        self.assertEqual(answer.body, b"ok")
        self.assertEqual((len(minority.seen), len(majority.seen)), (1, 1))

    def test_no_quorum_everywhere_ends_at_once(self) -> None:
        """When every member answers no_quorum or not at all, the request ends after one walk
        of the list, not at the deadline: the error keeps its code and the node's message (the
        voters out of reach, what to do) and adds no advice of its own."""
        message = (
            "lovelace cannot reach a majority of the voters: it reaches 1 of 3 (2 needed) and "
            "has no connection to ritchie, turing; start those nodes or fix the network to "
            "them (`graft status` shows which are up)"
        )
        node = start_fake_node(self, error_reply(503, "no_quorum", message))
        client = make_client([node.url, dead_url()], timeout=30.0)
        error = self.assertRaises(ClientError, client.command, b"x")
        self.assertEqual((error.code, error.status), ("no_quorum", 503))
        self.assertIn("ritchie, turing", error.message)
        self.assertEqual(error.message.count("graft status"), 1, error.message)
        self.assertEqual(error.message.count("majority"), 1, error.message)
        self.assertEqual(len(node.seen), 1)

    def test_one_member_without_quorum_is_asked_once(self) -> None:
        """A single member that answers no_quorum is not asked again (real clock: a loop
        would ask it many times within the 2 s timeout)."""
        node = start_fake_node(self, error_reply(503, "no_quorum", "a reaches 1 of 3"))
        error = self.assertRaises(
            ClientError, GraftClient(urls=[node.url], timeout=2.0, session=False).command, b"x"
        )
        self.assertEqual(error.code, "no_quorum")
        self.assertEqual(len(node.seen), 1)

    def test_no_leader_advice_is_given_once(self) -> None:
        """no_leader until the deadline: the node's "retry shortly" is dropped (the client has
        retried) and the advice to check `graft status` comes once."""
        node = start_fake_node(
            self,
            error_reply(503, "no_leader", "no leader is known: an election is under way; retry"),
        )
        error = self.assertRaises(ClientError, make_client([node.url], timeout=1.0).command, b"x")
        self.assertEqual(error.code, "no_leader")
        self.assertNotIn("retry)", error.message)
        self.assertNotIn("; retry", error.message)
        self.assertEqual(error.message.count("graft status"), 1, error.message)
