"""TLS settings of the peer channel, built from the node's files at start and again on reload.

Both directions authenticate: the server requires a client certificate signed by the cluster CA;
the client checks the server's certificate against the CA and that it names the host it dialled
(service-identity). Which node a certificate belongs to is read from its DNS subjectAltNames
(see graft.certs); the hello check in graft.transport.protocol uses certificate_names.
"""

# twisted.internet.ssl is untyped; its calls are checked by the tests.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, cast

from cryptography import x509
from OpenSSL import SSL, crypto
from twisted.internet import ssl
from twisted.internet.error import VerifyError
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IOpenSSLContextFactory
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from zope.interface import implementer


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
    """The server options and client options per dialled host, reloadable.

    ``server`` and what ``client(host)`` returns are stable objects that ask for the current
    options at each new connection, so :meth:`reload` changes what the next handshake uses
    while connections already open keep the certificate they were made with.
    """

    def __init__(self, paths: TLSPaths) -> None:
        self._files = _TLSFiles.load(paths)  # read and built here: bad files fail early
        self._server_options = self._files.server_options()
        self._clients: dict[str, IOpenSSLClientConnectionCreator] = {}
        self.server: Any = _CurrentServerOptions(self)

    @property
    def ca(self) -> Any:
        """The first certificate of the CA bundle (ssl.Certificate)."""
        return self._files.cas[0]

    @property
    def identity(self) -> Any:
        """The node's certificate and key (ssl.PrivateCertificate)."""
        return self._files.identity

    def reload(self, paths: TLSPaths) -> None:
        """Read the certificate, key and CA bundle again, for new connections. Raises
        TLSFilesError, keeping the current ones, when a file is missing or invalid."""
        files = _TLSFiles.load(paths)
        server = files.server_options()
        self._files, self._server_options, self._clients = files, server, {}

    def client(self, host: str) -> IOpenSSLClientConnectionCreator:
        return cast(IOpenSSLClientConnectionCreator, _CurrentClientOptions(self, host))

    def current_client(self, host: str) -> Any:
        options = self._clients.get(host)
        if options is None:
            options = self._files.client_options(host)
            self._clients[host] = options
        return options

    def current_server(self) -> Any:
        return self._server_options


@implementer(IOpenSSLContextFactory)
class _CurrentServerOptions:
    """The server side's options as of each new connection (TLSMemoryBIOFactory asks for a
    context per connection)."""

    def __init__(self, contexts: TLSContexts) -> None:
        self._contexts = contexts

    def getContext(self) -> Any:
        return self._contexts.current_server().getContext()


@implementer(IOpenSSLClientConnectionCreator)
class _CurrentClientOptions:
    """The client options for one host as of each new connection."""

    def __init__(self, contexts: TLSContexts, host: str) -> None:
        self._contexts = contexts
        self._host = host

    def clientConnectionForTLS(self, protocol: Any) -> Any:
        return self._contexts.current_client(self._host).clientConnectionForTLS(protocol)


class _TLSFiles:
    """One reading of the node's certificate, key and CA bundle (one or more certificates:
    during a CA rollover the file holds the old and the new CA)."""

    def __init__(self, cas: list[Any], identity: Any) -> None:
        self.cas = cas
        self.identity = identity

    @classmethod
    def load(cls, paths: TLSPaths) -> _TLSFiles:
        try:
            bundle = x509.load_pem_x509_certificates(_read(paths.ca, "CA certificate"))
            cas = [ssl.Certificate(crypto.X509.from_cryptography(c)) for c in bundle]
            pair = _read(paths.cert, "certificate") + _read(paths.key, "private key")
            identity = ssl.PrivateCertificate.loadPEM(pair)
            files = cls(cas, identity)
            files.server_options().getContext()  # everything OpenSSL checks, checked now
        except (VerifyError, SSL.Error) as e:
            raise TLSFilesError(
                f"the private key {paths.key} does not fit the certificate {paths.cert} ({e}): "
                "install the key and certificate issued together"
            ) from None
        except (ValueError, crypto.Error) as e:
            raise TLSFilesError(
                f"invalid TLS files {paths.cert}, {paths.key} or {paths.ca} ({e});"
                " regenerate them with `graft certs --force`"
            ) from None
        return files

    def server_options(self) -> Any:
        return ssl.CertificateOptions(
            privateKey=self.identity.privateKey.original,
            certificate=self.identity.original,
            verify=True,
            requireCertificate=True,
            caCerts=[ca.original for ca in self.cas],
            raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
        )

    def client_options(self, host: str) -> IOpenSSLClientConnectionCreator:
        return ssl.optionsForClientTLS(
            host,
            trustRoot=ssl.trustRootFromCertificates(self.cas),
            clientCertificate=self.identity,
            extraCertificateOptions={"raiseMinimumTo": ssl.TLSVersion.TLSv1_2},
        )


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
