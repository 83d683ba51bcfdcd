"""Instructions per write on an in-memory cluster: a measure of the write path's CPU that load
on the machine does not move.

    .venv/bin/python -m benchmarks.write_instructions                 # CPU us per write
    .venv/bin/python -m benchmarks.write_instructions --callgrind     # instructions per write
    .venv/bin/python -m benchmarks.write_instructions --callgrind --direct   # without HTTP

Three nodes in one process (the real driver, Raft core and kv FSM; in-memory storage and
network, tests.support.driver) on the reactor's own timed-call heap over a fake clock, and the
node's API Site (graft.api.make_api_site) on the leader, fed through in-memory transports:
each round, every one of ``--connections`` connections sends one ``POST /command`` (a unique
key, a 100-byte value) and the clock is advanced until all are answered. ``--direct`` proposes
the same commands with ``GraftNode.submit``, so the difference is the HTTP layer's cost. The
node's GC policy (graft.gc_policy) is applied, as ``twist graft`` applies it.

CPU seconds per write on a machine shared with other work vary by 10-20 % from run to run;
``--callgrind`` runs the measured rounds under valgrind's callgrind (``apt-get install
valgrind``) and counts the instructions they execute, which repeat to about 0.3 %: an A/B of
a change to the write path (a checkout of each side on PYTHONPATH, one run each) shows a 1 %
difference. Instructions are not time (cache misses, syscalls, the real sockets and TLS,
fsync and the other processes are left out), so a gain is confirmed on a real cluster with
``python -m benchmarks.cpu_per_write``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import shutil
import subprocess
import sys
import time
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.base import ReactorBase
from twisted.internet.testing import StringTransport

VALUE = "v" * 100
WARM_UP_ROUNDS = 30
_COLLECTED = re.compile(r"Collected : (\d+)")


class HeapClock(ReactorBase):
    """The reactor's timed calls (its heap, its cancellation bookkeeping) on a fake time, so
    timers cost here what they cost in a node; ``advance`` runs what is due, as a reactor
    turn would."""

    def __init__(self) -> None:
        self._now = 0.0
        super().__init__()

    def seconds(self) -> float:
        return self._now

    def installWaker(self) -> None:
        pass

    def wakeUp(self) -> None:
        pass

    def advance(self, seconds: float) -> None:
        self._now += seconds
        self.runUntilCurrent()


class WriteLoad:
    """The in-memory cluster, the leader's API Site and ``connections`` open connections."""

    def __init__(self, connections: int) -> None:
        # Test support, imported here: the benchmark's only use of the tests' package.
        from graft.api import make_api_site
        from graft.config import ApiConfig
        from tests.support.driver import DriverCluster

        class _Cluster(DriverCluster):
            def test_nothing(self) -> None:
                pass

        self.cluster = _Cluster("test_nothing")
        self.clock = HeapClock()
        # Any IReactorTime does for the cluster (it only sets timers and advances).
        self.cluster.start_nodes(clock=self.clock, command_timeout=30.0)  # type: ignore[arg-type]
        self.leader: Any = self.cluster.network.nodes[self.cluster.leader()]
        site = make_api_site(self.leader, ApiConfig(), reactor=self.clock)
        self.channels: list[tuple[Any, StringTransport]] = []
        for i in range(connections):
            channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000 + i))
            transport = StringTransport()
            channel.makeConnection(transport)
            self.channels.append((channel, transport))
        self.sent = 0

    def stop(self) -> None:
        for node in self.cluster.network.nodes.values():
            if node.running:
                node.stopService()

    def _command(self) -> bytes:
        self.sent += 1
        return json.dumps({"op": "put", "key": f"k{self.sent:012d}", "value": VALUE}).encode()

    def _advance_until(self, done: Any) -> None:
        for _ in range(100_000):
            if done():
                return
            self.clock.advance(0.0005)
        raise RuntimeError("the writes were not all answered after 50 s of clock time")

    def http_round(self) -> None:
        """One command on every connection, then the clock until every one is answered."""
        for channel, _ in self.channels:
            body = self._command()
            channel.dataReceived(
                b"POST /command HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n%s"
                % (len(body), body)
            )
        waiting = list(self.channels)

        def answered() -> bool:
            nonlocal waiting
            still = []
            for channel, transport in waiting:
                value = transport.value()
                if b"\r\n\r\n" not in value:
                    still.append((channel, transport))
                elif not value.startswith(b"HTTP/1.1 200 "):
                    raise RuntimeError(f"a write was refused: {value[:300]!r}")
                else:
                    transport.clear()
            waiting = still
            return not waiting

        self._advance_until(answered)

    def direct_round(self) -> None:
        """The same commands through GraftNode.submit: no HTTP."""
        outcomes: list[Any] = []
        for _ in self.channels:
            self.leader.submit([self._command()]).addBoth(outcomes.append)
        self._advance_until(lambda: len(outcomes) == len(self.channels))
        for outcome in outcomes:
            if not isinstance(outcome, list):
                raise RuntimeError(f"a write failed: {outcome}")


def _callgrind(instrument: bool) -> None:
    """Switch instruction counting of this process on or off (under valgrind, else nothing)."""
    if os.environ.get("GRAFT_CALLGRIND"):
        state = "on" if instrument else "off"
        subprocess.run(
            ["callgrind_control", "-i", state, str(os.getpid())], capture_output=True, check=False
        )


def run(connections: int, rounds: int, direct: bool) -> float:
    """CPU microseconds per write over ``rounds`` rounds, after a warm-up."""
    from graft.gc_policy import apply_node_policy

    load = WriteLoad(connections)
    one_round = load.direct_round if direct else load.http_round
    apply_node_policy()
    for _ in range(WARM_UP_ROUNDS):
        one_round()
    gc.collect()
    _callgrind(True)
    started = time.process_time()
    for _ in range(rounds):
        one_round()
    elapsed = time.process_time() - started
    _callgrind(False)
    return elapsed / (rounds * connections) * 1e6


def under_callgrind(argv: list[str], connections: int, rounds: int) -> int:
    """Run this module under callgrind, counting the measured rounds only: instructions per
    write."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("valgrind is not installed: apt-get install -y valgrind")
    out = f"/tmp/graft-callgrind-{os.getpid()}.out"
    try:
        done = subprocess.run(
            [
                *(valgrind, "--tool=callgrind", "--instr-atstart=no"),
                f"--callgrind-out-file={out}",
                *(sys.executable, "-m", "benchmarks.write_instructions", *argv),
            ],
            env={**os.environ, "GRAFT_CALLGRIND": "1", "PYTHONHASHSEED": "0"},
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        if os.path.exists(out):
            os.unlink(out)
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"callgrind run failed:\n{done.stdout}\n{done.stderr[-2000:]}")
    return int(found[1]) // (rounds * connections)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.write_instructions")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--direct", action="store_true", help="GraftNode.submit, no HTTP")
    parser.add_argument("--callgrind", action="store_true", help="count instructions")
    args = parser.parse_args(argv)
    if args.callgrind:
        inner = [f"--connections={args.connections}", f"--rounds={args.rounds}"]
        inner += ["--direct"] if args.direct else []
        per_write = under_callgrind(inner, args.connections, args.rounds)
        print(f"instructions per write: {per_write}")
        return
    us = run(args.connections, args.rounds, args.direct)
    print(f"CPU us per write: {us:.1f}", flush=True)


if __name__ == "__main__":
    main()
