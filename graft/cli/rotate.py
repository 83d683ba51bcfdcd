"""``graft certs renew`` (new node certificates from the cluster CA, on the CA's machine) and
``graft certs reload`` (running nodes re-read their certificates, keys, CA bundle and API
tokens: POST /reload, what SIGHUP does). docs/operations.md, "Rotating certificates and
tokens", is the procedure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from graft.cli.connect import ClientSettings, make_client, node_url
from graft.cli.errors import GraftCLIError
from graft.cli.options import client_options, cluster_config, config_option
from graft.cli.render import shown_path
from graft.client_errors import ClientError


@click.command("renew")
@click.argument("node_ids", metavar="[NODE]...", nargs=-1)
@config_option()
@click.option(
    "--keep-key",
    is_flag=True,
    help="Sign each node's existing key again instead of making a new key (then only the "
    "certificate file changes).",
)
@click.option(
    "--days",
    type=click.IntRange(min=1),
    default=3650,
    show_default=True,
    help="How long the new certificates are valid.",
)
def renew(node_ids: tuple[str, ...], config_path: Path | None, keep_key: bool, days: int) -> None:
    """Issue new certificates for NODEs (default: every peer) from the cluster CA, with new
    keys unless --keep-key, at the config's tls paths.

    Run it where the CA is kept (ca.key beside ca.pem); copy each node its new <id>.pem and
    <id>.key, then `graft certs reload`: the nodes use them without a restart.
    """
    from graft.certs import renew_certificates

    cfg = cluster_config(config_path)
    written = renew_certificates(cfg, node_ids, keep_keys=keep_key, days=days)
    for path in written:
        click.echo(f"wrote {shown_path(path)}")


@click.command("reload")
@click.argument("node_ids", metavar="[NODE]...", nargs=-1)
@client_options(timeout=10.0)
def reload(node_ids: tuple[str, ...], as_json: bool, **options: Any) -> None:
    """Have NODEs (default: every peer of the config, or the one --url) re-read their
    certificate, key, CA bundle and API tokens, as SIGHUP does. New connections use them;
    open ones keep theirs until they reconnect. A node that finds a file missing or invalid
    keeps what it had and says which file.

    After a token rotation, pass a token the node has now (--token or GRAFT_TOKEN) for the
    nodes still to reload, the old one for those."""
    settings = ClientSettings(**options)
    client = make_client(settings)
    targets = _targets(settings, node_ids)
    answers: dict[str, Any] = {}
    failed: list[str] = []
    for node, url in targets:
        try:
            answers[node] = client.request("POST", url + "/reload", body=b"").json()
        except ClientError as err:
            answers[node] = {"error": {"code": err.code, "message": err.message}}
            failed.append(node)
            if not as_json:
                # The message names the node (and the code, for an answer).
                click.echo(f"not reloaded: {err.message}", err=True)
            continue
        if not as_json:
            click.echo(_reloaded_line(node, answers[node]))
    if as_json:
        click.echo(json.dumps(answers))
    if failed:
        raise GraftCLIError(
            f"{len(failed)} of {len(targets)} nodes did not reload (see above); they go on "
            "with their old files: fix them and rerun for those nodes"
        )


def _targets(settings: ClientSettings, node_ids: tuple[str, ...]) -> list[tuple[str, str]]:
    if node_ids:
        return [(node, node_url(settings, node)) for node in node_ids]
    if settings.urls:
        if len(settings.urls) != 1:
            raise GraftCLIError("give NODE ids with -c, or exactly one --url")
        url = settings.urls[0].rstrip("/")
        return [(url, url)]
    cfg = cluster_config(settings.config_path)
    return [(node, cfg.api_url(node)) for node in cfg.peers]


def _reloaded_line(node: str, answer: Any) -> str:
    if not isinstance(answer, dict):
        return f"{node}: reloaded"
    certificate = answer.get("certificate") or {}
    tokens = answer.get("tokens") or {}
    count = ", ".join(f"{n} {role}" for role, n in tokens.items()) or "none"
    return (
        f"{answer.get('node', node)}: reloaded; certificate valid until "
        f"{certificate.get('not_after')}, tokens: {count}"
    )
