"""Cross-origin browser requests that change state are refused (issue 14, item 5).

A web page in an operator's browser could POST `DROP TABLE` to the API: browsers send such a
form or no-cors fetch without asking, and say where the page came from in `Origin`."""

from __future__ import annotations

from tests.api.fakes import ApiTestCase, Settings, tokens

WRITES = (
    ("POST", "/command", b"DROP TABLE users"),
    ("POST", "/commands", b'["DROP TABLE users"]'),
    ("POST", "/cluster/snapshot", b""),
    ("POST", "/cluster/leader", b""),
    ("DELETE", "/cluster/members/ritchie", b""),
    ("POST", "/shutdown", b""),
)


class OriginTests(ApiTestCase):
    def assertRefused(self, headers: dict[str, str]) -> None:
        for method, path, body in WRITES:
            answer = self.call(method, path, data=body, headers=headers)
            detail = self.assertError(answer, 403, "forbidden")
            self.assertIn("browser", detail["message"])
        self.assertEqual(self.backend.submitted, [])
        self.assertEqual(self.backend.admin_calls, [])
        self.clock.advance(1)
        self.assertEqual(self.backend.shutdowns, 0)

    def test_foreign_origin_is_refused(self) -> None:
        """A page on another origin (or an opaque "null" one, or the API's host on another
        port or scheme) cannot change state: 403 forbidden, nothing done."""
        for origin in (
            "https://evil.example",
            "null",
            "http://127.0.0.1:9999",
            "https://127.0.0.1:8080",
            "http://127.0.0.1:8080.evil.example",
        ):
            with self.subTest(origin):
                self.assertRefused({"Origin": origin})

    def test_foreign_origin_refused_even_with_a_token(self) -> None:
        """The browser may hold a token (a cookie-less API, but a pasted one in a tool): the
        origin is checked first."""
        self.serve(Settings(tokens=tokens(admin="secret")))
        self.assertRefused({"Origin": "https://evil.example", "Authorization": "Bearer secret"})

    def test_sec_fetch_site_without_origin(self) -> None:
        self.assertRefused({"Sec-Fetch-Site": "cross-site"})
        self.assertRefused({"Sec-Fetch-Site": "same-site"})

    def test_own_origin_and_allowed_origins_pass(self) -> None:
        """The node's own API origin (and localhost forms of a loopback one), or an origin in
        api.allowed_origins, may write."""
        for origin in (
            "http://127.0.0.1:8080",
            "http://LOCALHOST:8080",
            "http://[::1]:8080",
        ):
            answer = self.call("POST", "/command", data=b"x", headers={"Origin": origin})
            self.assertEqual(answer.status, 200, (origin, answer.body))
        self.serve(Settings(allowed_origins=frozenset({"https://console.example"})))
        answer = self.call(
            "POST", "/command", data=b"y", headers={"Origin": "https://console.example:443"}
        )
        self.assertEqual(answer.status, 200, answer.body)
        self.assertEqual(self.backend.submitted, [[b"x"], [b"x"], [b"x"], [b"y"]])

    def test_clients_without_origin_keep_working(self) -> None:
        """curl (form content type by default), the CLI (text/plain, application/json) and
        same-origin fetches are not affected; reads are never checked."""
        for content_type in (
            "application/x-www-form-urlencoded",
            "text/plain",
            "application/json",
        ):
            answer = self.call(
                "POST", "/command", data=b"x", headers={"Content-Type": content_type}
            )
            self.assertEqual(answer.status, 200, answer.body)
        answer = self.call("POST", "/command", data=b"x", headers={"Sec-Fetch-Site": "same-origin"})
        self.assertEqual(answer.status, 200)
        answer = self.call("GET", "/query?q=x", headers={"Origin": "https://evil.example"})
        self.assertEqual(answer.status, 200)
