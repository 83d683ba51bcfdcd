"""Offline operations on a stopped node's data dir: seeding from a backup, recovering quorum,
skipping a poison entry.

All run without a reactor (the storage's unthreaded mode) and refuse to touch a data dir that
a running node might be using only in so far as the operator tells them it is stopped: the
commands that call them say so loudly.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

from graft.config import ClusterConfig
from graft.fsm import create_state_machine
from graft.raft.types import (
    Entry,
    EntryKind,
    HardState,
    MemberAddress,
    Membership,
    SnapshotMeta,
    encode_membership,
)
from graft.sessions.machine import with_sessions
from graft.storage import DurableLog
from graft.storage.records import parse_segment_name
from graft.storage.rejected import REJECTED_FILE, RejectedEntry, read_rejected, write_rejected
from graft.storage.state_files import HARD_STATE_FILE, IDENTITY_FILE

# A restored cluster starts from its backup as the snapshot at this index and term; every node
# restored from the same file holds the same snapshot, so their logs agree from the start.
RESTORED_INDEX = 1
RESTORED_TERM = 1


class OperationError(Exception):
    """An offline operation refused to run; the message says why and what to do."""


STORAGE_HINT = (
    "pass a node's data dir (the directory `data_dir` in its config names, e.g. data/turing)"
)


def require_data_dir(path: Path, *, hint: str = STORAGE_HINT) -> None:
    """Refuse ``path`` unless it holds graft data (its identity file, hard state, a log segment
    or a snapshot): a tool pointed at the wrong directory (the conf/ dir, a parent) must say
    so, not report a healthy fresh data dir or write into it."""
    path = Path(path)
    if not path.is_dir():
        raise OperationError(f"{path} is not a directory; {hint}")
    names = [entry.name for entry in path.iterdir()]
    if any(
        name in (IDENTITY_FILE, HARD_STATE_FILE)
        or parse_segment_name(name) is not None
        or name.startswith("snap-")
        for name in names
    ):
        return
    found = "is empty" if not names else "holds no graft data (no identity file, log or snapshot)"
    raise OperationError(f"{path} {found}: it is not a data dir; {hint}")


def stopped_node_hint(node_id: str) -> str:
    return (
        f"is {node_id} a node that has run with this config? Check --node and `data_dir` in "
        "the config"
    )


def _addresses(cfg: ClusterConfig) -> tuple[tuple[str, MemberAddress], ...]:
    return tuple(
        (p.id, MemberAddress(host=p.host, p2p_port=p.p2p_port, api_port=p.api_port))
        for p in sorted(cfg.peers.values(), key=lambda p: p.id)
    )


def restore_data_dir(cfg: ClusterConfig, node_id: str, snapshot_file: Path) -> SnapshotMeta:
    """Seed a new node's empty data dir from a backup (``graft snapshot save``).

    Run it for every node of the new cluster with the same file, then start them all: each
    starts from the backup's state, with the config file's peers as the membership.
    """
    cfg.peer(node_id)
    data_dir = cfg.data_dir(node_id)
    if data_dir.exists() and any(data_dir.iterdir()):
        raise OperationError(
            f"{data_dir} is not empty; restore only seeds a new node: move the old data dir "
            "away first"
        )
    snapshot_file = Path(snapshot_file)
    if not snapshot_file.is_file():
        raise OperationError(
            f"{snapshot_file}: no such backup file; pass the file that `graft snapshot save` wrote"
        )
    _check_loads(cfg, snapshot_file)
    meta = SnapshotMeta(
        index=RESTORED_INDEX,
        term=RESTORED_TERM,
        membership=Membership(voters=frozenset(cfg.peers), addresses=_addresses(cfg)),
    )
    log = DurableLog.open(data_dir, node_id=node_id, cluster=cfg.cluster, threaded=False)
    try:

        def copy(sink: BinaryIO) -> None:
            with snapshot_file.open("rb") as source:
                shutil.copyfileobj(source, sink)

        log.save_snapshot(meta, cfg.fsm.factory, copy)
        log.set_hard_state_sync(HardState(term=RESTORED_TERM, vote=None, commit=RESTORED_INDEX))
    finally:
        log.close()
    return meta


def _check_loads(cfg: ClusterConfig, snapshot_file: Path) -> None:
    """Refuse a file the configured FSM cannot restore, before writing anything."""
    with tempfile.TemporaryDirectory(prefix="graft-restore-check-") as scratch:
        # A backup is a snapshot container (the session table, then the FSM's snapshot) or,
        # from before sessions, the FSM's snapshot alone: the session layer reads both.
        fsm = with_sessions(
            create_state_machine(cfg.fsm, data_dir=Path(scratch), base_dir=cfg.base_dir)
        )
        try:
            with snapshot_file.open("rb") as source:
                fsm.restore(source)
        except Exception as e:
            raise OperationError(
                f"{snapshot_file} is not a snapshot that {cfg.fsm.factory} can restore ({e}); "
                "pass a backup taken from a cluster with the same fsm.factory"
            ) from None
        finally:
            fsm.close()


def check_recovery(cfg: ClusterConfig, node_id: str, members: Sequence[str]) -> Membership:
    """The membership ``recover_membership`` would write, or OperationError saying what is
    wrong with the arguments; writes nothing. `graft recover` calls it before its warning."""
    if not members:
        raise OperationError("name at least one surviving member with --members")
    data_dir = cfg.data_dir(node_id)
    if not data_dir.exists():
        raise OperationError(f"{data_dir} does not exist; run recover on a survivor's data dir")
    require_data_dir(data_dir, hint=stopped_node_hint(node_id))
    if node_id not in members:
        raise OperationError(
            f"{node_id} is not among --members {','.join(members)}; "
            "run recover only on the nodes that will form the cluster"
        )
    log = DurableLog.open(data_dir, node_id=node_id, cluster=cfg.cluster, threaded=False)
    try:
        return _recovered_membership(cfg, log, node_id, members)
    finally:
        log.close()


def _recovered_membership(
    cfg: ClusterConfig, log: DurableLog, node_id: str, members: Sequence[str]
) -> Membership:
    _, current = log.initial_state()
    known = dict(current.addresses) if current is not None else {}
    known.update(dict(_addresses(cfg)))
    unknown = [m for m in members if m not in known]
    if unknown:
        where = ", ".join(sorted(known))
        raise OperationError(
            f"{', '.join(unknown)}: not a member known to {node_id}'s log or to the peers of "
            f"{cfg.path} (known: {where}); check the spelling of --members, or list the node "
            "under peers in the config"
        )
    return Membership(
        voters=frozenset(members),
        addresses=tuple(sorted(((m, known[m]) for m in members), key=lambda p: p[0])),
    )


def recover_membership(cfg: ClusterConfig, node_id: str, members: Sequence[str]) -> Membership:
    """UNSAFE: make ``members`` the voters of a stopped node's log, to recover from a lost
    quorum. Writes a membership entry after the node's last entry; the node adopts it when it
    starts. Entries the lost majority committed but this node never received are lost for
    good, and if the "lost" nodes come back they must be wiped first.
    """
    check_recovery(cfg, node_id, members)
    data_dir = cfg.data_dir(node_id)
    log = DurableLog.open(data_dir, node_id=node_id, cluster=cfg.cluster, threaded=False)
    try:
        membership = _recovered_membership(cfg, log, node_id, members)
        last = log.last_index()
        term = max(log.hard_state.term, log.term(last) if last > 0 else 0)
        entry = Entry(
            index=last + 1, term=term, kind=EntryKind.MEMBERSHIP, data=encode_membership(membership)
        )
        log.append_sync([entry])
    finally:
        log.close()
    return membership


def reject_entry(cfg: ClusterConfig, node_id: str, index: int) -> dict[str, Any]:
    """UNSAFE: mark the command at ``index`` in a stopped node's log as rejected, so that the
    node, when it replays it, treats it as a command its FSM refused (state unchanged) instead
    of applying it. For a poison entry: a committed command on which the FSM raises (a bug), so
    that the node stops at it on every start.

    The mark names the entry's term and the SHA-256 of its data, so it never skips another
    entry that later takes the index. Replicas stay identical only if every one of them skips
    the same entry: run it on every node that stops at this index.
    """
    data_dir = cfg.data_dir(node_id)
    if not data_dir.is_dir():
        raise OperationError(f"{data_dir} does not exist; pass the node that stopped (--node)")
    require_data_dir(data_dir, hint=stopped_node_hint(node_id))
    log = DurableLog.open(data_dir, node_id=node_id, cluster=cfg.cluster, threaded=False)
    try:
        snapshot = log.snapshot_meta().index
        if index <= snapshot:
            raise OperationError(
                f"entry {index} is covered by {node_id}'s snapshot at index {snapshot}: the node "
                "no longer applies it at start, so it is not the entry it stops on; check the "
                "index in the node's log"
            )
        first, last = log.first_index(), log.last_index()
        if not first <= index <= last:
            raise OperationError(
                f"{node_id}'s log holds entries {first}..{last}, not {index}; check the index "
                "in the node's log (`graft storage dump`)"
            )
        (entry,) = log.entries(index, index + 1)
        if entry.kind is not EntryKind.NORMAL and entry.kind is not EntryKind.STAMPED:
            raise OperationError(
                f"entry {index} is a {entry.kind.name.lower()} entry, not a command: only "
                "commands reach the FSM, so only a command can be skipped"
            )
        marked = RejectedEntry.of(entry)
        rejected = read_rejected(data_dir)
        rejected[index] = marked
        write_rejected(data_dir, rejected)
    finally:
        log.close()
    return {
        "index": marked.index,
        "term": marked.term,
        "sha256": marked.sha256,
        "bytes": len(entry.data),
        "file": data_dir / REJECTED_FILE,
    }
