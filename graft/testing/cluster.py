"""A cluster of real `twist graft` processes on 127.0.0.1, for process tests and benchmarks.

It writes its own config and certificates into a directory it is given, picks free ports,
starts and kills nodes, and talks to them over real HTTP. ``close()`` kills everything it
started; use it in ``addCleanup`` so a failing test leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import signal
import socket
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

HOST = "127.0.0.1"


def free_ports(count: int) -> list[int]:
    """Ports the kernel reports free right now (bound together so they are distinct)."""
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
    ) -> None:
        # The bearer token the harness's own /status polls use when the API requires one.
        self.status_token = status_token
        self.base = Path(base).resolve()
        self.base.mkdir(parents=True, exist_ok=True)
        self.node_ids = list(node_ids)
        ports = free_ports(2 * len(self.node_ids))
        self.peers: dict[str, dict[str, Any]] = {
            node: {"host": HOST, "ports": {"p2p": ports[2 * i], "api": ports[2 * i + 1]}}
            for i, node in enumerate(self.node_ids)
        }
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
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._joining: set[str] = set()
        self._logs: dict[str, Any] = {}
        self._make_certs()

    def _make_certs(self) -> None:
        from graft.certs import generate_certificates
        from graft.config import load_config

        generate_certificates(load_config(self.config_path), if_missing=True)

    def add_node(self, node: str) -> dict[str, Any]:
        """Give a new node ports, a certificate from the same CA and a place in the config file
        (the running nodes never read it again); start it with ``start(node)``, which passes
        ``--join``. Returns the body for POST /cluster/members."""
        p2p, api = free_ports(2)
        self.peers[node] = {"host": HOST, "ports": {"p2p": p2p, "api": api}}
        self.node_ids.append(node)
        self.config["peers"] = self.peers
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        self._make_certs()
        self._joining.add(node)
        return {"id": node, "host": HOST, "ports": {"p2p": p2p, "api": api}}

    def api_url(self, node: str) -> str:
        return f"http://{HOST}:{self.peers[node]['ports']['api']}"

    def data_dir(self, node: str) -> Path:
        return self.base / "data" / node

    def log_path(self, node: str) -> Path:
        return self.base / f"{node}.log"

    # -- processes -------------------------------------------------------------------------

    def start(self, *nodes: str) -> None:
        for node in nodes or tuple(self.node_ids):
            if node in self.processes and self.processes[node].poll() is None:
                continue
            logfile = open(self.log_path(node), "ab")  # noqa: SIM115 (closed in close())
            self._logs[node] = logfile
            cmd = node_command(self.config_path, node, join=node in self._joining)
            self.processes[node] = subprocess.Popen(
                cmd, stdout=logfile, stderr=subprocess.STDOUT, cwd=self.base
            )

    def alive(self) -> list[str]:
        return [n for n, p in self.processes.items() if p.poll() is None]

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
        for node, proc in self.processes.items():
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
            self._logs[node].close()

    def logs(self, node: str) -> str:
        try:
            return self.log_path(node).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- HTTP ------------------------------------------------------------------------------

    def request(
        self,
        node: str,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10,
    ) -> Response:
        req = urllib.request.Request(
            self.api_url(node) + path, data=body, method=method, headers=dict(headers or {})
        )
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(req, timeout=timeout) as resp:
                return Response(resp.status, dict(resp.headers), resp.read())
        except urllib.error.HTTPError as e:
            return Response(e.code, dict(e.headers), e.read())

    def status(self, node: str, timeout: float = 2) -> dict[str, Any] | None:
        try:
            headers = {"Authorization": f"Bearer {self.status_token}"} if self.status_token else {}
            resp = self.request(node, "GET", "/status", headers=headers, timeout=timeout)
        except OSError:
            return None
        return resp.json() if resp.status == 200 else None

    def wait_until_serving(self, node: str, timeout: float = 15) -> None:
        """Poll until the node's API answers (a started process takes a moment to bind)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.request(node, "GET", "/health", timeout=1).status == 200:
                    return
            except OSError:
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


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None
