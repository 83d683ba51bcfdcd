"""Whether this node can reach each peer, from its outbound connection attempts: a line in the
log when a peer becomes unreachable (and why: connection refused, TLS refused, timeout, ...),
when the reason changes, and when the peer is reachable again. One line per change, not per
attempt: the dialer retries every few seconds at most, the log should not."""

from __future__ import annotations

from dataclasses import dataclass

from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import error
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger(namespace="graft.transport")


@dataclass(slots=True)
class _Down:
    cause: str  # the kind of failure: a change of kind is a new line
    attempts: int


def why_unreachable(reason: Failure | str) -> tuple[str, str]:
    """(kind, text) of a failed attempt: the kind names the state, the text says what to do."""
    if isinstance(reason, str):
        return "closed", reason
    value = reason.value
    if isinstance(value, error.ConnectionRefusedError):
        return "refused", "connection refused (is the node running, and is its p2p port right?)"
    if isinstance(value, error.TimeoutError | error.TCPTimedOutError | TimeoutError):
        return "timeout", "no answer in time (the host is down, or a firewall drops packets)"
    if isinstance(value, error.DNSLookupError):
        return "dns", f"its host name does not resolve ({value})"
    if isinstance(value, SSL.Error | VerificationError):
        return "tls", (
            f"TLS refused ({type(value).__name__}: {value}): check that both nodes' "
            "certificates come from the same cluster CA and name the node"
        )
    if isinstance(value, error.ConnectionDone | error.ConnectionLost):
        return "closed", (
            "it closed the connection before accepting this node (its log says why: not a "
            "member, another cluster, settings that differ)"
        )
    return type(value).__name__, f"{type(value).__name__}: {value}"


class Reachability:
    """See the module docstring. The transport calls ``failed`` for each failed outbound
    attempt, ``reached`` when one is authenticated, ``forget`` when a peer leaves."""

    def __init__(self) -> None:
        self._down: dict[str, _Down] = {}

    def unreachable(self) -> dict[str, str]:
        """The peers this node cannot reach now, with the kind of failure."""
        return {peer: down.cause for peer, down in self._down.items()}

    def failed_attempts(self, peer: str) -> int:
        """Failed attempts since ``peer`` was last reached (0: it is reachable)."""
        down = self._down.get(peer)
        return 0 if down is None else down.attempts

    def failed(self, peer: str, address: str, reason: Failure | str) -> None:
        cause, text = why_unreachable(reason)
        down = self._down.get(peer)
        if down is not None and down.cause == cause:
            down.attempts += 1
            return
        self._down[peer] = _Down(cause=cause, attempts=1)
        log.warn(
            "cannot reach peer {peer} at {address}: {why}; retrying (logged again when this "
            "changes)",
            peer=peer,
            address=address,
            why=text,
        )

    def reached(self, peer: str, address: str) -> None:
        down = self._down.pop(peer, None)
        if down is not None:
            log.info(
                "peer {peer} at {address} is reachable again (after {attempts} failed attempts)",
                peer=peer,
                address=address,
                attempts=down.attempts,
            )

    def forget(self, peer: str) -> None:
        self._down.pop(peer, None)
