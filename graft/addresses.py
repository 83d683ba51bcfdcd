"""Where a node listens, given where it is reached: the one rule both of its listeners (the peer
port and the HTTP API) follow.

A node has an advertised host (``peers.<id>.host``: what peers dial, what clients use, what its
certificate names) and, for each port, a listen address (``peers.<id>.listen.p2p`` /
``.api``). Without a listen address a port listens on:

- the advertised host itself when that is an IP address (``127.0.0.2`` -> ``127.0.0.2``,
  ``::1`` -> ``::1``), so the nodes of `graft dev` share one machine;
- every IPv4 interface (``0.0.0.0``) when it is a DNS name: a name may resolve to a loopback
  address on its own machine (Debian maps the host name to 127.0.1.1), which no other host can
  reach. ``localhost`` is the exception: it binds 127.0.0.1, loopback as its name says.

Kept outside graft.config and graft.transport so that both use this one function.
"""

from __future__ import annotations

import ipaddress

__all__ = ["ANY_IPV4", "listen_interface"]

ANY_IPV4 = "0.0.0.0"


def listen_interface(advertised: str, listen: str | None = None) -> str:
    """The address to bind: ``listen`` when configured, else the rule above for ``advertised``."""
    if listen is not None:
        return listen
    if advertised.lower().rstrip(".") == "localhost":
        return "127.0.0.1"  # a name, but loopback by definition: never wider
    try:
        ipaddress.ip_address(advertised)
    except ValueError:
        return ANY_IPV4
    return advertised
