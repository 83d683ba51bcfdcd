"""Rotating a running node's certificates and tokens without a restart, and the warning before
its certificate expires.

On SIGHUP or POST /reload (`graft certs reload`) the node reads its config file again and,
from it, its peer certificate, key and CA bundle, its API certificate and key (when the API
serves HTTPS) and ``api.tokens``. Everything is read and checked first, then swapped at once:
a missing or invalid file changes nothing (ReloadFailed names it). New connections, peer and
API, use the new files; connections already open keep the certificate they were made with
until they reconnect. Nothing else in the config file is applied by a reload: the rest needs
a restart.

ExpiryWarner logs a warning once a day from 30 days before the node's peer certificate
expires (the one `graft certs renew` replaces).
"""

# twisted.internet.ssl is untyped; its calls are checked by the tests.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from OpenSSL import SSL, crypto
from twisted.application.service import Service
from twisted.internet import ssl
from twisted.internet.error import VerifyError
from twisted.internet.interfaces import IOpenSSLContextFactory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from graft.api.auth import TokenAuthority
from graft.certs import certificate_not_after
from graft.config import ApiTLSFiles, ClusterConfig, ConfigError, load_config
from graft.errors import ReloadFailed
from graft.transport import PeerTransport, TLSFilesError

log = Logger(namespace="graft.reload")

DAY_S = 86400.0
WARN_DAYS = 30


@implementer(IOpenSSLContextFactory)
class SwappableServerTLS:
    """The API's TLS options as of each new connection; a reload replaces ``options``."""

    def __init__(self, options: Any) -> None:
        self.options = options

    def getContext(self) -> Any:
        return self.options.getContext()


def api_tls_options(files: ApiTLSFiles) -> Any:
    """The API's server TLS options from its files (a client CA file may hold several CAs).
    Raises ReloadFailed naming the files when one is missing or invalid."""
    try:
        cert = ssl.PrivateCertificate.loadPEM(files.cert.read_text() + files.key.read_text())
        if files.client_ca is None:
            options = cert.options()
        else:
            bundle = x509.load_pem_x509_certificates(files.client_ca.read_bytes())
            cas = [ssl.Certificate(crypto.X509.from_cryptography(c)) for c in bundle]
            options = cert.options(*cas)
        options.getContext()  # a key that does not fit the certificate fails here
    except (OSError, ValueError, crypto.Error, SSL.Error, VerifyError) as e:
        names = ", ".join(str(p) for p in (files.cert, files.key, files.client_ca) if p)
        raise ReloadFailed(f"the API's TLS files ({names}) cannot be used: {e}") from None
    return options


class NodeReloader:
    """Reads the config file again and swaps in the node's TLS files and API tokens."""

    def __init__(
        self,
        *,
        config_path: Path,
        node_id: str,
        transport: PeerTransport,
        tokens: TokenAuthority,
        api_tls: SwappableServerTLS | None,
        on_certificate: Callable[[Path, float | None], None],
        load: Callable[[Path], ClusterConfig] = load_config,
    ) -> None:
        self._config_path = config_path
        self._node_id = node_id
        self._transport = transport
        self._tokens = tokens
        self._api_tls = api_tls
        self._on_certificate = on_certificate
        self._load = load

    def reload(self) -> dict[str, Any]:
        """Reload, or raise ReloadFailed having changed nothing. Answers what is in use now."""
        nothing = "; nothing was reloaded, the node goes on with what it had"
        try:
            cfg = self._load(self._config_path)
            peer_files = cfg.tls_for(self._node_id)
            api_files = cfg.api_tls_for(self._node_id)
        except ConfigError as e:
            raise ReloadFailed(f"{e}{nothing}") from None
        if (api_files is None) != (self._api_tls is None):
            raise ReloadFailed(
                f"{self._config_path}: api.tls was added or removed: the API changes between "
                f"HTTP and HTTPS only at a restart{nothing}"
            )
        api_options = None if api_files is None else api_tls_options(api_files)
        try:
            self._transport.reload_tls(peer_files)
        except TLSFilesError as e:
            raise ReloadFailed(f"{e}{nothing}") from None
        # The peer files are in use from here on; the rest cannot fail.
        if self._api_tls is not None and api_options is not None:
            self._api_tls.options = api_options
        self._tokens.replace(cfg.api.tokens)
        not_after = certificate_not_after(peer_files.cert)
        self._on_certificate(peer_files.cert, not_after)
        counts = {role: len(digests) for role, digests in sorted(cfg.api.tokens.items())}
        log.info(
            "reloaded the certificate {cert} (valid until {until}), its key, the CA bundle "
            "{ca}{api} and the API tokens ({tokens}); new connections use them",
            cert=peer_files.cert,
            until=_utc(not_after),
            ca=peer_files.ca,
            api="" if api_files is None else f", the API's certificate {api_files.cert}",
            tokens=", ".join(f"{n} {role}" for role, n in counts.items()) or "none",
        )
        return {
            "node": self._node_id,
            "certificate": {"file": str(peer_files.cert), "not_after": _utc(not_after)},
            "tokens": counts,
        }


class ReloadOnSignal(Service):
    """Runs the reload on SIGHUP; a failed reload is logged and changes nothing."""

    def __init__(self, reload: Callable[[], Any], reactor: Any) -> None:
        self._reload = reload
        self._reactor = reactor
        self._previous: Any = None

    def startService(self) -> None:
        super().startService()
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGHUP, self._on_signal)

    def stopService(self) -> None:
        super().stopService()
        if self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)
            self._previous = None

    def _on_signal(self, signum: int, frame: object) -> None:
        # A signal handler must not do the work: the reactor runs it on its own thread.
        self._reactor.callFromThread(self.reload_now)

    def reload_now(self) -> None:
        log.info("SIGHUP: reloading certificates, keys and API tokens")
        try:
            self._reload()
        except ReloadFailed as e:
            log.error("reload failed: {message}", message=str(e))


class ExpiryWarner(Service):
    """Logs a warning at start and then once a day while the node's certificate expires in
    WARN_DAYS days or less (or has expired)."""

    def __init__(self, node_id: str, cert: Path, not_after: float | None, clock: Any) -> None:
        self._node_id = node_id
        self._cert = cert
        self.not_after = not_after
        self._clock = clock
        self._loop = LoopingCall(self.check)
        self._loop.clock = clock

    def startService(self) -> None:
        super().startService()
        self._loop.start(DAY_S, now=True)

    def stopService(self) -> None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()

    def update(self, cert: Path, not_after: float | None) -> None:
        """A reload installed this certificate: later checks (and one now) are about it."""
        self._cert = cert
        self.not_after = not_after
        self.check()

    def check(self) -> None:
        if self.not_after is None:
            return
        left = self.not_after - self._clock.seconds()
        if left > WARN_DAYS * DAY_S:
            return
        if left <= 0:
            log.error(
                "the certificate {cert} of node {node} expired at {until}: peers refuse it; "
                "renew it (`graft certs renew`) and reload (`graft certs reload` or SIGHUP)",
                cert=self._cert,
                node=self._node_id,
                until=_utc(self.not_after),
            )
            return
        log.warn(
            "the certificate {cert} of node {node} expires in {days} days, at {until}: renew "
            "it (`graft certs renew`) and reload (`graft certs reload` or SIGHUP)",
            cert=self._cert,
            node=self._node_id,
            days=int(left // DAY_S),
            until=_utc(self.not_after),
        )


def _utc(when: float | None) -> str | None:
    if when is None:
        return None
    return datetime.fromtimestamp(when, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
