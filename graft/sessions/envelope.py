"""The session operations a stamped entry carries (stamp format 2, graft.stamp).

An entry whose stamp has format ``SESSION_VERSION`` holds one of these after its stamp::

    1                                                      register a session
    2 | id length u8 | id | sequence u64 | acked u64 | command     a numbered command
    3 | idle_ns u64 | max_sessions u32 | max_results u32          the session settings
                                                             (0: keep the current value)

(little-endian). Plain commands keep stamp format 1, so a cluster that uses no sessions
writes exactly the entries it wrote before. Pure: no I/O.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from graft.sessions.table import SessionSettings

REGISTER, COMMAND, SETTINGS = 1, 2, 3
_NUMBERS = struct.Struct("<QQ")
_SETTINGS = struct.Struct("<QII")
MAX_SEQUENCE = 2**63 - 1
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class EnvelopeError(ValueError):
    """Bytes that are not a session operation this build reads."""


@dataclass(frozen=True, slots=True)
class Register:
    pass


@dataclass(frozen=True, slots=True)
class NumberedCommand:
    session: str
    sequence: int
    acked: int  # 0: none sent
    command: bytes


@dataclass(frozen=True, slots=True)
class SetSettings:
    settings: SessionSettings


Operation = Register | NumberedCommand | SetSettings


def encode_register() -> bytes:
    return bytes([REGISTER])


def encode_command(session: str, sequence: int, acked: int, command: bytes) -> bytes:
    raw = session.encode("ascii")
    if not SESSION_ID.fullmatch(session):
        raise ValueError(f"bad session id {session!r}")
    return bytes([COMMAND, len(raw)]) + raw + _NUMBERS.pack(sequence, acked) + command


def encode_numbered(session: str, sequence: int, acked: int, commands: list[bytes]) -> list[bytes]:
    """A batch's operations: the commands take ``sequence``, ``sequence + 1``, ... in order."""
    return [encode_command(session, sequence + i, acked, c) for i, c in enumerate(commands)]


def encode_settings(settings: SessionSettings) -> bytes:
    return bytes([SETTINGS]) + _SETTINGS.pack(
        settings.idle_ns, settings.max_sessions, settings.max_results
    )


def decode(body: bytes) -> Operation:
    if not body:
        raise EnvelopeError("an empty session operation")
    kind = body[0]
    if kind == REGISTER and len(body) == 1:
        return Register()
    if kind == COMMAND and len(body) >= 2:
        size = body[1]
        start = 2 + size
        if len(body) >= start + _NUMBERS.size:
            try:
                session = body[2:start].decode("ascii")
            except UnicodeDecodeError:
                session = ""
            sequence, acked = _NUMBERS.unpack_from(body, start)
            if SESSION_ID.fullmatch(session) and 1 <= sequence <= MAX_SEQUENCE:
                return NumberedCommand(session, sequence, acked, body[start + _NUMBERS.size :])
    if kind == SETTINGS and len(body) == 1 + _SETTINGS.size:
        return SetSettings(SessionSettings(*_SETTINGS.unpack_from(body, 1)))
    raise EnvelopeError(f"not a session operation this build reads (kind {kind})")
