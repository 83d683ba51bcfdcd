"""graft.config: api.limits and api.allowed_origins (issue 14, item 5)."""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from graft.config import ApiConfig, ApiLimits, ConfigError, load_config
from graft.origin import normalize_origin
from tests.test_config import PEERS


class ApiLimitsConfigTests(SynchronousTestCase):
    def load(self, api: str) -> ApiConfig:
        directory = Path(self.mktemp())
        directory.mkdir()
        path = directory / "cluster.yaml"
        path.write_text(PEERS + api, encoding="utf-8")
        return load_config(path).api

    def fails(self, api: str) -> str:
        error = self.assertRaises(ConfigError, self.load, api)
        return str(error).split(": ", 1)[1]

    def test_defaults(self) -> None:
        api = self.load("")
        self.assertEqual(api.limits, ApiLimits())
        self.assertEqual(api.allowed_origins, frozenset())
        self.assertEqual(ApiLimits().max_batch_commands, 1000)

    def test_values(self) -> None:
        api = self.load(
            "api:\n"
            "  limits: {max_batch_commands: 10, max_pending_commands: 10, max_read_waiters: 5,\n"
            "           max_connections: 7, request_deadline_ms: 2000}\n"
            "  allowed_origins: ['HTTPS://Console.Example.com:443/', 'http://[::1]:8080']\n"
        )
        self.assertEqual(
            api.limits,
            ApiLimits(
                max_batch_commands=10,
                max_pending_commands=10,
                max_read_waiters=5,
                max_connections=7,
                request_deadline_ms=2000,
            ),
        )
        self.assertEqual(
            api.allowed_origins,
            frozenset({"https://console.example.com", "http://[::1]:8080"}),
        )

    def test_bad_values(self) -> None:
        cases = [
            (
                "api: {limits: {max_connections: 0}}\n",
                "api.limits.max_connections: 0 is not positive; expected a positive integer",
            ),
            (
                "api: {limits: {max_batch: 5}}\n",
                "api.limits.max_batch: unknown key; did you mean api.limits.max_batch_commands?",
            ),
            (
                "api: {limits: {max_pending_commands: 999}}\n",
                "api.limits.max_pending_commands: 999 is less than api.limits.max_batch_commands "
                "(1000); expected room for at least one whole batch",
            ),
            (
                "api: {allowed_origins: ['https://x.example/app']}\n",
                'api.allowed_origins[0]: "https://x.example/app" is not an origin; expected '
                "scheme://host[:port] with scheme http or https and no path",
            ),
            (
                "api: {allowed_origins: 5}\n",
                "api.allowed_origins: 5 is an integer; expected a list of origins such as "
                '"https://console.example.com:8443"',
            ),
        ]
        for text, expected in cases:
            with self.subTest(text):
                self.assertEqual(self.fails(text), expected)


class NormalizeOriginTests(SynchronousTestCase):
    def test_forms(self) -> None:
        self.assertEqual(normalize_origin("http://127.0.0.1:8080"), "http://127.0.0.1:8080")
        self.assertEqual(normalize_origin("HTTP://LocalHost:80"), "http://localhost")
        self.assertEqual(normalize_origin("https://[::1]:443"), "https://[::1]")
        for bad in ("null", "", "file://x", "http://", "http://u@h", "http://h:99999", "h:1"):
            self.assertIsNone(normalize_origin(bad), bad)
