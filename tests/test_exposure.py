"""The loud warning for an API open beyond loopback without tokens (issue 14, item 5)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from graft.cli.node import warn_open_api
from graft.config import ClusterConfig, load_config
from graft.exposure import is_loopback, open_api_warning

PEERS = """\
peers:
  turing: {host: 127.0.0.1, ports: {p2p: 8880, api: 8080}}
  ritchie: {host: 10.0.0.2, ports: {p2p: 8881, api: 8081}}
  lovelace: {host: db3.example, ports: {p2p: 8882, api: 8082}}
"""
TOKENS = f"api: {{tokens: {{admin: [{hashlib.sha256(b's').hexdigest()}]}}}}\n"


class OpenApiWarningTests(SynchronousTestCase):
    def load(self, text: str) -> ClusterConfig:
        directory = Path(self.mktemp())
        directory.mkdir()
        path = directory / "cluster.yaml"
        path.write_text(text, encoding="utf-8")
        return load_config(path)

    def test_loopback(self) -> None:
        for host in ("127.0.0.1", "127.3.2.1", "::1", "[::1]", "localhost", "LocalHost."):
            self.assertTrue(is_loopback(host), host)
        for host in ("0.0.0.0", "10.0.0.2", "::", "db3.example", "localhost.example"):
            self.assertFalse(is_loopback(host), host)

    def test_warns_beyond_loopback_without_tokens(self) -> None:
        """Beyond loopback with no tokens: a warning naming the node, address and what is
        exposed; loopback, or tokens set: none."""
        cfg = self.load(PEERS)
        self.assertIsNone(open_api_warning(cfg, "turing"))
        for node, address in (("ritchie", "10.0.0.2:8081"), ("lovelace", "db3.example:8082")):
            warning = open_api_warning(cfg, node)
            assert warning is not None
            self.assertIn(f"node {node} listens on {address}", warning)
            self.assertIn("api.tokens is not set", warning)
            self.assertIn("shut the node down and download snapshots", warning)
        with_tokens = self.load(PEERS + TOKENS)
        self.assertIsNone(open_api_warning(with_tokens, "ritchie"))

    def test_cli_prints_each_open_node(self) -> None:
        """`graft start`/`graft dev` print the warning on stderr for each open node."""
        lines: list[str] = []
        warn_open_api(self.load(PEERS), ["turing", "ritchie", "lovelace"], echo=lines.append)
        self.assertEqual(len(lines), 2)
        self.assertIn("ritchie", lines[0])
        self.assertIn("lovelace", lines[1])

    def test_cli_default_goes_to_stderr(self) -> None:
        from click.testing import CliRunner

        runner = CliRunner()
        cfg = self.load(PEERS)
        with runner.isolation() as (out, err, _):
            warn_open_api(cfg, ["ritchie"])
        self.assertIn(b"WARNING: the API of node ritchie", err.getvalue())
        self.assertEqual(out.getvalue(), b"")

    def test_node_logs_it(self) -> None:
        """make_service logs the warning (every way of starting a node goes through it)."""
        from graft import service

        cfg = self.load(PEERS)
        with capturedLogs() as events:
            service.warn_if_open_api(cfg, "turing")
            service.warn_if_open_api(cfg, "ritchie")
        self.assertEqual(len(events), 1)
        self.assertEqual(events[0]["log_level"].name, "warn")
        self.assertIn("node ritchie listens on 10.0.0.2:8081", events[0]["text"])


class ListenExposureTests(SynchronousTestCase):
    def load(self, text: str) -> ClusterConfig:
        directory = Path(self.mktemp())
        directory.mkdir()
        path = directory / "cluster.yaml"
        path.write_text(text, encoding="utf-8")
        return load_config(path)

    def test_the_bound_address_decides(self) -> None:
        """A loopback host whose API listens on 0.0.0.0 is open (the warning names the bound
        address); a public host whose API listens on loopback is not; localhost binds
        loopback."""
        cfg = self.load(
            "peers:\n"
            "  a: {host: 127.0.0.1, ports: {p2p: 1, api: 2}, listen: {api: 0.0.0.0}}\n"
            "  b: {host: db.example, ports: {p2p: 3, api: 4}, listen: {api: 127.0.0.1}}\n"
            "  c: {host: localhost, ports: {p2p: 5, api: 6}}\n"
        )
        warning = open_api_warning(cfg, "a")
        assert warning is not None
        self.assertIn("listens on 127.0.0.1:2 (bound to 0.0.0.0)", warning)
        self.assertIsNone(open_api_warning(cfg, "b"))
        self.assertIsNone(open_api_warning(cfg, "c"))
        self.assertEqual(cfg.peers["c"].api_interface, "127.0.0.1")
