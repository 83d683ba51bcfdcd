"""Certificate and token rotation on a running cluster of real processes: `graft certs renew`
then SIGHUP or `graft certs reload`, under a write load that must lose nothing."""

from __future__ import annotations

import json
import signal
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

from cryptography import x509

from graft.api.auth import token_digest
from graft.config import load_config
from graft.testing.cli import graft_cli
from graft.testing.cluster import LocalCluster
from graft.testing.load import WriteLoad
from graft.testing.process_case import ProcessTestCase

RELOADED = "reloaded the certificate"


def serial_of(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


def presented_serial(port: int, ca: Path, cert: Path, key: Path) -> int:
    """The serial of the certificate a node's peer port presents to a new connection."""
    context = ssl.create_default_context(cafile=str(ca))
    context.check_hostname = False
    context.load_cert_chain(str(cert), str(key))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def reloaded(cluster: LocalCluster, node: str, before: int) -> Callable[[], bool]:
    return lambda: cluster.logs(node).count(RELOADED) > before


def more_writes(load: WriteLoad, count: int) -> Callable[[], bool]:
    target = len(load.acked) + count
    return lambda: len(load.acked) >= target


class CertificateRotationTests(ProcessTestCase):
    def test_every_certificate_rotated_under_load_without_a_failed_command(self) -> None:
        """Each node in turn gets a new certificate and key (`graft certs renew`) and reloads
        (SIGHUP for two, `graft certs reload` for the third) while three writers keep going:
        no write fails, the cluster keeps its leader's term moving only if it must, and new
        TLS connections to every peer port present the renewed certificate."""
        cluster = self.make_cluster()
        cfg = load_config(cluster.config_path)
        config = str(cluster.config_path)
        cluster.wait_for_leader(timeout=15)
        old = {node: serial_of(cfg.tls_for(node).cert) for node in cluster.node_ids}

        with WriteLoad(cluster) as load:
            self.wait_for(lambda: len(load.acked) >= 30, "30 writes before the rotation", 20)
            for i, node in enumerate(cluster.node_ids):
                renewed = graft_cli("certs", "renew", node, "-c", config)
                self.assertEqual(renewed.returncode, 0, renewed.stderr)
                self.assertIn(f"{node}.pem", renewed.stdout)
                before = cluster.logs(node).count(RELOADED)
                if i < 2:
                    cluster.signal(node, signal.SIGHUP)
                else:
                    ran = graft_cli("certs", "reload", node, "-c", config)
                    self.assertEqual(ran.returncode, 0, ran.stderr)
                    self.assertIn(f"{node}: reloaded; certificate valid until", ran.stdout)
                self.wait_for(reloaded(cluster, node, before), f"{node} logs its reload", 15)
                self.wait_for(more_writes(load, 20), "20 more writes", 20)

        self.assertEqual(load.failed, {}, "writes failed during the rotation")
        self.assertEqual(load.unknown, {}, "writes with no answer during the rotation")
        self.assertGreater(len(load.acked), 90)
        for node in cluster.node_ids:
            files = cfg.tls_for(node)
            new = serial_of(files.cert)
            self.assertNotEqual(new, old[node])
            port = cluster.peers[node]["ports"]["p2p"]
            self.assertEqual(presented_serial(port, files.ca, files.cert, files.key), new, node)
        # The cluster still commits after all of it.
        leader, _ = cluster.wait_for_leader(timeout=15)
        wrote = cluster.request(leader, "POST", "/command", b'{"op":"put","key":"z","value":"z"}')
        self.assertEqual(wrote.status, 200, wrote.body)

    def test_a_bad_key_is_refused_and_the_node_keeps_working(self) -> None:
        """A node whose key file no longer fits its certificate logs the failed reload on
        SIGHUP and goes on serving with the certificate it had."""
        cluster = self.make_cluster()
        cfg = load_config(cluster.config_path)
        cluster.wait_for_leader(timeout=15)
        files = cfg.tls_for("n1")
        serial = serial_of(files.cert)
        files.key.write_bytes(cfg.tls_for("n2").key.read_bytes())
        cluster.signal("n1", signal.SIGHUP)
        self.wait_for(lambda: "reload failed" in cluster.logs("n1"), "n1 logs the failure", 15)
        self.assertIn("does not fit the certificate", cluster.logs("n1"))
        port = cluster.peers["n1"]["ports"]["p2p"]
        n2 = cfg.tls_for("n2")
        self.assertEqual(presented_serial(port, n2.ca, n2.cert, n2.key), serial)
        self.assertIsNotNone(cluster.status("n1"))


class TokenRotationTests(ProcessTestCase):
    def test_old_token_refused_after_reload_new_accepted(self) -> None:
        """The config's admin token is replaced and each node reloaded (`graft certs reload`
        with the old token): from then on the old token is 401 on every node and the new one
        works, without a restart."""
        old, new = "old-admin-token", "new-admin-token"
        cluster = self.make_cluster(
            extra={"api": {"tokens": {"admin": [token_digest(old)]}}}, status_token=old
        )
        leader, _ = cluster.wait_for_leader(timeout=15)
        put = b'{"op":"put","key":"k","value":"v"}'

        def status_with(node: str, token: str) -> int:
            auth = {"Authorization": f"Bearer {token}"}
            return cluster.request(node, "GET", "/status", headers=auth).status

        self.assertEqual(status_with(leader, old), 200)
        self.assertEqual(status_with(leader, new), 401)

        cluster.config["api"] = {"tokens": {"admin": [token_digest(new)]}}
        cluster.config_path.write_text(json.dumps(cluster.config))  # JSON is YAML
        ran = graft_cli("certs", "reload", "-c", str(cluster.config_path), env_token=old)
        self.assertEqual(ran.returncode, 0, ran.stderr)
        self.assertEqual(ran.stdout.count("tokens: 1 admin"), 3, ran.stdout)
        for node in cluster.node_ids:
            self.assertEqual(status_with(node, old), 401, node)
            self.assertEqual(status_with(node, new), 200, node)
        auth = {"Authorization": f"Bearer {new}"}
        wrote = cluster.request(leader, "POST", "/command", put, headers=auth)
        self.assertEqual(wrote.status, 200, wrote.body)
