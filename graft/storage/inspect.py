"""Read-only tools for operators: check a data dir, dump its log. They never write."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from graft.raft.types import Entry
from graft.storage.errors import StorageError
from graft.storage.files import FileSystem, OSFileSystem
from graft.storage.segments import scan_files
from graft.storage.snapshots import SnapshotStore
from graft.storage.state_files import read_hard_state, read_identity


@dataclass(slots=True, kw_only=True)
class CheckReport:
    ok: bool = True
    lines: list[str] = field(default_factory=list)


def check_data_dir(path: Path | str, *, files: FileSystem | None = None) -> CheckReport:
    """Verify identity, hard state, snapshot (data checksum included) and every log record."""
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
        hard_state = read_hard_state(files, data_dir)
        report.lines.append(f"hard state: {hard_state}")
    except StorageError as error:
        problem(str(error))
    floor = 0
    try:
        store = SnapshotStore(files, data_dir)
        info = store.load(clean=False)
        if info is None:
            report.lines.append("snapshot: none")
        else:
            floor = info.meta.index
            store.open(info).close()
            report.lines.append(
                f"snapshot: index {info.meta.index}, term {info.meta.term}, fsm "
                f"{info.fsm_name!r}, {info.size} bytes, checksum ok"
            )
    except StorageError as error:
        problem(str(error))
    try:
        scans, notes, _stale = scan_files(files, data_dir, floor_index=floor)
        report.lines.extend(notes)
        total = 0
        for path, scan in scans:
            total += len(scan.entries)
            span = (
                f"entries {scan.first_index}..{scan.last_index}" if scan.entries else "no entries"
            )
            report.lines.append(f"{path.name}: {span}, {scan.end} bytes")
            if scan.problem is not None:
                report.lines.append(
                    f"{path.name}: torn final record at offset {scan.problem_offset} "
                    f"({scan.problem}); it is cut off when the node starts"
                )
        report.lines.append(f"log: {len(scans)} segment(s), {total} entries")
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
