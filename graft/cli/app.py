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
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, cast

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
        ("graft.ops", "OperationError"),
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


def _client_options_with(
    timeout: float = 10.0, timeout_help: str = "Seconds for the whole operation, retries included."
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """-c/--url/--timeout/--token/--cacert/--cert/--key/--json, shared by the client commands;
    ``timeout`` is the command's default --timeout."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        return _add_client_options(func, timeout, timeout_help)

    return decorate


def _client_options(func: Callable[..., Any]) -> Callable[..., Any]:
    return _add_client_options(func, 10.0, "Seconds for the whole operation, retries included.")


def _add_client_options(
    func: Callable[..., Any], timeout: float, timeout_help: str
) -> Callable[..., Any]:
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
            default=timeout,
            show_default=True,
            help=timeout_help,
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
@click.option(
    "--join",
    "join_url",
    metavar="URL",
    default=None,
    help="Before starting, ask the cluster at URL (any member's API) to add this node.",
)
@click.option(
    "--token",
    envvar="GRAFT_TOKEN",
    default=None,
    help="With --join: an admin token when the API requires one (env GRAFT_TOKEN).",
)
@click.option(
    "--cacert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="With --join to an https:// URL: the API's CA (default: the cluster CA).",
)
@click.option(
    "--join-timeout",
    type=click.FloatRange(min=1.0),
    default=600.0,
    show_default=True,
    help="With --join: how long to wait for the promotion to voter before reporting failure.",
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
) -> None:
    """Start a cluster node: NODE of the config, logging to stdout.

    The same as `twist graft --config FILE --node NODE`. NODE may be omitted when the file
    names it with `node:`.

    \b
    Adding a node to a running cluster (--join):
      1. Give the new node its own config file: the cluster's `cluster:` name and `tls:` (and
         `api:`) settings, and at least its own entry under `peers:` (host, ports p2p/api).
         The other members need not be listed: the node learns the membership from the log.
      2. Copy the cluster CA (ca.pem and ca.key) to its tls paths and run
         `graft certs -c new.yaml --if-missing`: the existing CA signs the new certificate,
         so the other members accept it.
      3. graft start NEW -c new.yaml --join http://LEADER-OR-ANY-MEMBER:PORT
         This first asks the cluster to add NEW (POST /cluster/members with its id, host and
         ports from new.yaml). A refusal (already a member, a change in progress, bad token,
         nobody answering) stops here, before the node starts. Otherwise the node starts and
         joins as a learner; the leader promotes it to voter once it has caught up, and the
         outcome is printed when the cluster reports it.
      4. Later restarts: `graft start NEW -c new.yaml`, without --join.
    """
    cfg = _load(config_path, node)
    node_id = node or cfg.node
    if node_id is None:
        raise GraftCLIError(
            f"which node? pass it: graft start NODE -c {cfg.path} (one of: {', '.join(cfg.peers)})"
        )
    cfg.peer(node_id)  # ConfigError listing the peers if unknown
    cfg.check_files(node_id)
    join: JoinRequest | None = None
    if join_url is not None:
        join = _join_cluster(
            cfg, node_id, join_url, token=token, cacert=cacert, timeout=join_timeout
        )
    warn_open_api(cfg, [node_id])
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
            # A joining node starts with no membership and waits for the leader's log, rather
            # than electing itself leader of the peers its own file lists.
            *(["--join"] if join is not None else []),
        ]
    )
    if join is not None:
        join.forget()  # the node has stopped: a late answer about joining is moot


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
    warn_open_api(cfg, list(cfg.peers))
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
    statuses = client.status_all()
    rows = status_rows(statuses)
    last_check = newest_check(statuses)
    if as_json:
        click.echo(json.dumps(rows))
    else:
        click.echo(render_status_table(rows))
        for row in rows:
            if not row["reachable"]:
                click.echo(f"  {row['error']}", err=True)
        if last_check is not None:
            click.echo(check_summary(last_check))
    if not any(row["reachable"] for row in rows):
        raise GraftCLIError(
            "no member answered: is the cluster running? (start it with `graft dev -c FILE` "
            "or check --url/-c)"
        )


# --- the replica consistency check -------------------------------------------------------------

# `graft check` exit codes beyond 0 (all members gave the same digest) and 1 (an error, or a
# member gave no digest: unreachable, behind, restarted).
CHECK_MISMATCH_EXIT = 3


def newest_check(members: Sequence[MemberStatus]) -> dict[str, Any] | None:
    """The result of the most recent consistency check any member reports in its status."""
    checks = [
        m.status["last_check"]
        for m in members
        if m.status and isinstance(m.status.get("last_check"), dict)
    ]
    return max(checks, key=lambda c: int(c.get("index", 0)), default=None)


def check_summary(result: Mapping[str, Any]) -> str:
    """One line: the check's index and verdict."""
    members = result.get("members") or {}
    given = sum(1 for m in members.values() if m.get("digest"))
    head = f"last replica check at index {result.get('index')}: "
    if result.get("mismatch"):
        return head + (
            f"MISMATCH, the FSM state of {', '.join(result['mismatch'])} differs from the "
            "others (the replicas diverged)"
        )
    if not result.get("ok"):
        return head + "no member gave a digest"
    verdict = f"{given} of {len(members)} members agree"
    return head + ("ok, " if result.get("complete") else "incomplete, ") + verdict


def check_rows(result: Mapping[str, Any]) -> list[list[str]]:
    odd = set(result.get("mismatch") or [])
    rows = []
    for node, answer in sorted((result.get("members") or {}).items()):
        digest = answer.get("digest")
        if digest is None:
            rows.append([node, "-", f"no digest: {answer.get('error')}"])
        else:
            rows.append([node, str(digest)[:16], "DIFFERS" if node in odd else "ok"])
    return rows


@main.command()
@_client_options_with(timeout=180.0)
def check(as_json: bool, **options: Any) -> None:
    """Check that every replica holds the same state: each member digests its state machine at
    one log index and the digests are compared. Exits 0 when all agree, 1 when a member gave no
    digest (unreachable, behind), 3 when the digests differ."""
    client = _make_client(_settings(**options))
    result = client.check_replicas()
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(_table(["node", "digest", "status"], check_rows(result)))
        click.echo(check_summary(result).replace("last replica check", "replica check", 1))
    if result.get("mismatch"):
        raise SystemExit(CHECK_MISMATCH_EXIT)
    if not result.get("ok") or not result.get("complete"):
        raise GraftCLIError(
            "not every member gave a digest; see the table, then run `graft check` again"
        )


# --- cluster administration ---------------------------------------------------------------------

# How long `graft start --join` waits for the cluster to refuse the new member before starting
# the node anyway: the leader answers only after the node has caught up, which it cannot do
# before it runs, so a pending answer after this long means "accepted, now catch up".
JOIN_REFUSAL_WINDOW_S = 3.0


class JoinRequest:
    """The POST /cluster/members of `graft start --join`, answered in a thread: the leader
    answers only once the new node has caught up, which needs the node running."""

    def __init__(self, client: GraftClient, node_id: str, peer: Any, url: str) -> None:
        self._client = client
        self._node_id = node_id
        self._peer = peer
        self._url = url
        self._lock = threading.Lock()
        self._answered = threading.Event()
        self._outcome: dict[str, Any] | ClientError | None = None
        self._report_later = False

    def send(self) -> None:
        threading.Thread(target=self._ask, name="join", daemon=True).start()

    def _ask(self) -> None:
        try:
            outcome: dict[str, Any] | ClientError = self._client.add_member(
                self._node_id, self._peer.host, self._peer.p2p_port, self._peer.api_port
            )
        except ClientError as error:
            outcome = error
        with self._lock:
            self._outcome = outcome
            self._answered.set()
            report = self._report_later
        if report:
            _report_join(self._node_id, self._url, outcome)

    def early_outcome(self, seconds: float) -> dict[str, Any] | ClientError | None:
        """The answer if it comes within ``seconds``; else None, and it is printed when it
        comes (until forget())."""
        self._answered.wait(seconds)
        with self._lock:
            if self._outcome is None:
                self._report_later = True
            return self._outcome

    def forget(self) -> None:
        with self._lock:
            self._report_later = False


def _join_cluster(
    cfg: ClusterConfig,
    node_id: str,
    url: str,
    *,
    token: str | None,
    cacert: Path | None,
    timeout: float,
) -> JoinRequest:
    """Ask the cluster at ``url`` to add ``node_id``; raise if it refuses within the window, else
    return the request (its answer is printed when it comes)."""
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise GraftCLIError(
            f"--join {url}: expected a member's API base URL such as http://127.0.0.1:8080"
        )
    peer = cfg.peer(node_id)
    context = None
    if url.startswith("https://"):
        import ssl

        cluster_ca = cfg.tls_for(node_id).ca
        ca = cacert or (cluster_ca if cluster_ca.is_file() else None)
        context = ssl.create_default_context(cafile=str(ca) if ca else None)
    client = GraftClient(
        urls=[url], timeout=timeout, token=token, ssl_context=context, retry_unreachable=False
    )
    click.echo(
        f"asking {url} to add {node_id} ({peer.host}, p2p port {peer.p2p_port}, api port "
        f"{peer.api_port}) as a learner...",
        err=True,
    )
    request = JoinRequest(client, node_id, peer, url)
    request.send()
    outcome = request.early_outcome(JOIN_REFUSAL_WINDOW_S)
    if isinstance(outcome, ClientError):
        raise GraftCLIError(
            f"joining through {url} failed, so {node_id} was not started: {outcome.message}"
        )
    if outcome is not None:
        _report_join(node_id, url, outcome)
        return request
    click.echo(
        f"no refusal from {url}: starting {node_id} to catch up as a learner; it is promoted "
        "to voter once it has (this is printed; `graft members list` shows it too)",
        err=True,
    )
    return request


def _report_join(node_id: str, url: str, result: dict[str, Any] | ClientError) -> None:
    if isinstance(result, ClientError):
        click.echo(
            f"graft: warning: joining through {url} failed: {result.message} ({node_id} may "
            "still be a learner: check `graft members list`)",
            err=True,
        )
    else:
        click.echo(f"{node_id} joined: {_membership_line(result)}", err=True)


def _membership_line(document: Mapping[str, Any]) -> str:
    def names(key: str) -> str:
        value = document.get(key)
        return ", ".join(map(str, value)) if isinstance(value, list) and value else "none"

    return (
        f"voters {names('voters')}; learners {names('learners')}; "
        f"leader {document.get('leader') or 'unknown'}"
    )


def member_rows(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per member (voters, then learners) with its role and addresses."""
    leader = document.get("leader")
    addresses = document.get("addresses")
    addresses = addresses if isinstance(addresses, Mapping) else {}
    rows = []
    for key, role in (("voters", "voter"), ("learners", "learner")):
        ids = document.get(key)
        for member in ids if isinstance(ids, list) else []:
            address = addresses.get(member)
            address = address if isinstance(address, Mapping) else {}
            rows.append(
                {
                    "id": member,
                    "role": "leader" if member == leader else role,
                    "host": address.get("host"),
                    "p2p": address.get("p2p"),
                    "api": address.get("api"),
                }
            )
    return rows


def _print_members(document: Mapping[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(document))
        return
    rows = [
        ["-" if row[key] is None else str(row[key]) for key in ("id", "role", "host", "p2p", "api")]
        for row in member_rows(document)
    ]
    click.echo(_table(["id", "role", "host", "p2p", "api"], rows))


@main.group()
def members() -> None:
    """List, add and remove cluster members (any member may be asked)."""


@members.command("list")
@_client_options
def members_list(as_json: bool, **options: Any) -> None:
    """Show the members, their role (leader, voter, learner) and addresses."""
    client = _make_client(_settings(**options))
    _print_members(client.members(), as_json)


@members.command("add")
@click.argument("node_id", metavar="ID")
@click.option("--host", required=True, help="The new node's host name or IP address.")
@click.option(
    "--p2p", "p2p_port", type=click.IntRange(1, 65535), required=True, help="Its peer port."
)
@click.option(
    "--api", "api_port", type=click.IntRange(1, 65535), required=True, help="Its API port."
)
@_client_options_with(
    timeout=180.0,
    timeout_help="Seconds to wait for the node to catch up and be promoted (a node gives up "
    "after 150 s at most; the change may still complete).",
)
def members_add(
    node_id: str, host: str, p2p_port: int, api_port: int, as_json: bool, **options: Any
) -> None:
    """Add node ID: it joins as a learner, catches up, then becomes a voter.

    Start the new node (with its own config) so it can catch up: `graft start ID -c
    its.yaml --join URL` does both steps; this command only asks the cluster.
    """
    client = _make_client(_settings(**options))
    click.echo(
        f"adding {node_id} as a learner; it is promoted to voter once caught up...", err=True
    )
    document = client.add_member(node_id, host, p2p_port, api_port)
    learners = document.get("learners")
    state = "still a learner" if isinstance(learners, list) and node_id in learners else "a voter"
    click.echo(f"{node_id} caught up and is {state}: {_membership_line(document)}", err=True)
    _print_members(document, as_json)


@members.command("remove")
@click.argument("node_id", metavar="ID")
@_client_options_with(timeout=180.0)
def members_remove(node_id: str, as_json: bool, **options: Any) -> None:
    """Remove member ID (a leader that is removed hands over first). Stop its process after."""
    client = _make_client(_settings(**options))
    document = client.remove_member(node_id)
    click.echo(f"removed {node_id}: {_membership_line(document)}", err=True)
    _print_members(document, as_json)


@main.group()
def leader() -> None:
    """Move leadership between voters (e.g. before maintenance on the leader's machine)."""


@leader.command("transfer")
@click.argument("node_id", metavar="[ID]", required=False)
@_client_options_with(timeout=30.0)
def leader_transfer(node_id: str | None, as_json: bool, **options: Any) -> None:
    """Hand leadership to voter ID, or to the most caught-up voter when ID is omitted."""
    client = _make_client(_settings(**options))
    document = client.transfer_leadership(node_id)
    if as_json:
        click.echo(json.dumps(document))
    else:
        click.echo(f"leader is now {document.get('leader')} (term {document.get('term')})")


@main.group()
def snapshot() -> None:
    """Take snapshots and download them for backup."""


@snapshot.command("take")
@_client_options_with(timeout=180.0)
def snapshot_take(as_json: bool, **options: Any) -> None:
    """Snapshot the state machine now and compact the log (on the member asked)."""
    client = _make_client(_settings(**options))
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
    help="Download from this member of the config (default: the first that answers).",
)
@_client_options_with(
    timeout=30.0, timeout_help="Seconds to wait for each piece of data (not the whole download)."
)
def snapshot_save(file: Path, node_id: str | None, as_json: bool, **options: Any) -> None:
    """Download the latest snapshot to FILE, for backup (atomically: FILE is complete or
    untouched). `graft restore FILE` seeds a node from it."""
    settings = _settings(**options)
    client = _make_client(settings)
    url = _node_url(settings, node_id) if node_id is not None else None
    saved = client.save_snapshot(file, url=url)
    if as_json:
        document = {
            "node": saved.node,
            "file": str(saved.path),
            "index": saved.index,
            "term": saved.term,
            "fsm": saved.fsm,
            "size": saved.size,
        }
        click.echo(json.dumps(document))
        return
    click.echo(
        f"saved the snapshot of {saved.node} at index {saved.index} (term {saved.term}) to "
        f"{_shown_path(saved.path)}: {saved.size} bytes"
    )


def _node_url(settings: ClientSettings, node_id: str) -> str:
    """The API URL of one node: from the config's peers, or the single --url."""
    if settings.urls:
        if len(settings.urls) != 1:
            raise GraftCLIError(
                f"{len(settings.urls)} --url given: give exactly one, the API of {node_id}"
            )
        return settings.urls[0].rstrip("/")
    return _load(settings.config_path).api_url(node_id)


@main.command()
@click.argument("node_id", metavar="NODE")
@_client_options_with(timeout=60.0, timeout_help="Seconds to wait for the node to stop answering.")
def shutdown(node_id: str, as_json: bool, **options: Any) -> None:
    """Stop NODE gracefully (a leader hands over first) and wait until it has stopped.

    NODE is looked up in the config's peers; with --url, that URL is NODE's API.
    """
    settings = _settings(**options)
    client = _make_client(settings)
    url = _node_url(settings, node_id)
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


def _ops_function(name: str, doing: str) -> Callable[..., Any]:
    """graft.ops.<name>, imported only when needed; a one-line error if it is not there."""
    import importlib

    try:
        module = importlib.import_module("graft.ops")
    except ImportError as error:
        raise GraftCLIError(
            f"cannot {doing}: graft.ops does not import ({_one_line(error)}); this installation "
            "lacks the offline data-dir tools"
        ) from None
    function = getattr(module, name, None)
    if not callable(function):
        raise GraftCLIError(
            f"cannot {doing}: graft.ops has no {name}(); this installation lacks it"
        )
    return cast(Callable[..., Any], function)


def _stopped_node(config_path: Path | None, node: str | None) -> tuple[ClusterConfig, str]:
    cfg = _load(config_path, node)
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


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_config_option()
@click.option("--node", "node", default=None, help="The node whose data dir is written.")
def restore(file: Path, config_path: Path | None, node: str | None) -> None:
    """Seed a STOPPED node's data dir from snapshot FILE (from `graft snapshot save`).

    To rebuild a cluster from a backup: restore the same FILE on every node of the new
    cluster's config, then start them.
    """
    cfg, node_id = _stopped_node(config_path, node)
    restore_data_dir = _ops_function("restore_data_dir", "restore")
    result = restore_data_dir(cfg, node_id, file)
    click.echo(f"restored {node_id}'s data dir {_shown_path(cfg.data_dir(node_id))} from {file}")
    _print_ops_result(result)


_MEMBER_ID = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def _member_list(value: str) -> list[str]:
    ids = [part.strip() for part in value.split(",")]
    if not value.strip() or any(not part for part in ids):
        raise GraftCLIError(f"--members {value!r}: expected node ids separated by commas, e.g. a,b")
    for part in ids:
        if not _MEMBER_ID.match(part):
            raise GraftCLIError(f"--members: {part!r} is not a node id (lowercase a-z, 0-9, '-')")
    if len(set(ids)) != len(ids):
        raise GraftCLIError(f"--members {value!r} names a node twice: list each once")
    return ids


@main.command()
@click.option(
    "--members",
    "members_text",
    required=True,
    metavar="A,B,...",
    help="The voters the node is to believe in (the survivors).",
)
@_config_option()
@click.option("--node", "node", default=None, help="The STOPPED node whose data dir is rewritten.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def recover(members_text: str, config_path: Path | None, node: str | None, yes: bool) -> None:
    """UNSAFE: rewrite a STOPPED node's membership after a quorum was lost for good.

    Use it only when a majority of the voters is gone and will not come back: run it on each
    survivor with the same --members, then start them. Entries that were committed only on
    the lost nodes are lost, and if a lost node comes back it can cause two leaders; wipe it.
    """
    member_ids = _member_list(members_text)
    cfg, node_id = _stopped_node(config_path, node)
    recover_membership = _ops_function("recover_membership", "recover")
    click.secho(
        "WARNING: graft recover is UNSAFE. It forces the membership of "
        f"{node_id}'s data dir to {', '.join(member_ids)}.\n"
        "  - Writes committed only on the lost members are lost.\n"
        "  - A lost member that comes back must be wiped, or two leaders may be elected.\n"
        f"  - {node_id} must be stopped, and every survivor must get the same --members.",
        fg="red",
        bold=True,
        err=True,
    )
    if not yes:
        try:
            confirmed = click.confirm("Rewrite the membership?", default=False, err=True)
        except click.exceptions.Abort:
            confirmed = False
        if not confirmed:
            raise GraftCLIError(
                "not confirmed: nothing was changed (pass --yes to skip the question)"
            )
    result = recover_membership(cfg, node_id, member_ids)
    click.echo(
        f"rewrote {node_id}'s membership to {', '.join(member_ids)}: start the survivors now"
    )
    _print_ops_result(result)


@main.command("skip-entry")
@click.argument("index", type=click.IntRange(min=1))
@_config_option()
@click.option("--node", "node", default=None, help="The STOPPED node whose data dir is marked.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def skip_entry(index: int, config_path: Path | None, node: str | None, yes: bool) -> None:
    """UNSAFE: mark the command at INDEX rejected on a STOPPED node (a poison entry).

    For a committed command that makes the FSM raise every time the node replays it (an FSM
    bug): the node then treats it as a command the FSM refused, and applies the entries after
    it. Run it with the same INDEX on every node that stops at that entry, or the replicas
    diverge. Fixing the FSM is better when it can be done.
    """
    cfg, node_id = _stopped_node(config_path, node)
    reject_entry = _ops_function("reject_entry", "skip an entry")
    click.secho(
        f"WARNING: graft skip-entry is UNSAFE. It makes {node_id} skip the command at index "
        f"{index} instead of applying it.\n"
        "  - Every replica must skip the same entry: run it on every node that stops at "
        f"index {index}, or their states diverge.\n"
        "  - Whatever the command would have changed is not changed.\n"
        f"  - {node_id} must be stopped.",
        fg="red",
        bold=True,
        err=True,
    )
    if not yes:
        try:
            confirmed = click.confirm(f"Skip entry {index}?", default=False, err=True)
        except click.exceptions.Abort:
            confirmed = False
        if not confirmed:
            raise GraftCLIError(
                "not confirmed: nothing was changed (pass --yes to skip the question)"
            )
    result = reject_entry(cfg, node_id, index)
    click.echo(f"marked entry {index} rejected on {node_id}: start it now")
    _print_ops_result(result)


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
