"""What a data dir holds, checked for consistency, without changing it.

``recover`` reads the hard state, the newest snapshot and every segment, and checks that they
fit together: the log starts at 1 or right after (or below) the snapshot, the commit index lies
within what is on disk, segments follow on. It decides the repairs a crash may call for (cut a
torn final record, finish an interrupted snapshot install) but makes none: ``DurableLog.open``
applies them after every check passed, and ``check_data_dir`` only reports them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from graft.raft.types import Entry, HardState
from graft.storage.errors import CorruptionError
from graft.storage.files import FileSystem
from graft.storage.segments import Replay, replay
from graft.storage.snapshots import SnapshotInfo, SnapshotStore
from graft.storage.state_files import HARD_STATE_FILE, read_hard_state


@dataclass(slots=True, kw_only=True)
class Recovered:
    hard_state: HardState
    snapshot: SnapshotInfo | None
    replay: Replay
    entries: list[Entry]  # the log to keep in memory
    first_index: int  # index of entries[0], or where the next entry goes
    next_index: int  # where the next entry goes on disk (before a discard)
    discard: bool  # the log must be discarded (an interrupted snapshot install)
    notes: list[str]


def recover(
    files: FileSystem, data_dir: Path, snapshots: SnapshotStore, *, clean: bool
) -> Recovered:
    """Read and check the data dir; CorruptionError on anything a crash cannot explain.
    Only with ``clean`` are leftovers of interrupted snapshot saves deleted."""
    hard_state = read_hard_state(files, data_dir) or HardState()
    snapshot = snapshots.load(clean=clean)
    floor = snapshot.meta.index if snapshot is not None else 0
    found = replay(files, data_dir, floor_index=floor)
    notes = found.notes
    segments = found.segments
    entries = found.entries
    first = found.first_index
    next_index = segments[-1].last_index + 1 if segments else floor + 1
    discard = False
    if snapshot is not None:
        meta = snapshot.meta
        if first > floor + 1:
            raise CorruptionError(
                segments[0].path,
                0,
                f"the log starts at index {first} but the snapshot ends at {floor}: "
                "entries in between are missing",
            )
        in_log = first <= floor < first + len(entries)
        if next_index - 1 < floor or (in_log and entries[floor - first].term != meta.term):
            # Only an install_snapshot interrupted by a crash leaves this: finish it.
            notes.append(
                f"the log ends before or conflicts with the snapshot at {floor}: discarded "
                "(an interrupted snapshot install)"
            )
            discard = True
            entries, first = [], floor + 1
    elif first != 1:
        raise CorruptionError(
            segments[0].path,
            0,
            f"the log starts at index {first} but there is no snapshot: the earlier "
            "segments or the snapshot are missing",
        )
    last = max(first + len(entries) - 1, floor)
    if hard_state.commit > last:
        raise CorruptionError(
            data_dir / HARD_STATE_FILE,
            0,
            f"commit index {hard_state.commit} is beyond the last index {last} on disk: "
            "the newest segment is missing or was cut",
        )
    return Recovered(
        hard_state=hard_state,
        snapshot=snapshot,
        replay=found,
        entries=entries,
        first_index=first,
        next_index=next_index,
        discard=discard,
        notes=notes,
    )
