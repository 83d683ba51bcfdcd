"""The peer protocol's codec: frames, Raft messages and AMP-style commands, without I/O."""

from graft.wire.commands import (
    COMMANDS,
    FORWARD_QUERY,
    FORWARD_SUBMIT,
    INSTALL_SNAPSHOT_CHUNK,
    STANDARD_ERRORS,
    Command,
    CommandRegistry,
)
from graft.wire.errors import ProtocolError, SchemaError
from graft.wire.frames import (
    DEFAULT_MAX_FRAME_BYTES,
    MAX_HELLO_BYTES,
    PROTOCOL_VERSION,
    Answer,
    Ask,
    ErrorAnswer,
    Frame,
    FrameDecoder,
    Hello,
    encode_frame,
    encode_message_frame,
)
from graft.wire.messages import decode_message, encode_message

__all__ = [
    "COMMANDS",
    "DEFAULT_MAX_FRAME_BYTES",
    "FORWARD_QUERY",
    "FORWARD_SUBMIT",
    "INSTALL_SNAPSHOT_CHUNK",
    "MAX_HELLO_BYTES",
    "PROTOCOL_VERSION",
    "STANDARD_ERRORS",
    "Answer",
    "Ask",
    "Command",
    "CommandRegistry",
    "ErrorAnswer",
    "Frame",
    "FrameDecoder",
    "Hello",
    "ProtocolError",
    "SchemaError",
    "decode_message",
    "encode_frame",
    "encode_message",
    "encode_message_frame",
]
