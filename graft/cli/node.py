"""Commands that run on a node's machine: ``graft start`` (one node, in this process) and
``graft certs``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from graft.cli.errors import GraftCLIError
from graft.cli.join import JoinRequest, join_cluster
from graft.cli.options import cluster_config, config_option, existing_file_option, token_option
from graft.cli.render import shown_path
from graft.launcher import run_twist, twist_args

if TYPE_CHECKING:
    from graft.config import ClusterConfig


@click.command()
@click.argument("node", required=False)
@config_option()
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Log lines for people, or JSON for a log collector.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warn", "error", "critical"]),
    default="info",
    show_default=True,
)
@click.option(
    "--join",
    "join_url",
    metavar="URL",
    default=None,
    help="Before starting, ask the cluster at URL (any member's API) to add this node.",
)
@token_option("With --join: an admin token when the API requires one (env GRAFT_TOKEN).")
@existing_file_option(
    "--cacert", "With --join to an https:// URL: the API's CA (default: the cluster CA)."
)
@click.option(
    "--join-timeout",
    type=click.FloatRange(min=1.0),
    default=600.0,
    show_default=True,
    help="With --join: how long to wait for the promotion to voter before reporting failure.",
)
@click.option(
    "--non-voter",
    is_flag=True,
    help="With --join: join as a non-voter (a read replica that never votes; "
    "`graft members promote NODE` makes it a voter later).",
)
def start(
    node: str | None,
    config_path: Path | None,
    log_format: str,
    log_level: str,
    join_url: str | None,
    token: str | None,
    cacert: Path | None,
    join_timeout: float,
    non_voter: bool,
) -> None:
    """Start a cluster node: NODE of the config, logging to stdout.

    The same as `twist graft --config FILE --node NODE`. NODE may be omitted when the file
    names it with `node:`.

    \b
    Adding a node to a running cluster (--join):
      1. Give the new node its own config file, new.yaml: the members' `cluster:`, `fsm:`,
         `timeouts:`, `tls:` and `api:` settings, and at least its own entry under `peers:`
         (host, ports p2p/api). The other members need not be listed: the node learns the
         membership from the log.
      2. Its certificate, on the machine that keeps the cluster CA (ca.pem with ca.key
         beside it, where `graft certs` made the members' certificates): put new.yaml in the
         directory of the cluster's config there, so that its tls paths reach the CA, and
         run `graft certs -c new.yaml --if-missing`: the existing CA signs a certificate for
         NEW only, so the members accept it. Copy ca.pem, NEW.pem and NEW.key to the new
         machine's tls paths; ca.key stays on the CA's machine (docs/operations.md,
         "Certificates: which machine gets which file").
      3. graft start NEW -c new.yaml --join http://LEADER-OR-ANY-MEMBER:PORT
         This first asks the cluster to add NEW (POST /cluster/members with its id, host and
         ports from new.yaml). A refusal (already a member, a change in progress, bad token,
         nobody answering) stops here, before the node starts. Otherwise the node starts and
         joins as a learner; the leader promotes it to voter once it has caught up, and the
         outcome is printed when the cluster reports it.
      4. Later restarts: `graft start NEW -c new.yaml`, without --join.
      With --non-voter in step 3 the node joins as a non-voter and stays one.
    """
    cfg = cluster_config(config_path, node)
    node_id = node or cfg.node
    if node_id is None:
        raise GraftCLIError(
            f"which node? pass it: graft start NODE -c {cfg.path} (one of: {', '.join(cfg.peers)})"
        )
    cfg.peer(node_id)  # ConfigError listing the peers if unknown
    cfg.check_files(node_id)
    join: JoinRequest | None = None
    if non_voter and join_url is None:
        raise GraftCLIError("--non-voter goes with --join: it says how the node joins")
    if join_url is not None:
        join = join_cluster(
            cfg,
            node_id,
            join_url,
            token=token,
            cacert=cacert,
            timeout=join_timeout,
            non_voter=non_voter,
        )
    warn_open_api(cfg, [node_id])
    # Twist's default log file is stdout.
    run_twist(
        twist_args(
            cfg.path, node_id, log_format=log_format, log_level=log_level, join=join is not None
        )
    )
    if join is not None:
        join.forget()  # the node has stopped: a late answer about joining is moot


def warn_open_api(
    cfg: ClusterConfig, node_ids: Sequence[str], echo: Callable[[str], None] | None = None
) -> None:
    """On stderr, for each node whose API is open to the network without tokens (the node
    logs it too, but a log on stdout is easy to miss)."""
    from graft.exposure import open_api_warning

    say = echo or (lambda line: click.secho(line, err=True, fg="yellow", bold=True))
    for node_id in node_ids:
        warning = open_api_warning(cfg, node_id)
        if warning is not None:
            say(warning)


@click.group(invoke_without_command=True)
@config_option()
@click.option("--force", is_flag=True, help="Overwrite existing certificates and keys.")
@click.option(
    "--if-missing",
    is_flag=True,
    help="Keep the files that exist; sign only the missing nodes' certificates, with the "
    "existing CA (ca.key beside ca.pem). Nothing to do is a success.",
)
@click.pass_context
def certs(ctx: click.Context, config_path: Path | None, force: bool, if_missing: bool) -> None:
    """Create the cluster CA and a certificate per node (at the config's tls paths).

    Run it where the CA is kept: each node's machine gets ca.pem and its own certificate and
    key, never ca.key (docs/operations.md, "Certificates: which machine gets which file").
    `graft certs renew` issues new ones from that CA; `graft certs reload` has running nodes
    use them (docs/operations.md, "Rotating certificates and tokens").
    """
    if ctx.invoked_subcommand is not None:
        if config_path is not None or force or if_missing:
            raise GraftCLIError(
                f"put the options after `{ctx.invoked_subcommand}`: "
                f"graft certs {ctx.invoked_subcommand} -c FILE ..."
            )
        return
    if force and if_missing:
        raise GraftCLIError("--force and --if-missing contradict each other: pass one of them")
    cfg = cluster_config(config_path)
    from graft.certs import generate_certificates

    # Its errors (CertificateError) name this command's options themselves.
    written = generate_certificates(cfg, force=force, if_missing=if_missing)
    if not written:
        click.echo(f"certificates for {', '.join(cfg.peers)} already exist; nothing written")
        return
    for path in written:
        click.echo(f"wrote {shown_path(path)}")
    echo_certificate_names(cfg, written)


def echo_certificate_names(cfg: ClusterConfig, written: list[Path]) -> None:
    """Say which names each new node certificate holds: peers and clients must reach the node
    by one of them (its advertised host), or TLS verification fails."""
    from graft.certs import describe_names

    for node_id, peer in cfg.peers.items():
        if cfg.tls_for(node_id).cert in written:
            click.echo(f"{node_id}'s certificate names {describe_names(node_id, peer.host)}")
