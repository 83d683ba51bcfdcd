"""A cluster of real `twist graft` processes on 127.0.0.1, for process tests and benchmarks.

It writes its own config and certificates into a directory it is given, holds ports for its
nodes (graft.testing.ports), starts and kills nodes, and talks to them over real HTTP.

- ``start()`` waits until every node it started listens on its ports (or has exited). A fresh
  node whose port someone else took anyway is given new ports and started again, with the rest
  of the fresh nodes started with it, so a collision never looks like a failed election.
- ``close()`` SIGKILLs every process it started, goes on past one that will not die, and
  releases the ports; it raises at the end if a process outlived it. Register it with
  ``addCleanup`` right after construction (``ProcessTestCase.make_cluster`` does).
- Waits are on conditions (a leader everyone agrees on, an applied index), never on durations.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from graft.config import DEFAULT_ELECTION_MS, DEFAULT_HEARTBEAT_MS
from graft.launcher import node_command
from graft.testing.ports import HOST, HeldPort, hold_ports

__all__ = ["HOST", "LocalCluster", "PortCollision", "Response", "free_ports", "parse_metric"]

# How many times a fresh start is retried with new ports after a node found its port taken.
PORT_RETRIES = 5
# What a node logs when its listening socket cannot bind.
_BIND_FAILED = re.compile(r"Address already in use|CannotListenError")


def free_ports(count: int) -> list[int]:
    """Ports the kernel reports free right now, released again: racy (another process may take
    one before it is used). For foreign processes that bind their own ports (benchmarks of other
    systems); graft nodes get held ports (graft.testing.ports)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class PortCollision(AssertionError):
    """A node could not bind a port, and starting it again on other ports was not possible."""


def parse_metric(text: str, name: str) -> float:
    """The value of ``name`` (or ``name_total``) in a Prometheus text page; raises KeyError when
    it is not there, so a misspelt name cannot read as 0."""
    match = re.search(rf"^{re.escape(name)}(?:_total)? (\S+)$", text, re.MULTILINE)
    if match is None:
        raise KeyError(f"{name} is not in the metrics page")
    return float(match.group(1))


def _listening_ports(pid: int) -> set[int] | None:
    """TCP ports the process listens on (from /proc), or None where /proc cannot tell."""
    try:
        inodes = set()
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        ports = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                lines = Path(table).read_text().splitlines()[1:]
            except FileNotFoundError:
                continue
            for line in lines:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        return ports
    except OSError:
        return None


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class LocalCluster:
    def __init__(
        self,
        base: Path,
        node_ids: Iterable[str] = ("n1", "n2", "n3"),
        *,
        fsm: str = "graft.fsm.kv:KeyValueStateMachine",
        election_ms: int = DEFAULT_ELECTION_MS,
        heartbeat_ms: int = DEFAULT_HEARTBEAT_MS,
        extra: Mapping[str, Any] | None = None,
        status_token: str | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        # The bearer token the harness's own /status polls use when the API requires one.
        self.status_token = status_token
        # With api.tls in the config: the TLS context requests use by default (the cluster CA,
        # and a client certificate when the API requires one); see client_tls_context().
        self.api_context: ssl.SSLContext | None = None
        self.start_timeout = start_timeout
        self.base = Path(base).resolve()
        self.base.mkdir(parents=True, exist_ok=True)
        self.node_ids = list(node_ids)
        self.peers: dict[str, dict[str, Any]] = {}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._held: dict[str, list[HeldPort]] = {}
        self._joining: set[str] = set()
        self._logs: dict[str, Any] = {}
        self._closed = False
        try:
            for node in self.node_ids:
                self._hold_ports(node)
            config: dict[str, Any] = {
                "cluster": "test",
                "timeouts": {"election": election_ms, "heartbeat": heartbeat_ms},
                "peers": self.peers,
                "data_dir": "data/{id}",
                "fsm": {"factory": fsm},
            }
            config.update(extra or {})
            self.config = config
            self.config_path = self.base / "cluster.yaml"
            self._write_config()
            self._make_certs()
        except BaseException:
            self._release_ports()
            raise

    def _hold_ports(self, node: str) -> None:
        """Hold two new ports for ``node``. Its ``ports`` mapping is updated in place, so a body
        ``add_node`` returned names the ports the node really has."""
        for held in self._held.pop(node, []):
            held.release()
        p2p, api = self._held[node] = hold_ports(2)
        entry = self.peers.setdefault(node, {"host": HOST, "ports": {}})
        entry["ports"].update({"p2p": p2p.port, "api": api.port})

    def _release_ports(self) -> None:
        for held in self._held.values():
            for port in held:
                port.release()

    def _write_config(self) -> None:
        self.config["peers"] = self.peers
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))

    def _make_certs(self) -> None:
        from graft.certs import generate_certificates
        from graft.config import load_config

        generate_certificates(load_config(self.config_path), if_missing=True)

    def add_node(self, node: str) -> dict[str, Any]:
        """Give a new node ports, a certificate from the same CA and a place in the config file
        (the running nodes never read it again); start it with ``start(node)``, which passes
        ``--join``. Returns the body for POST /cluster/members (post it after the start: a port
        collision at start changes the ports in it)."""
        self._hold_ports(node)
        self.node_ids.append(node)
        self._write_config()
        self._make_certs()
        self._joining.add(node)
        return {"id": node, "host": HOST, "ports": self.peers[node]["ports"]}

    def api_url(self, node: str) -> str:
        scheme = "https" if (self.config.get("api") or {}).get("tls") else "http"
        return f"{scheme}://{HOST}:{self.peers[node]['ports']['api']}"

    def client_tls_context(self, cert_of: str | None = None) -> ssl.SSLContext:
        """A context trusting the cluster CA (which signed the nodes' certificates), presenting
        node ``cert_of``'s certificate as a client certificate when given."""
        certs = self.base / "certs"
        context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        if cert_of is not None:
            context.load_cert_chain(certs / f"{cert_of}.pem", certs / f"{cert_of}.key")
        return context

    def ports(self, node: str) -> tuple[int, int]:
        """(p2p, api) of ``node``."""
        ports = self.peers[node]["ports"]
        return ports["p2p"], ports["api"]

    def data_dir(self, node: str) -> Path:
        return self.base / "data" / node

    def log_path(self, node: str) -> Path:
        return self.base / f"{node}.log"

    # -- processes -------------------------------------------------------------------------

    def node_argv(self, node: str) -> list[str]:
        """The command line that runs ``node`` (the one place it is built)."""
        return node_command(self.config_path, node, join=node in self._joining)

    def start(self, *nodes: str, wait: bool = True) -> None:
        """Start ``nodes`` (default: all) that are not running. With ``wait``, return once each
        listens on both its ports or has exited; a fresh node that could not bind is given new
        ports and started again with the other fresh nodes of this call."""
        if self._closed:
            raise RuntimeError("start() after close()")
        targets = [
            n
            for n in (nodes or tuple(self.node_ids))
            if not (n in self.processes and self.processes[n].poll() is None)
        ]
        for _attempt in range(PORT_RETRIES):
            fresh = {n for n in targets if not self.data_dir(n).exists()}
            offsets = {n: self._spawn(n) for n in targets}
            if not wait:
                return
            collided = self._wait_bound(targets, offsets)
            if not collided:
                return
            self._move_ports(collided, targets, fresh)
        raise PortCollision(f"{targets}: ports taken on {PORT_RETRIES} starts in a row")

    def _spawn(self, node: str) -> int:
        """Start ``node``'s process; returns the size its log had, where this run's lines begin."""
        path = self.log_path(node)
        offset = path.stat().st_size if path.exists() else 0
        if node in self._logs:
            self._logs[node].close()
        logfile = open(path, "ab")  # noqa: SIM115 (closed in close())
        self._logs[node] = logfile
        self.processes[node] = subprocess.Popen(
            self.node_argv(node), stdout=logfile, stderr=subprocess.STDOUT, cwd=self.base
        )
        return offset

    def _wait_bound(self, nodes: list[str], offsets: Mapping[str, int]) -> list[str]:
        """Wait until each node listens on its two ports or has exited: the nodes that exited
        because a port was taken."""
        deadline = time.monotonic() + self.start_timeout
        pending = set(nodes)
        collided: list[str] = []
        while pending:
            for node in sorted(pending):
                proc = self.processes[node]
                if proc.poll() is not None:
                    pending.discard(node)
                    if _BIND_FAILED.search(self.logs(node)[offsets[node] :]):
                        collided.append(node)
                    continue
                listening = _listening_ports(proc.pid)
                if listening is None or set(self.ports(node)) <= listening:
                    pending.discard(node)
            if pending and time.monotonic() > deadline:
                raise AssertionError(
                    f"{sorted(pending)} did not listen within {self.start_timeout:g} s\n"
                    + self.log_tails(nodes=sorted(pending))
                )
            if pending:
                time.sleep(0.02)
        return collided

    def _move_ports(self, collided: list[str], started: list[str], fresh: set[str]) -> None:
        """New ports for ``collided``, and a clean slate for the fresh nodes started with them.
        Only possible where no running node can have learned the old ports: every node of the
        start was fresh, and no node outside it runs unless the collided ones are joining (the
        members then learn the address from the POST /cluster/members body)."""
        others = [n for n in self.alive() if n not in started]
        if not set(started) <= fresh or (others and not set(collided) <= self._joining):
            ports = {n: self.ports(n) for n in collided}
            raise PortCollision(
                f"{collided} could not bind {ports} and cannot move: running nodes know the "
                f"ports\n{self.log_tails(nodes=collided)}"
            )
        for node in started:
            proc = self.processes[node]
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
            shutil.rmtree(self.data_dir(node), ignore_errors=True)
        for node in collided:
            self._hold_ports(node)
        self._write_config()

    def alive(self) -> list[str]:
        # A snapshot first: load threads call this while the test thread starts nodes, and
        # poll() lets another thread run mid-iteration.
        return [n for n, p in tuple(self.processes.items()) if p.poll() is None]

    def kill(self, node: str) -> None:
        self.signal(node, signal.SIGKILL)
        self.processes[node].wait(10)

    def stop(self, node: str, timeout: float = 15) -> int:
        """SIGTERM and wait: the node's exit code."""
        self.signal(node, signal.SIGTERM)
        return self.processes[node].wait(timeout)

    def signal(self, node: str, sig: int) -> None:
        proc = self.processes[node]
        if proc.poll() is None:
            os.kill(proc.pid, sig)

    def close(self) -> None:
        """SIGKILL every process, wait for each (going on past any that times out), close the
        logs and release the ports; then raise if a process did not exit."""
        self._closed = True
        stuck: list[str] = []
        for proc in self.processes.values():
            if proc.poll() is None:
                with contextlib.suppress(OSError):  # gone in the meantime
                    proc.kill()
        for node, proc in self.processes.items():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                stuck.append(f"{node} (pid {proc.pid})")
        for logfile in self._logs.values():
            logfile.close()
        self._release_ports()
        if stuck:
            raise AssertionError(f"still running after SIGKILL: {', '.join(stuck)}")

    def logs(self, node: str) -> str:
        try:
            return self.log_path(node).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tails(self, chars: int = 6000, nodes: Iterable[str] | None = None) -> str:
        """The end of each node's log, headed by its name: what a failing test shows."""
        parts = []
        for node in nodes if nodes is not None else self.node_ids:
            text = self.logs(node)
            cut = "[...]\n" if len(text) > chars else ""
            parts.append(f"----- {node} log ({self.log_path(node)}) -----\n{cut}{text[-chars:]}")
        return "\n".join(parts)

    # -- HTTP ------------------------------------------------------------------------------

    def request(
        self,
        node: str,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10,
        context: ssl.SSLContext | None = None,
    ) -> Response:
        """One HTTP request; over https with ``context`` (default: ``api_context``)."""
        req = urllib.request.Request(
            self.api_url(node) + path, data=body, method=method, headers=dict(headers or {})
        )
        handlers: list[Any] = [_NoRedirect]
        if context is not None or self.api_context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=context or self.api_context))
        opener = urllib.request.build_opener(*handlers)
        try:
            with opener.open(req, timeout=timeout) as resp:
                return Response(resp.status, dict(resp.headers), resp.read())
        except urllib.error.HTTPError as e:
            return Response(e.code, dict(e.headers), e.read())

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.status_token}"} if self.status_token else {}

    def status(self, node: str, timeout: float = 2) -> dict[str, Any] | None:
        """The node's /status, or None when it does not answer (down, busy, mid-answer)."""
        try:
            resp = self.request(node, "GET", "/status", headers=self._auth(), timeout=timeout)
            return resp.json() if resp.status == 200 else None
        except (OSError, ValueError, http.client.HTTPException):
            return None

    def metric(self, node: str, name: str) -> float:
        """One value from the node's /metrics; KeyError when the page does not have it."""
        resp = self.request(node, "GET", "/metrics", headers=self._auth(), timeout=10)
        if resp.status != 200:
            raise AssertionError(f"{node} /metrics: {resp.status} {resp.body[:200]!r}")
        return parse_metric(resp.body.decode(), name)

    def query(
        self, node: str, body: bytes, consistency: str = "strong", timeout: float = 30
    ) -> Response:
        """POST /query, asked again while the answer is 503 or 504 or the connection fails
        (the node between leaders, or busy): the first other answer, or the last one at the
        deadline. So a check of the state tells a missing value from a node that was busy."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                resp = self.request(node, "POST", f"/query?consistency={consistency}", body)
                if resp.status not in (503, 504) or time.monotonic() > deadline:
                    return resp
            except (OSError, http.client.HTTPException):
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.1)

    def wait_until_serving(self, node: str, timeout: float = 15) -> None:
        """Poll until the node's API answers (a started process takes a moment to bind)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.request(node, "GET", "/health", timeout=1).status == 200:
                    return
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.05)
        raise AssertionError(
            f"{node} did not start serving within {timeout}s:\n{self.logs(node)[-2000:]}"
        )

    def wait_for_leader(
        self, timeout: float = 10, among: Iterable[str] | None = None, exclude_term: int = -1
    ) -> tuple[str, int]:
        """Poll until exactly one live node says it leads and the others agree: (leader, term)."""
        nodes = list(among) if among is not None else self.alive()
        deadline = time.monotonic() + timeout
        seen: dict[str, Any] = {}
        while time.monotonic() < deadline:
            seen = {n: self.status(n) for n in nodes}
            leaders = [n for n, s in seen.items() if s and s["role"] == "leader"]
            if len(leaders) == 1:
                leader = leaders[0]
                term = seen[leader]["term"]
                agree = all(s and s["leader"] == leader for s in seen.values())
                if agree and term != exclude_term:
                    return leader, term
            time.sleep(0.02)
        raise AssertionError(f"no single agreed leader within {timeout}s; statuses: {seen}")

    def wait_applied(
        self, index: int, nodes: Iterable[str] | None = None, timeout: float = 30
    ) -> dict[str, dict[str, Any]]:
        """Poll until every node in ``nodes`` (default: the live ones) has applied ``index``;
        returns their statuses. The one "let the followers catch up" of the process tests."""
        names = list(nodes) if nodes is not None else self.alive()
        deadline = time.monotonic() + timeout
        seen: dict[str, Any] = {}
        while True:
            seen = {n: self.status(n) for n in names}
            if all(s is not None and s["applied"] >= index for s in seen.values()):
                return seen
            if time.monotonic() > deadline:
                applied = {n: s and s["applied"] for n, s in seen.items()}
                raise AssertionError(f"not all applied {index} within {timeout:g} s: {applied}")
            time.sleep(0.02)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None
