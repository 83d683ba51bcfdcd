"""A cluster certificate authority and one certificate per node, for the peer channel's mutual TLS.

How a certificate names its node: every node certificate carries, in its subjectAltName, the
node id as a DNS name (``DNS:turing``) and the node's host as an IP address or DNS name
(``IP:127.0.0.1``). Clients check the host (service-identity, like any TLS client); both sides
then check that the id in the peer's hello is one of the certificate's DNS names. Because the
same SAN type holds both, a node id may not equal another node's host: generate_certificates
refuses such a cluster. The CA's key lives beside its certificate (``ca.pem`` -> ``ca.key``) so
that certificates for nodes added later can be signed by the same CA.

Keys are EC P-256; private keys are written with mode 0600; directories are created.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from graft.transport.tls import TLSPaths

CA_DAYS = 3650
NODE_DAYS = 3650


class CertificateError(Exception):
    """Certificates could not be generated; the message says what to do."""


class _Peer(Protocol):
    @property
    def host(self) -> str: ...


class CertificateConfig(Protocol):
    """What generate_certificates needs from graft.config.ClusterConfig."""

    @property
    def cluster(self) -> str: ...
    @property
    def peers(self) -> Mapping[str, _Peer]: ...
    def tls_for(self, node_id: str) -> TLSPaths: ...


def ca_key_path(ca_cert: Path) -> Path:
    """Where the CA's private key lives: beside its certificate, with a .key suffix."""
    return ca_cert.with_suffix(".key")


def host_name(host: str) -> x509.GeneralName:
    """The subjectAltName entry for a peer host: an IP address if it parses as one."""
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def node_names(node_id: str, host: str) -> list[x509.GeneralName]:
    """The subjectAltName of a node's certificate: its id, and its advertised host (the
    ``host`` peers and clients use; never a listen address such as 0.0.0.0)."""
    names: list[x509.GeneralName] = [x509.DNSName(node_id)]
    if host != node_id:
        names.append(host_name(host))
    return names


def describe_names(node_id: str, host: str) -> str:
    """The names of ``node_names`` as `graft certs` prints them: ``DNS:turing, IP:10.0.0.1``."""
    return ", ".join(
        f"IP:{name.value}" if isinstance(name, x509.IPAddress) else f"DNS:{name.value}"
        for name in node_names(node_id, host)
    )


def generate_certificates(
    cfg: CertificateConfig, *, force: bool = False, if_missing: bool = False
) -> list[Path]:
    """Write the CA and every node's key and certificate; return the paths written.

    Without ``force`` an existing file is an error, except with ``if_missing``, where nodes
    whose files all exist are kept (and an existing CA signs the missing ones). The errors
    name the options of `graft certs` (--force, --if-missing), the only way users run it.
    """
    _check_names(cfg)
    plan = {node_id: cfg.tls_for(node_id) for node_id in cfg.peers}
    ca_paths = sorted({paths.ca for paths in plan.values()})
    if not ca_paths:
        raise CertificateError(
            "the config lists no peers; add peers before generating certificates"
        )
    if not force:
        existing = [
            path
            for paths in plan.values()
            for path in (paths.ca, ca_key_path(paths.ca), paths.cert, paths.key)
            if path.exists()
        ]
        if existing and not if_missing:
            raise CertificateError(
                f"{existing[0]} already exists: rerun with --force to overwrite every "
                "certificate and key, or with --if-missing to keep what exists and write only "
                "what is missing"
            )
    written: list[Path] = []
    ca_key, ca_cert = _load_or_create_ca(ca_paths, cfg.cluster, reuse=not force, written=written)
    for node_id, paths in plan.items():
        if not force and paths.cert.exists() and paths.key.exists():
            continue
        if not force and (paths.cert.exists() or paths.key.exists()):
            present = paths.cert if paths.cert.exists() else paths.key
            raise CertificateError(
                f"{present} exists but its pair does not: delete it, or rerun with --force to "
                "regenerate every certificate and key"
            )
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _node_certificate(
            node_id, cfg.peers[node_id].host, key, ca_key, ca_cert, cfg.cluster
        )
        _write(paths.key, _key_pem(key), private=True)
        _write(paths.cert, cert.public_bytes(serialization.Encoding.PEM), private=False)
        written += [paths.key, paths.cert]
    return written


def _check_names(cfg: CertificateConfig) -> None:
    hosts = {node_id: peer.host for node_id, peer in cfg.peers.items()}
    for node_id in hosts:
        if not node_id.isascii() or not node_id:
            raise CertificateError(f"node id {node_id!r} must be ASCII to go in a certificate")
        for other, host in hosts.items():
            if other != node_id and host.lower() == node_id.lower():
                raise CertificateError(
                    f"node id {node_id!r} equals the host of node {other!r}: certificates could"
                    " not tell them apart; rename the node or use the host's IP address"
                )


def _load_or_create_ca(
    ca_paths: list[Path], cluster: str, *, reuse: bool, written: list[Path]
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    first = ca_paths[0]
    if reuse and first.exists():
        key_path = ca_key_path(first)
        if not key_path.exists():
            raise CertificateError(
                f"{first} exists but its key {key_path} does not; restore the key, or rerun with"
                " --force to create a new CA (and new certificates for every node)"
            )
        cert = x509.load_pem_x509_certificate(first.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CertificateError(
                f"{key_path} is not an EC key: rerun with --force to create a new CA"
            )
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _ca_certificate(key, cluster)
        _write(ca_key_path(first), _key_pem(key), private=True)
        written.append(ca_key_path(first))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    for path in ca_paths:
        if not path.exists() or not reuse:
            _write(path, pem, private=False)
            written.append(path)
    return key, cert


def _validity(days: int) -> tuple[datetime.datetime, datetime.datetime]:
    # Backdated an hour so that small clock differences between machines do not matter.
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
    return now, now + datetime.timedelta(days=days)


def _ca_certificate(key: ec.EllipticCurvePrivateKey, cluster: str) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "graft"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"graft cluster {cluster} CA"),
        ]
    )
    not_before, not_after = _validity(CA_DAYS)
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )


def _node_certificate(
    node_id: str,
    host: str,
    key: ec.EllipticCurvePrivateKey,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    cluster: str,
    days: int = NODE_DAYS,
) -> x509.Certificate:
    names = node_names(node_id, host)
    not_before, not_after = _validity(days)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"graft cluster {cluster}"),
            x509.NameAttribute(NameOID.COMMON_NAME, node_id),
        ]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, *, private: bool) -> None:
    """Write via a temporary file and rename, so a reader never sees half a key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    try:
        os.fchmod(fd, 0o600 if private else 0o644)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def certificate_not_after(path: Path) -> float | None:
    """When the PEM certificate at ``path`` expires (its notAfter, Unix time), or None when
    the file cannot be read as one (the transport reports that, loudly, on its own)."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None
    return cert.not_valid_after_utc.timestamp()


def renew_certificates(
    cfg: CertificateConfig,
    node_ids: Sequence[str] = (),
    *,
    keep_keys: bool = False,
    days: int = NODE_DAYS,
) -> list[Path]:
    """Issue new certificates, signed by the existing CA, for ``node_ids`` (default: every
    peer); return the paths written. Each gets a new key unless ``keep_keys``, which signs the
    node's existing key again. The key is written before the certificate: a node that reloads
    in between finds a pair that does not fit and keeps its old one."""
    _check_names(cfg)
    wanted = list(node_ids) or list(cfg.peers)
    unknown = [node_id for node_id in wanted if node_id not in cfg.peers]
    if unknown:
        raise CertificateError(
            f"{', '.join(unknown)}: not among the config's peers ({', '.join(cfg.peers)})"
        )
    if days < 1:
        raise CertificateError(f"--days {days}: a certificate must be valid for at least a day")
    written: list[Path] = []
    for node_id in wanted:
        paths = cfg.tls_for(node_id)
        ca_key, ca_cert = _signing_ca(paths.ca)
        key = _existing_key(paths.key) if keep_keys else ec.generate_private_key(ec.SECP256R1())
        cert = _node_certificate(
            node_id, cfg.peers[node_id].host, key, ca_key, ca_cert, cfg.cluster, days
        )
        if not keep_keys:
            _write(paths.key, _key_pem(key), private=True)
            written.append(paths.key)
        _write(paths.cert, cert.public_bytes(serialization.Encoding.PEM), private=False)
        written.append(paths.cert)
    return written


def _signing_ca(ca_file: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """The CA key beside ``ca_file`` and the certificate of the bundle that goes with it (a
    bundle holds the old and the new CA during a rollover)."""
    key_path = ca_key_path(ca_file)
    try:
        bundle = x509.load_pem_x509_certificates(ca_file.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except FileNotFoundError as e:
        raise CertificateError(
            f"{e.filename} not found: renew certificates where the CA is kept (ca.pem with "
            "ca.key beside it)"
        ) from None
    except (OSError, ValueError) as e:
        raise CertificateError(f"cannot read the CA {ca_file} or its key {key_path}: {e}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError(f"{key_path} is not an EC key, as `graft certs` makes them")
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for cert in bundle:
        mine = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if mine == public:
            return key, cert
    raise CertificateError(
        f"no certificate in {ca_file} goes with the key {key_path}: put the CA's certificate "
        "in the bundle"
    )


def _existing_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as e:
        raise CertificateError(
            f"cannot read the node key {path} ({e}): renew without --keep-key to make a new one"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError(f"{path} is not an EC key: renew without --keep-key")
    return key
