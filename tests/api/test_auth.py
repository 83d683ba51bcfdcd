"""Bearer tokens and roles, in memory."""

from __future__ import annotations

from graft.api.auth import Role, TokenAuthority, token_digest
from graft.errors import Forbidden, Unauthorized
from tests.api.fakes import ADMIN, READER, TOKEN_OF, WRITER, ApiTestCase, Settings, bearer, tokens

# (method, path, body, role needed); /health needs none.
ROUTES = [
    ("GET", "/query?q=1", None, Role.READ),
    ("POST", "/query", b"1", Role.READ),
    ("GET", "/status", None, Role.READ),
    ("GET", "/ready", None, Role.READ),
    ("GET", "/metrics", None, Role.READ),
    ("POST", "/command", b"x", Role.WRITE),
    ("POST", "/commands", b'["x"]', Role.WRITE),
]
ROOT = "r00t-token"  # configured, but under a role name that does not exist


class TokenTests(ApiTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.serve(Settings(tokens=tokens(read=READER, write=WRITER, admin=ADMIN)))

    def test_missing_token(self) -> None:
        """Without a token every route but /health is 401 unauthorized with
        WWW-Authenticate: Bearer, and the backend is not asked."""
        for method, path, body, _ in ROUTES:
            answer = self.call(method, path, data=body)
            self.assertError(answer, 401, "unauthorized")
            self.assertTrue(str(answer.header("WWW-Authenticate")).startswith("Bearer"))
        self.assertEqual((self.backend.submitted, self.backend.queries), ([], []))

    def test_health_is_open(self) -> None:
        """/health needs no token."""
        self.assertEqual(self.call("GET", "/health").status, 200)

    def test_wrong_token(self) -> None:
        """An unknown token, or another scheme, is 401 unauthorized."""
        for header in ("Bearer nope", "Basic cjNhZC10b2tlbg==", "Bearer", READER):
            answer = self.call("GET", "/status", headers={"Authorization": header})
            self.assertError(answer, 401, "unauthorized")

    def test_roles(self) -> None:
        """Each role reaches the routes of its level and below; above it is 403 forbidden."""
        for method, path, body, needed in ROUTES:
            for role, token in TOKEN_OF.items():
                answer = self.call(method, path, data=body, headers=bearer(token))
                if role >= needed:
                    self.assertEqual(answer.status, 200, (path, role, answer.body))
                else:
                    detail = self.assertError(answer, 403, "forbidden")
                    self.assertIn(needed.name.lower(), detail["message"])

    def test_forbidden_submits_nothing(self) -> None:
        """A read token cannot submit a command."""
        answer = self.call("POST", "/command", data=b"x", headers=bearer(READER))
        self.assertError(answer, 403, "forbidden")
        self.assertEqual(self.backend.submitted, [])

    def test_scheme_is_case_insensitive(self) -> None:
        """'bearer' in lower case is accepted, as RFC 6750 allows."""
        answer = self.call("GET", "/status", headers={"Authorization": f"bearer {READER}"})
        self.assertEqual(answer.status, 200)

    def test_no_tokens_means_open(self) -> None:
        """With no tokens configured every route is open."""
        self.serve(Settings(tokens={"read": frozenset(), "write": frozenset()}))
        self.assertEqual(self.call("POST", "/command", data=b"x").status, 200)


class TokenAuthorityTests(ApiTestCase):
    def test_digest_case(self) -> None:
        """Configured digests match in any hex case."""
        authority = TokenAuthority({"write": frozenset({token_digest(WRITER).upper()})})
        authority.authorize(f"Bearer {WRITER}", Role.WRITE)
        self.assertRaises(Forbidden, authority.authorize, f"Bearer {WRITER}", Role.ADMIN)

    def test_unknown_roles_grant_nothing(self) -> None:
        """A token whose digest is configured, but under a role name that is not read, write
        or admin, grants nothing: 401 as for an unknown token, for every role."""
        authority = TokenAuthority(
            {"write": frozenset({token_digest(WRITER)}), "root": frozenset({token_digest(ROOT)})}
        )
        for role in Role:
            self.assertRaises(Unauthorized, authority.authorize, f"Bearer {ROOT}", role)
        self.serve(
            Settings(tokens={**tokens(read=READER), "root": frozenset({token_digest(ROOT)})})
        )
        for method, path, body, _ in ROUTES:
            answer = self.call(method, path, data=body, headers=bearer(ROOT))
            self.assertError(answer, 401, "unauthorized")

    def test_highest_role_wins(self) -> None:
        """A token listed under several roles gets the highest."""
        digest = token_digest("shared")
        authority = TokenAuthority({"read": frozenset({digest}), "admin": frozenset({digest})})
        authority.authorize("Bearer shared", Role.ADMIN)
