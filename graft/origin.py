"""Web origins (scheme://host[:port]) as browsers send them in the ``Origin`` header, and how
a host is written in a URL.

Used by the config (``api.allowed_origins``) and by the API's check on state-changing requests;
kept outside graft.api so that loading the config does not import the HTTP stack.
"""

from __future__ import annotations

from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_origin(text: str) -> str | None:
    """``scheme://host[:port]`` in lowercase, the scheme's default port left out, or None when
    ``text`` is not an http(s) origin (a path, user info, query or fragment included)."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in _DEFAULT_PORTS or not host or parts.username is not None:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    host = url_host(host)
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def url_host(host: str) -> str:
    """``host`` as it is written in a URL: an IPv6 address in brackets, anything else as is."""
    return f"[{host}]" if ":" in host else host
