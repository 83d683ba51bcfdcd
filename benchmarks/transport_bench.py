"""Peer transport throughput between processes over mutual TLS (issue 4's benchmark, no storage).

    python -m benchmarks.transport_bench [--seconds 5]

Two measurements, each over real sockets on 127.0.0.1 between separate processes:

* round trips/s: the leader (this process) keeps 64 AppendEntries in flight to one follower
  process, which answers each with an AppendEntriesResponse; each answer releases the next.
* entries/s: the leader streams batched AppendEntries of 100-byte entries to two follower
  processes (a window of messages in flight per follower); an entry counts once both followers
  have acknowledged it, and "quorum" once the first one has.

Followers do no storage and no Raft: this measures codec + TLS + Twisted only
(``benchmarks.driver_bench`` measures the whole runtime, with storage). The Entry
objects of a batch are built once and reused, since building them is the core's cost, not the
transport's.

Recorded 2026-11-28 on the 2-CPU build machine (Python 3.11, 5 s each, other work running):

    AppendEntries round trips, 1 follower, 64 in flight, 0 entries   71,445 /s   (target 30,000)
    AppendEntries round trips, 1 follower, 64 in flight, 1 entry     65,797 /s
    entries to 2 followers, 64/message, 4 in flight                 196,482 /s   (target 50,000)
    entries to 2 followers, 256/message, 4 in flight                281,797 /s
    entries to 2 followers, 1024/message, 2 in flight               321,788 /s
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet import defer, task

from graft.certs import generate_certificates
from graft.config import TLSFiles
from graft.raft.messages import AppendEntries, AppendEntriesResponse, Message
from graft.raft.types import Entry
from graft.transport import PeerTransport

LEADER, FOLLOWERS = "leader", ("f1", "f2")


@dataclass(frozen=True, slots=True, kw_only=True)
class _Peer:
    host: str
    p2p_port: int


@dataclass(frozen=True, slots=True, kw_only=True)
class _Cluster:
    directory: Path
    peers: dict[str, _Peer]
    cluster: str = "bench"

    def tls_for(self, node_id: str) -> TLSFiles:
        d = self.directory
        return TLSFiles(ca=d / "ca.pem", cert=d / f"{node_id}.pem", key=d / f"{node_id}.key")


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _cluster(directory: Path, ports: list[int]) -> _Cluster:
    ids = (LEADER, *FOLLOWERS)
    return _Cluster(
        directory=directory,
        peers={i: _Peer(host="127.0.0.1", p2p_port=p) for i, p in zip(ids, ports, strict=True)},
    )


def _no_requests(peer: str, command: str, args: dict[str, Any]) -> defer.Deferred[dict[str, Any]]:
    return defer.fail(RuntimeError("the benchmark serves no requests"))


def _transport(
    reactor: Any, cfg: _Cluster, node_id: str, on_message: Callable[[Message], None]
) -> PeerTransport:
    return PeerTransport(
        reactor=reactor,
        node_id=node_id,
        cluster=cfg.cluster,
        peers=cfg.peers,
        tls=cfg.tls_for(node_id),
        on_message=on_message,
        on_request=_no_requests,
        rng=random.Random(),
    )


# -- follower process --------------------------------------------------------------------------


def run_follower(node_id: str, cfg: _Cluster) -> None:
    from twisted.internet import reactor as global_reactor

    reactor: Any = global_reactor

    transport: PeerTransport

    def on_message(message: Message) -> None:
        if type(message) is AppendEntries:
            transport.send_all(
                (
                    AppendEntriesResponse(
                        term=message.term,
                        sender=node_id,
                        to=message.sender,
                        success=True,
                        match_index=message.prev_index + len(message.entries),
                    ),
                )
            )

    transport = _transport(reactor, cfg, node_id, on_message)
    transport.startService()
    # The parent closes our stdin when it is done; that is our signal to stop.
    reactor.addReader(_StdinWatcher(reactor))
    reactor.run()


class _StdinWatcher:
    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor

    def fileno(self) -> int:
        return 0

    def doRead(self) -> None:
        if not os.read(0, 1024):
            self.reactor.removeReader(self)
            self.reactor.stop()

    def connectionLost(self, reason: Any) -> None:
        pass

    def logPrefix(self) -> str:
        return "stdin"


# -- leader (this process) ---------------------------------------------------------------------


@dataclass
class _Leader:
    """Dispatches responses to whichever measurement is running."""

    handler: Callable[[AppendEntriesResponse], None] = lambda response: None
    transport: Any = None

    def on_message(self, message: Message) -> None:
        if type(message) is AppendEntriesResponse:
            self.handler(message)


def _entries(count: int) -> tuple[Entry, ...]:
    payload = bytes(100)
    return tuple(Entry(index=i, term=1, data=payload) for i in range(1, count + 1))


@dataclass
class _Stream:
    """A window of AppendEntries to one follower, refilled as answers arrive."""

    to: str
    entries: tuple[Entry, ...]
    sent: int = 0
    acked_entries: int = 0
    acked: list[int] = field(default_factory=list)


async def _measure(
    reactor: Any, leader: _Leader, targets: tuple[str, ...], batch: int, window: int, seconds: float
) -> dict[str, float]:
    transport: PeerTransport = leader.transport
    entries = _entries(batch)
    streams = {to: _Stream(to=to, entries=entries) for to in targets}
    counting = [False]
    counts = {to: 0 for to in targets}
    round_trips = [0]

    def send(stream: _Stream) -> None:
        stream.sent += 1
        transport.send_all(
            (
                AppendEntries(
                    term=1,
                    sender=LEADER,
                    to=stream.to,
                    prev_index=stream.sent * batch,
                    prev_term=1,
                    entries=stream.entries,
                    commit=0,
                ),
            )
        )

    def on_response(response: AppendEntriesResponse) -> None:
        stream = streams[response.sender]
        if counting[0]:
            counts[response.sender] += batch
            round_trips[0] += 1
        send(stream)

    leader.handler = on_response
    for stream in streams.values():
        for _ in range(window):
            send(stream)
    await task.deferLater(reactor, 1.0, lambda: None)  # warm up
    counting[0] = True
    started = time.perf_counter()
    await task.deferLater(reactor, seconds, lambda: None)
    elapsed = time.perf_counter() - started
    counting[0] = False
    leader.handler = lambda response: None
    await task.deferLater(reactor, 0.5, lambda: None)  # drain what is still in flight
    return {
        "round_trips": round_trips[0] / elapsed,
        "all": min(counts.values()) / elapsed,
        "quorum": max(counts.values()) / elapsed,
    }


async def _main(reactor: Any, cfg: _Cluster, seconds: float) -> None:
    leader = _Leader()
    leader.transport = _transport(reactor, cfg, LEADER, leader.on_message)
    leader.transport.startService()
    deadline = time.monotonic() + 20
    while leader.transport.connected_peers() != set(FOLLOWERS):
        if time.monotonic() > deadline:
            raise SystemExit("followers did not connect within 20 s")
        await task.deferLater(reactor, 0.05, lambda: None)
    await task.deferLater(reactor, 0.5, lambda: None)  # and their connections back to us

    rows = []
    for batch in (0, 1):
        result = await _measure(
            reactor, leader, (FOLLOWERS[0],), batch=batch, window=64, seconds=seconds
        )
        rows.append(
            (
                f"AppendEntries round trips, 1 follower, 64 in flight, {batch} entries",
                f"{result['round_trips']:,.0f} /s",
                "30,000 /s",
            )
        )
    for batch, window in ((64, 4), (256, 4), (1024, 2)):
        result = await _measure(
            reactor, leader, FOLLOWERS, batch=batch, window=window, seconds=seconds
        )
        rows.append(
            (
                f"entries to 2 followers, {batch}/message, {window} messages in flight",
                f"{result['all']:,.0f} /s (quorum {result['quorum']:,.0f})",
                "50,000 /s",
            )
        )
    await leader.transport.stopService()
    width = max(len(r[0]) for r in rows)
    print(f"\n{'measurement':<{width}} | {'result':<30} | target")
    print(f"{'-' * width}-|-{'-' * 30}-|-{'-' * 10}")
    for name, value, target in rows:
        print(f"{name:<{width}} | {value:<30} | {target}")
    print(
        f"\n{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {seconds:g} s per measurement"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each measurement")
    parser.add_argument("--follower", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    parser.add_argument("--ports", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.follower:
        run_follower(
            args.follower, _cluster(Path(args.dir), [int(p) for p in args.ports.split(",")])
        )
        return

    directory = Path(tempfile.mkdtemp(prefix="graft-transport-bench-"))
    followers: list[subprocess.Popen[bytes]] = []
    try:
        ports = _free_ports(3)
        cfg = _cluster(directory, ports)
        generate_certificates(cfg)
        for follower in FOLLOWERS:
            followers.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "benchmarks.transport_bench",
                        "--follower",
                        follower,
                        "--dir",
                        str(directory),
                        "--ports",
                        ",".join(map(str, ports)),
                    ],
                    stdin=subprocess.PIPE,
                )
            )
        task.react(lambda reactor: defer.Deferred.fromCoroutine(_main(reactor, cfg, args.seconds)))
    finally:
        for process in followers:
            if process.stdin is not None:
                process.stdin.close()
        for process in followers:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
