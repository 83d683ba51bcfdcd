"""``graft dev``: every node of a config as child processes of this one, their output
interleaved with a coloured prefix, all stopped together."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from graft.cli.connect import ClientSettings, make_client
from graft.cli.node import warn_open_api
from graft.cli.options import cluster_config, config_option
from graft.cli.render import shown_path, status_rows
from graft.client import GraftClient
from graft.cluster_status import status_all
from graft.launcher import node_command

if TYPE_CHECKING:
    from graft.config import ClusterConfig

# How long children get to stop after SIGTERM before SIGKILL.
STOP_GRACE_S = 5.0


@click.command()
@config_option()
def dev(config_path: Path | None) -> None:
    """Run every node of the config here, for trying Graft out.

    Each node is a `twist graft` child process; its output lines are prefixed with its id.
    Ctrl-C stops them all; they also stop if this command dies.
    """
    cfg = cluster_config(config_path)
    for node_id in cfg.peers:
        cfg.check_files(node_id)  # a missing certificate names `graft certs -c FILE`
    cluster = DevCluster(cfg)
    try:
        cluster.start()
        _print_dev_banner(cfg)
        warn_open_api(cfg, list(cfg.peers))
        settings = ClientSettings(
            config_path=cfg.path, timeout=1.0, token=os.environ.get("GRAFT_TOKEN")
        )
        threading.Thread(
            target=cluster.announce_leader,
            args=(make_client(settings),),
            name="leader-watch",
            daemon=True,
        ).start()
        code = cluster.wait()
    finally:
        cluster.stop()  # also when something above failed: never leave the nodes running
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
        """`twist graft` for one node, tied to this process: if `graft dev` dies, even by
        SIGKILL, the kernel stops its nodes (graft.launcher)."""
        return node_command(self._cfg.path, node_id, die_with_parent=True)

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
            rows = status_rows(status_all(client))
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
            f"data {shown_path(cfg.data_dir(node_id))})"
        )
    lines.append("Try:")
    url = cfg.api_url(first)
    tls = f"--cacert {shown_path(cfg.tls_for(first).ca)} " if url.startswith("https") else ""
    demo = cfg.base_dir / "demo.sql"
    if cfg.fsm.factory.startswith("graft.fsm.sqlite:") and demo.is_file():
        lines.append(
            f"  curl {tls}-X POST -H 'Content-Type: text/plain' "
            f'--data "@{shown_path(demo)}" {url}/command/'
        )
        lines.append(
            f"  curl {tls}-X GET -H 'Content-Type: text/plain' "
            f'--data "SELECT * FROM users;" {url}/query/'
        )
    lines.append(f"  graft status -c {shown_path(cfg.path)}")
    lines.append("Ctrl-C stops all nodes.")
    click.echo("\n".join(lines), err=True)
