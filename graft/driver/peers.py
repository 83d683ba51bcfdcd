"""The peer channel as the driver sees it, attached once the transport exists."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Protocol

from twisted.internet.defer import Deferred, fail

from graft.raft.messages import Message
from graft.raft.types import MemberAddress
from graft.transport import PeerUnavailable


class PeerChannel(Protocol):
    """The part of graft.transport.PeerTransport the driver uses."""

    def send_all(self, messages: Sequence[Message]) -> None:
        """Send now, before returning: a Ready's messages to one peer as one write."""
        ...

    def call(
        self, peer: str, command: str, args: dict[str, Any], *, timeout: float | None = None
    ) -> Deferred[dict[str, Any]]: ...

    def connected_peers(self) -> set[str]: ...

    def update_peers(self, peers: Mapping[str, MemberAddress]) -> None: ...

    def admit_unlisted(self, admit: bool, members: Collection[str] = ()) -> None: ...


class PeerPort:
    """What the driver's parts hold: the transport once attached (the transport needs the
    node's callbacks, so it is built after the node), a channel that reaches no one before."""

    def __init__(self) -> None:
        self._channel: PeerChannel | None = None
        # Told of every batch of messages handed to the channel (the heartbeat timer).
        self.on_sent: Callable[[Sequence[Message]], None] | None = None

    def attach(self, channel: PeerChannel) -> None:
        self._channel = channel

    @property
    def channel(self) -> PeerChannel | None:
        return self._channel

    def send_all(self, messages: Sequence[Message]) -> None:
        if self._channel is not None and messages:
            self._channel.send_all(messages)
            if self.on_sent is not None:
                self.on_sent(messages)

    def call(
        self, peer: str, command: str, args: dict[str, Any], *, timeout: float | None = None
    ) -> Deferred[dict[str, Any]]:
        if self._channel is None:
            return fail(PeerUnavailable(peer, "this node has no peer transport"))
        return self._channel.call(peer, command, args, timeout=timeout)

    def connected_peers(self) -> set[str]:
        return set() if self._channel is None else self._channel.connected_peers()

    def dial_error(self, peer: str) -> str | None:
        """Why the last dial of ``peer`` failed, if the channel keeps it (the transport does)."""
        dial_error = getattr(self._channel, "dial_error", None)
        return None if dial_error is None else dial_error(peer)

    def update_peers(self, peers: Mapping[str, MemberAddress]) -> None:
        if self._channel is not None:
            self._channel.update_peers(peers)

    def admit_unlisted(self, admit: bool, members: Collection[str] = ()) -> None:
        if self._channel is not None:
            self._channel.admit_unlisted(admit, members)
