"""The one way every command builds its :class:`GraftClient`: from --url, or from the config's
peers, with the TLS context an https:// API needs."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from graft.cli.errors import GraftCLIError
from graft.cli.options import cluster_config
from graft.client import GraftClient

if TYPE_CHECKING:
    from graft.config import ClusterConfig


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientSettings:
    """What the client options (graft.cli.options.client_options) say."""

    config_path: Path | None = None
    urls: tuple[str, ...] = ()
    timeout: float
    token: str | None = None
    cacert: Path | None = None
    cert: Path | None = None
    key: Path | None = None


def make_client(
    settings: ClientSettings,
    *,
    option: str = "--url",
    retry_unreachable: bool = True,
    session: bool = True,
) -> GraftClient:
    """A client for the members at ``settings.urls`` (named by ``option`` in errors), or else
    for the config's peers, whose cluster CA is then the default --cacert. ``session``: its
    commands go under a client session (graft.client_sessions)."""
    names: dict[str, str] = {}
    cacert = settings.cacert
    if settings.urls:
        urls = [checked_base_url(url, option) for url in settings.urls]
    else:
        cfg = cluster_config(settings.config_path)
        urls = []
        for node_id in cfg.peers:
            url = cfg.api_url(node_id)
            urls.append(url)
            names[url] = node_id
        if cacert is None:
            cacert = cluster_ca(cfg, next(iter(cfg.peers)))
    return GraftClient(
        urls=urls,
        names=names,
        timeout=settings.timeout,
        token=settings.token,
        ssl_context=_tls_context(urls, cacert, settings.cert, settings.key),
        retry_unreachable=retry_unreachable,
        session=session,
    )


def checked_base_url(url: str, option: str) -> str:
    """``url`` without a trailing slash, or a one-line error if it is not an http(s) URL."""
    if not url.startswith(("http://", "https://")):
        raise GraftCLIError(
            f"{option} {url}: expected a member's API base URL such as http://127.0.0.1:8080"
        )
    return url.rstrip("/")


def cluster_ca(cfg: ClusterConfig, node_id: str) -> Path | None:
    """The cluster CA certificate of ``node_id``'s TLS settings, if that file exists."""
    path = cfg.tls_for(node_id).ca
    return path if path.is_file() else None


def node_url(settings: ClientSettings, node_id: str) -> str:
    """The API URL of one node: from the config's peers, or the single --url."""
    if settings.urls:
        if len(settings.urls) != 1:
            raise GraftCLIError(
                f"{len(settings.urls)} --url given: give exactly one, the API of {node_id}"
            )
        return settings.urls[0].rstrip("/")
    return cluster_config(settings.config_path).api_url(node_id)


def _tls_context(
    urls: list[str], cacert: Path | None, cert: Path | None, key: Path | None
) -> ssl.SSLContext | None:
    """The context for https:// URLs (None when there are none): ``cacert`` (else the system's
    CAs) and, when given, a client certificate."""
    if not any(url.startswith("https://") for url in urls):
        return None
    context = ssl.create_default_context(cafile=str(cacert) if cacert else None)
    if cert is not None:
        context.load_cert_chain(str(cert), str(key) if key else None)
    return context
