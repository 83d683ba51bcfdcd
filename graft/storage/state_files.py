"""The two small files beside the log: the data dir's identity and the Raft hard state.

Hard state (term, vote, commit) lives in its own file, replaced atomically (temp file, fsync,
rename, fsync of the directory), rather than as records in the log: it changes rarely compared
to the log (term and vote only at elections), it must survive compaction of any segment, and a
reader finds it without replaying anything. Its cost is two extra fsyncs, paid only when it
changes; see ``graft.storage.writer`` for how commit-only changes avoid paying it on every batch.

Both files are a magic line, a CRC32 and a JSON body, so an operator can read them and a torn or
flipped byte is caught rather than trusted.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graft.raft.types import HardState
from graft.storage.errors import CorruptionError, IdentityMismatch, StorageError
from graft.storage.files import FileSystem, write_atomic

IDENTITY_FILE = "identity"
HARD_STATE_FILE = "hardstate"
_IDENTITY_MAGIC = b"graft-identity"
_HARD_STATE_MAGIC = b"graft-hardstate"
# The layout of the data dir (which files, what they hold). Not the segment format: each
# segment names its own version, so a new segment format needs no new data dir format.
DATA_DIR_FORMAT = 1


def encode_checked(magic: bytes, body: dict[str, Any]) -> bytes:
    """``magic crc32\\n{json}\\n``: readable with ``cat``, checked on load."""
    payload = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return magic + b" %08x\n" % zlib.crc32(payload) + payload + b"\n"


def decode_checked(magic: bytes, raw: bytes, path: Path) -> dict[str, Any]:
    """The JSON body, or CorruptionError naming the file."""
    head, sep, rest = raw.partition(b"\n")
    parts = head.split(b" ")
    if not sep or len(parts) != 2 or parts[0] != magic:
        raise CorruptionError(path, 0, f"not a {magic.decode()} file or its first line is damaged")
    payload = rest.rstrip(b"\n")
    try:
        expected = int(parts[1], 16)
    except ValueError:
        raise CorruptionError(path, 0, "checksum field is damaged") from None
    if zlib.crc32(payload) != expected:
        raise CorruptionError(path, len(head) + 1, "checksum mismatch")
    try:
        body = json.loads(payload)
    except ValueError:
        raise CorruptionError(path, len(head) + 1, "body is not valid JSON") from None
    if not isinstance(body, dict):
        raise CorruptionError(path, len(head) + 1, "body is not a JSON object")
    return body


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    node_id: str
    cluster: str
    format: int = DATA_DIR_FORMAT


def write_identity(files: FileSystem, data_dir: Path, identity: Identity) -> None:
    body = {"node_id": identity.node_id, "cluster": identity.cluster, "format": identity.format}
    write_atomic(files, data_dir / IDENTITY_FILE, encode_checked(_IDENTITY_MAGIC, body))


def read_identity(files: FileSystem, data_dir: Path) -> Identity | None:
    path = data_dir / IDENTITY_FILE
    if not files.exists(path):
        return None
    body = decode_checked(_IDENTITY_MAGIC, files.read_bytes(path), path)
    try:
        return Identity(
            node_id=str(body["node_id"]), cluster=str(body["cluster"]), format=int(body["format"])
        )
    except (KeyError, TypeError, ValueError):
        raise CorruptionError(path, 0, "identity fields are missing") from None


def check_identity(path: Path, found: Identity, *, node_id: str, cluster: str) -> None:
    if found.format != DATA_DIR_FORMAT:
        raise StorageError(
            f"{path}: data dir has storage format {found.format}, this build reads "
            f"{DATA_DIR_FORMAT}; run a graft version that matches it"
        )
    if found.node_id != node_id or found.cluster != cluster:
        raise IdentityMismatch(
            f"{path}: data dir belongs to node {found.node_id!r} of cluster {found.cluster!r}, "
            f"not node {node_id!r} of cluster {cluster!r}; check --node and the config's "
            "data_dir, or move this data dir aside to start a fresh node"
        )


def encode_hard_state(state: HardState) -> bytes:
    body = {"term": state.term, "vote": state.vote, "commit": state.commit}
    return encode_checked(_HARD_STATE_MAGIC, body)


def write_hard_state(
    files: FileSystem, data_dir: Path, state: HardState, *, sync_dir: bool = True
) -> None:
    write_atomic(files, data_dir / HARD_STATE_FILE, encode_hard_state(state), sync_dir=sync_dir)


def read_hard_state(files: FileSystem, data_dir: Path) -> HardState | None:
    path = data_dir / HARD_STATE_FILE
    if not files.exists(path):
        return None
    body = decode_checked(_HARD_STATE_MAGIC, files.read_bytes(path), path)
    try:
        vote = body["vote"]
        return HardState(
            term=int(body["term"]),
            vote=None if vote is None else str(vote),
            commit=int(body["commit"]),
        )
    except (KeyError, TypeError, ValueError):
        raise CorruptionError(path, 0, "hard state fields are missing") from None
