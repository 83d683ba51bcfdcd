"""Hostile request input (issue 14, item 5): integers out of range, JSON nested too deep or
holding huge numbers, batches over the cap. Each is a 400 or 413 and reaches no backend."""

from __future__ import annotations

from tests.api.fakes import ApiTestCase


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
