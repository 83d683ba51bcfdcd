"""The leader's stamp on a command: its wall-clock time and a random seed, replicated with it.

A command's entry is a STAMPED entry (graft.raft.types.EntryKind) whose data is the stamp
followed by the command::

    version u8 (1) | time_ns i64 | seed u64 | command bytes        (little-endian)

The leader's driver writes it when it proposes (graft.driver.stamps), every replica reads the
same bytes back when it applies the entry, so an FSM that takes its time and randomness from
the stamp (``apply_stamped``, graft.fsm.base) gives the same answer on every replica and in
every replay. Entries written before stamps existed are NORMAL entries: their command is the
whole data and they carry no stamp (the FSM gets None).

Format 2 (``SESSION_VERSION``) has the same header followed by a session operation instead of
a plain command (graft.sessions.envelope: a registration, a numbered command, the session
settings); plain commands keep format 1.

This module is pure (no clock, no random source): the driver supplies the values.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

STAMP_VERSION = 1  # what this build writes and reads
SESSION_VERSION = 2  # the stamp, then a session operation (graft.sessions.envelope)
_HEADER = struct.Struct("<BqQ")
STAMP_SIZE = _HEADER.size  # 17


class StampFormatError(ValueError):
    """A stamped entry this build cannot read (a newer format, or cut short)."""


@dataclass(frozen=True, slots=True)
class Stamp:
    """The leader's wall-clock time (nanoseconds since the Unix epoch, UTC) and a random 64-bit
    seed for one command. Times never go backwards along the log (docs/architecture.md)."""

    time_ns: int
    seed: int


def encode_stamped(stamp: Stamp, command: bytes, version: int = STAMP_VERSION) -> bytes:
    """The data of a STAMPED entry (``SESSION_VERSION``: ``command`` is a session operation)."""
    return _HEADER.pack(version, stamp.time_ns, stamp.seed) + command


def encode_batch(
    time_ns: int, seed: Callable[[], int], commands: Sequence[bytes], version: int = STAMP_VERSION
) -> list[bytes]:
    """``[encode_stamped(Stamp(time_ns, seed()), c, version) for c in commands]`` without a
    Stamp per command (building one costs more than packing it: the leader's hot path)."""
    pack = _HEADER.pack
    return [pack(version, time_ns, seed()) + command for command in commands]


def decode_stamped(data: bytes) -> tuple[Stamp, bytes]:
    """The stamp and the command of a STAMPED entry's data; StampFormatError if this build
    cannot read it."""
    if len(data) < STAMP_SIZE:
        raise _unreadable(data)
    version, time_ns, seed = _HEADER.unpack_from(data)
    if version != STAMP_VERSION:
        raise _unreadable(data)
    return Stamp(time_ns, seed), data[STAMP_SIZE:]


def decode_any(data: bytes) -> tuple[Stamp, bytes, bool]:
    """The stamp and the rest of a STAMPED entry's data, and whether the rest is a session
    operation (format 2) rather than a plain command; StampFormatError if this build cannot
    read it."""
    time_ns, seed, rest, sessioned = split_stamped(data)
    return Stamp(time_ns, seed), rest, sessioned


def split_stamped(data: bytes) -> tuple[int, int, bytes, bool]:
    """``decode_any`` as (time_ns, seed, rest, sessioned), without building the Stamp: every
    replica reads every entry this way, and an FSM without ``apply_stamped`` needs none."""
    if len(data) >= STAMP_SIZE:
        version, time_ns, seed = _HEADER.unpack_from(data)
        if version == STAMP_VERSION:
            return time_ns, seed, data[STAMP_SIZE:], False
        if version == SESSION_VERSION:
            return time_ns, seed, data[STAMP_SIZE:], True
    raise _unreadable(data)


def _unreadable(data: bytes) -> StampFormatError:
    """Why this build cannot read the stamp of a STAMPED entry's ``data``."""
    if len(data) < STAMP_SIZE:
        return StampFormatError(
            f"a stamped entry holds {len(data)} bytes, fewer than its {STAMP_SIZE}-byte stamp"
        )
    return StampFormatError(
        f"the entry's stamp has format version {data[0]}, this build reads "
        f"{STAMP_VERSION} and {SESSION_VERSION}: it was written by a newer Graft; "
        "upgrade this node"
    )


def stamp_time_ns(data: bytes) -> int | None:
    """The time of a STAMPED entry's data, or None if this build cannot read its stamp."""
    if len(data) < STAMP_SIZE or data[0] not in (STAMP_VERSION, SESSION_VERSION):
        return None
    return int(_HEADER.unpack_from(data)[1])
