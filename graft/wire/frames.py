"""Framing: a 4-byte big-endian length, then a msgpack body; no I/O here.

A body is a list whose first element says what it is:

    ["_hello", version, cluster, node_id, settings]
                                              first frame on every connection, both directions
    [tag, field, ...]                         a Raft message (graft.wire.messages), one-way
    ["_ask", id, command, arguments]          an RPC request
    ["_answer", id, result]                   its answer
    ["_error", id, code, message]             or its failure

``settings`` (optional: nodes before it was added send four elements) maps names to strings:
the settings that must agree across the cluster (graft.agreement), compared by the receiver.

FrameDecoder turns received bytes into these frames and is the only place that does: anything
malformed, oversized or unknown raises ProtocolError, after which the decoder refuses more input
(the connection is to be dropped). Limits:

- the first frame is a hello: its length may not exceed MAX_HELLO_BYTES and its first bytes
  must say ``["_hello", ...`` (an unauthenticated peer gets no further than that);
- every other frame at most ``max_frame_bytes``, nested at most MAX_FRAME_DEPTH deep, and its
  decoded objects at most DECODE_FACTOR times its size plus DECODE_ALLOWANCE (graft.wire.scan);
  except Raft messages, the hot path, decoded with a budget of lists and maps instead (about
  40 times the size at most, see _unpack_message);
- msgpack's own limits (string, binary, array and map lengths) are set to the frame's size.

Buffered bytes are at most one frame's length plus the last chunk received.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import msgpack

from graft.raft.messages import Message
from graft.wire.commands import COMMANDS, CommandRegistry
from graft.wire.errors import ProtocolError
from graft.wire.messages import decode_message, encode_message
from graft.wire.scan import check_structure
from graft.wire.schema import MAX_DEPTH, check_any, describe

PROTOCOL_VERSION = 1
DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024
# A hello is a version, two names and a few settings (SQLite's compile options are the longest,
# ~1.2 KiB): far below this.
MAX_HELLO_BYTES = 8 * 1024
MAX_SETTINGS = 64
# The envelope (body list, ask arguments map, their fields) adds a few levels to MAX_DEPTH.
MAX_FRAME_DEPTH = MAX_DEPTH + 4
# Decoded objects may take this many times the frame's size (plus the allowance): a batch of
# entries with tiny commands takes about 12 times, a frame of empty arrays 64 times.
DECODE_FACTOR = 24
DECODE_ALLOWANCE = 256 * 1024
# How a hello body starts: a 4- or 5-element array, then the 6-character string "_hello".
_HELLO_ARRAYS = (0x94, 0x95)
_HELLO_KIND = b"\xa6_hello"
_LENGTH = struct.Struct(">I")
MAX_ID = 2**63 - 1
# Maps a Raft message may hold (a snapshot's membership and its parts); any more is an attack.
MAX_MESSAGE_MAPS = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class Hello:
    version: int
    cluster: str
    node_id: str
    # None: the peer predates the settings comparison (a four-element hello).
    settings: dict[str, str] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Ask:
    id: int
    command: str
    args: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    id: int
    result: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorAnswer:
    id: int
    code: str
    message: str


Frame = Message | Hello | Ask | Answer | ErrorAnswer

_packer = msgpack.Packer(use_bin_type=True)


def _body(frame: Frame) -> list[Any]:
    if isinstance(frame, Hello):
        if frame.settings is None:
            return ["_hello", frame.version, frame.cluster, frame.node_id]
        return ["_hello", frame.version, frame.cluster, frame.node_id, frame.settings]
    if isinstance(frame, Ask):
        return ["_ask", frame.id, frame.command, frame.args]
    if isinstance(frame, Answer):
        return ["_answer", frame.id, frame.result]
    if isinstance(frame, ErrorAnswer):
        return ["_error", frame.id, frame.code, frame.message]
    return encode_message(frame)


def encode_frame(frame: Frame) -> bytes:
    """Length prefix and body of one frame (the caller checks it against its size limit)."""
    body: bytes = _packer.pack(_body(frame))
    return _LENGTH.pack(len(body)) + body


def encode_message_frame(message: Message) -> bytes:
    """encode_frame for the hot path: skips the envelope type tests."""
    body: bytes = _packer.pack(encode_message(message))
    return _LENGTH.pack(len(body)) + body


def _id(value: Any, where: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_ID:
        raise ProtocolError(f"{where}: expected a request id, got {describe(value)}")
    return value


def _text(value: Any, where: str) -> str:
    if type(value) is not str:
        raise ProtocolError(f"{where}: expected a string, got {type(value).__name__}")
    return value


def _check_length(body: list[Any], n: int, what: str) -> None:
    if len(body) != n:
        raise ProtocolError(f"{what} frame: expected {n - 1} fields, got {len(body) - 1}")


def _reject_ext(code: int, data: bytes) -> Any:
    raise ProtocolError(f"msgpack extension type {code} is not used by this protocol")


def _settings(value: Any) -> dict[str, str]:
    if type(value) is not dict or len(value) > MAX_SETTINGS:
        raise ProtocolError(f"hello settings: expected a map of at most {MAX_SETTINGS} strings")
    for key, item in value.items():
        if type(key) is not str or type(item) is not str:
            raise ProtocolError("hello settings: keys and values must be strings")
    return value


def _unpack(data: memoryview, **hooks: Any) -> Any:
    """msgpack-decode one body whose structure check_structure has passed (or with ``hooks``
    that bound what is built, _unpack_message), every length limited to the body's size."""
    size = len(data)
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            ext_hook=_reject_ext,  # refuses with a message of its own
            max_str_len=size,
            max_bin_len=size,
            max_array_len=size,
            max_map_len=size // 2,
            max_ext_len=size,
            **hooks,
        )
    except ProtocolError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        raise ProtocolError(f"undecodable msgpack body ({type(e).__name__})") from None


def _is_raft_message(data: memoryview) -> bool:
    """Whether a body says ``[tag, ...]`` (a fixarray whose first item is a positive fixint):
    the shape of every Raft message and of no other frame."""
    return len(data) >= 2 and 0x91 <= data[0] <= 0x9F and data[1] <= 0x7F


class _OverBudget(Exception):
    pass


def _unpack_message(data: memoryview) -> Any:
    """msgpack-decode a Raft message's body with its memory bounded as it is built.

    Raft messages are lists of scalars, an entry being a 4-item list of at least 6 bytes, and
    hold at most a few maps (a membership). msgpack calls the hooks as it finishes each list and
    map, so at most a list per 4 bytes and MAX_MESSAGE_MAPS maps are ever built: with the
    scalars (at most ~20 bytes of objects per byte of body) and the slots of the lists, about
    40 times the body, never the 60-200 times of a body of empty arrays or tiny maps. Depth
    needs no check: msgpack's own stack stops at 1024 levels without recursion, and the
    message decoders (graft.wire.messages) only descend the fixed levels of their fields.
    """
    lists_left = len(data) // 4 + 16
    maps_left = MAX_MESSAGE_MAPS

    def count_list(value: list[Any]) -> list[Any]:
        nonlocal lists_left
        lists_left -= 1
        if lists_left < 0:
            raise _OverBudget("lists")
        return value

    def count_map(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
        nonlocal maps_left
        maps_left -= 1
        if maps_left < 0:
            raise _OverBudget("maps")
        return dict(pairs)

    try:
        return _unpack(data, list_hook=count_list, object_pairs_hook=count_map)
    except _OverBudget as e:
        raise ProtocolError(
            f"a {len(data)}-byte Raft message with more {e} than a message of that size holds"
        ) from None


class FrameDecoder:
    """Bytes in, frames out, for one connection.

    With ``expect_hello`` the first frame must be a Hello and no later frame may be one.
    ``_ask`` arguments are checked against the registered command's schema; an ask for a
    command this side does not know is passed through with its raw arguments so the receiver
    can answer ``unknown_command`` instead of dropping the connection. ``_answer`` results are
    only checked to be maps: the schema to check them against depends on which ask they answer,
    which the connection knows (CommandRegistry.get(name).check_response).
    """

    def __init__(
        self,
        *,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        commands: CommandRegistry = COMMANDS,
        expect_hello: bool = True,
    ) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.commands = commands
        self._buffer = bytearray()
        self._awaiting_hello = expect_hello
        self._failure: ProtocolError | None = None

    def feed(self, data: bytes) -> list[Frame]:
        if self._failure is not None:
            raise self._failure
        try:
            return self._feed(data)
        except ProtocolError as e:
            self._fail(e)
            raise
        except Exception as e:  # a decoder bug must cost the connection, never the node
            error = ProtocolError(f"malformed frame ({type(e).__name__}: {e!s:.200})")
            self._fail(error)
            raise error from None

    def _fail(self, error: ProtocolError) -> None:
        self._failure = error
        # A new buffer rather than clear(): the traceback may still hold a view of the old.
        self._buffer = bytearray()

    def _feed(self, data: bytes) -> list[Frame]:
        buffer = self._buffer
        buffer += data
        frames: list[Frame] = []
        available = len(buffer)
        position = 0
        unpack_length = _LENGTH.unpack_from
        with memoryview(buffer) as view:
            while available - position >= 4:
                (length,) = unpack_length(buffer, position)
                if self._awaiting_hello:
                    if length > MAX_HELLO_BYTES:
                        raise ProtocolError(
                            f"a first frame of {length} bytes: a hello takes at most"
                            f" {MAX_HELLO_BYTES}"
                        )
                    # Its kind from its first bytes, before a byte of it is buffered further.
                    head = bytes(view[position + 4 : position + 12])
                    if not _could_be_hello(head, length):
                        raise ProtocolError("the first frame must be a hello")
                elif length > self.max_frame_bytes:
                    raise ProtocolError(
                        f"frame of {length} bytes exceeds the limit of {self.max_frame_bytes}"
                    )
                end = position + 4 + length
                if end > available:
                    break
                frames.append(self._decode_body(view[position + 4 : end]))
                position = end
        if position:
            # Keep only the unparsed tail, in a buffer of its own size: the capacity a large
            # frame needed is given back once that frame has been decoded.
            rest = available - position
            self._buffer = bytearray(buffer[position:]) if rest else bytearray()
        return frames

    def _decode_body(self, data: memoryview) -> Frame:
        if not self._awaiting_hello and _is_raft_message(data):
            # The hot path (AppendEntries of up to a thousand entries): decoded with a budget on
            # containers, a fifth of the cost of walking every header first (graft.wire.scan).
            return decode_message(_unpack_message(data))
        check_structure(
            data,
            max_depth=MAX_FRAME_DEPTH,
            max_decoded_bytes=DECODE_FACTOR * len(data) + DECODE_ALLOWANCE,
        )
        body = _unpack(data)
        if type(body) is not list or not body:
            raise ProtocolError("frame body is not a non-empty list")
        kind = body[0]
        if self._awaiting_hello:
            if kind != "_hello":
                raise ProtocolError("the first frame must be a hello")
            self._awaiting_hello = False
            if len(body) not in (4, 5):
                raise ProtocolError(f"hello frame: expected 3 or 4 fields, got {len(body) - 1}")
            version = body[1]
            if type(version) is not int:
                raise ProtocolError("hello: the protocol version must be an integer")
            return Hello(
                version=version,
                cluster=_text(body[2], "hello cluster"),
                node_id=_text(body[3], "hello node id"),
                settings=_settings(body[4]) if len(body) == 5 else None,
            )
        if type(kind) is int:
            return decode_message(body)
        if kind == "_ask":
            _check_length(body, 4, "ask")
            name = _text(body[2], "ask command")
            command = self.commands.get(name)
            if command is None:
                args = check_any(body[3], f"{name} arguments")
                if type(args) is not dict:
                    raise ProtocolError(f"{name} arguments: expected a map")
            else:
                args = command.check_arguments(body[3], f"{name} arguments")
            return Ask(id=_id(body[1], "ask id"), command=name, args=args)
        if kind == "_answer":
            _check_length(body, 3, "answer")
            result = check_any(body[2], "answer result")
            if type(result) is not dict:
                raise ProtocolError("answer result: expected a map")
            return Answer(id=_id(body[1], "answer id"), result=result)
        if kind == "_error":
            _check_length(body, 4, "error")
            return ErrorAnswer(
                id=_id(body[1], "error id"),
                code=_text(body[2], "error code"),
                message=_text(body[3], "error message"),
            )
        if kind == "_hello":
            raise ProtocolError("a second hello on the same connection")
        raise ProtocolError(f"unknown frame kind {describe(kind)}")


def _could_be_hello(head: bytes, length: int) -> bool:
    """Whether a body of ``length`` bytes starting with ``head`` (its first bytes received, up
    to 8) can be a hello: checked as soon as they arrive, so nothing else is buffered or decoded
    from a peer that has not said hello."""
    if length < 1 + len(_HELLO_KIND):
        return False
    if not head:
        return True
    return head[0] in _HELLO_ARRAYS and _HELLO_KIND.startswith(head[1:])
