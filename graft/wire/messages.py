"""Raft messages to and from plain msgpack-able lists, generated from the dataclass fields.

Each class in MESSAGE_TYPES gets a tag (its position in that tuple) and a field order (its
dataclass field order); a message travels as ``[tag, field1, field2, ...]``. The field types are
resolved once with typing.get_type_hints and turned into per-field converters, so adding a
message class needs no change here. Entries travel as compact ``[index, term, kind, data]``
lists; they are the hot path (AppendEntries carries up to a thousand of them), so their
converters are hand-written loops rather than generic ones.

Integers in Raft messages are terms, indexes and counters: negative values are refused.
"""

from __future__ import annotations

import dataclasses
import operator
import types
import typing
from collections.abc import Callable
from typing import Any

from graft.raft.messages import MESSAGE_TYPES, Message
from graft.raft.types import (
    Entry,
    EntryKind,
    Membership,
    SnapshotMeta,
    make_entry,
    membership_from_dict,
    membership_to_dict,
)
from graft.wire.errors import ProtocolError
from graft.wire.schema import describe

Encoder = Callable[[Any], Any]
Decoder = Callable[[Any, str], Any]

_KINDS: dict[int, EntryKind] = {int(kind): kind for kind in EntryKind}


def _fail(where: str, expected: str, value: object) -> typing.NoReturn:
    raise ProtocolError(f"{where}: expected {expected}, got {type(value).__name__}")


def _decode_int(value: Any, where: str) -> int:
    if type(value) is not int or value < 0:
        _fail(where, "a non-negative integer", value)
    return value


def _decode_bool(value: Any, where: str) -> bool:
    if type(value) is not bool:
        _fail(where, "a boolean", value)
    return value


def _decode_str(value: Any, where: str) -> str:
    if type(value) is not str:
        _fail(where, "a string", value)
    return value


def _decode_bytes(value: Any, where: str) -> bytes:
    if type(value) is not bytes:
        _fail(where, "bytes", value)
    return value


def _encode_entries(entries: tuple[Entry, ...]) -> list[list[Any]]:
    # The kind as the IntEnum itself: msgpack packs it as its int, no int() call per entry.
    return [[e.index, e.term, e.kind, e.data] for e in entries]


def _decode_entries(value: Any, where: str) -> tuple[Entry, ...]:
    if type(value) is not list:
        _fail(where, "a list of entries", value)
    kinds = _KINDS
    out = []
    for item in value:
        if type(item) is not list or len(item) != 4:
            _fail(where, "entries as [index, term, kind, data]", item)
        index, term, kind, data = item
        if (
            type(index) is not int
            or index < 0
            or type(term) is not int
            or term < 0
            or type(kind) is not int
            or kind not in kinds
            or type(data) is not bytes
        ):
            raise ProtocolError(f"{where}: malformed entry {describe(item)}")
        out.append(make_entry(index, term, kinds[kind], data))
    return tuple(out)


def _encode_membership(membership: Membership) -> dict[str, Any]:
    return membership_to_dict(membership)


def _decode_membership(value: Any, where: str) -> Membership:
    try:
        return membership_from_dict(value)
    except ValueError as e:
        raise ProtocolError(f"{where}: {e}") from None


def _encode_snapshot_meta(meta: SnapshotMeta) -> list[Any]:
    return [meta.index, meta.term, _encode_membership(meta.membership), meta.stamp_floor_ns]


def _decode_snapshot_meta(value: Any, where: str) -> SnapshotMeta:
    # Three items from a build before stamps (no stamp floor).
    if type(value) is not list or len(value) not in (3, 4):
        _fail(where, "snapshot metadata as [index, term, membership, stamp floor]", value)
    return SnapshotMeta(
        index=_decode_int(value[0], f"{where}.index"),
        term=_decode_int(value[1], f"{where}.term"),
        membership=_decode_membership(value[2], f"{where}.membership"),
        stamp_floor_ns=_decode_int(value[3], f"{where}.stamp_floor_ns") if len(value) > 3 else 0,
    )


def _optional(decode: Decoder) -> Decoder:
    def decode_optional(value: Any, where: str) -> Any:
        return None if value is None else decode(value, where)

    return decode_optional


_SIMPLE: dict[Any, tuple[Encoder | None, Decoder]] = {
    int: (None, _decode_int),
    bool: (None, _decode_bool),
    str: (None, _decode_str),
    bytes: (None, _decode_bytes),
    Membership: (_encode_membership, _decode_membership),
    SnapshotMeta: (_encode_snapshot_meta, _decode_snapshot_meta),
    tuple[Entry, ...]: (_encode_entries, _decode_entries),
}


def _converters(annotation: Any, where: str) -> tuple[Encoder | None, Decoder]:
    if annotation in _SIMPLE:
        return _SIMPLE[annotation]
    if typing.get_origin(annotation) in (types.UnionType, typing.Union):
        args = typing.get_args(annotation)
        others = [a for a in args if a is not type(None)]
        if len(args) == 2 and len(others) == 1 and others[0] in _SIMPLE:
            encode, decode = _SIMPLE[others[0]]
            optional_encode = None
            if encode is not None:
                inner = encode

                def optional_encode(value: Any) -> Any:
                    return None if value is None else inner(value)

            return optional_encode, _optional(decode)
    raise TypeError(f"{where}: the wire codec cannot carry {annotation!r}; see graft.raft.messages")


@dataclasses.dataclass(frozen=True, slots=True)
class MessageCodec:
    """The compiled encoder and decoder of one message class."""

    cls: type[Message]
    tag: int
    names: tuple[str, ...]
    getter: Callable[[Any], tuple[Any, ...]]
    encoders: tuple[tuple[int, Encoder], ...]  # only the fields that need converting
    decoders: tuple[Decoder, ...]
    wheres: tuple[str, ...]  # "Class.field", for error messages, formatted once

    def encode(self, message: Message) -> list[Any]:
        values = [self.tag, *self.getter(message)]
        for position, encode in self.encoders:
            values[position + 1] = encode(values[position + 1])
        return values

    def decode(self, body: list[Any]) -> Message:
        """``body`` is the whole frame list, tag included."""
        names = self.names
        if len(body) != len(names) + 1:
            raise ProtocolError(
                f"{self.cls.__name__}: expected {len(names)} fields, got {len(body) - 1}"
            )
        kwargs = {
            name: decode(value, where)
            for name, decode, value, where in zip(
                names, self.decoders, body[1:], self.wheres, strict=True
            )
        }
        return self.cls(**kwargs)


def _compile(cls: type[Message], tag: int) -> MessageCodec:
    hints = typing.get_type_hints(cls)
    names = tuple(f.name for f in dataclasses.fields(cls))
    encoders: list[tuple[int, Encoder]] = []
    decoders: list[Decoder] = []
    for position, name in enumerate(names):
        encode, decode = _converters(hints[name], f"{cls.__name__}.{name}")
        if encode is not None:
            encoders.append((position, encode))
        decoders.append(decode)
    getter: Callable[[Any], tuple[Any, ...]] = operator.attrgetter(*names)
    if len(names) == 1:  # attrgetter with one name returns the value, not a tuple
        single = operator.attrgetter(names[0])

        def getter(message: Any) -> tuple[Any, ...]:
            return (single(message),)

    return MessageCodec(
        cls=cls,
        tag=tag,
        names=names,
        getter=getter,
        encoders=tuple(encoders),
        decoders=tuple(decoders),
        wheres=tuple(f"{cls.__name__}.{name}" for name in names),
    )


CODECS_BY_CLASS: dict[type[Message], MessageCodec] = {
    cls: _compile(cls, tag) for tag, cls in enumerate(MESSAGE_TYPES)
}
CODECS_BY_TAG: dict[int, MessageCodec] = {codec.tag: codec for codec in CODECS_BY_CLASS.values()}


def encode_message(message: Message) -> list[Any]:
    """The msgpack-able body of a message: ``[tag, *fields]``."""
    return CODECS_BY_CLASS[type(message)].encode(message)


def decode_message(body: list[Any]) -> Message:
    """The message in a body whose first element is an integer tag; ProtocolError if invalid."""
    tag = body[0]
    codec = CODECS_BY_TAG.get(tag) if type(tag) is int else None
    if codec is None:
        raise ProtocolError(f"unknown message tag {describe(tag)}")
    return codec.decode(body)
