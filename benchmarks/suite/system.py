"""What every replicated system under test offers the scenarios.

A system is three nodes on 127.0.0.1. The scenarios need: its nodes' base URLs, who leads, the
request shapes (method, path, bodies) for a put, a batch of puts and a read at a consistency,
a single probe write for failover timing, and kill/restart of one node.
"""

from __future__ import annotations

import abc
import json
from dataclasses import dataclass

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
