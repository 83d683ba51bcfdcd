"""`graft certs renew` and `graft certs reload` (against fake nodes); `graft certs` itself
still creates the CA and certificates."""

from __future__ import annotations

from cryptography import x509

from tests.support.http_node import error_reply, json_reply, start_fake_node
from tests.test_cli import CLITestCase, port_of, run, write_config

RELOADED = {
    "node": "beta",
    "certificate": {"file": "certs/beta.pem", "not_after": "2036-12-04T06:00:00Z"},
    "tokens": {"admin": 1, "read": 2},
}


class RenewTests(CLITestCase):
    def test_renew_one_node(self) -> None:
        """`certs renew beta` writes beta's new key and certificate only, signed by the CA."""
        path = write_config(self.tmpdir())
        self.assertEqual(run(["certs", "-c", str(path)]).exit_code, 0)
        certs = path.parent / "certs"
        alpha, beta = (certs / "alpha.pem").read_bytes(), (certs / "beta.pem").read_bytes()
        result = run(["certs", "renew", "beta", "-c", str(path), "--days", "90"])
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertEqual(result.stdout.count("wrote "), 2, result.stdout)
        self.assertIn("beta.key", result.stdout)
        self.assertEqual((certs / "alpha.pem").read_bytes(), alpha)
        self.assertNotEqual((certs / "beta.pem").read_bytes(), beta)
        cert = x509.load_pem_x509_certificate((certs / "beta.pem").read_bytes())
        self.assertEqual((cert.not_valid_after_utc - cert.not_valid_before_utc).days, 90)

    def test_renew_every_node_keeping_keys(self) -> None:
        path = write_config(self.tmpdir())
        run(["certs", "-c", str(path)])
        result = run(["certs", "renew", "-c", str(path), "--keep-key"])
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertEqual(result.stdout.count("wrote "), 3, result.stdout)
        self.assertNotIn(".key", result.stdout)

    def test_renew_without_the_ca_key_is_one_line(self) -> None:
        path = write_config(self.tmpdir())
        run(["certs", "-c", str(path)])
        (path.parent / "certs" / "ca.key").unlink()
        result = run(["certs", "renew", "-c", str(path)])
        self.assertOneLineError(result, "renew certificates where the CA is kept")

    def test_group_options_before_the_subcommand_are_refused(self) -> None:
        path = write_config(self.tmpdir())
        result = run(["certs", "-c", str(path), "renew"])
        self.assertOneLineError(result, "put the options after `renew`")


class ReloadTests(CLITestCase):
    def test_reload_named_nodes(self) -> None:
        """`certs reload beta` posts /reload to beta's API and prints what it now uses."""
        node = start_fake_node(self, json_reply(200, RELOADED))
        path = write_config(self.tmpdir(), api_ports=(1, port_of(node.url), 2))
        result = run(["certs", "reload", "beta", "-c", str(path)])
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertEqual(
            result.stdout,
            "beta: reloaded; certificate valid until 2036-12-04T06:00:00Z, "
            "tokens: 1 admin, 2 read\n",
        )
        self.assertEqual([(s.method, s.path) for s in node.seen], [("POST", "/reload")])

    def test_reload_every_peer_reports_each_failure(self) -> None:
        """Without NODE every peer of the config is asked; one that refuses (or is down) is
        reported and the command fails after trying the others."""
        good = start_fake_node(self, json_reply(200, RELOADED))
        bad = start_fake_node(
            self, error_reply(409, "reload_failed", "the private key certs/gamma.key does not fit")
        )
        path = write_config(self.tmpdir(), api_ports=(port_of(good.url), 1, port_of(bad.url)))
        result = run(["certs", "reload", "-c", str(path), "--timeout", "1"])
        self.assertNotEqual(result.exit_code, 0)
        self.assertIn("beta: reloaded", result.stdout)  # alpha's fake answers as beta
        self.assertIn("not reloaded: node beta at http://127.0.0.1:1 is unreachable", result.stderr)
        self.assertIn(
            "not reloaded: gamma: reload_failed (409): the private key certs/gamma.key",
            result.stderr,
        )
        self.assertIn("2 of 3 nodes did not reload", result.stderr)
        self.assertEqual(len(good.seen), 1)
        self.assertEqual(len(bad.seen), 1)
