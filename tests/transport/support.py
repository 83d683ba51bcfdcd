"""Shared fixtures for transport tests: a cluster config stand-in and its certificates."""

from __future__ import annotations

import atexit
import functools
import random
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.logger import globalLogPublisher

from graft.certs import generate_certificates
from graft.raft.messages import Message
from graft.transport import PeerTransport


@dataclass(frozen=True, slots=True, kw_only=True)
class Peer:
    host: str
    p2p_port: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Files:
    ca: Path
    cert: Path
    key: Path


@dataclass(frozen=True, slots=True, kw_only=True)
class FakeClusterConfig:
    """The parts of graft.config.ClusterConfig that graft.certs and graft.transport use."""

    directory: Path
    peers: Mapping[str, Peer]
    cluster: str = "test"

    def tls_for(self, node_id: str) -> Files:
        return Files(
            ca=self.directory / "ca.pem",
            cert=self.directory / f"{node_id}.pem",
            key=self.directory / f"{node_id}.key",
        )


def make_cluster(
    ids: tuple[str, ...] = ("turing", "ritchie", "lovelace"),
    *,
    cluster: str = "test",
    base_port: int = 8880,
    directory: Path | None = None,
) -> FakeClusterConfig:
    """A config with certificates generated into a fresh temporary directory."""
    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix="graft-certs-"))
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
    cfg = FakeClusterConfig(
        directory=directory,
        peers={
            node_id: Peer(host="127.0.0.1", p2p_port=base_port + i) for i, node_id in enumerate(ids)
        },
        cluster=cluster,
    )
    generate_certificates(cfg)
    return cfg


@dataclass
class Inbox:
    """Collects what a transport delivers, and answers requests with a scripted handler."""

    messages: list[Message] = field(default_factory=list)
    requests: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    handler: Callable[[str, str, dict[str, Any]], Any] | None = None

    def on_message(self, message: Message) -> None:
        self.messages.append(message)

    def on_request(
        self, peer: str, command: str, args: dict[str, Any]
    ) -> defer.Deferred[dict[str, Any]]:
        self.requests.append((peer, command, args))
        if self.handler is None:
            return defer.succeed({"output": b"ok", "applied_index": 7})
        return defer.maybeDeferred(self.handler, peer, command, args)


def make_transport(
    cfg: FakeClusterConfig, node_id: str, reactor: Any, inbox: Inbox, **kwargs: Any
) -> PeerTransport:
    kwargs.setdefault("peers", cfg.peers)
    return PeerTransport(
        reactor=reactor,
        node_id=node_id,
        cluster=cfg.cluster,
        tls=cfg.tls_for(node_id),
        on_message=inbox.on_message,
        on_request=inbox.on_request,
        rng=random.Random(4),
        **kwargs,
    )


class LogCapture:
    """Collects formatted log events of graft.transport while installed."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("log_namespace", "").startswith("graft.transport"):
            self.events.append(event)

    def install(self, test: Any) -> LogCapture:
        observer: Any = self
        globalLogPublisher.addObserver(observer)
        test.addCleanup(globalLogPublisher.removeObserver, observer)
        return self

    def text(self) -> str:
        from twisted.logger import formatEvent

        return "\n".join(formatEvent(event) for event in self.events)


@functools.cache
def shared_cluster(
    ids: tuple[str, ...] = ("turing", "ritchie", "lovelace"), key: str = ""
) -> FakeClusterConfig:
    """make_cluster once per test run (key tells apart clusters with the same ids but
    different CAs): key generation is the slow part of these tests."""
    return make_cluster(ids)
