"""Commands on a STOPPED node's data directory, with no cluster involved: restore, recover,
skip-entry, and storage check/dump."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from graft.cli.errors import GraftCLIError
from graft.cli.options import cluster_config, config_option, node_option, yes_option
from graft.cli.render import entry_preview, shown_path
from graft.ids import is_node_id

if TYPE_CHECKING:
    from graft.config import ClusterConfig


def _stopped_node(config_path: Path | None, node: str | None) -> tuple[ClusterConfig, str]:
    cfg = cluster_config(config_path, node)
    node_id = node or cfg.node
    if node_id is None:
        raise GraftCLIError(
            f"which node? pass --node ID (one of: {', '.join(cfg.peers)}) or set `node:` in "
            f"{cfg.path}"
        )
    cfg.peer(node_id)
    return cfg, node_id


def _print_ops_result(result: Any) -> None:
    if isinstance(result, Mapping):
        for key, value in result.items():
            click.echo(f"  {key}: {value}")
    elif isinstance(result, str | Path):
        click.echo(f"  {result}")


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@config_option()
@node_option("The node whose data dir is written.")
def restore(file: Path, config_path: Path | None, node: str | None) -> None:
    """Seed a STOPPED node's data dir from snapshot FILE (from `graft snapshot save`).

    To rebuild a cluster from a backup: restore the same FILE on every node of the new
    cluster's config, then start them.
    """
    cfg, node_id = _stopped_node(config_path, node)
    from graft.ops import restore_data_dir

    result = restore_data_dir(cfg, node_id, file)
    click.echo(f"restored {node_id}'s data dir {shown_path(cfg.data_dir(node_id))} from {file}")
    _print_ops_result(result)


@click.command("extract")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
def snapshot_extract(file: Path, out: Path) -> None:
    """Write the state machine's own snapshot from backup FILE to OUT (a new file).

    A backup of a cluster whose clients use sessions holds the session table ahead of the
    state machine's snapshot; OUT gets the latter alone: for SQLite, a plain database that
    `sqlite3 OUT` opens. A backup without sessions is copied whole.
    """
    from graft.sessions.machine import SnapshotContainerError, extract_fsm

    try:
        with file.open("rb") as container, out.open("xb") as sink:
            extract_fsm(container, sink)
    except FileExistsError:
        raise GraftCLIError(f"{out} exists: name a new file") from None
    except (OSError, SnapshotContainerError) as e:
        out.unlink(missing_ok=True)
        raise GraftCLIError(f"cannot extract {file}: {e}") from None
    click.echo(f"wrote the state machine's snapshot from {file} to {shown_path(out)}")


def _member_list(value: str) -> list[str]:
    ids = [part.strip() for part in value.split(",")]
    if not value.strip() or any(not part for part in ids):
        raise GraftCLIError(f"--members {value!r}: expected node ids separated by commas, e.g. a,b")
    for part in ids:
        if not is_node_id(part):
            raise GraftCLIError(f"--members: {part!r} is not a node id (lowercase a-z, 0-9, '-')")
    if len(set(ids)) != len(ids):
        raise GraftCLIError(f"--members {value!r} names a node twice: list each once")
    return ids


@click.command()
@click.option(
    "--members",
    "members_text",
    required=True,
    metavar="A,B,...",
    help="The voters the node is to believe in (the survivors).",
)
@config_option()
@node_option("The STOPPED node whose data dir is rewritten.")
@yes_option()
def recover(members_text: str, config_path: Path | None, node: str | None, yes: bool) -> None:
    """UNSAFE: rewrite a STOPPED node's membership after a quorum was lost for good.

    Use it only when a majority of the voters is gone and will not come back: run it on each
    survivor with the same --members, then start them. Entries that were committed only on
    the lost nodes are lost, and if a lost node comes back it can cause two leaders; wipe it.
    """
    member_ids = _member_list(members_text)
    cfg, node_id = _stopped_node(config_path, node)
    from graft.ops import check_recovery, recover_membership

    # Wrong arguments are refused before the warning: it is for a change that can happen.
    check_recovery(cfg, node_id, member_ids)
    _confirm_unsafe(
        "WARNING: graft recover is UNSAFE. It forces the membership of "
        f"{node_id}'s data dir to {', '.join(member_ids)}.\n"
        "  - Writes committed only on the lost members are lost.\n"
        "  - A lost member that comes back must be wiped, or two leaders may be elected.\n"
        f"  - {node_id} must be stopped, and every survivor must get the same --members.",
        "Rewrite the membership?",
        yes=yes,
    )
    result = recover_membership(cfg, node_id, member_ids)
    click.echo(
        f"rewrote {node_id}'s membership to {', '.join(member_ids)}: start the survivors now"
    )
    _print_ops_result(result)


@click.command("skip-entry")
@click.argument("index", type=click.IntRange(min=1))
@config_option()
@node_option("The STOPPED node whose data dir is marked.")
@yes_option()
def skip_entry(index: int, config_path: Path | None, node: str | None, yes: bool) -> None:
    """UNSAFE: mark the command at INDEX rejected on a STOPPED node (a poison entry).

    For a committed command that makes the FSM raise every time the node replays it (an FSM
    bug): the node then treats it as a command the FSM refused, and applies the entries after
    it. Run it with the same INDEX on every node that stops at that entry, or the replicas
    diverge. Fixing the FSM is better when it can be done.
    """
    cfg, node_id = _stopped_node(config_path, node)
    from graft.ops import reject_entry, require_data_dir, stopped_node_hint

    require_data_dir(cfg.data_dir(node_id), hint=stopped_node_hint(node_id))
    _confirm_unsafe(
        f"WARNING: graft skip-entry is UNSAFE. It makes {node_id} skip the command at index "
        f"{index} instead of applying it.\n"
        "  - Every replica must skip the same entry: run it on every node that stops at "
        f"index {index}, or their states diverge.\n"
        "  - Whatever the command would have changed is not changed.\n"
        f"  - {node_id} must be stopped.",
        f"Skip entry {index}?",
        yes=yes,
    )
    result = reject_entry(cfg, node_id, index)
    click.echo(f"marked entry {index} rejected on {node_id}: start it now")
    _print_ops_result(result)


@click.group()
def storage() -> None:
    """Inspect a node's data directory (stop the node first)."""


_DATA_DIR = click.Path(exists=True, file_okay=False, path_type=Path)


@storage.command("check")
@click.argument("data_dir", type=_DATA_DIR)
def storage_check(data_dir: Path) -> None:
    """Verify every record of DATA_DIR; exit 1 if anything is damaged or it is not a data
    dir."""
    from graft.ops import require_data_dir
    from graft.storage import check_data_dir

    require_data_dir(data_dir)

    report = check_data_dir(data_dir)
    for line in report.lines:
        click.echo(line)
    if not report.ok:
        raise GraftCLIError(
            f"{data_dir} is damaged (see above): restore it from a snapshot or let the node "
            "catch up from a peer with an empty data dir"
        )


def _iter_entries(data_dir: Path, first: int | None, last: int | None) -> Iterator[Any]:
    from graft.ops import require_data_dir
    from graft.storage import dump_log

    require_data_dir(data_dir)

    yield from dump_log(data_dir, first=first, last=last)


@storage.command("dump")
@click.argument("data_dir", type=_DATA_DIR)
@click.option("--from", "first", type=click.IntRange(min=1), default=None, help="First index.")
@click.option("--to", "last", type=click.IntRange(min=1), default=None, help="Last index.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per entry.")
def storage_dump(data_dir: Path, first: int | None, last: int | None, as_json: bool) -> None:
    """Print the log entries of DATA_DIR: index, term, kind, data preview."""
    if first is not None and last is not None and first > last:
        raise GraftCLIError(f"--from {first} is after --to {last}: swap them")
    for entry in _iter_entries(data_dir, first, last):
        kind = getattr(entry.kind, "name", str(entry.kind)).lower()
        if as_json:
            record = {
                "index": entry.index,
                "term": entry.term,
                "kind": kind,
                "data_b64": base64.b64encode(entry.data).decode(),
            }
            click.echo(json.dumps(record))
        else:
            click.echo(f"{entry.index}\t{entry.term}\t{kind}\t{entry_preview(entry.data)}")


def _confirm_unsafe(warning: str, question: str, *, yes: bool) -> None:
    """Print ``warning`` loudly; unless ``yes``, ask ``question`` and stop if not confirmed."""
    click.secho(warning, fg="red", bold=True, err=True)
    if yes:
        return
    try:
        confirmed = click.confirm(question, default=False, err=True)
    except click.exceptions.Abort:
        confirmed = False
    if not confirmed:
        raise GraftCLIError("not confirmed: nothing was changed (pass --yes to skip the question)")
