"""What every replicated system under test offers the scenarios.

A system is three nodes on 127.0.0.1. The scenarios need: its nodes' base URLs, who leads, the
request shapes (method, path, bodies) for a put, a batch of puts and a read at a consistency,
a single probe write for failover timing, and kill/restart of one node.
"""

from __future__ import annotations

import abc
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import IO

KEYS = 1000  # writes rotate over this many keys, so state stays small and reads find them
BATCH = 100


def key_name(i: int) -> str:
    return f"bench-{i % KEYS:04d}"


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestShape:
    """What wrk sends: the method, the path (with query) and the rotating bodies."""

    method: str
    path: str
    bodies: tuple[str, ...]


def compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


class ReplicatedSystem(abc.ABC):
    name: str
    durable: bool  # does an acknowledged write survive a power cut (fsync)?

    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    @abc.abstractmethod
    def node_ids(self) -> list[str]: ...

    @abc.abstractmethod
    def base_url(self, node: str) -> str: ...

    @abc.abstractmethod
    def leader(self, timeout: float = 15) -> str:
        """The node every live node agrees leads (waits for one)."""

    @abc.abstractmethod
    def put_shape(self) -> RequestShape: ...

    def batch_shape(self) -> RequestShape | None:
        return None

    def read_shape(self, strong: bool) -> RequestShape | None:
        return None

    @abc.abstractmethod
    def probe_write(self, node: str, sequence: int, timeout: float) -> bool:
        """One put through `node`; True if it was acknowledged."""

    @abc.abstractmethod
    def kill(self, node: str) -> None:
        """SIGKILL the node's process."""

    @abc.abstractmethod
    def restart(self, node: str) -> None:
        """Start a killed node again on its old data."""

    @abc.abstractmethod
    def version(self) -> str: ...

    def settings(self) -> dict[str, object]:
        return {}


class ProcessSystem(ReplicatedSystem):
    """A system of one process per node, run from ``command(node)`` with its output appended to
    ``<base>/<node>.log``; kill and restart act on that process."""

    def __init__(self, base: Path, names: list[str]) -> None:
        self._base = base
        self._names = names
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, IO[bytes]] = {}

    @abc.abstractmethod
    def command(self, node: str) -> list[str]: ...

    def start(self) -> None:
        self._base.mkdir(parents=True, exist_ok=True)
        for node in self._names:
            self.restart(node)
        self.leader(timeout=30)

    def restart(self, node: str) -> None:
        log = self._logs.get(node)
        if log is None:
            log = self._logs[node] = open(self._base / f"{node}.log", "ab")  # noqa: SIM115
        self._processes[node] = subprocess.Popen(
            self.command(node), stdout=log, stderr=subprocess.STDOUT
        )

    def close(self) -> None:
        for proc in self._processes.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
        for log in self._logs.values():
            log.close()

    def kill(self, node: str) -> None:
        self._processes[node].kill()
        self._processes[node].wait(10)

    def alive(self) -> list[str]:
        return [n for n, p in self._processes.items() if p.poll() is None]

    def node_ids(self) -> list[str]:
        return list(self._names)

    def pid(self, node: str) -> int:
        return self._processes[node].pid
