"""TLSContexts.reload and graft.certs.renew_certificates: after a reload, new handshakes (as
server and as client) present the renewed certificate; a connection made before keeps the one
it was made with; files that do not fit are refused and change nothing."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, cast

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test.iosim import connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase

from graft.certs import CertificateError, ca_key_path, renew_certificates
from graft.transport import TLSContexts, TLSFilesError
from tests.transport.support import FakeClusterConfig, make_cluster

_ADDRESS = IPv4Address("TCP", "127.0.0.1", 40000)


def serial_of(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


def peer_serial(protocol: Any) -> int:
    """The serial of the certificate the other end presented on this TLS connection."""
    return int(protocol.getPeerCertificate().get_serial_number())


def protocol_factory() -> Any:
    return Factory.forProtocol(Protocol)


class Handshakes:
    """Real TLS handshakes in memory between a server's and a client's TLSContexts."""

    def __init__(self, server: TLSContexts, client: TLSContexts) -> None:
        self.server = server
        self.client = client
        self.clock = MemoryReactorClock()

    def connect(self) -> tuple[Any, Any]:
        server_factory: Any = TLSMemoryBIOFactory(
            self.server.server, False, protocol_factory(), clock=cast(Any, self.clock)
        )
        client_factory: Any = TLSMemoryBIOFactory(
            self.client.client("127.0.0.1"), True, protocol_factory(), clock=cast(Any, self.clock)
        )
        client, server, pump = connectedServerAndClient(
            lambda: server_factory.buildProtocol(_ADDRESS),
            lambda: client_factory.buildProtocol(_ADDRESS),
            greet=False,
            clock=self.clock,
        )
        for _ in range(20):
            if not pump.pump(advanceClock=False):
                break
        return client, server


class ReloadTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.cfg: FakeClusterConfig = make_cluster(("turing", "ritchie"), base_port=9100)
        self.addCleanup(shutil.rmtree, self.cfg.directory, ignore_errors=True)

    def test_new_connections_use_renewed_certificates_old_ones_keep_theirs(self) -> None:
        turing = TLSContexts(self.cfg.tls_for("turing"))
        ritchie = TLSContexts(self.cfg.tls_for("ritchie"))
        pair = Handshakes(turing, ritchie)
        old_client, old_server = pair.connect()
        turing_old = serial_of(self.cfg.tls_for("turing").cert)
        ritchie_old = serial_of(self.cfg.tls_for("ritchie").cert)
        self.assertEqual(peer_serial(old_client), turing_old)
        self.assertEqual(peer_serial(old_server), ritchie_old)

        renew_certificates(self.cfg, ["turing", "ritchie"])
        turing.reload(self.cfg.tls_for("turing"))
        ritchie.reload(self.cfg.tls_for("ritchie"))
        new_client, new_server = pair.connect()
        # Each side presents its renewed certificate, as server and as client.
        self.assertEqual(peer_serial(new_client), serial_of(self.cfg.tls_for("turing").cert))
        self.assertEqual(peer_serial(new_server), serial_of(self.cfg.tls_for("ritchie").cert))
        self.assertNotEqual(peer_serial(new_client), turing_old)
        self.assertNotEqual(peer_serial(new_server), ritchie_old)
        # The connection made before the reload is still up, with the old certificates.
        self.assertFalse(old_client.transport.disconnected)
        self.assertFalse(old_server.transport.disconnected)
        self.assertEqual(peer_serial(old_client), turing_old)

    def test_a_key_that_does_not_fit_changes_nothing(self) -> None:
        turing = TLSContexts(self.cfg.tls_for("turing"))
        ritchie = TLSContexts(self.cfg.tls_for("ritchie"))
        before = serial_of(self.cfg.tls_for("turing").cert)
        # ritchie's key with turing's certificate: refused, turing keeps serving its own.
        files = self.cfg.tls_for("turing")
        shutil.copy(self.cfg.tls_for("ritchie").key, files.key)
        with self.assertRaises(TLSFilesError) as caught:
            turing.reload(files)
        self.assertIn("does not fit the certificate", str(caught.exception))
        client, _ = Handshakes(turing, ritchie).connect()
        self.assertEqual(peer_serial(client), before)

    def test_a_ca_bundle_trusts_certificates_of_either_ca(self) -> None:
        """During a CA rollover the CA file holds the old and the new CA: a node with the
        bundle accepts a peer whose certificate the new CA signed."""
        other = make_cluster(("turing", "ritchie"), base_port=9100)
        self.addCleanup(shutil.rmtree, other.directory, ignore_errors=True)
        bundle = (
            self.cfg.tls_for("turing").ca.read_bytes() + other.tls_for("turing").ca.read_bytes()
        )
        self.cfg.tls_for("turing").ca.write_bytes(bundle)
        turing = TLSContexts(self.cfg.tls_for("turing"))
        # ritchie with a certificate of the new CA, trusting both as well.
        other.tls_for("ritchie").ca.write_bytes(bundle)
        ritchie = TLSContexts(other.tls_for("ritchie"))
        client, server = Handshakes(turing, ritchie).connect()
        self.assertEqual(peer_serial(server), serial_of(other.tls_for("ritchie").cert))
        self.assertEqual(peer_serial(client), serial_of(self.cfg.tls_for("turing").cert))


class RenewTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.cfg = make_cluster(("turing", "ritchie"), base_port=9100)
        self.addCleanup(shutil.rmtree, self.cfg.directory, ignore_errors=True)

    def test_renew_signs_with_the_ca_new_key_by_default(self) -> None:
        files = self.cfg.tls_for("turing")
        old_key, old_cert = files.key.read_bytes(), files.cert.read_bytes()
        written = renew_certificates(self.cfg, ["turing"], days=20)
        self.assertEqual(written, [files.key, files.cert])
        self.assertNotEqual(files.key.read_bytes(), old_key)
        self.assertNotEqual(files.cert.read_bytes(), old_cert)
        self.assertEqual(files.key.stat().st_mode & 0o777, 0o600)
        cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
        ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
        cert.verify_directly_issued_by(ca)
        lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
        self.assertEqual(lifetime.days, 20)
        # ritchie untouched
        self.assertEqual(
            renew_certificates(self.cfg, ["ritchie"], keep_keys=True)[-1].name, "ritchie.pem"
        )

    def test_keep_key_signs_the_same_key_again(self) -> None:
        files = self.cfg.tls_for("ritchie")
        old_key = files.key.read_bytes()
        written = renew_certificates(self.cfg, ["ritchie"], keep_keys=True)
        self.assertEqual(written, [files.cert])
        self.assertEqual(files.key.read_bytes(), old_key)
        key = serialization.load_pem_private_key(old_key, password=None)
        cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
        self.assertEqual(
            cert.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )
        TLSContexts(files)  # the pair loads

    def test_refusals(self) -> None:
        with self.assertRaises(CertificateError) as caught:
            renew_certificates(self.cfg, ["nobody"])
        self.assertIn("nobody: not among the config's peers", str(caught.exception))
        ca_key_path(self.cfg.tls_for("turing").ca).unlink()
        before = self.cfg.tls_for("turing").cert.read_bytes()
        with self.assertRaises(CertificateError) as caught:
            renew_certificates(self.cfg)
        self.assertIn("renew certificates where the CA is kept", str(caught.exception))
        self.assertEqual(self.cfg.tls_for("turing").cert.read_bytes(), before)
