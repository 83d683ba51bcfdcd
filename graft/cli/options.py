"""Options shared by several commands, and finding the config file they name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from graft.cli.errors import GraftCLIError

if TYPE_CHECKING:
    from graft.config import ClusterConfig

DEFAULT_CONFIG = Path("conf/cluster.yaml")
DEFAULT_TIMEOUT_HELP = "Seconds for the whole operation, retries included."

Decorator = Callable[[Any], Any]


def config_option(required_text: str = "") -> Decorator:
    """-c/--config FILE (env GRAFT_CONFIG); ``required_text`` adds to its help."""
    return click.option(
        "-c",
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        envvar="GRAFT_CONFIG",
        help=f"Cluster config file (default: {DEFAULT_CONFIG} if it exists; env GRAFT_CONFIG)."
        + required_text,
    )


def token_option(help_text: str) -> Decorator:
    return click.option("--token", envvar="GRAFT_TOKEN", default=None, help=help_text)


def existing_file_option(name: str, help_text: str) -> Decorator:
    return click.option(
        name,
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        default=None,
        help=help_text,
    )


def input_file_option(what: str) -> Decorator:
    """-f/--file FILE ('-' for stdin) holding the command's ``what``."""
    return click.option(
        "-f",
        "--file",
        type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
        default=None,
        help=f"Read the {what} from FILE ('-' for stdin).",
    )


def node_option(help_text: str) -> Decorator:
    """--node ID of the offline commands (default: the config's ``node:``)."""
    return click.option("--node", "node", default=None, help=help_text)


def yes_option() -> Decorator:
    return click.option("--yes", is_flag=True, help="Do not ask for confirmation.")


def client_options(*, timeout: float = 10.0, timeout_help: str = DEFAULT_TIMEOUT_HELP) -> Decorator:
    """-c/--url/--timeout/--token/--cacert/--cert/--key/--json, shared by the commands that talk
    to a cluster (they become :class:`graft.cli.connect.ClientSettings`); ``timeout`` is the
    command's default --timeout."""
    options: list[Decorator] = [
        config_option(" Its peers are the members to talk to."),
        click.option(
            "--url",
            "urls",
            multiple=True,
            metavar="URL",
            help="A member's API base URL, e.g. http://127.0.0.1:8080 (repeatable; instead of -c).",
        ),
        click.option(
            "--timeout",
            type=click.FloatRange(min=0.1),
            default=timeout,
            show_default=True,
            help=timeout_help,
        ),
        token_option("Bearer token when the API requires one (env GRAFT_TOKEN)."),
        existing_file_option(
            "--cacert", "CA certificate for an HTTPS API (default with -c: the cluster CA)."
        ),
        existing_file_option("--cert", "Client certificate, when the API requires one."),
        existing_file_option("--key", "Key of the client certificate."),
        click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output."),
    ]

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def resolve_config_path(config_path: Path | None) -> Path:
    if config_path is not None:
        return config_path
    if DEFAULT_CONFIG.is_file():
        return DEFAULT_CONFIG
    raise GraftCLIError(
        f"no config file: pass -c FILE ({DEFAULT_CONFIG} does not exist in {Path.cwd()})"
    )


def cluster_config(config_path: Path | None, node: str | None = None) -> ClusterConfig:
    """The config at -c (or the default path), for ``node`` when given."""
    from graft.config import load_config

    return load_config(resolve_config_path(config_path), node)
