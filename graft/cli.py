"""The ``graft`` command (click): run nodes, make certificates, talk to a cluster, inspect storage.

Design notes:
- Every error is one line on stderr and a non-zero exit, never a traceback. Commands raise the
  library's own errors (ConfigError, CertificateError, StorageError, ClientError, OSError);
  :class:`GraftGroup` turns them into that one line in one place.
- Modules other than click and graft.client are imported inside the commands, so ``graft --help``
  and ``graft completion`` stay fast and work even if a subsystem fails to import.
- ``graft start`` runs Twisted's ``twist`` runner in this process with the same arguments as
  ``twist graft --config FILE --node ID``: one code path for both ways of starting a node, and
  signals reach the node directly (no wrapper process).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from graft import __version__
from graft.client import ClientError, GraftClient, MemberStatus

if TYPE_CHECKING:
    from graft.config import ClusterConfig

DEFAULT_CONFIG = Path("conf/cluster.yaml")
# graft dev: how long children get to stop after SIGTERM before SIGKILL.
STOP_GRACE_S = 5.0
# Set to see the traceback of an unexpected error (a bug) instead of the one-line summary.
DEBUG_ENV = "GRAFT_DEBUG"


# --- errors -------------------------------------------------------------------------------------


class GraftCLIError(click.ClickException):
    """An expected failure: printed as ``graft: error: <message>`` with exit code 1."""

    def show(self, file: Any = None) -> None:
        click.echo(f"graft: error: {self.format_message()}", err=True)


def _expected_errors() -> tuple[type[BaseException], ...]:
    """The error types that mean "the user or the environment has a problem", not a bug.

    Imported lazily and individually: a module that does not import must not turn every error
    into an internal one.
    """
    found: list[type[BaseException]] = [ClientError, OSError]
    for module, name in (
        ("graft.config", "ConfigError"),
        ("graft.certs", "CertificateError"),
        ("graft.storage", "StorageError"),
        ("graft.errors", "GraftError"),
    ):
        try:
            found.append(getattr(__import__(module, fromlist=[name]), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def _one_line(error: BaseException) -> str:
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
                raise GraftCLIError(_one_line(error)) from None
            if os.environ.get(DEBUG_ENV):
                raise
            raise GraftCLIError(
                f"internal error {type(error).__name__}: {_one_line(error)} (a bug in graft; "
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


# --- shared options -----------------------------------------------------------------------------


def _config_option(required_text: str = "") -> Callable[[Any], Any]:
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


def _resolve_config_path(config_path: Path | None) -> Path:
    if config_path is not None:
        return config_path
    if DEFAULT_CONFIG.is_file():
        return DEFAULT_CONFIG
    raise GraftCLIError(
        f"no config file: pass -c FILE ({DEFAULT_CONFIG} does not exist in {Path.cwd()})"
    )


def _load(config_path: Path | None, node: str | None = None) -> ClusterConfig:
    from graft.config import load_config

    return load_config(_resolve_config_path(config_path), node)


def _client_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """-c/--url/--timeout/--token/--cacert/--cert/--key/--json, shared by the client commands."""
    options = [
        _config_option(" Its peers are the members to talk to."),
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
            default=10.0,
            show_default=True,
            help="Seconds for the whole operation, retries included.",
        ),
        click.option(
            "--token",
            envvar="GRAFT_TOKEN",
            default=None,
            help="Bearer token when the API requires one (env GRAFT_TOKEN).",
        ),
        click.option(
            "--cacert",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            default=None,
            help="CA certificate for an HTTPS API (default with -c: the cluster CA).",
        ),
        click.option(
            "--cert",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            default=None,
            help="Client certificate, when the API requires one.",
        ),
        click.option(
            "--key",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            default=None,
            help="Key of the client certificate.",
        ),
        click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientSettings:
    config_path: Path | None
    urls: tuple[str, ...]
    timeout: float
    token: str | None
    cacert: Path | None
    cert: Path | None
    key: Path | None


def _make_client(settings: ClientSettings) -> GraftClient:
    """A client for the members named by --url, or else by the config's peers."""
    names: dict[str, str] = {}
    cacert = settings.cacert
    if settings.urls:
        urls = [url.rstrip("/") for url in settings.urls]
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise GraftCLIError(
                    f"--url {url}: expected an http:// or https:// base URL such as "
                    "http://127.0.0.1:8080"
                )
    else:
        cfg = _load(settings.config_path)
        urls = []
        for node_id in cfg.peers:
            url = cfg.api_url(node_id)
            urls.append(url)
            names[url] = node_id
        if cacert is None and any(url.startswith("https://") for url in urls):
            first = next(iter(cfg.peers))
            cluster_ca = cfg.tls_for(first).ca
            cacert = cluster_ca if cluster_ca.is_file() else None
    context = None
    if any(url.startswith("https://") for url in urls):
        import ssl

        context = ssl.create_default_context(cafile=str(cacert) if cacert else None)
        if settings.cert is not None:
            context.load_cert_chain(str(settings.cert), str(settings.key) if settings.key else None)
    return GraftClient(
        urls=urls,
        names=names,
        timeout=settings.timeout,
        token=settings.token,
        ssl_context=context,
    )


def _settings(**kwargs: Any) -> ClientSettings:
    return ClientSettings(**kwargs)


# --- the group ----------------------------------------------------------------------------------


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


# --- running nodes -------------------------------------------------------------------------------


@main.command()
@click.argument("node", required=False)
@_config_option()
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
def start(node: str | None, config_path: Path | None, log_format: str, log_level: str) -> None:
    """Start a cluster node: NODE of the config, logging to stdout.

    The same as `twist graft --config FILE --node NODE`. NODE may be omitted when the file
    names it with `node:`.
    """
    cfg = _load(config_path, node)
    node_id = node or cfg.node
    if node_id is None:
        raise GraftCLIError(
            f"which node? pass it: graft start NODE -c {cfg.path} (one of: {', '.join(cfg.peers)})"
        )
    cfg.peer(node_id)  # ConfigError listing the peers if unknown
    cfg.check_files(node_id)
    from twisted.application.twist._twist import Twist

    # Twist parses argv like the `twist` script; its default log file is stdout. The log
    # format is explicit because twist would switch to JSON whenever stdout is not a terminal.
    Twist.main(
        [
            "twist",
            f"--log-format={log_format}",
            f"--log-level={log_level}",
            "graft",
            "--config",
            str(cfg.path),
            "--node",
            node_id,
        ]
    )


@main.command()
@_config_option()
def dev(config_path: Path | None) -> None:
    """Run every node of the config here, for trying Graft out.

    Each node is a `twist graft` child process; its output lines are prefixed with its id.
    Ctrl-C stops them all.
    """
    cfg = _load(config_path)
    for node_id in cfg.peers:
        cfg.check_files(node_id)  # a missing certificate names `graft certs -c FILE`
    cluster = DevCluster(cfg)
    cluster.start()
    _print_dev_banner(cfg)
    client = _make_client(
        ClientSettings(
            config_path=cfg.path,
            urls=(),
            timeout=1.0,
            token=os.environ.get("GRAFT_TOKEN"),
            cacert=None,
            cert=None,
            key=None,
        )
    )
    threading.Thread(
        target=cluster.announce_leader, args=(client,), name="leader-watch", daemon=True
    ).start()
    code = cluster.wait()
    if code:
        raise click.exceptions.Exit(code)


_NODE_COLOURS = ("cyan", "magenta", "yellow", "green", "blue", "red")


class DevCluster:
    """The child processes of `graft dev` and the threads that relay their output."""

    def __init__(
        self,
        cfg: ClusterConfig,
        *,
        command_for: Callable[[str], list[str]] | None = None,
        echo: Callable[[str], None] = click.echo,
    ) -> None:
        self._cfg = cfg
        self._command_for = command_for or self.twist_command
        self._echo = echo
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._relays: list[threading.Thread] = []
        self._output_lock = threading.Lock()
        self._stop = threading.Event()
        self._width = max(len(node_id) for node_id in cfg.peers)

    def twist_command(self, node_id: str) -> list[str]:
        """`twist graft` for one node, with this interpreter (so the same virtualenv)."""
        return [
            sys.executable,
            "-m",
            "twisted",
            # twist logs JSON when stdout is not a terminal; people read these lines.
            "--log-format=text",
            "graft",
            "--config",
            str(self._cfg.path),
            "--node",
            node_id,
        ]

    def start(self) -> None:
        for number, node_id in enumerate(self._cfg.peers):
            child = subprocess.Popen(
                self._command_for(node_id),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                # Own process group: Ctrl-C reaches only us, and we stop the nodes in order.
                process_group=0,
            )
            self._children[node_id] = child
            prefix = click.style(
                f"{node_id:<{self._width}} |", fg=_NODE_COLOURS[number % len(_NODE_COLOURS)]
            )
            relay = threading.Thread(
                target=self._relay, args=(child, prefix), name=f"relay-{node_id}", daemon=True
            )
            relay.start()
            self._relays.append(relay)

    def exit_codes(self) -> dict[str, int | None]:
        return {node_id: child.poll() for node_id, child in self._children.items()}

    def _relay(self, child: subprocess.Popen[bytes], prefix: str) -> None:
        assert child.stdout is not None
        for raw in iter(child.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._output_lock:
                self._echo(f"{prefix} {line}")

    def say(self, text: str) -> None:
        with self._output_lock:
            self._echo(click.style(f"graft dev: {text}", bold=True))

    def announce_leader(
        self, client: GraftClient, *, poll_s: float = 0.5, give_up_s: float = 60.0
    ) -> None:
        """Poll the members' /status until a majority name the same leader, then say so: the
        moment the demo is ready for the curl lines."""
        deadline = time.monotonic() + give_up_s
        while not self._stop.wait(poll_s) and time.monotonic() < deadline:
            rows = status_rows(client.status_all())
            named = [row.get("leader") for row in rows if row["reachable"] and row.get("leader")]
            for leader in set(named):
                if named.count(leader) * 2 > len(rows):
                    term = max(row.get("term") or 0 for row in rows if row["reachable"])
                    self.say(f"leader elected: {leader} (term {term}); the cluster is ready")
                    return
        if not self._stop.is_set():
            self.say(f"no leader after {give_up_s:g}s: check the nodes' output above")

    def wait(self) -> int:
        """Block until Ctrl-C/SIGTERM or until every node has exited; stop the rest.

        Returns the exit code for `graft dev`: 0 after a requested stop, 1 if the nodes died.
        """
        previous = {
            sig: signal.signal(sig, lambda *_: self._stop.set())
            for sig in (signal.SIGINT, signal.SIGTERM)
        }
        reported: set[str] = set()
        try:
            while not self._stop.wait(0.2):
                for node_id, child in self._children.items():
                    code = child.poll()
                    if code is not None and node_id not in reported:
                        reported.add(node_id)
                        self.say(f"node {node_id} exited with {_describe_exit(code)}")
                if len(reported) == len(self._children):
                    self.say("every node has exited; stopping")
                    return 1
            self.say("stopping all nodes")
            return 0
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def stop(self) -> None:
        """SIGTERM every running child, then SIGKILL those still alive after STOP_GRACE_S."""
        self._stop.set()
        running = [child for child in self._children.values() if child.poll() is None]
        for child in running:
            _signal(child, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for node_id, child in self._children.items():
            try:
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"node {node_id} did not stop in {STOP_GRACE_S:g}s; killing it")
                _signal(child, signal.SIGKILL)
                child.wait()
        for relay in self._relays:
            relay.join(timeout=1.0)
        for child in self._children.values():
            if child.stdout is not None:
                child.stdout.close()


def _signal(child: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        child.send_signal(sig)


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"


def _print_dev_banner(cfg: ClusterConfig) -> None:
    first = next(iter(cfg.peers))
    lines = [f'Graft dev cluster "{cfg.cluster}": {len(cfg.peers)} nodes']
    width = max(len(node_id) for node_id in cfg.peers)
    for node_id, peer in cfg.peers.items():
        lines.append(
            f"  {node_id:<{width}}  API {cfg.api_url(node_id)}  (peer port {peer.p2p_port}, "
            f"data {_shown_path(cfg.data_dir(node_id))})"
        )
    lines.append("Try:")
    url = cfg.api_url(first)
    tls = f"--cacert {_shown_path(cfg.tls_for(first).ca)} " if url.startswith("https") else ""
    demo = cfg.base_dir / "demo.sql"
    if cfg.fsm.factory.startswith("graft.fsm.sqlite:") and demo.is_file():
        lines.append(
            f"  curl {tls}-X POST -H 'Content-Type: text/plain' "
            f'--data "@{_shown_path(demo)}" {url}/command/'
        )
        lines.append(
            f"  curl {tls}-X GET -H 'Content-Type: text/plain' "
            f'--data "SELECT * FROM users;" {url}/query/'
        )
    lines.append(f"  graft status -c {_shown_path(cfg.path)}")
    lines.append("Ctrl-C stops all nodes.")
    click.echo("\n".join(lines), err=True)


def _shown_path(path: Path) -> str:
    """A path relative to the working directory when it is below it, for shorter lines."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@main.command()
@_config_option()
@click.option("--force", is_flag=True, help="Overwrite existing certificates and keys.")
@click.option(
    "--if-missing", is_flag=True, help="Do nothing (successfully) when they all exist already."
)
def certs(config_path: Path | None, force: bool, if_missing: bool) -> None:
    """Create the cluster CA and a certificate per node (at the config's tls paths)."""
    if force and if_missing:
        raise GraftCLIError("--force and --if-missing contradict each other: pass one of them")
    cfg = _load(config_path)
    from graft.certs import CertificateError, generate_certificates

    try:
        written = generate_certificates(cfg, force=force, if_missing=if_missing)
    except CertificateError as error:
        raise GraftCLIError(
            f"{_one_line(error)} (graft certs: --force overwrites, --if-missing keeps what exists)"
        ) from None
    if not written:
        click.echo(f"certificates for {', '.join(cfg.peers)} already exist; nothing written")
        return
    for path in written:
        click.echo(f"wrote {_shown_path(path)}")


# --- talking to a cluster -------------------------------------------------------------------------


def _read_input(value: str | None, file: Path | None, what: str) -> bytes:
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


def _print_output(body: bytes) -> None:
    """The FSM's answer for people: SQL results as a table, other JSON indented, else as is."""
    try:
        parsed = json.loads(body)
    except ValueError:
        click.echo(body.decode("utf-8", "replace").rstrip("\n"))
        return
    if (
        isinstance(parsed, dict)
        and isinstance(parsed.get("columns"), list)
        and isinstance(parsed.get("rows"), list)
        and parsed["columns"]
    ):
        rows = [[_cell(value) for value in row] for row in parsed["rows"]]
        click.echo(_table([str(c) for c in parsed["columns"]], rows))
        click.echo(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
        return
    click.echo(json.dumps(parsed, indent=2, ensure_ascii=False))


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in header]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(cells)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def _decoded(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")


def _raise_client_error(error: ClientError, doing: str) -> NoReturn:
    message = error.message
    if error.code == "fsm_error":
        where = f" at index {error.index}" if error.index is not None else ""
        message = (
            f"the state machine rejected the command (it was committed{where}; every node "
            f"refused it the same way): {message}; fix the command and send a new one"
        )
    elif error.code == "timeout" and doing == "command":
        message += " (the command may still be applied: check with a query before retrying)"
    raise GraftCLIError(message)


@main.command()
@click.argument("data", required=False)
@click.option(
    "-f",
    "--file",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    default=None,
    help="Read the command from FILE ('-' for stdin).",
)
@_client_options
def command(data: str | None, file: Path | None, as_json: bool, **options: Any) -> None:
    """Send a command (a write): DATA, -f FILE or stdin.

    For the default SQLite state machine a command is an SQL script, e.g.
    `graft command -f conf/demo.sql`. Any member may be asked: followers forward to the
    leader; while there is no leader the command is retried until --timeout.
    """
    body = _read_input(data, file, "command")
    client = _make_client(_settings(**options))
    try:
        response = client.command(body)
    except ClientError as error:
        _raise_client_error(error, "command")
    index = response.header_int("Graft-Index")
    term = response.header_int("Graft-Term")
    leader = response.header("Graft-Leader")
    if as_json:
        out = {"index": index, "term": term, "leader": leader, "output": _decoded(response.body)}
        click.echo(json.dumps(out))
        return
    _print_output(response.body)
    if index is not None:
        click.echo(f"applied at index {index} (term {term}, leader {leader})", err=True)


@main.command()
@click.argument("query_text", metavar="QUERY", required=False)
@click.option(
    "-f",
    "--file",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    default=None,
    help="Read the query from FILE ('-' for stdin).",
)
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
    help="Wait until the node has applied this index (read your own writes).",
)
@click.option(
    "--max-lag-ms",
    type=click.IntRange(min=0),
    default=None,
    help="With weak: refuse when the node is further behind the leader than this.",
)
@_client_options
def query(
    query_text: str | None,
    file: Path | None,
    consistency: str,
    min_index: int | None,
    max_lag_ms: int | None,
    as_json: bool,
    **options: Any,
) -> None:
    """Run a read-only QUERY (not logged).

    For example `graft query "SELECT * FROM users;" --consistency strong`.

    --json prints the state machine's raw JSON answer.
    """
    body = _read_input(query_text, file, "query")
    client = _make_client(_settings(**options))
    try:
        response = client.query(
            body, consistency=consistency, min_index=min_index, max_lag_ms=max_lag_ms
        )
    except ClientError as error:
        _raise_client_error(error, "query")
    if as_json:
        click.echo(response.body.decode("utf-8", "replace").rstrip("\n"))
        return
    _print_output(response.body)


STATUS_COLUMNS = (
    "node",
    "role",
    "term",
    "leader",
    "commit",
    "applied",
    "last index",
    "lag",
    "reachable",
)


def status_rows(members: Sequence[MemberStatus]) -> list[dict[str, Any]]:
    """One JSON-ready row per member. ``lag`` is the leader's view (its last index minus the
    member's match index) when the leader answered, else how far the member's applied index is
    behind the highest commit index seen."""
    leader_progress: Mapping[str, Any] = {}
    leader_id: str | None = None
    for member in members:
        if member.status and member.status.get("role") == "leader":
            leader_id = str(member.status.get("id", member.node))
            progress = member.status.get("progress")
            leader_progress = progress if isinstance(progress, Mapping) else {}
    commits = [m.status.get("commit") for m in members if m.status]
    top_commit = max((c for c in commits if isinstance(c, int)), default=None)
    rows: list[dict[str, Any]] = []
    for member in members:
        st = member.status
        if st is None:
            rows.append(
                {"node": member.node, "url": member.url, "reachable": False, "error": member.error}
            )
            continue
        node_id = str(st.get("id", member.node))
        lag: int | None = None
        if node_id == leader_id:
            lag = 0
        elif isinstance(leader_progress.get(node_id), Mapping):
            raw = leader_progress[node_id].get("lag")
            lag = raw if isinstance(raw, int) else None
        elif top_commit is not None and isinstance(st.get("applied"), int):
            lag = max(0, top_commit - st["applied"])
        rows.append(
            {
                "node": node_id,
                "url": member.url,
                "reachable": True,
                "role": st.get("role"),
                "term": st.get("term"),
                "leader": st.get("leader"),
                "commit": st.get("commit"),
                "applied": st.get("applied"),
                "last_index": st.get("last_index"),
                "lag": lag,
            }
        )
    return rows


def render_status_table(rows: Sequence[Mapping[str, Any]]) -> str:
    def shown(value: Any) -> str:
        return "-" if value is None else str(value)

    cells = []
    for row in rows:
        if not row["reachable"]:
            cells.append([row["node"], "unreachable", "-", "-", "-", "-", "-", "-", "no"])
            continue
        cells.append(
            [
                shown(row[key])
                for key in (
                    "node",
                    "role",
                    "term",
                    "leader",
                    "commit",
                    "applied",
                    "last_index",
                    "lag",
                )
            ]
            + ["yes"]
        )
    return _table(list(STATUS_COLUMNS), cells)


@main.command()
@_client_options
def status(as_json: bool, **options: Any) -> None:
    """Show each member's role, term, leader, indexes and lag."""
    client = _make_client(_settings(**options))
    rows = status_rows(client.status_all())
    if as_json:
        click.echo(json.dumps(rows))
    else:
        click.echo(render_status_table(rows))
        for row in rows:
            if not row["reachable"]:
                click.echo(f"  {row['error']}", err=True)
    if not any(row["reachable"] for row in rows):
        raise GraftCLIError(
            "no member answered: is the cluster running? (start it with `graft dev -c FILE` "
            "or check --url/-c)"
        )


# --- shell completion ---------------------------------------------------------------------------


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


# --- storage tools ------------------------------------------------------------------------------


@main.group()
def storage() -> None:
    """Inspect a node's data directory (stop the node first)."""


_DATA_DIR = click.Path(exists=True, file_okay=False, path_type=Path)


@storage.command("check")
@click.argument("data_dir", type=_DATA_DIR)
def storage_check(data_dir: Path) -> None:
    """Verify every record of DATA_DIR; exit 1 if anything is damaged."""
    from graft.storage import check_data_dir

    report = check_data_dir(data_dir)
    for line in report.lines:
        click.echo(line)
    if not report.ok:
        raise GraftCLIError(
            f"{data_dir} is damaged (see above): restore it from a snapshot or let the node "
            "catch up from a peer with an empty data dir"
        )


PREVIEW_CHARS = 60


def entry_preview(data: bytes) -> str:
    """A short one-line view of an entry's payload: text when it is text, else hex."""
    if not data:
        return ""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        shown = data[: PREVIEW_CHARS // 2].hex()
        more = "..." if len(data) > PREVIEW_CHARS // 2 else ""
        return f"0x{shown}{more} ({len(data)} bytes)"
    text = json.dumps(text, ensure_ascii=False)[1:-1]  # escapes newlines and controls
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 3] + "..."


def _iter_entries(data_dir: Path, first: int | None, last: int | None) -> Iterator[Any]:
    from graft.storage import dump_log

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
    import base64

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
