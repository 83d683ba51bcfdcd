"""`graft members promote`, `demote` and `update`: a member's role and advertised addresses,
changed through the replicated membership (graft.driver.member_roles does the work on the
leader; any member may be asked)."""

from __future__ import annotations

from typing import Any

import click

from graft.cli.connect import ClientSettings, make_client
from graft.cli.options import client_options
from graft.cli.render import membership_line, print_members


@click.command("promote")
@click.argument("node_id", metavar="ID")
@client_options(
    timeout=180.0,
    timeout_help="Seconds to wait for the member to catch up and be promoted (a node gives up "
    "after 150 s at most; the change may still complete).",
)
def promote(node_id: str, as_json: bool, **options: Any) -> None:
    """Make learner ID (a non-voter) a voter, once it has caught up."""
    client = make_client(ClientSettings(**options))
    document = client.promote_member(node_id)
    click.echo(f"{node_id} is a voter: {membership_line(document)}", err=True)
    print_members(document, as_json)


@click.command("demote")
@click.argument("node_id", metavar="ID")
@client_options(timeout=60.0)
def demote(node_id: str, as_json: bool, **options: Any) -> None:
    """Make voter ID a non-voter: it keeps the log and serves reads, but no longer votes or
    counts for commit. A leader that is demoted hands over first."""
    client = make_client(ClientSettings(**options))
    document = client.demote_member(node_id)
    click.echo(f"{node_id} is a non-voter: {membership_line(document)}", err=True)
    print_members(document, as_json)


@click.command("update")
@click.argument("node_id", metavar="ID")
@click.option("--host", required=True, help="The host name or IP address it now advertises.")
@click.option(
    "--p2p",
    "--p2p-port",
    "p2p_port",
    type=click.IntRange(1, 65535),
    help="Its new peer port (default: unchanged).",
)
@click.option(
    "--api",
    "--api-port",
    "api_port",
    type=click.IntRange(1, 65535),
    help="Its new API port (default: unchanged).",
)
@client_options(timeout=60.0)
def update(
    node_id: str,
    host: str,
    p2p_port: int | None,
    api_port: int | None,
    as_json: bool,
    **options: Any,
) -> None:
    """Change member ID's advertised addresses in the replicated membership.

    The other members re-dial it at the new address as soon as the change reaches them.
    Then make ID listen there (its config's host/listen, a certificate naming the new host:
    `graft certs renew`) and restart it.
    """
    client = make_client(ClientSettings(**options))
    document = client.update_member(node_id, host, p2p_port, api_port)
    address = document.get("addresses", {}).get(node_id, {})
    click.echo(
        f"{node_id} is now advertised at {address.get('host')} (p2p {address.get('p2p')}, api "
        f"{address.get('api')}); restart it listening there",
        err=True,
    )
    print_members(document, as_json)
