"""graft.certs: what the generated files contain, their permissions, and overwrite rules."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from twisted.trial.unittest import SynchronousTestCase

from graft.certs import CertificateError, ca_key_path, generate_certificates
from tests.transport.support import FakeClusterConfig, Peer


def _config(directory: Path, peers: dict[str, str]) -> FakeClusterConfig:
    return FakeClusterConfig(
        directory=directory,
        peers={
            node_id: Peer(host=host, p2p_port=8880 + i)
            for i, (node_id, host) in enumerate(peers.items())
        },
    )


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


class GenerateTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = Path(self.mktemp()) / "nested" / "certs"
        self.cfg = _config(self.directory, {"turing": "127.0.0.1", "ritchie": "db2.example.org"})

    def test_writes_ca_and_one_pair_per_node(self) -> None:
        """The CA certificate and key and each node's certificate and key are written, in
        directories created on demand."""
        written = generate_certificates(self.cfg)
        names = sorted(p.name for p in written)
        self.assertEqual(
            names, ["ca.key", "ca.pem", "ritchie.key", "ritchie.pem", "turing.key", "turing.pem"]
        )
        for path in written:
            self.assertTrue(path.exists(), path)

    def test_node_certificate_names_node_id_and_host(self) -> None:
        """A node certificate's subjectAltName holds DNS:<node id> and the host as IP or DNS."""
        generate_certificates(self.cfg)
        turing = (
            _cert(self.directory / "turing.pem")
            .extensions.get_extension_for_class(x509.SubjectAlternativeName)
            .value
        )
        self.assertEqual(turing.get_values_for_type(x509.DNSName), ["turing"])
        self.assertEqual(
            turing.get_values_for_type(x509.IPAddress), [ipaddress.ip_address("127.0.0.1")]
        )
        ritchie = (
            _cert(self.directory / "ritchie.pem")
            .extensions.get_extension_for_class(x509.SubjectAlternativeName)
            .value
        )
        self.assertEqual(ritchie.get_values_for_type(x509.DNSName), ["ritchie", "db2.example.org"])

    def test_certificates_signed_by_the_ca_with_p256_keys(self) -> None:
        """Node certificates are issued by the CA, and all keys are EC P-256."""
        generate_certificates(self.cfg)
        ca = _cert(self.directory / "ca.pem")
        node = _cert(self.directory / "turing.pem")
        node.verify_directly_issued_by(ca)
        for key_file in ("ca.key", "turing.key"):
            key = load_pem_private_key((self.directory / key_file).read_bytes(), password=None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            self.assertEqual(key.curve.name, "secp256r1")
        self.assertTrue(ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
        self.assertFalse(node.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)

    def test_private_keys_are_owner_only(self) -> None:
        """Key files are mode 0600; certificates are readable."""
        generate_certificates(self.cfg)
        for name in ("ca.key", "turing.key", "ritchie.key"):
            self.assertEqual(stat.S_IMODE((self.directory / name).stat().st_mode), 0o600, name)
        self.assertEqual(stat.S_IMODE((self.directory / "turing.pem").stat().st_mode), 0o644)

    def test_existing_files_are_not_overwritten(self) -> None:
        """A second run without force fails with a message naming the file and the way out."""
        generate_certificates(self.cfg)
        before = (self.directory / "turing.key").read_bytes()
        with self.assertRaises(CertificateError) as raised:
            generate_certificates(self.cfg)
        self.assertIn("already exists: rerun with --force", str(raised.exception))
        self.assertEqual((self.directory / "turing.key").read_bytes(), before)

    def test_force_regenerates_everything(self) -> None:
        """With force, a new CA and new node keys replace the old ones."""
        generate_certificates(self.cfg)
        old_ca = (self.directory / "ca.pem").read_bytes()
        written = generate_certificates(self.cfg, force=True)
        self.assertEqual(len(written), 6)
        self.assertNotEqual((self.directory / "ca.pem").read_bytes(), old_ca)
        _cert(self.directory / "turing.pem").verify_directly_issued_by(
            _cert(self.directory / "ca.pem")
        )

    def test_if_missing_keeps_existing_files(self) -> None:
        """With if_missing and everything present, nothing is written."""
        generate_certificates(self.cfg)
        self.assertEqual(generate_certificates(self.cfg, if_missing=True), [])

    def test_if_missing_signs_new_nodes_with_the_existing_ca(self) -> None:
        """A node added later gets a certificate from the same CA; others are untouched."""
        generate_certificates(self.cfg)
        bigger = _config(
            self.directory, {"turing": "127.0.0.1", "ritchie": "db2.example.org", "lovelace": "::1"}
        )
        written = generate_certificates(bigger, if_missing=True)
        self.assertEqual(sorted(p.name for p in written), ["lovelace.key", "lovelace.pem"])
        _cert(self.directory / "lovelace.pem").verify_directly_issued_by(
            _cert(self.directory / "ca.pem")
        )

    def test_if_missing_without_ca_key_fails(self) -> None:
        """A CA certificate without its key cannot sign new nodes: a clear error, not a new CA."""
        generate_certificates(self.cfg)
        ca_key_path(self.directory / "ca.pem").unlink()
        (self.directory / "turing.pem").unlink()
        with self.assertRaises(CertificateError) as raised:
            generate_certificates(self.cfg, if_missing=True)
        self.assertIn("ca.key does not", str(raised.exception))

    def test_node_id_equal_to_another_host_refused(self) -> None:
        """A node id that is another node's host name would make certificates ambiguous."""
        cfg = _config(self.directory, {"alpha": "beta", "beta": "127.0.0.1"})
        with self.assertRaises(CertificateError) as raised:
            generate_certificates(cfg)
        self.assertIn("equals the host of node 'alpha'", str(raised.exception))
