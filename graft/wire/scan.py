"""A walk over a msgpack body's headers, before it is decoded: depth and decoded size.

msgpack's decoder builds every object a body describes before anything can look at them: one
byte (an empty array) becomes a 56-byte list and an 8-byte slot in its parent, so a frame of
empty arrays or tiny maps costs 60-200 times its size in memory, and nesting a thousand deep
makes any recursive code that touches the result (a checker, a repr in an error message) raise
RecursionError. ``check_structure`` reads only the type headers, skipping string and binary
payloads without copying them, and refuses a body whose nesting exceeds ``max_depth`` or whose
decoded objects would take more than ``max_decoded_bytes``. It allocates nothing per item.

The estimate is of CPython's objects on a 64-bit build, rounded up: a slot per element, a list
header per array, a dict per map, an object per int beyond the small-int cache and per string or
binary of two bytes or more (shorter ones are cached singletons).
"""

from __future__ import annotations

import struct

from graft.wire.errors import ProtocolError

__all__ = ["check_structure"]

# What the first byte of an item says. Scalars of a fixed size: (_FIXED, size, decoded bytes).
# Strings and binaries: (_SIZED, width of the length field, base object size). Containers with
# the count in the byte itself: (_ARRAY or _MAP, count, 0); with a count field: (_ARRAY_N or
# _MAP_N, width, 0). Extension types and 0xc1 (never used): (_EXT or _BAD, 0, 0).
_FIXED, _SIZED, _ARRAY, _MAP, _ARRAY_N, _MAP_N, _EXT, _BAD = range(8)
_SLOT = 8
_LIST = 56  # an empty list; its element slots are counted per element
_DICT = 64  # an empty dict; each pair adds _PAIR
_PAIR = 48
_INT = 32
_FLOAT = 24
_STR = 49
_BIN = 33

_READ = {
    1: struct.Struct(">B").unpack_from,
    2: struct.Struct(">H").unpack_from,
    4: struct.Struct(">I").unpack_from,
}


def _table() -> list[tuple[int, int, int]]:
    table = [(_BAD, 0, 0)] * 256
    for b in range(0x00, 0x80):  # positive fixint: cached small ints (0..127)
        table[b] = (_FIXED, 1, 0)
    for b in range(0xE0, 0x100):  # negative fixint: -32..-1, only -5..-1 are cached
        table[b] = (_FIXED, 1, _INT)
    for b in range(0x80, 0x90):
        table[b] = (_MAP, b & 0x0F, 0)
    for b in range(0x90, 0xA0):
        table[b] = (_ARRAY, b & 0x0F, 0)
    for b in range(0xA0, 0xC0):  # fixstr: the length is in the byte
        n = b & 0x1F
        table[b] = (_FIXED, 1 + n, 0 if n < 2 else _STR + n)
    table[0xC0] = table[0xC2] = table[0xC3] = (_FIXED, 1, 0)  # nil, false, true
    table[0xC4], table[0xC5], table[0xC6] = (_SIZED, 1, _BIN), (_SIZED, 2, _BIN), (_SIZED, 4, _BIN)
    table[0xD9], table[0xDA], table[0xDB] = (_SIZED, 1, _STR), (_SIZED, 2, _STR), (_SIZED, 4, _STR)
    table[0xCA], table[0xCB] = (_FIXED, 5, _FLOAT), (_FIXED, 9, _FLOAT)
    for b, size in ((0xCC, 2), (0xCD, 3), (0xCE, 5), (0xCF, 9)):  # uint 8..64
        table[b] = (_FIXED, size, _INT)
    for b, size in ((0xD0, 2), (0xD1, 3), (0xD2, 5), (0xD3, 9)):  # int 8..64
        table[b] = (_FIXED, size, _INT)
    table[0xDC], table[0xDD] = (_ARRAY_N, 2, 0), (_ARRAY_N, 4, 0)
    table[0xDE], table[0xDF] = (_MAP_N, 2, 0), (_MAP_N, 4, 0)
    for b in (0xC7, 0xC8, 0xC9, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8):
        table[b] = (_EXT, 0, 0)
    return table


_TABLE = _table()


def check_structure(
    data: bytes | bytearray | memoryview, *, max_depth: int, max_decoded_bytes: int
) -> None:
    """Raise ProtocolError unless ``data`` holds one msgpack value nested at most ``max_depth``
    containers deep whose decoded objects take at most ``max_decoded_bytes`` (estimated).

    Items are counted against the bytes left, so a header announcing more elements than the
    body can hold is refused here, before msgpack would size a list for them.
    """
    end = len(data)
    position = 0
    left = 1  # items still to read in the innermost open container (the body: one value)
    stack: list[int] = []  # the ``left`` of each enclosing container
    cost = 0
    table = _TABLE
    read = _READ
    try:
        while True:
            while not left:
                if stack:
                    left = stack.pop()
                    continue
                if position != end:
                    if position > end:
                        raise IndexError
                    raise ProtocolError("undecodable msgpack body (bytes after its value)")
                if cost > max_decoded_bytes:
                    raise _too_big(end, max_decoded_bytes)
                return
            left -= 1
            kind, arg, size = table[data[position]]
            if kind == _FIXED:
                position += arg
                cost += size + _SLOT
                continue
            if kind == _SIZED:
                (n,) = read[arg](data, position + 1)
                position += 1 + arg + n
                cost += (size + n if n > 1 else 0) + _SLOT
                continue
            if kind in (_ARRAY, _MAP):
                count = arg
                position += 1
            elif kind in (_ARRAY_N, _MAP_N):
                (count,) = read[arg](data, position + 1)
                position += 1 + arg
            elif kind == _EXT:
                raise ProtocolError("msgpack extension types are not used by this protocol")
            else:
                raise ProtocolError(f"undecodable msgpack body (byte 0x{data[position]:02x})")
            if len(stack) >= max_depth:
                raise ProtocolError(f"nesting deeper than {max_depth} levels")
            if kind in (_MAP, _MAP_N):
                cost += _DICT + _PAIR * count + _SLOT
                count *= 2
            else:
                cost += _LIST + _SLOT
            # Each element takes at least one byte: a count beyond what is left is a lie.
            if count > end - position:
                raise ProtocolError(
                    f"undecodable msgpack body (a container of {count} items"
                    f" in {max(0, end - position)} bytes)"
                )
            if cost > max_decoded_bytes:
                raise _too_big(end, max_decoded_bytes)
            if count:
                stack.append(left)
                left = count
    except (IndexError, struct.error):
        raise ProtocolError("undecodable msgpack body (truncated)") from None


def _too_big(size: int, limit: int) -> ProtocolError:
    return ProtocolError(
        f"a {size}-byte body whose decoded objects would take more than {limit} bytes"
    )
