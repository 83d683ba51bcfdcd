"""The error policy of every ``graft`` command, in one place.

Every error is one line on stderr and a non-zero exit, never a traceback. Commands raise the
library's own errors (ConfigError, CertificateError, StorageError, ClientError, OSError);
:class:`GraftGroup` turns them into that one line.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, NoReturn

import click

from graft.client_errors import ClientError

# Set to see the traceback of an unexpected error (a bug) instead of the one-line summary.
DEBUG_ENV = "GRAFT_DEBUG"


class GraftCLIError(click.ClickException):
    """An expected failure: printed as ``graft: error: <message>`` with exit code 1."""

    def show(self, file: Any = None) -> None:
        click.echo(f"graft: error: {self.format_message()}", err=True)


def _expected_errors() -> tuple[type[BaseException], ...]:
    """The error types that mean "the user or the environment has a problem", not a bug.

    Imported here rather than at the top so that ``graft --help`` does not load them.
    """
    from graft.certs import CertificateError
    from graft.config import ConfigError
    from graft.errors import GraftError
    from graft.ops import OperationError
    from graft.storage import StorageError

    return (
        ClientError,
        OSError,
        ConfigError,
        CertificateError,
        StorageError,
        GraftError,
        OperationError,
    )


def one_line(error: BaseException) -> str:
    if isinstance(error, OSError) and not isinstance(error, ClientError) and error.strerror:
        where = f": {error.filename}" if error.filename else ""
        return f"{error.strerror.lower()}{where} (check the path and its permissions)"
    text = " ".join(str(error).split())
    return text or type(error).__name__


class GraftGroup(click.Group):
    """The root group: owns the error policy for every subcommand."""

    def main(self, *args: Any, **kwargs: Any) -> NoReturn:
        kwargs["standalone_mode"] = False
        try:
            result = super().main(*args, **kwargs)
        except click.exceptions.Abort:
            click.echo("graft: interrupted", err=True)
            sys.exit(130)
        except click.ClickException as error:
            if isinstance(error, click.UsageError) and not isinstance(error, GraftCLIError):
                _show_usage_error(error)
            else:
                error.show()
            sys.exit(error.exit_code)
        except click.exceptions.Exit as done:
            sys.exit(done.exit_code)
        except BrokenPipeError:
            # `graft storage dump ... | head`: the reader left; not an error worth a message.
            # Point stdout at /dev/null so the flush at exit does not complain either.
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            raise click.exceptions.Abort() from None
        except Exception as error:
            if isinstance(error, BrokenPipeError):
                raise
            if isinstance(error, _expected_errors()):
                raise GraftCLIError(one_line(error)) from None
            if os.environ.get(DEBUG_ENV):
                raise
            raise GraftCLIError(
                f"internal error {type(error).__name__}: {one_line(error)} (a bug in graft; "
                f"rerun with {DEBUG_ENV}=1 to see the traceback and report it)"
            ) from None


def _show_usage_error(error: click.UsageError) -> None:
    """A usage error on one line, naming the help command to read."""
    path = error.ctx.command_path.split(" ")[1:] if error.ctx is not None else []
    command = " ".join(["graft", *path])
    click.echo(
        f"graft: error: {_one_line_text(error.format_message())} (see `{command} --help`)",
        err=True,
    )


def _one_line_text(text: str) -> str:
    return " ".join(text.split())
