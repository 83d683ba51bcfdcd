"""Named random streams: each part of a schedule draws from its own seeded source.

A part that draws from its own stream can be added or changed without moving what the other
parts draw, so the other parts of every seed's schedule stay as they were. ``stream(factory,
seed, name)`` is a seed's source for ``name``. The streams that existed before they had names
keep the seed arithmetic they were made with (``LEGACY``): every seed replays exactly the
schedule it always had, and the seeds named in tests still find their bugs. A new name needs
no number: its seed is a hash of the name, the seed and the index.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping

from graft.raft.rng import Rng

RngFactory = Callable[[int], Rng]

# name -> (multiplier, offset): the stream's seed is seed * multiplier + offset + index.
# "slow_disks" and "cut" were made with the same numbers: two sources that draw the same
# sequence, each for its own purpose. Changing any of these moves every seed's schedule.
LEGACY: Mapping[str, tuple[int, int]] = {
    # Network fates, partitions, crashes, clients (after draw_params).
    "schedule": (1, 0),
    # A node's own source (election timeouts), one per start, numbered across the cluster.
    "node": (1_000_003, 0),
    # Compaction, and whether a lost snapshot transfer is reported.
    "snapshots": (7_919, 17),
    # Leadership transfers and membership changes.
    "ops": (104_729, 29),
    # The driver model: pipelining and when queued writes complete.
    "disk": (104_729, 5),
    # Connections that drop while both ends live.
    "flaps": (7_907, 41),
    # Marker proposals (NOOP entries with data).
    "markers": (7_883, 53),
    # Disks that stall for a while.
    "slow_disks": (7_877, 61),
    # The cut after a leader proposes its own removal.
    "cut": (7_877, 61),
    # Tick rates, late ticks and stalls of the nodes' clocks.
    "clocks": (7_877, 67),
}


def stream_seed(seed: int, name: str, index: int = 0) -> int:
    """The seed of stream ``name`` (its ``index``-th, for numbered ones) of schedule ``seed``."""
    legacy = LEGACY.get(name)
    if legacy is not None:
        multiplier, offset = legacy
        return seed * multiplier + offset + index
    digest = hashlib.blake2b(f"{name}/{seed}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def stream(factory: RngFactory, seed: int, name: str, index: int = 0) -> Rng:
    """A fresh source for stream ``name`` of schedule ``seed``."""
    return factory(stream_seed(seed, name, index))
