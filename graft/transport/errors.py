"""Errors of the peer channel, as seen by a caller of PeerTransport.call."""

from __future__ import annotations


class TransportError(Exception):
    """Base class of the peer channel's errors."""


class PeerUnavailable(TransportError):
    """No authenticated connection to the peer, or it closed before answering; retry later."""

    def __init__(self, peer: str, message: str) -> None:
        super().__init__(f"peer {peer}: {message}")
        self.peer = peer


class CallTimeout(PeerUnavailable):
    """The peer did not answer in time; the request may or may not have taken effect."""


class RemoteError(TransportError):
    """The peer answered a request with an error.

    A request handler raises it to answer with a declared error code; the caller receives it.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
