"""The peer channel: mutual-TLS connections between nodes carrying graft.wire frames."""

from graft.transport.dialer import Backoff
from graft.transport.errors import CallTimeout, PeerUnavailable, RemoteError, TransportError
from graft.transport.protocol import PeerConnection
from graft.transport.service import (
    ConnectionLimits,
    PeerAddress,
    PeerTransport,
    TransportStats,
)
from graft.transport.tls import TLSContexts, TLSFilesError, TLSPaths, certificate_names

__all__ = [
    "Backoff",
    "CallTimeout",
    "ConnectionLimits",
    "PeerAddress",
    "PeerConnection",
    "PeerTransport",
    "PeerUnavailable",
    "RemoteError",
    "TLSContexts",
    "TLSFilesError",
    "TLSPaths",
    "TransportError",
    "TransportStats",
    "certificate_names",
]
