"""The nodes of a fault run: real `twist graft` processes, one per address in the namespace.

Run from inside the namespace. Node i listens on 127.0.1.i (p2p port 7000, API port 8000; the
namespace is private, so fixed ports cannot clash with anything). Config, certificates, data
and one log per node live in the run directory.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

import yaml

from graft.client_requests import Response
from graft.config import DEFAULT_ELECTION_MS, DEFAULT_HEARTBEAT_MS
from graft.launcher import twist_args
from graft.testing.faults.disk import ENV as FSYNC_STALL_ENV
from graft.testing.faults.disk import set_stall

P2P_PORT = 7000
API_PORT = 8000


def http_request(
    host: str, port: int, method: str, path: str, body: bytes | None, timeout: float
) -> Response:
    """One HTTP request on a fresh connection; OSError (incl. timeouts) when there is no answer."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers={"Connection": "close"})
        resp = conn.getresponse()
        data = resp.read()
        return Response(
            status=resp.status,
            headers={k.lower(): v for k, v in resp.getheaders()},
            body=data,
            url=f"http://{host}:{port}{path}",
        )
    except http.client.HTTPException as e:
        raise OSError(f"bad HTTP exchange: {e!r}") from e
    finally:
        conn.close()


class FaultCluster:
    def __init__(
        self,
        base: Path,
        size: int,
        *,
        election_ms: int = DEFAULT_ELECTION_MS,
        heartbeat_ms: int = DEFAULT_HEARTBEAT_MS,
        snapshot_entries: int = 2000,
        fsm: str = "graft.fsm.kv:KeyValueStateMachine",
        snapshot: dict[str, Any] | None = None,
    ) -> None:
        """``snapshot``: the config's whole ``snapshot`` section, instead of only ``entries``."""
        self.base = base.resolve()
        self.base.mkdir(parents=True, exist_ok=True)
        self.node_ids = [f"n{i}" for i in range(1, size + 1)]
        self.addresses = {node: f"127.0.1.{i}" for i, node in enumerate(self.node_ids, 1)}
        config: dict[str, Any] = {
            "cluster": "faults",
            "timeouts": {"election": election_ms, "heartbeat": heartbeat_ms},
            "peers": {
                node: {"host": addr, "ports": {"p2p": P2P_PORT, "api": API_PORT}}
                for node, addr in self.addresses.items()
            },
            "data_dir": "data/{id}",
            "fsm": {"factory": fsm},
            "api": {"command_timeout_ms": 2000, "query_timeout_ms": 2000},
            "snapshot": snapshot if snapshot is not None else {"entries": snapshot_entries},
        }
        self.config_path = self.base / "cluster.yaml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        from graft.certs import generate_certificates
        from graft.config import load_config

        generate_certificates(load_config(self.config_path))
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.paused: set[str] = set()
        self._logs: list[IO[bytes]] = []

    def log_path(self, node: str) -> Path:
        return self.base / "logs" / f"{node}.log"

    def start(self, node: str) -> None:
        proc = self.processes.get(node)
        if proc is not None and proc.poll() is None:
            return
        self.log_path(node).parent.mkdir(exist_ok=True)
        log = open(self.log_path(node), "ab")  # noqa: SIM115 (closed in close())
        self._logs.append(log)
        self.processes[node] = subprocess.Popen(
            self.node_command(node),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.base,
            start_new_session=True,
            env=self.node_env(node),
        )

    def node_command(self, node: str) -> list[str]:
        """The command line of ``node``'s process: `twist graft` under the fault hooks."""
        cmd = [sys.executable, "-m", "graft.testing.faults.node_main", "--bind"]
        cmd += [self.addresses[node], "--clock-file", str(self.clock_file(node))]
        return cmd + twist_args(self.config_path, node)

    def node_env(self, node: str) -> dict[str, str]:
        """The node process's environment: the harness's, plus the fault hooks' settings."""
        return {**os.environ, FSYNC_STALL_ENV: str(self.fsync_stall_path(node))}

    def fsync_stall_path(self, node: str) -> Path:
        """The file that slows every fsync of ``node`` while it exists (faults.disk)."""
        return self.base / f"{node}.fsync-stall"

    def stall_fsync(self, node: str, seconds: float | None) -> None:
        """Add ``seconds`` to every fsync ``node`` makes from now on; None ends the stall."""
        set_stall(self.fsync_stall_path(node), seconds)

    # -- the clock-step nemesis's wall clocks (faults.node_main --clock-file) ---------------

    def clock_file(self, node: str) -> Path:
        return self.base / "clock" / f"{node}.offset"

    def set_wall_clock_offset(self, node: str, seconds: float) -> None:
        """Step ``node``'s wall clock to real time + ``seconds`` (it reads the file within
        10 ms); its monotonic clock is untouched. Written whole (rename) so it is never read
        half-written."""
        path = self.clock_file(node)
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(f"{seconds!r}\n")
        tmp.replace(path)

    def start_all(self) -> None:
        for node in self.node_ids:
            self.start(node)

    def running(self, node: str) -> bool:
        proc = self.processes.get(node)
        return proc is not None and proc.poll() is None

    def exit_codes(self) -> dict[str, int | None]:
        return {node: proc.poll() for node, proc in self.processes.items()}

    def kill(self, node: str) -> None:
        proc = self.processes.get(node)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        self.paused.discard(node)

    def pause(self, node: str) -> None:
        if self.running(node):
            os.kill(self.processes[node].pid, signal.SIGSTOP)
            self.paused.add(node)

    def resume(self, node: str) -> None:
        if self.running(node):
            os.kill(self.processes[node].pid, signal.SIGCONT)
        self.paused.discard(node)

    def close(self) -> None:
        for node in list(self.processes):
            self.kill(node)
        for log in self._logs:
            log.close()

    def request(
        self, node: str, method: str, path: str, body: bytes | None = None, timeout: float = 4.0
    ) -> Response:
        return http_request(self.addresses[node], API_PORT, method, path, body, timeout)

    def status(self, node: str, timeout: float = 0.5) -> dict[str, Any] | None:
        try:
            reply = self.request(node, "GET", "/status", timeout=timeout)
        except OSError:
            return None
        return reply.json() if reply.status == 200 else None
