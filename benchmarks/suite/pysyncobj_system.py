"""PySyncObj under test: three benchmarks.suite.pysyncobj_node processes on 127.0.0.1.

Its journal is never fsynced (not durable across a power cut); the results say so.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from benchmarks.suite.errors import BenchmarkSetupError
from benchmarks.suite.http import call, call_json, wait_until
from benchmarks.suite.system import (
    BODIES,
    KEY_SLOT,
    KEYS,
    ProcessSystem,
    RequestShape,
    compact,
    key_name,
    value_text,
)
from graft.testing.cluster import HOST, free_ports

INSTALL_HINT = (
    "PySyncObj is a benchmark peer only, not a Graft dependency: "
    "install it with `.venv/bin/pip install pysyncobj` (or run `python -m benchmarks "
    "--install-peers`), or leave it out with `--systems graft,etcd`"
)


def ensure_pysyncobj(install: bool) -> None:
    if importlib.util.find_spec("pysyncobj") is not None:
        return
    if not install:
        raise BenchmarkSetupError(f"PySyncObj is not installed. {INSTALL_HINT}")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "pysyncobj"], check=True)


class PySyncObjSystem(ProcessSystem):
    name = "pysyncobj"
    durable = False

    def __init__(
        self,
        base: Path,
        *,
        election_ms: int = 350,
        heartbeat_ms: int = 35,
        tick_ms: float = 50,
        batch: bool = False,
    ) -> None:
        super().__init__(base, ["p1", "p2", "p3"])
        self._tick_ms = tick_ms
        self._batch = batch
        self._election_ms = election_ms
        self._heartbeat_ms = heartbeat_ms
        ports = free_ports(2 * len(self._names))
        self._raft = {n: ports[2 * i] for i, n in enumerate(self._names)}
        self._http = {n: ports[2 * i + 1] for i, n in enumerate(self._names)}

    def command(self, node: str) -> list[str]:
        cmd = [sys.executable, "-m", "benchmarks.suite.pysyncobj_node"]
        cmd += [f"--raft={HOST}:{self._raft[node]}", f"--http-port={self._http[node]}"]
        cmd += [f"--partner={HOST}:{self._raft[n]}" for n in self._names if n != node]
        cmd += [f"--journal={self._base / (node + '.journal')}"]
        cmd += [f"--election-ms={self._election_ms}", f"--heartbeat-ms={self._heartbeat_ms}"]
        cmd += [f"--tick-ms={self._tick_ms}", f"--batch={'on' if self._batch else 'off'}"]
        return cmd

    def base_url(self, node: str) -> str:
        return f"http://{HOST}:{self._http[node]}"

    def leader(self, timeout: float = 15) -> str:
        by_address = {f"{HOST}:{self._raft[n]}": n for n in self._names}

        def agreed() -> str | None:
            leaders = set()
            for node in self.alive():
                status = call_json(self.base_url(node) + "/status")
                if not status:
                    return None
                leaders.add(status.get("leader"))
            if len(leaders) != 1:
                return None
            leader = by_address.get(str(leaders.pop()))
            if leader is None or not self.probe_write(leader, 0, timeout=2):
                return None
            return leader

        return str(wait_until(agreed, timeout=timeout, what="a PySyncObj leader agreed by all"))

    def data_path(self, node: str) -> Path:
        return self._base / (node + ".journal")

    def put_shape(self, unique: bool = True) -> RequestShape:
        if unique:
            puts = [{"key": KEY_SLOT, "value": value_text(i)} for i in range(BODIES)]
        else:
            puts = [{"key": key_name(i), "value": value_text(i)} for i in range(KEYS)]
        return RequestShape(method="POST", path="/put", bodies=tuple(compact(p) for p in puts))

    def probe_write(self, node: str, sequence: int, timeout: float) -> bool:
        body = compact({"key": f"probe-{sequence % KEYS}", "value": str(sequence)}).encode()
        status, _ = call(self.base_url(node) + "/put", body, timeout=timeout)
        return status == 200

    def version(self) -> str:
        return f"pysyncobj {version('pysyncobj')}"

    def settings(self) -> dict[str, object]:
        return {
            "election_ms": f"{self._election_ms}..{2 * self._election_ms} (raftMin/MaxTimeout)",
            "heartbeat_ms": self._heartbeat_ms,
            "fsync": False,
            "journal": "memory-mapped journal file, never fsynced",
            "http_front": "http.server ThreadingHTTPServer, HTTP/1.1 keep-alive, TCP_NODELAY",
            "auto_tick_ms": self._tick_ms,
            "append_entries_use_batch": self._batch,
            "tuning": "appendEntriesUseBatch off: each command wakes the Raft thread at once "
            "(on, a command waits for the next tick: ~100 ms per write; measured)",
            "command_p1": " ".join(self.command("p1")),
        }
