"""Read-only tools for operators: check a data dir, dump its log. They never write."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from graft.raft.types import Entry
from graft.storage.errors import StorageError
from graft.storage.files import FileSystem, OSFileSystem
from graft.storage.recovery import recover
from graft.storage.segments import scan_files
from graft.storage.snapshots import SnapshotStore
from graft.storage.state_files import read_identity


@dataclass(slots=True, kw_only=True)
class CheckReport:
    ok: bool = True
    lines: list[str] = field(default_factory=list)


def check_data_dir(path: Path | str, *, files: FileSystem | None = None) -> CheckReport:
    """Verify identity, hard state, snapshot (data checksum included) and every log record,
    and that they fit together, as the node would at start. Never writes."""
    files = files if files is not None else OSFileSystem()
    data_dir = Path(path)
    report = CheckReport()

    def problem(line: str) -> None:
        report.ok = False
        report.lines.append(f"PROBLEM: {line}")

    if not files.exists(data_dir):
        problem(f"{data_dir} does not exist (a node started here would begin empty)")
        return report
    try:
        identity = read_identity(files, data_dir)
        if identity is None:
            report.lines.append("identity: none (a fresh data dir)")
        else:
            report.lines.append(
                f"identity: node {identity.node_id!r}, cluster {identity.cluster!r}, "
                f"format {identity.format}"
            )
    except StorageError as error:
        problem(str(error))
    try:
        store = SnapshotStore(files, data_dir)
        found = recover(files, data_dir, store, clean=False)
        report.lines.append(f"hard state: {found.hard_state}")
        info = found.snapshot
        if info is None:
            report.lines.append("snapshot: none")
        else:
            store.open(info).close()  # verifies the data's checksum
            if info.pending is None:
                report.lines.append(
                    f"snapshot: index {info.meta.index}, term {info.meta.term}, fsm "
                    f"{info.fsm_name!r}, {info.size} bytes, checksum ok"
                )
            else:
                report.lines.append(
                    f"snapshot: index {info.meta.index}, term {info.meta.term}, fsm "
                    f"{info.fsm_name!r}, a delta of {info.pending.delta_size} bytes over "
                    f"{info.pending.base_size} bytes, checksums ok"
                )
                report.lines.append(
                    "repair at next start: fold the snapshot's delta into its data file "
                    "(a snapshot save was cut short)"
                )
        for segment in found.replay.segments:
            span = (
                f"entries {segment.first_index}..{segment.last_index}"
                if segment.count
                else "no entries"
            )
            report.lines.append(
                f"{segment.path.name}: {span}, {segment.size} bytes, format {segment.version}"
            )
        report.lines.extend(f"repair at next start: {note}" for note in found.notes)
        if found.entries:
            span = f"entries {found.first_index}..{found.first_index + len(found.entries) - 1}"
        else:
            span = "no entries"
        report.lines.append(f"log: {len(found.replay.segments)} segment(s), {span}")
    except StorageError as error:
        problem(str(error))
    report.lines.append("OK" if report.ok else "NOT OK: the node will refuse to start")
    return report


def dump_log(
    path: Path | str,
    first: int | None = None,
    last: int | None = None,
    *,
    files: FileSystem | None = None,
) -> Iterator[Entry]:
    """The log's entries from ``first`` to ``last`` (inclusive), as on disk. A torn final
    record is left out; corruption raises CorruptionError."""
    files = files if files is not None else OSFileSystem()
    data_dir = Path(path)
    floor = 0
    info = SnapshotStore(files, data_dir).load(clean=False)
    if info is not None:
        floor = info.meta.index
    scans, _notes, _stale = scan_files(files, data_dir, floor_index=floor)
    for _path, scan in scans:
        if first is not None and scan.entries and scan.last_index < first:
            continue
        for entry in scan.entries:
            if first is not None and entry.index < first:
                continue
            if last is not None and entry.index > last:
                return
            yield entry
