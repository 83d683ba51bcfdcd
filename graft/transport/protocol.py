"""One peer connection: TLS below, frames above, the hello check, message and RPC dispatch.

Life of a connection: TCP connects, TLS handshakes (both certificates checked against the cluster
CA by OpenSSL; the client also checks the server names the dialled host), then each side sends a
hello. The receiver of a hello accepts the connection only if the protocol version is its own,
the cluster name is its own, the node is a current member (and, on an outbound connection, is
the node that was dialled), the peer's certificate names that node id among its DNS
subjectAltNames, and the settings the cluster must agree on (graft.agreement) are the same on
both nodes. Anything else is logged with the reason and the connection is dropped; a settings
mismatch is logged once per peer and value, not at every redial. After
that, Raft messages are delivered to the owner and ``_ask`` requests dispatched to it; answers
are paired with pending calls by id. A malformed frame, or a message whose sender is not the
authenticated node, drops the connection.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from graft import devtrace
from graft.agreement import compare_settings
from graft.raft.messages import MESSAGE_TYPES, Message
from graft.socket_flush import flush_now
from graft.transport.errors import CallTimeout, PeerUnavailable, RemoteError
from graft.transport.tls import certificate_names
from graft.wire import (
    PROTOCOL_VERSION,
    Answer,
    Ask,
    CommandRegistry,
    ErrorAnswer,
    FrameDecoder,
    Hello,
    ProtocolError,
    SchemaError,
    encode_frame,
    encode_message_frame,
)
from graft.wire.commands import ANSWER_TOO_LARGE

log = Logger(namespace="graft.transport")

HELLO_TIMEOUT = 10.0
_MESSAGE_CLASSES = frozenset(MESSAGE_TYPES)
_CLOSED = Failure(ConnectionDone())  # type: ignore[no-untyped-call]


class ConnectionOwner(Protocol):
    """What a connection needs from the service that owns it (PeerTransport, or a test)."""

    node_id: str
    cluster: str
    commands: CommandRegistry
    max_frame_bytes: int
    reactor: Any  # IReactorTime
    settings: Mapping[str, str]  # sent in the hello, compared with the peer's

    def first_time(self, key: Hashable) -> bool: ...

    def is_member(self, node_id: str) -> bool: ...
    def connection_made(self, connection: PeerConnection) -> None: ...
    def connection_authenticated(self, connection: PeerConnection) -> None: ...
    def connection_lost(self, connection: PeerConnection, reason: Failure) -> None: ...
    def message_received(self, connection: PeerConnection, message: Message) -> None: ...
    def request_received(
        self, peer: str, command: str, args: dict[str, Any]
    ) -> defer.Deferred[dict[str, Any]]: ...
    def frame_too_large(self, connection: PeerConnection, size: int) -> None: ...


@dataclass(slots=True)
class _PendingCall:
    command: str
    deferred: defer.Deferred[dict[str, Any]]
    timer: Any


@implementer(IHandshakeListener)
class PeerConnection(TwistedProtocol):
    """The application protocol of one peer connection (it sits inside TLSMemoryBIOProtocol)."""

    def __init__(
        self,
        owner: ConnectionOwner,
        *,
        expected_peer: str | None,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        self.owner = owner
        self.expected_peer = expected_peer  # set on outbound connections: whom we dialled
        self.peer: str | None = None  # set once the hello has been accepted
        self.closed: defer.Deferred[None] = defer.Deferred()
        self._on_lost = on_lost
        self._decoder = FrameDecoder(max_frame_bytes=owner.max_frame_bytes, commands=owner.commands)
        self._closing = False
        self._refused = False  # a refusal reason has already been logged
        self._hello_timer: Any = None
        self._ids = itertools.count(1)
        self._pending: dict[int, _PendingCall] = {}
        self._address = "?"
        self.host = "?"  # the remote address, without the port
        self._tls: Any = None
        # Frames not yet handed to TLS: flush() writes them as one TLS record and one send().
        self._out: list[bytes] = []
        self._flush_call: Any = None  # the end-of-turn flush of frames written one by one

    @property
    def closing(self) -> bool:
        """Dropped or lost: nothing more is sent or delivered on this connection."""
        return self._closing

    @property
    def outbound(self) -> bool:
        return self.expected_peer is not None

    def describe(self) -> str:
        direction = f"to {self.expected_peer}" if self.outbound else "from"
        return f"{direction} {self._address}"

    # -- Twisted callbacks -------------------------------------------------------------------

    def connectionMade(self) -> None:
        self._tls = self.transport  # TLSMemoryBIOProtocol (ISSLTransport)
        peer = self._tls.getPeer()
        self.host = str(getattr(peer, "host", peer))
        self._address = f"{self.host}:{getattr(peer, 'port', '')}"
        self._hello_timer = self.owner.reactor.callLater(HELLO_TIMEOUT, self._hello_timed_out)
        _tune_socket(self._tls)
        self.owner.connection_made(self)

    def handshakeCompleted(self) -> None:
        hello = Hello(
            version=PROTOCOL_VERSION,
            cluster=self.owner.cluster,
            node_id=self.owner.node_id,
            settings=dict(self.owner.settings),
        )
        self._write(encode_frame(hello))

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        if devtrace.ON:
            devtrace.mark("peer.data")
        try:
            frames = self._decoder.feed(data)
        except ProtocolError as e:
            self.drop(f"protocol error: {e.reason}")
            return
        owner = self.owner
        for frame in frames:
            if self._closing:
                return
            if type(frame) in _MESSAGE_CLASSES:
                message: Message = frame  # type: ignore[assignment]
                if message.sender != self.peer or message.to != owner.node_id:
                    self.drop(
                        f"{type(message).__name__} from {message.sender} to {message.to}"
                        f" on the connection of {self.peer}"
                    )
                    return
                owner.message_received(self, message)
            elif isinstance(frame, Hello):
                self._hello_received(frame)
            elif isinstance(frame, Ask):
                self._ask_received(frame)
            elif isinstance(frame, Answer | ErrorAnswer):
                self._answer_received(frame)

    def connectionLost(self, reason: Failure = _CLOSED) -> None:
        self._closing = True
        self._out.clear()
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        if self._hello_timer is not None and self._hello_timer.active():
            self._hello_timer.cancel()
        self._hello_timer = None
        # An outbound attempt's failure is the transport's reachability line, once per change.
        if self.peer is None and not self._refused and not self.outbound:
            log.warn(
                "peer connection {connection} closed before it was authenticated: {reason}",
                connection=self.describe(),
                reason=_reason_text(reason),
            )
        pending, self._pending = self._pending, {}
        for call in pending.values():
            if call.timer is not None and call.timer.active():
                call.timer.cancel()
            call.deferred.errback(
                PeerUnavailable(self.peer or str(self.expected_peer), "connection lost")
            )
        self.owner.connection_lost(self, reason)
        if self._on_lost is not None:
            self._on_lost()
        self.closed.callback(None)

    # -- sending -----------------------------------------------------------------------------

    def send_messages(self, messages: Sequence[Message]) -> int:
        """Send Raft messages now: encrypted as one TLS record and handed to the kernel before
        this returns, with any frames still queued ahead of them. A message over the frame
        limit is left out; returns how many were sent."""
        out = self._out
        limit = self.owner.max_frame_bytes
        sent = 0
        for message in messages:
            frame = encode_message_frame(message)
            if len(frame) - 4 > limit:
                self.owner.frame_too_large(self, len(frame) - 4)
            else:
                out.append(frame)
                sent += 1
        self.flush()
        return sent

    def flush(self) -> None:
        """Write the queued frames now, as one TLS record, and send it without waiting for the
        reactor's next iteration."""
        out = self._out
        if not out or self._closing:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        tls = self._tls
        tls.write(data)
        flush_now(tls.transport)

    def ask(
        self, command: str, args: dict[str, Any], timeout: float
    ) -> defer.Deferred[dict[str, Any]]:
        """Send a request; the Deferred fires with the checked answer or fails with a
        PeerUnavailable, CallTimeout or RemoteError."""
        peer = self.peer or str(self.expected_peer)
        try:
            checked = self.owner.commands.outgoing_arguments(command, args)
        except SchemaError as e:
            return defer.fail(e)
        if self._closing:
            return defer.fail(PeerUnavailable(peer, "connection is closing"))
        call_id = next(self._ids)
        frame = encode_frame(Ask(id=call_id, command=command, args=checked))
        if len(frame) - 4 > self.owner.max_frame_bytes:
            return defer.fail(
                SchemaError(f"{command} request of {len(frame)} bytes exceeds the frame limit")
            )

        def cancel(d: defer.Deferred[dict[str, Any]]) -> None:
            call = self._pending.pop(call_id, None)
            if call is not None and call.timer is not None and call.timer.active():
                call.timer.cancel()

        deferred: defer.Deferred[dict[str, Any]] = defer.Deferred(cancel)
        timer = self.owner.reactor.callLater(timeout, self._call_timed_out, call_id, timeout)
        self._pending[call_id] = _PendingCall(command=command, deferred=deferred, timer=timer)
        self._write(frame)
        return deferred

    def _write(self, frame: bytes) -> None:
        """Queue a frame written on its own (the hello, a request, an answer): it leaves with
        the next flush, at the latest at the end of this reactor turn, so that the answers of
        one turn share a TLS record and a send()."""
        self._out.append(frame)
        if self._flush_call is None:
            self._flush_call = self.owner.reactor.callLater(0, self._end_of_turn)

    def _end_of_turn(self) -> None:
        self._flush_call = None
        self.flush()

    def drop(self, reason: str, *, quiet: bool = False) -> None:
        """Log why (unless ``quiet``: the caller logged it) and close the connection; nothing
        more is read from it."""
        if self._closing:
            return
        self._closing = True
        self._refused = True
        if not quiet:
            log.warn(
                "dropping peer connection {connection} (node {peer}): {reason}",
                connection=self.describe(),
                peer=self.peer,
                reason=reason,
            )
        if self._out:  # what was written before the drop still leaves, as it always did
            self._tls.write(b"".join(self._out))
            self._out.clear()
        self._tls.loseConnection()

    def abort(self) -> None:
        """Close at once, without a TLS goodbye (used when the service stops)."""
        self._closing = True
        self._refused = True
        self._tls.abortConnection()

    # -- receiving ---------------------------------------------------------------------------

    def _hello_received(self, hello: Hello) -> None:
        reason = self._refusal(hello)
        if reason is not None:
            self.drop(f"refused hello from node {hello.node_id!r}: {reason}")
            return
        if not self._settings_agree(hello):
            return
        if self._hello_timer is not None and self._hello_timer.active():
            self._hello_timer.cancel()
        self._hello_timer = None
        self.peer = hello.node_id
        self.owner.connection_authenticated(self)

    def _refusal(self, hello: Hello) -> str | None:
        owner = self.owner
        if hello.version != PROTOCOL_VERSION:
            return f"protocol version {hello.version} (this node speaks {PROTOCOL_VERSION})"
        if hello.cluster != owner.cluster:
            return f"cluster {hello.cluster!r} (this node is in {owner.cluster!r})"
        if hello.node_id == owner.node_id:
            return "it claims this node's own id"
        if self.expected_peer is not None and hello.node_id != self.expected_peer:
            return f"dialled {self.expected_peer!r} but it says it is {hello.node_id!r}"
        if not owner.is_member(hello.node_id):
            return "not a member of the cluster"
        names = certificate_names(self._tls.getPeerCertificate())
        if hello.node_id not in names:
            return f"its certificate names {sorted(names)}, not {hello.node_id!r}"
        return None

    def _settings_agree(self, hello: Hello) -> bool:
        """Compare the peer's settings with ours: a difference that could split replicas drops
        the connection, a difference in timings is a warning. Either is logged once per peer and
        value (the dialler retries every few seconds; the log should not)."""
        peer = hello.node_id
        owner = self.owner
        if hello.settings is None:
            if owner.first_time(("no settings", peer)):
                log.warn(
                    "peer {peer} sent no settings in its hello (an older version): the FSM,"
                    " SQLite build and timeouts cannot be compared with it",
                    peer=peer,
                )
            return True
        differences = compare_settings(owner.settings, hello.settings)
        for difference in differences:
            if not difference.fatal and owner.first_time(("differs", peer, difference)):
                log.warn(
                    "settings differ: {difference}; every node should use the same",
                    difference=difference.describe(peer),
                )
        fatal = tuple(d for d in differences if d.fatal)
        if not fatal:
            return True
        reason = "; ".join(d.describe(peer) for d in fatal)
        if owner.first_time(("refused", peer, fatal)):
            log.error(
                "refusing peer connection {connection} of node {peer}: {reason}. Nodes that"
                " disagree on these could apply the same command differently, so they do not"
                " talk; run every node with the same settings (docs/operations.md, 'Settings"
                " every node must share')",
                connection=self.describe(),
                peer=peer,
                reason=reason,
            )
        self.drop(f"settings differ from node {peer}: {reason}", quiet=True)
        return False

    def _hello_timed_out(self) -> None:
        self._hello_timer = None
        self.drop(f"no hello within {HELLO_TIMEOUT:g} seconds")

    def _ask_received(self, ask: Ask) -> None:
        peer = self.peer
        assert peer is not None  # the decoder yields nothing before an accepted hello
        if ask.command not in self.owner.commands:
            self._write_error(
                ask.id, "unknown_command", f"this node has no command {ask.command!r}"
            )
            return
        d = defer.maybeDeferred(self.owner.request_received, peer, ask.command, ask.args)
        d.addCallback(self._write_answer, ask)
        d.addErrback(self._write_failure, ask)

    def _write_answer(self, result: dict[str, Any], ask: Ask) -> None:
        if self._closing:
            return
        try:
            checked = self.owner.commands.outgoing_response(ask.command, result)
        except SchemaError as e:
            log.error(
                "answer to {command} breaks its schema: {reason}", command=ask.command, reason=e
            )
            self._write_error(ask.id, "internal", "the handler's answer broke the schema")
            return
        frame = encode_frame(Answer(id=ask.id, result=checked))
        limit = self.owner.max_frame_bytes
        if len(frame) - 4 > limit:
            self._write_error(
                ask.id,
                ANSWER_TOO_LARGE,
                f"the answer to {ask.command} is {len(frame) - 4} bytes, over the peer frame "
                f"limit of {limit}; the request itself was carried out",
            )
            return
        self._write(frame)

    def _write_failure(self, failure: Failure, ask: Ask) -> None:
        # A handler answers with an error code by failing with RemoteError(code, message) or any
        # exception with str ``code`` and ``message`` attributes (graft.errors.GraftError).
        code = getattr(failure.value, "code", None)
        message = getattr(failure.value, "message", None)
        if isinstance(code, str) and isinstance(message, str):
            self._write_error(ask.id, code, message)
            return
        log.failure("handler of {command} failed", failure, command=ask.command)
        self._write_error(ask.id, "internal", f"{ask.command} failed on the peer; see its log")

    def _write_error(self, call_id: int, code: str, message: str) -> None:
        if not self._closing:
            frame = encode_frame(ErrorAnswer(id=call_id, code=code, message=message))
            self._write(frame)

    def _answer_received(self, frame: Answer | ErrorAnswer) -> None:
        call = self._pending.pop(frame.id, None)
        if call is None:
            return  # the call timed out or was cancelled: nobody is waiting for it
        if call.timer is not None and call.timer.active():
            call.timer.cancel()
        if isinstance(frame, ErrorAnswer):
            call.deferred.errback(RemoteError(frame.code, frame.message))
            return
        command = self.owner.commands.get(call.command)
        assert command is not None  # ask() only sends registered commands
        try:
            result = command.check_response(frame.result, f"{call.command} answer")
        except ProtocolError as e:
            call.deferred.errback(PeerUnavailable(str(self.peer), f"malformed answer: {e.reason}"))
            self.drop(f"protocol error: {e.reason}")
            return
        call.deferred.callback(result)

    def _call_timed_out(self, call_id: int, timeout: float) -> None:
        call = self._pending.pop(call_id, None)
        if call is not None:
            call.deferred.errback(
                CallTimeout(str(self.peer), f"no answer to {call.command} within {timeout:g} s")
            )


def _reason_text(reason: Failure) -> str:
    return f"{type(reason.value).__name__}: {reason.value}"


# How long sent data may stay unacknowledged before the kernel drops the connection. Without a
# bound, a connection that carried traffic into a partition sits in TCP's retransmission backoff
# for seconds after the partition heals; with it, the connection fails and the dialer redials.
UNACKNOWLEDGED_TIMEOUT_MS = 2000


def _tune_socket(tls_transport: Any) -> None:
    """Send each flush at once, and bound how long sent data may stay unacknowledged.

    A connection's writes already leave batched (a Ready's messages as one write, the answers
    of a reactor turn as one), so Nagle's algorithm only adds delay: an AppendEntries written
    while an earlier segment awaits the peer's (delayed) ACK would wait for it, on every commit
    round.
    """
    tcp = getattr(tls_transport, "transport", None)
    set_no_delay = getattr(tcp, "setTcpNoDelay", None)
    if set_no_delay is not None:
        with contextlib.suppress(OSError):
            set_no_delay(True)
    get_handle = getattr(tcp, "getHandle", None)
    option = getattr(socket, "TCP_USER_TIMEOUT", None)  # Linux only
    if get_handle is None or option is None:
        return
    # Not a real socket (tests in memory), or an option this kernel lacks: keep the default.
    with contextlib.suppress(OSError, AttributeError):
        get_handle().setsockopt(socket.IPPROTO_TCP, option, UNACKNOWLEDGED_TIMEOUT_MS)
