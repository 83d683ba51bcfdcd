"""What every replicated system under test offers the scenarios.

A system is three nodes on 127.0.0.1. The scenarios need: its nodes' base URLs, who leads, the
request shapes (method, path, bodies) for a put, a batch of puts and a read at a consistency,
a single probe write for failover timing, and kill/restart of one node.
"""

from __future__ import annotations

import abc
import hashlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import IO

KEYS = 1000  # the keys the warm-up writes and the reads read; writes insert new keys
BATCH = 100
VALUE_BYTES = 100  # every written value, in the single puts and in the batches
BODIES = 1000  # request bodies per load (their values differ; the keys come from the driver)
# Placeholders the wrk driver replaces, per occurrence, with a key never sent before (the
# second in base64, for etcd); see benchmarks/suite/wrk_driver.lua and loadgen.KEY_BYTES.
KEY_SLOT = "@KEY@"
KEY64_SLOT = "@KEY64@"


def key_name(i: int) -> str:
    return f"bench-{i % KEYS:04d}"


def value_text(i: int) -> str:
    """A VALUE_BYTES-character value that differs from one ``i`` to the next (hex of hashes,
    so it is printable and needs no escaping in JSON, SQL or base64)."""
    out = ""
    block = 0
    while len(out) < VALUE_BYTES:
        out += hashlib.sha256(f"{i}/{block}".encode()).hexdigest()
        block += 1
    return out[:VALUE_BYTES]


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
    def put_shape(self, unique: bool = True) -> RequestShape:
        """Single puts of VALUE_BYTES values: to keys never written before (KEY_SLOT
        placeholders) or, with ``unique=False``, to the KEYS keys the reads read."""

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

    def pid(self, node: str) -> int:
        """The process id of the node (for its RSS)."""
        raise NotImplementedError

    def data_path(self, node: str) -> Path:
        """Where the node keeps its data: a directory (or a file) whose size the growth
        scenario reports."""
        raise NotImplementedError


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
