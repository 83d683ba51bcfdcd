"""Commands that talk to a running cluster over its HTTP API: command, query, status, check,
members, leader, snapshot, shutdown."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from graft.backup import DEFAULT_MAX_BEHIND, save_backup
from graft.cli.connect import ClientSettings, make_client, node_url
from graft.cli.errors import GraftCLIError
from graft.cli.options import client_options, input_file_option
from graft.cli.render import (
    check_rows,
    check_summary,
    failed_statements,
    membership_line,
    newest_check,
    print_members,
    print_output,
    render_status_table,
    shown_path,
    status_problems,
    status_rows,
    table,
)
from graft.cli.sqlparams import param_options, with_params
from graft.client_errors import ClientError
from graft.cluster_status import cluster_status


def read_input(value: str | None, file: Path | None, what: str) -> bytes:
    """The command or query: the argument, else -f FILE ('-' is stdin), else piped stdin."""
    if value is not None and file is not None:
        raise GraftCLIError(f"give the {what} either as an argument or with -f, not both")
    if file is not None:
        data = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
    elif value is not None and value != "-":
        data = value.encode()
    elif value == "-" or not sys.stdin.isatty():
        data = sys.stdin.buffer.read()
    else:
        raise GraftCLIError(f"no {what}: give it as an argument, with -f FILE, or on stdin")
    if not data.strip():
        raise GraftCLIError(
            f"the {what} is empty: give it as an argument, with -f FILE, or on stdin"
        )
    return data


def _decoded(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")


def _says_outcome_unknown(message: str) -> bool:
    """Whether a timeout's message already warns that the command may have been applied (the
    node's and the client's do), so that the advice is not given twice in one line."""
    return "outcome is unknown" in message or "may still commit" in message


def raise_client_error(error: ClientError, doing: str) -> NoReturn:
    message = error.message
    if error.code == "fsm_error":
        where = f" at index {error.index}" if error.index is not None else ""
        message = (
            f"the state machine rejected the command (it was committed{where}; every node "
            f"refused it the same way): {message}; fix the command and send a new one"
        )
    elif error.code == "timeout" and doing == "command" and not _says_outcome_unknown(message):
        message += " (the command may still be applied: check with a query before retrying)"
    raise GraftCLIError(message)


@click.command()
@click.argument("data", required=False)
@input_file_option("command")
@param_options
@click.option(
    "--no-session",
    is_flag=True,
    help="Send the command without a client session: a timeout or a dropped connection "
    "then ends it with its outcome unknown, and it is not retried.",
)
@client_options()
def command(
    data: str | None,
    file: Path | None,
    params: tuple[str, ...],
    param_json: str | None,
    no_session: bool,
    as_json: bool,
    **options: Any,
) -> None:
    """Send a command (a write): DATA, -f FILE or stdin.

    For the default SQLite state machine a command is an SQL script, e.g.
    `graft command -f conf/demo.sql`, or one statement with bound parameters:
    `graft command "INSERT INTO users(name) VALUES (?)" -p "o'neil"`. Any member may be
    asked: followers forward to the leader.

    The command goes under a client session: it is numbered, and until --timeout it is
    retried on the members (no leader, a timeout, a dropped connection, a failed forward)
    with the same number, so the cluster applies it at most once and a retry gets the first
    answer. If the time runs out after a try that may have been applied, graft says the
    outcome is unknown and exits 1: check with a query before sending it again. A cluster
    without sessions gets it as with --no-session.
    """
    body = with_params(read_input(data, file, "command"), params, param_json)
    client = make_client(ClientSettings(**options), session=not no_session)
    try:
        response = client.command(body)
    except ClientError as error:
        raise_client_error(error, "command")
    index = response.header_int("Graft-Index")
    term = response.header_int("Graft-Term")
    leader = response.header("Graft-Leader")
    if as_json:
        out = {"index": index, "term": term, "leader": leader, "output": _decoded(response.body)}
        click.echo(json.dumps(out))
        return
    print_output(response.body)
    if index is not None:
        click.echo(f"applied at index {index} (term {term}, leader {leader})", err=True)
    if response.duplicate:
        click.echo(
            "an earlier try had applied the command: this is its first answer, not a second "
            "application",
            err=True,
        )
    _fail_on_statement_errors(response.body)


def _fail_on_statement_errors(body: bytes) -> None:
    """Exit 1 when a statement of a JSON-form request failed (its error is in the output)."""
    failed = failed_statements(body)
    if failed:
        raise GraftCLIError(
            f"statement {failed[0]} failed (see its error above)"
            + (f", {len(failed) - 1} more did not take effect" if len(failed) > 1 else "")
        )


@click.command()
@click.argument("query_text", metavar="QUERY", required=False)
@input_file_option("query")
@param_options
@click.option(
    "--consistency",
    type=click.Choice(["default", "strong", "weak"]),
    default="default",
    show_default=True,
    help="default: the leader under its lease; strong: linearizable; weak: the node asked.",
)
@click.option(
    "--min-index",
    type=click.IntRange(min=0),
    default=None,
    help="Wait until the node has applied this index (read your own writes); an index "
    "beyond the cluster's log is refused at once (min_index_beyond_log).",
)
@click.option(
    "--max-lag-ms",
    type=click.IntRange(min=0),
    default=None,
    help="With weak: refuse (409 stale, not retried) when the node asked last heard from a "
    "leader longer ago than this; the leader itself always answers. Keep it above the "
    "heartbeat interval (timeouts.heartbeat), or healthy followers refuse at random.",
)
@client_options()
def query(
    query_text: str | None,
    file: Path | None,
    consistency: str,
    min_index: int | None,
    max_lag_ms: int | None,
    params: tuple[str, ...],
    param_json: str | None,
    as_json: bool,
    **options: Any,
) -> None:
    """Run a read-only QUERY (not logged).

    For example `graft query "SELECT * FROM users;" --consistency strong`, or with bound
    parameters `graft query "SELECT * FROM users WHERE id = ?" -p 2`.

    --json prints the state machine's raw JSON answer.
    """
    body = with_params(read_input(query_text, file, "query"), params, param_json)
    client = make_client(ClientSettings(**options))
    try:
        response = client.query(
            body, consistency=consistency, min_index=min_index, max_lag_ms=max_lag_ms
        )
    except ClientError as error:
        raise_client_error(error, "query")
    if as_json:
        click.echo(response.body.decode("utf-8", "replace").rstrip("\n"))
        return
    print_output(response.body)
    _fail_on_statement_errors(response.body)


@click.command()
@client_options()
def status(as_json: bool, **options: Any) -> None:
    """Show the cluster's members as the cluster knows them (learners and members added at run
    time included): each one's membership (voter, learner), role, term, leader, commit and
    applied index, lag behind the leader (entries), log and FSM size, and when its peer
    certificate expires.

    The membership comes from the first member that answers (GET /cluster/members), then each
    member is asked at the address the cluster knows; when no member gives it, the members of
    the config (or --url) are shown.

    \b
    Exit codes:
      0  a leader is known and every member answered
      1  no member answered (or another error)
      3  a member did not answer (its name and why are printed)
      4  no member knows a leader

    --json prints a list with one object per member: node, member (voter, learner or null),
    url, reachable, and either error (when unreachable) or role, term, leader, commit,
    applied, last_index, lag, log_bytes, fsm_bytes and cert_expires (ISO 8601, UTC), each
    null when unknown.
    """
    client = make_client(ClientSettings(**options))
    found = cluster_status(client)
    statuses = found.members
    rows = status_rows(statuses, found.membership)
    last_check = newest_check(statuses)
    if as_json:
        click.echo(json.dumps(rows))
    else:
        click.echo(render_status_table(rows))
        if last_check is not None:
            click.echo(check_summary(last_check))
    problems, code = status_problems(rows)
    anyone = any(row["reachable"] for row in rows)
    if found.membership is None and anyone:
        click.echo(
            "graft status: no member listed the membership; showing the configured members",
            err=True,
        )
    for problem in problems:
        click.echo(f"graft status: {problem}", err=True)
    if not anyone:
        raise GraftCLIError(
            "no member answered: is the cluster running? (start it with `graft dev -c FILE` "
            "or check --url/-c)"
        )
    if code:
        raise SystemExit(code)


# `graft check` exit codes beyond 0 (all members gave the same digest) and 1 (an error, or a
# member gave no digest: unreachable, behind, restarted).
CHECK_MISMATCH_EXIT = 3


@click.command()
@client_options(timeout=180.0)
def check(as_json: bool, **options: Any) -> None:
    """Check that every replica holds the same state: each member digests its state machine at
    one log index and the digests are compared. Exits 0 when all agree, 1 when a member gave no
    digest (unreachable, behind), 3 when the digests differ."""
    client = make_client(ClientSettings(**options))
    result = client.check_replicas()
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(table(["node", "digest", "status"], check_rows(result)))
        click.echo(check_summary(result).replace("last replica check", "replica check", 1))
    if result.get("mismatch"):
        raise SystemExit(CHECK_MISMATCH_EXIT)
    if not result.get("ok") or not result.get("complete"):
        raise GraftCLIError(
            "not every member gave a digest; see the table, then run `graft check` again"
        )


# --- cluster administration ---------------------------------------------------------------------


@click.group()
def members() -> None:
    """List, add and remove cluster members (any member may be asked)."""


@members.command("list")
@client_options()
def members_list(as_json: bool, **options: Any) -> None:
    """Show the members, their role (leader, voter, learner) and addresses."""
    client = make_client(ClientSettings(**options))
    print_members(client.members(), as_json)


@members.command("add")
@click.argument("node_id", metavar="ID")
@click.option("--host", required=True, help="The new node's host name or IP address.")
@click.option(
    "--p2p", "p2p_port", type=click.IntRange(1, 65535), required=True, help="Its peer port."
)
@click.option(
    "--api", "api_port", type=click.IntRange(1, 65535), required=True, help="Its API port."
)
@click.option(
    "--non-voter",
    is_flag=True,
    help="Add it as a non-voter: it receives the log and serves reads, never votes and is "
    "never promoted on its own (`graft members promote ID` makes it a voter).",
)
@client_options(
    timeout=180.0,
    timeout_help="Seconds to wait for the node to catch up and be promoted (a node gives up "
    "after 150 s at most; the change may still complete).",
)
def members_add(
    node_id: str,
    host: str,
    p2p_port: int,
    api_port: int,
    non_voter: bool,
    as_json: bool,
    **options: Any,
) -> None:
    """Add node ID: it joins as a learner, catches up, then becomes a voter (with
    --non-voter: stays a non-voter, a read replica).

    Start the new node (with its own config) so it can catch up: `graft start ID -c
    its.yaml --join URL` does both steps; this command only asks the cluster.
    """
    client = make_client(ClientSettings(**options))
    if non_voter:
        click.echo(f"adding {node_id} as a non-voter...", err=True)
        document = client.add_member(node_id, host, p2p_port, api_port, non_voter=True)
        click.echo(
            f"{node_id} is a non-voter; it catches up once it runs: {membership_line(document)}",
            err=True,
        )
        print_members(document, as_json)
        return
    click.echo(
        f"adding {node_id} as a learner; it is promoted to voter once caught up...", err=True
    )
    document = client.add_member(node_id, host, p2p_port, api_port)
    learners = document.get("learners")
    state = "still a learner" if isinstance(learners, list) and node_id in learners else "a voter"
    click.echo(f"{node_id} caught up and is {state}: {membership_line(document)}", err=True)
    print_members(document, as_json)


@members.command("remove")
@click.argument("node_id", metavar="ID")
@client_options(timeout=180.0)
def members_remove(node_id: str, as_json: bool, **options: Any) -> None:
    """Remove member ID (a leader that is removed hands over first). Stop its process after."""
    client = make_client(ClientSettings(**options))
    document = client.remove_member(node_id)
    click.echo(f"removed {node_id}: {membership_line(document)}", err=True)
    print_members(document, as_json)


@click.group()
def leader() -> None:
    """Move leadership between voters (e.g. before maintenance on the leader's machine)."""


@leader.command("transfer")
@click.argument("node_id", metavar="[ID]", required=False)
@client_options(timeout=30.0)
def leader_transfer(node_id: str | None, as_json: bool, **options: Any) -> None:
    """Hand leadership to voter ID, or to the most caught-up voter when ID is omitted."""
    client = make_client(ClientSettings(**options))
    document = client.transfer_leadership(node_id)
    if as_json:
        click.echo(json.dumps(document))
    else:
        click.echo(f"leader is now {document.get('leader')} (term {document.get('term')})")


@click.group()
def snapshot() -> None:
    """Take snapshots and download them for backup."""


@snapshot.command("take")
@client_options(timeout=180.0)
def snapshot_take(as_json: bool, **options: Any) -> None:
    """Snapshot the state machine now and compact the log (on the member asked)."""
    client = make_client(ClientSettings(**options))
    document = client.take_snapshot()
    if as_json:
        click.echo(json.dumps(document))
    else:
        click.echo(f"snapshot taken at index {document.get('index')} (term {document.get('term')})")


@snapshot.command("save")
@click.argument("file", type=click.Path(dir_okay=False, writable=True, path_type=Path))
@click.option(
    "--node",
    "node_id",
    default=None,
    help="Back up this member of the config (default: the first that answers).",
)
@click.option(
    "--max-behind",
    type=click.IntRange(min=0),
    default=DEFAULT_MAX_BEHIND,
    show_default=True,
    help="Take a new snapshot first when the latest is more than this many log entries "
    "behind the node's applied index (or there is none); 0: always up to the applied index.",
)
@client_options(
    timeout=30.0, timeout_help="Seconds to wait for each piece of data (not the whole download)."
)
def snapshot_save(
    file: Path, node_id: str | None, max_behind: int, as_json: bool, **options: Any
) -> None:
    """Back up a node to FILE: take a snapshot there when none is recent enough, then download
    it (atomically: FILE is complete or untouched). `graft restore FILE` seeds a node from it."""
    settings = ClientSettings(**options)
    client = make_client(settings)
    url = node_url(settings, node_id) if node_id is not None else None
    backup = save_backup(client, file, url=url, max_behind=max_behind)
    saved = backup.saved
    if as_json:
        document = {
            "node": saved.node,
            "file": str(saved.path),
            "index": saved.index,
            "term": saved.term,
            "fsm": saved.fsm,
            "size": saved.size,
            "sha256": backup.sha256,
            "taken": backup.taken,
        }
        click.echo(json.dumps(document))
        return
    how = "took and saved" if backup.taken else "saved"
    click.echo(
        f"{how} the snapshot of {saved.node} at index {saved.index} (term {saved.term}) to "
        f"{shown_path(saved.path)}: {saved.size} bytes, sha256 {backup.sha256}"
    )


@click.command()
@click.argument("node_id", metavar="NODE")
@client_options(timeout=60.0, timeout_help="Seconds to wait for the node to stop answering.")
def shutdown(node_id: str, as_json: bool, **options: Any) -> None:
    """Stop NODE gracefully (a leader hands over first) and wait until it has stopped.

    NODE is looked up in the config's peers; with --url, that URL is NODE's API.
    """
    settings = ClientSettings(**options)
    client = make_client(settings)
    url = node_url(settings, node_id)
    answer = client.shutdown(url)
    stopping = answer.get("stopping", node_id)
    if not as_json:
        click.echo(f"{stopping} is stopping...", err=True)
    stopped = client.wait_until_down(url)
    if as_json:
        click.echo(json.dumps({"node": stopping, "stopped": stopped}))
    if not stopped:
        raise GraftCLIError(
            f"{stopping} still answers at {url} after {settings.timeout:g}s: it may be handing "
            "over leadership; wait, or retry with a larger --timeout"
        )
    if not as_json:
        click.echo(f"{stopping} stopped")
