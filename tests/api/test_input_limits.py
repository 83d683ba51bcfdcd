"""Hostile request input (issue 14, item 5): integers out of range, JSON nested too deep or
holding huge numbers, batches over the cap. Each is a 400 or 413 and reaches no backend."""

from __future__ import annotations

from graft.config import ApiLimits
from graft.errors import Overloaded
from tests.api.fakes import ApiTestCase, Settings


class IntegerParameterTests(ApiTestCase):
    def test_thousands_of_digits_are_bad_request(self) -> None:
        """min_index with 5,000 digits (past Python's int digit limit: was a 500) and 4,000
        digits (under it: a follower failed to msgpack it for the leader, a 500) are 400s."""
        for digits in (5000, 4000, 20):
            for name in ("min_index", "max_lag_ms"):
                answer = self.call("GET", f"/query?q=x&{name}=" + "9" * digits)
                detail = self.assertError(answer, 400, "bad_request")
                self.assertIn("out of range", detail["message"])
                self.assertLess(len(detail["message"]), 200)
        self.assertEqual(self.backend.queries, [])

    def test_range_ends(self) -> None:
        """0 and 2**63-1 (leading zeros allowed) pass; 2**63 and negatives are 400s."""
        self.assertEqual(self.call("GET", "/query?q=x&min_index=000").status, 200)
        self.assertEqual(self.call("GET", f"/query?q=x&min_index={2**63 - 1}").status, 200)
        self.assertEqual(self.call("GET", f"/query?q=x&min_index=0{2**63 - 1}").status, 200)
        self.assertEqual([q.min_index for q in self.backend.queries], [0, 2**63 - 1, 2**63 - 1])
        for value in (str(2**63), "-1", "-0", "+5", "1e3", "٣"):
            answer = self.call("GET", f"/query?q=x&min_index={value}")
            self.assertError(answer, 400, "bad_request")
        self.assertEqual(len(self.backend.queries), 3)


class JsonBodyTests(ApiTestCase):
    """The API's own JSON bodies: the /commands batch and the administration bodies."""

    BOMBS = (
        b"[" * 5000,
        b"[" * 5000 + b"]" * 5000,
        b'{"a":' * 3000 + b"1" + b"}" * 3000,
        b'[["x"' + b",[" * 4000 + b"]" * 4001 + b"]",
    )
    ADMIN = (("POST", "/cluster/members"), ("POST", "/cluster/leader"))

    def test_deep_nesting_is_bad_request(self) -> None:
        """`[` x 5000 (was a 500: RecursionError) and other deep bodies are 400s, checked before
        parsing, on the batch and on every administrative body; nothing reaches the backend."""
        for body in self.BOMBS:
            for method, path in (("POST", "/commands"), *self.ADMIN):
                answer = self.call(method, path, data=body)
                detail = self.assertError(answer, 400, "bad_request")
                self.assertTrue(
                    "nests deeper" in detail["message"] or "do not balance" in detail["message"],
                    detail["message"],
                )
        self.assertEqual(self.backend.submitted, [])
        self.assertEqual(self.backend.admin_calls, [])

    def test_brackets_inside_strings_do_not_count(self) -> None:
        """Commands full of brackets and quotes (escaped) are strings: the batch passes."""
        commands = ["[" * 100, "{" * 100 + '\\"', '"]]]}}}', "\\" * 3]
        answer = self.call("POST", "/commands", json=commands)
        self.assertEqual(answer.status, 200, answer.body)
        self.assertEqual(self.backend.submitted, [[c.encode() for c in commands]])

    def test_nesting_within_the_bound_passes(self) -> None:
        """The depth check refuses only past 16 levels: a batch element nested 15 deep is
        refused by the batch's own rules (not a string), not by the depth check."""
        answer = self.call("POST", "/commands", data=b"[" * 16 + b"]" * 16)
        detail = self.assertError(answer, 400, "bad_request")
        self.assertIn("neither a string", detail["message"])

    def test_huge_integers_are_bad_request(self) -> None:
        """Integers of thousands of digits in a body are 400s naming the digit count."""
        for digits in (5000, 4000, 25):
            number = b"9" * digits
            member = b'{"id": "n4", "host": "h", "ports": {"p2p": ' + number + b', "api": 1}}'
            for method, path, body in (
                ("POST", "/cluster/members", member),
                ("POST", "/cluster/leader", b'{"id": ' + number + b"}"),
                ("POST", "/commands", b'["a", ' + number + b"]"),
            ):
                detail = self.assertError(self.call(method, path, data=body), 400, "bad_request")
                self.assertIn(f"of {digits} digits", detail["message"])
        self.assertEqual(self.backend.submitted, [])
        self.assertEqual(self.backend.admin_calls, [])


class BatchCapTests(ApiTestCase):
    def test_batch_over_the_cap_is_413(self) -> None:
        """A batch of max_batch_commands passes; one more command is 413 payload_too_large,
        and nothing is proposed (there was no cap: a 1 MiB body held ~260,000 commands)."""
        self.serve(Settings(limits=ApiLimits(max_batch_commands=3)))
        self.assertEqual(self.call("POST", "/commands", json=["a", "b", "c"]).status, 200)
        answer = self.call("POST", "/commands", json=["a", "b", "c", "d"])
        detail = self.assertError(answer, 413, "payload_too_large")
        self.assertIn("4 commands, over the limit of 3", detail["message"])
        self.assertEqual(self.backend.submitted, [[b"a", b"b", b"c"]])

    def test_default_cap(self) -> None:
        """The default (1000) holds the benchmarks' batches (100 and 500) and refuses 1001."""
        self.assertEqual(self.call("POST", "/commands", json=["x"] * 1000).status, 200)
        answer = self.call("POST", "/commands", json=["x"] * 1001)
        self.assertError(answer, 413, "payload_too_large")
        self.assertEqual([len(b) for b in self.backend.submitted], [1000])


class OverloadedTests(ApiTestCase):
    def test_overloaded_is_503_with_retry_after(self) -> None:
        """The backend's Overloaded (too many waiting reads or proposals) is a 503 overloaded
        with Retry-After, for commands, batches and queries alike."""
        self.backend.failure = Overloaded("10000 reads are waiting: retry shortly")
        for method, path, body in (
            ("POST", "/command", b"x"),
            ("POST", "/commands", b'["x"]'),
            ("GET", "/query?consistency=weak&min_index=99", b"q"),
        ):
            answer = self.call(method, path, data=body)
            detail = self.assertError(answer, 503, "overloaded")
            self.assertEqual(detail["message"], "10000 reads are waiting: retry shortly")
            self.assertEqual(answer.header("Retry-After"), "1")


class ParsedDepthTests(ApiTestCase):
    """The depth bound holds for valid JSON the decoder parses whole (deeper than 16, far
    below the recursion limit), wherever the deep part is, and on a dict's values too."""

    def test_valid_json_past_the_bound_is_refused(self) -> None:
        for body in (
            b"[" * 17 + b"]" * 17,
            b'["a", ' + b"[" * 16 + b"]" * 16 + b', "b"]',
            b'[{"b64": ' + b'{"x": ' * 16 + b"1" + b"}" * 16 + b"}]",
        ):
            detail = self.assertError(self.call("POST", "/commands", data=body), 400, "bad_request")
            self.assertIn("nests deeper than 16 levels", detail["message"])
        self.assertEqual(self.backend.submitted, [])
