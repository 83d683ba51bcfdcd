"""The ``graft`` command's root: the group every subcommand hangs from, and shell completion.

The modules of this package import only click, graft.client and small leaf modules at the top;
the rest (config, storage, certificates, the node) is imported inside the commands, so
``graft --help`` and ``graft completion`` stay fast.
"""

from __future__ import annotations

import click

from graft import __version__
from graft.cli import cluster, dev, member_roles, node, offline, rotate
from graft.cli.errors import GraftCLIError, GraftGroup


@click.group(
    cls=GraftGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(
    __version__, "-v", "--version", prog_name="graft", message="%(prog)s %(version)s"
)
def main() -> None:
    """Makes any FSM distributed and resilient to single point of failure.

    Graft replicates a deterministic state machine (SQLite by default) over Raft.
    Start with `graft certs` and `graft dev` (or `make run`), then try `graft status`.
    """


@main.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script for SHELL.

    \b
    bash: eval "$(graft completion bash)"        (e.g. in ~/.bashrc)
    zsh:  eval "$(graft completion zsh)"         (e.g. in ~/.zshrc)
    fish: graft completion fish > ~/.config/fish/completions/graft.fish
    """
    from click.shell_completion import get_completion_class

    completion_class = get_completion_class(shell)
    if completion_class is None:  # Choice above makes this unreachable; keep mypy honest
        raise GraftCLIError(f"unsupported shell {shell}: expected bash, zsh or fish")
    script = completion_class(
        cli=main, ctx_args={}, prog_name="graft", complete_var="_GRAFT_COMPLETE"
    ).source()
    click.echo(script)


for _command in (
    node.start,
    node.certs,
    dev.dev,
    cluster.command,
    cluster.query,
    cluster.status,
    cluster.check,
    cluster.members,
    cluster.leader,
    cluster.snapshot,
    cluster.shutdown,
    offline.restore,
    offline.recover,
    offline.skip_entry,
    offline.storage,
):
    main.add_command(_command)
cluster.snapshot.add_command(offline.snapshot_extract)
node.certs.add_command(rotate.renew)
node.certs.add_command(rotate.reload)
for _command in (member_roles.promote, member_roles.demote, member_roles.update):
    cluster.members.add_command(_command)
