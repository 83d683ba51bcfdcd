"""TLS settings of the peer channel, built once per process from the node's files.

Both directions authenticate: the server requires a client certificate signed by the cluster CA;
the client checks the server's certificate against the CA and that it names the host it dialled
(service-identity). Which node a certificate belongs to is read from its DNS subjectAltNames
(see graft.certs); the hello check in graft.transport.protocol uses certificate_names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from cryptography import x509
from OpenSSL import crypto
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol


class TLSPaths(Protocol):
    """The node's files, as graft.config.TLSFiles provides them."""

    @property
    def ca(self) -> Path: ...
    @property
    def cert(self) -> Path: ...
    @property
    def key(self) -> Path: ...


class TLSFilesError(Exception):
    """A TLS file is missing or unreadable; the message names it."""


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise TLSFilesError(
            f"cannot read the {what} {path} ({e.strerror}); run `graft certs` to create it"
        ) from None


class TLSContexts:
    """The server options and a cache of client options per dialled host."""

    def __init__(self, paths: TLSPaths) -> None:
        try:
            self.ca = ssl.Certificate.loadPEM(_read(paths.ca, "CA certificate"))
            self.identity = ssl.PrivateCertificate.loadPEM(  # type: ignore[no-untyped-call]
                _read(paths.cert, "certificate") + _read(paths.key, "private key")
            )
        except (ValueError, crypto.Error) as e:
            raise TLSFilesError(
                f"invalid TLS files {paths.cert}, {paths.key} or {paths.ca} ({e});"
                " regenerate them with `graft certs --force`"
            ) from None
        self.server: Any = ssl.CertificateOptions(
            privateKey=self.identity.privateKey.original,
            certificate=self.identity.original,
            verify=True,
            requireCertificate=True,
            caCerts=[self.ca.original],
            raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
        )
        self._clients: dict[str, IOpenSSLClientConnectionCreator] = {}

    def client(self, host: str) -> IOpenSSLClientConnectionCreator:
        options = self._clients.get(host)
        if options is None:
            options = ssl.optionsForClientTLS(
                host,
                trustRoot=self.ca,
                clientCertificate=self.identity,
                extraCertificateOptions={"raiseMinimumTo": ssl.TLSVersion.TLSv1_2},
            )
            self._clients[host] = options
        return options


class PeerTLSFactory(TLSMemoryBIOFactory):
    """TLS for peer connections, without Twisted's aggregation of small writes.

    The default protocol (BufferingTLSTransport) holds every write for a ``callLater(0)``, one
    more reactor iteration before the bytes even reach the TCP transport; on a commit's path
    that wait happens at every hop. PeerConnection does its own batching (a Ready's messages to
    a peer leave as one write) and flushes at once, so the plain protocol is what it needs.
    """

    protocol = TLSMemoryBIOProtocol


def certificate_names(certificate: Any) -> frozenset[str]:
    """The DNS subjectAltNames of a peer certificate (pyOpenSSL X509 or None)."""
    if certificate is None:
        return frozenset()
    if isinstance(certificate, crypto.X509):
        certificate = certificate.to_cryptography()
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return frozenset()
    return frozenset(extension.value.get_values_for_type(x509.DNSName))
