"""graft.storage.block_crc: per-block CRC32s, the whole file's CRC32 derived from them, and the
blocks a fold re-reads."""

from __future__ import annotations

import random
import zlib

from twisted.trial.unittest import SynchronousTestCase

from graft.storage.block_crc import (
    BLOCK_BYTES,
    BlockSums,
    TouchedBlocks,
    decode_blocks,
    encode_blocks,
    whole_crc,
)


class MemoryFile:
    """An UpdatableFile in memory that counts the bytes read."""

    def __init__(self, data: bytes) -> None:
        self.data = bytearray(data)
        self.read_bytes = 0

    def pread(self, size: int, offset: int) -> bytes:
        self.read_bytes += size
        return bytes(self.data[offset : offset + size])

    def pwrite(self, data: bytes, offset: int) -> None:
        if offset > len(self.data):
            self.data.extend(bytes(offset - len(self.data)))
        self.data[offset : offset + len(data)] = data

    def write(self, data: bytes) -> None:
        self.data.extend(data)

    def truncate(self, size: int) -> None:
        del self.data[size:]
        self.data.extend(bytes(size - len(self.data)))

    def sync(self) -> None:
        pass

    def close(self) -> None:
        pass


def sums(data: bytes) -> tuple[tuple[int, ...], int]:
    s = BlockSums()
    for i in range(0, len(data), 100_003):  # pieces that do not line up with the blocks
        s.update(data[i : i + 100_003])
    return s.result()


class BlockSumsTests(SynchronousTestCase):
    def test_whole_crc_is_the_files(self) -> None:
        """For sizes around the block boundaries, the CRC32 derived from the blocks' is
        zlib's CRC32 of the whole data, and each block's is its own."""
        rng = random.Random(1)
        for size in (
            0,
            1,
            4096,
            BLOCK_BYTES - 1,
            BLOCK_BYTES,
            BLOCK_BYTES + 1,
            5 * BLOCK_BYTES + 8192,
        ):
            data = rng.randbytes(size)
            blocks, crc = sums(data)
            self.assertEqual(crc, zlib.crc32(data), size)
            self.assertEqual(
                blocks,
                tuple(zlib.crc32(data[i : i + BLOCK_BYTES]) for i in range(0, size, BLOCK_BYTES)),
            )
            self.assertEqual(whole_crc(blocks, size), crc)
            self.assertEqual(decode_blocks(encode_blocks(blocks)), blocks)

    def test_malformed_encoding_is_refused(self) -> None:
        with self.assertRaises(ValueError):
            decode_blocks("not base64!")
        with self.assertRaises(ValueError):
            decode_blocks("AAA=")  # two bytes


class TouchedBlocksTests(SynchronousTestCase):
    def test_refolded_reads_only_the_blocks_written(self) -> None:
        """Page writes, growth and truncation in any order: the blocks' CRC32s and the
        CRC32 after them are those of the final bytes, and only the blocks written (and
        those at the old and the new end) were read again."""
        rng = random.Random(7)
        for _ in range(30):
            size = rng.randrange(1, 12) * BLOCK_BYTES + rng.randrange(0, 64) * 4096
            base = rng.randbytes(size)
            before, _ = sums(base)
            target = MemoryFile(base)
            touched = TouchedBlocks(target, size)
            for _ in range(rng.randrange(0, 6)):
                page = rng.randrange(0, (size + 3 * BLOCK_BYTES) // 4096)
                touched.pwrite(rng.randbytes(4096), page * 4096)
            end = rng.choice([len(target.data), size, rng.randrange(1, size + 1) // 4096 * 4096])
            touched.truncate(end)
            target.read_bytes = 0
            blocks, crc = touched.refolded(before)
            self.assertEqual((blocks, crc), sums(bytes(target.data)))
            self.assertLessEqual(target.read_bytes, (len(touched.touched)) * BLOCK_BYTES)

    def test_one_page_reads_one_block(self) -> None:
        """A page written in the middle of a 40-block file: one block read again."""
        base = random.Random(3).randbytes(40 * BLOCK_BYTES)
        before, _ = sums(base)
        target = MemoryFile(base)
        touched = TouchedBlocks(target, len(base))
        touched.pwrite(b"x" * 4096, 17 * BLOCK_BYTES + 8192)
        touched.truncate(len(base))
        target.read_bytes = 0
        self.assertEqual(touched.refolded(before), sums(bytes(target.data)))
        self.assertEqual(target.read_bytes, BLOCK_BYTES)
