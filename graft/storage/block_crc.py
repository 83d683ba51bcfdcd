"""CRC32s of a snapshot's data file per fixed block, and the whole file's CRC32 derived from them.

A snapshot's manifest vouches for its data with the CRC32 of the whole file (checked at a
restart, sent to followers with the file). In delta mode the store folds a few pages into a
large file; recomputing that CRC32 would read the whole file after every fold. The manifest
also keeps the CRC32 of each ``BLOCK_BYTES`` block, so a fold re-reads only the blocks it
wrote to, and the whole file's CRC32 follows from the blocks' CRC32s.

Combining: for CRC32 as zlib computes it, crc(A + B) = Z(len(B), crc(A)) ^ crc(B), where Z(n, x)
is what the CRC register does to ``x`` over n zero bytes, a linear map on 32 bits. For the
block length it is kept as four tables of 256 entries (built once from the images of the 32
bits); for the last, shorter block it is one zlib call over that many zero bytes.
"""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import Iterable, Sequence
from functools import cache

from graft.storage.files import UpdatableFile

__all__ = [
    "BLOCK_BYTES",
    "BlockSums",
    "TouchedBlocks",
    "decode_blocks",
    "encode_blocks",
    "whole_crc",
]

# 256 KiB: a fold re-reads each block holding a page it wrote; smaller blocks re-read less
# after changes spread over the table, larger ones keep the manifest smaller (16 KiB of
# CRCs per GB here).
BLOCK_BYTES = 256 * 1024
_MASK = 0xFFFFFFFF


def _zeros_shift(length: int, value: int) -> int:
    """Z(length, value): the CRC register ``value`` taken through ``length`` zero bytes."""
    return ~zlib.crc32(bytes(length), ~value & _MASK) & _MASK


@cache
def _tables(length: int) -> tuple[tuple[int, ...], ...]:
    """Z(length, .) as four byte-indexed tables (it is linear: XOR of its bits' images)."""
    bits = [_zeros_shift(length, 1 << i) for i in range(32)]
    tables = []
    for k in range(4):
        table = [0] * 256
        for b in range(1, 256):
            low = b & -b
            table[b] = table[b ^ low] ^ bits[8 * k + low.bit_length() - 1]
        tables.append(tuple(table))
    return tuple(tables)


def whole_crc(blocks: Sequence[int], size: int, block: int = BLOCK_BYTES) -> int:
    """The CRC32 of a file of ``size`` bytes whose ``block``-byte blocks have these CRC32s."""
    if not blocks:
        return 0
    t0, t1, t2, t3 = _tables(block)
    crc = blocks[0]
    last = len(blocks) - 1
    for i in range(1, last):
        crc = (
            t0[crc & 0xFF] ^ t1[(crc >> 8) & 0xFF] ^ t2[(crc >> 16) & 0xFF] ^ t3[crc >> 24]
        ) ^ blocks[i]
    if last:
        tail = size - last * block
        crc = _zeros_shift(tail, crc) ^ blocks[last]
    return crc


def encode_blocks(blocks: Iterable[int]) -> str:
    """The CRC32s as the manifest keeps them: big-endian 32-bit words, base64."""
    data = b"".join(struct.pack(">I", crc) for crc in blocks)
    return base64.b64encode(data).decode("ascii")


def decode_blocks(text: str) -> tuple[int, ...]:
    """ValueError unless ``text`` is what ``encode_blocks`` writes."""
    data = base64.b64decode(text.encode("ascii"), validate=True)
    if len(data) % 4:
        raise ValueError("block CRC32s are not whole 32-bit words")
    return struct.unpack(f">{len(data) // 4}I", data)


class BlockSums:
    """The CRC32 of each block of a byte stream, fed in order (``update``)."""

    def __init__(self, block: int = BLOCK_BYTES) -> None:
        self.block = block
        self.blocks: list[int] = []
        self.size = 0
        self._crc = 0
        self._fill = 0  # bytes of the current (last, unfinished) block

    def update(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            take = min(len(view), self.block - self._fill)
            self._crc = zlib.crc32(view[:take], self._crc)
            self._fill += take
            self.size += take
            view = view[take:]
            if self._fill == self.block:
                self.blocks.append(self._crc)
                self._crc, self._fill = 0, 0

    @classmethod
    def of(cls, data: bytes) -> tuple[int, ...]:
        """The blocks' CRC32s of ``data``."""
        sums = cls()
        sums.update(data)
        return sums.result()[0]

    def result(self) -> tuple[tuple[int, ...], int]:
        """(the blocks' CRC32s, the whole stream's CRC32)."""
        blocks = [*self.blocks, self._crc] if self._fill else list(self.blocks)
        return tuple(blocks), whole_crc(blocks, self.size, self.block)


class TouchedBlocks:
    """An ``UpdatableFile`` (the full copy a fold writes into) that notes which blocks the
    fold wrote and the size it left, for ``refolded``."""

    def __init__(self, target: UpdatableFile, size: int, block: int = BLOCK_BYTES) -> None:
        self._target = target
        self.block = block
        self.size = size
        self.touched: set[int] = set()

    def pread(self, size: int, offset: int) -> bytes:
        return self._target.pread(size, offset)

    def pwrite(self, data: bytes, offset: int) -> None:
        self._target.pwrite(data, offset)
        if data:
            first, last = offset // self.block, (offset + len(data) - 1) // self.block
            self.touched.update(range(first, last + 1))
            self._grow(offset + len(data))

    def write(self, data: bytes) -> None:
        self.pwrite(data, self.size)

    def truncate(self, size: int) -> None:
        self._target.truncate(size)
        # The block the old or the new end falls in, and any beyond, changed.
        self.touched.update(range(min(size, self.size) // self.block, size // self.block + 1))
        self.size = size

    def _grow(self, end: int) -> None:
        if end > self.size:
            self.touched.update(range(self.size // self.block, end // self.block + 1))
            self.size = end

    def sync(self) -> None:
        self._target.sync()

    def close(self) -> None:
        self._target.close()

    def refolded(self, base: Sequence[int]) -> tuple[tuple[int, ...], int]:
        """(the blocks' CRC32s, the file's CRC32) after the fold: ``base`` (the blocks before
        it) with each block the fold wrote to read again."""
        count = -(-self.size // self.block)
        blocks = list(base[:count]) + [0] * max(0, count - len(base))
        for i in sorted(n for n in self.touched if n < count):
            length = min(self.block, self.size - i * self.block)
            data = self._target.pread(length, i * self.block)
            if len(data) != length:
                raise OSError(f"block {i} reads {len(data)} bytes, not {length}")
            blocks[i] = zlib.crc32(data)
        return tuple(blocks), whole_crc(blocks, self.size, self.block)
