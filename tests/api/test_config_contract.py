"""graft.config.ApiConfig is what the node passes in: it must satisfy ApiSettings."""

from __future__ import annotations

from types import MappingProxyType

from graft.api.auth import token_digest
from graft.api.settings import ApiSettings
from graft.config import ApiConfig
from tests.api.fakes import ApiTestCase


class ApiConfigContractTests(ApiTestCase):
    def test_default_config_serves(self) -> None:
        """The default ApiConfig (no tokens, 1 MiB) serves commands without authentication."""
        settings: ApiSettings = ApiConfig()  # mypy checks the protocol here
        self.serve(settings)
        self.assertEqual(self.call("POST", "/command", data=b"x").status, 200)
        self.assertEqual(settings.max_body_bytes, 1024 * 1024)

    def test_config_tokens_enforced(self) -> None:
        """Tokens configured in an ApiConfig are enforced."""
        digests = MappingProxyType({"read": frozenset({token_digest("t")})})
        self.serve(ApiConfig(tokens=digests))
        self.assertError(self.call("GET", "/status"), 401, "unauthorized")
        answer = self.call("GET", "/status", headers={"Authorization": "Bearer t"})
        self.assertEqual(answer.status, 200)
