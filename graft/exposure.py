"""The warning for an API that anyone on the network can use: it listens beyond loopback and
no tokens are configured. Logged by the node at start, and printed on stderr by `graft start`
and `graft dev`, so an open cluster is never open without a word."""

from __future__ import annotations

import ipaddress

from graft.config import ClusterConfig


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses; a host name that is not ``localhost`` may
    resolve to anything, so it counts as beyond loopback."""
    if host.strip().lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def open_api_warning(cfg: ClusterConfig, node_id: str) -> str | None:
    """The warning for ``node_id``'s API, or None when it is loopback-only or needs tokens."""
    peer = cfg.peers[node_id]
    # What the API binds decides, not the advertised host (peers.<id>.listen.api may differ).
    if any(cfg.api.tokens.values()) or is_loopback(peer.api_interface):
        return None
    bound = "" if peer.listen_api is None else f" (bound to {peer.api_interface})"
    return (
        f"WARNING: the API of node {node_id} listens on {peer.host}:{peer.api_port}{bound}, beyond "
        "loopback, and api.tokens is not set: anyone who can reach that port can write, change "
        "the membership, shut the node down and download snapshots (the whole database). Set "
        "api.tokens (and api.tls), or give the node a loopback host."
    )
