"""Segment files in format 1, as earlier builds wrote them, for the tests that a data dir
written by such a build still opens. Format 1's record crc continues a CRC32 of the fields
(length, index, term, kind) over the data; hcrc covers the fields and crc, as in format 2."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

from graft.raft.types import Entry
from graft.storage.files import FileSystem
from graft.storage.records import encode_segment_header, segment_name

_FIELDS = struct.Struct("<IQQB")
_CRC = struct.Struct("<I")


def encode_record_v1(entry: Entry) -> bytes:
    fields = _FIELDS.pack(len(entry.data), entry.index, entry.term, entry.kind)
    crc = _CRC.pack(zlib.crc32(entry.data, zlib.crc32(fields)))
    return fields + crc + _CRC.pack(zlib.crc32(fields + crc)) + entry.data


def write_format1_segments(
    files: FileSystem, data_dir: Path, entries: Sequence[Entry], per_segment: int
) -> list[Path]:
    """Write ``entries`` durably as format 1 segments of ``per_segment`` records each."""
    paths = []
    for start in range(0, len(entries), per_segment):
        chunk = entries[start : start + per_segment]
        path = data_dir / segment_name(chunk[0].index)
        handle = files.create(path)
        handle.write(
            encode_segment_header(chunk[0].index, version=1)
            + b"".join(map(encode_record_v1, chunk))
        )
        handle.sync()
        handle.close()
        paths.append(path)
    files.sync_dir(data_dir)
    return paths
