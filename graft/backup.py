"""A backup in one step (`graft snapshot save FILE`): ask a node how old its latest snapshot
is, have it take one when there is none or it is too far behind what the node has applied,
then download it and checksum what landed on disk.

"Recent enough" is measured in log entries, not time: a snapshot whose index is at most
``max_behind`` entries below the node's applied index is downloaded as it is (so a backup of a
busy cluster does not force a snapshot per run); otherwise a new one is taken first.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graft.client import GraftClient, SavedSnapshot
from graft.client_errors import ClientError, Unreachable

# Entries the latest snapshot may lag the applied index and still count as recent.
DEFAULT_MAX_BEHIND = 1000
# A snapshot of a large state machine is written before POST /cluster/snapshot answers.
TAKE_TIMEOUT_S = 180.0
_HASH_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Backup:
    """What `graft snapshot save` saved, and whether it had a snapshot taken for it."""

    saved: SavedSnapshot
    sha256: str
    taken: bool
    # The latest snapshot's index and the applied index when the node was asked.
    had_index: int
    applied: int


def needs_snapshot(snapshot_index: int, applied: int, max_behind: int) -> bool:
    """True when there is no snapshot, or it lags the applied index by more than
    ``max_behind`` entries."""
    return snapshot_index <= 0 or applied - snapshot_index > max_behind


def save_backup(
    client: GraftClient,
    destination: Path,
    *,
    url: str | None = None,
    max_behind: int = DEFAULT_MAX_BEHIND,
) -> Backup:
    """Back up one node's state to ``destination`` (the node at ``url``, else the first of the
    client's members that answers), taking a snapshot there first when it has none recent
    enough. Raises ClientError as the client does."""
    base, status = _first_status(client, url)
    snapshot_index, applied = _indexes(status, client.name_of(base))
    taken = needs_snapshot(snapshot_index, applied, max_behind)
    if taken:
        client.request(
            "POST",
            base + "/cluster/snapshot",
            body=b"",
            headers={"Content-Type": "application/json"},
            timeout=max(client.timeout, TAKE_TIMEOUT_S),
        )
    saved = client.save_snapshot(destination, url=base)
    return Backup(
        saved=saved,
        sha256=file_sha256(destination),
        taken=taken,
        had_index=snapshot_index,
        applied=applied,
    )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _first_status(client: GraftClient, url: str | None) -> tuple[str, dict[str, Any]]:
    """GET /status from ``url``, else from each member in turn until one answers."""
    candidates = [url.rstrip("/")] if url else list(client.urls)
    last: ClientError | None = None
    for base in candidates:
        try:
            response = client.request("GET", base + "/status")
        except Unreachable as err:
            last = err
            continue
        try:
            document = response.json()
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise ClientError(
                "bad_answer",
                None,
                f"node {client.name_of(base)} answered /status with something other than a "
                "JSON object: is the URL a Graft node's API?",
            )
        return base, document
    assert last is not None
    if len(candidates) > 1:
        raise Unreachable(f"no member answered ({len(candidates)} tried, last: {last.message})")
    raise last


def _indexes(status: dict[str, Any], node: str) -> tuple[int, int]:
    snapshot = status.get("snapshot")
    index = snapshot.get("index") if isinstance(snapshot, dict) else None
    applied = status.get("applied")
    if (
        not isinstance(index, int)
        or not isinstance(applied, int)
        or not (_is_count(index) and _is_count(applied))
    ):
        raise ClientError(
            "bad_answer",
            None,
            f"node {node} answered /status without snapshot.index and applied "
            f"({json.dumps(status)[:200]}): is it an older Graft version?",
        )
    return index, applied


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
