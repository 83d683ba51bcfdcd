"""Why a peer could not be dialled, in the words an operator reads in an error message."""

from __future__ import annotations

from twisted.internet import error


def dial_failure(reason: BaseException) -> str:
    """A short cause of a failed dial: "connection refused", "connection timed out", ..."""
    if isinstance(reason, error.ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, error.TCPTimedOutError | error.TimeoutError):
        return "connection timed out"
    if isinstance(reason, error.DNSLookupError):
        return "its host name does not resolve"
    if isinstance(reason, error.NoRouteError):
        return "no route to its host"
    text = " ".join(str(reason).split())
    return text or type(reason).__name__
