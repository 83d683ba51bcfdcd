"""Instructions per write on an in-memory cluster: a measure of the write path's CPU that load
on the machine does not move.

    .venv/bin/python -m benchmarks.write_instructions                 # CPU us per write
    .venv/bin/python -m benchmarks.write_instructions --callgrind     # instructions per write
    .venv/bin/python -m benchmarks.write_instructions --callgrind --direct   # without HTTP
    .venv/bin/python -m benchmarks.write_instructions --callgrind --batch 100 --connections 16

Three nodes in one process (the real driver, Raft core and kv FSM; in-memory storage and
network, tests.support.driver) on the reactor's own timed-call heap over a fake clock, and the
node's API Site (graft.api.make_api_site) on the leader, fed through in-memory transports:
each round, every one of ``--connections`` connections sends one ``POST /command`` (a unique
key, a 100-byte value) and the clock is advanced until all are answered. ``--batch N`` sends
one ``POST /commands`` of N such commands per connection and round instead, in compact JSON as
the benchmark suite's batches are, and the figures are per command (the rounds' requests are
then built before the count starts). ``--direct`` proposes the same commands with
``GraftNode.submit`` (one call per request), so the difference is the HTTP layer's cost. The
node's GC policy (graft.gc_policy) is applied, as ``twist graft`` applies it. ``--profile K``
runs the measured rounds under cProfile and prints the K functions that took most time.

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
import cProfile
import gc
import json
import os
import pstats
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
COMPACT = (",", ":")
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
        # Requests (or, for direct rounds, command lists) built ahead by ``prepare``: one list
        # per round, one item per connection.
        self._prepared: list[list[Any]] = []

    def stop(self) -> None:
        for node in self.cluster.network.nodes.values():
            if node.running:
                node.stopService()

    def _command(self, compact: bool = False) -> bytes:
        """A put of a new key; ``compact``: without spaces, as the benchmark suite's batches
        send it (benchmarks.suite.system.compact)."""
        self.sent += 1
        command = {"op": "put", "key": f"k{self.sent:012d}", "value": VALUE}
        return json.dumps(command, separators=COMPACT if compact else None).encode()

    def _request(self, batch: int) -> bytes:
        """One request: ``POST /command`` of one command, or (``batch`` > 0) ``POST
        /commands`` of a JSON array of ``batch`` commands."""
        if batch:
            path = b"/commands"
            commands = [self._command(compact=True).decode() for _ in range(batch)]
            body = json.dumps(commands, separators=COMPACT).encode()
        else:
            path, body = b"/command", self._command()
        return b"POST %b HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n%b" % (
            path,
            len(body),
            body,
        )

    def _advance_until(self, done: Any) -> None:
        for _ in range(100_000):
            if done():
                return
            self.clock.advance(0.0005)
        raise RuntimeError("the writes were not all answered after 50 s of clock time")

    def prepare(self, rounds: int, batch: int, direct: bool) -> None:
        """Build the next ``rounds`` rounds' requests now, so that the rounds measure the
        nodes and not the client's encoding of the commands (for a batch of 100, a tenth of
        the instructions)."""
        for _ in range(rounds):
            if direct:
                self._prepared.append([self._commands(batch) for _ in self.channels])
            else:
                self._prepared.append([self._request(batch) for _ in self.channels])

    def _commands(self, batch: int) -> list[bytes]:
        return [self._command(compact=bool(batch)) for _ in range(batch or 1)]

    def http_round(self, batch: int = 0) -> None:
        """One request on every connection (one command, or a batch of ``batch``), then the
        clock until every one is answered."""
        prepared = self._prepared.pop(0) if self._prepared else None
        for i, (channel, _) in enumerate(self.channels):
            channel.dataReceived(self._request(batch) if prepared is None else prepared[i])
        waiting = list(self.channels)

        def answered() -> bool:
            nonlocal waiting
            still = []
            for channel, transport in waiting:
                value = transport.value()
                if b"\r\n\r\n" not in value:
                    still.append((channel, transport))
                elif not value.startswith(b"HTTP/1.1 200 ") or b'"error"' in value:
                    raise RuntimeError(f"a write was refused: {value[:300]!r}")
                else:
                    transport.clear()
            waiting = still
            return not waiting

        self._advance_until(answered)

    def direct_round(self, batch: int = 0) -> None:
        """The same commands through GraftNode.submit, one call per request: no HTTP."""
        outcomes: list[Any] = []
        prepared = self._prepared.pop(0) if self._prepared else None
        for i in range(len(self.channels)):
            commands = self._commands(batch) if prepared is None else prepared[i]
            self.leader.submit(commands).addBoth(outcomes.append)
        self._advance_until(lambda: len(outcomes) == len(self.channels))
        for outcome in outcomes:
            if not isinstance(outcome, list) or any(r.error is not None for r in outcome):
                raise RuntimeError(f"a write failed: {outcome}")


def _callgrind(instrument: bool) -> None:
    """Switch instruction counting of this process on or off (under valgrind, else nothing)."""
    if os.environ.get("GRAFT_CALLGRIND"):
        state = "on" if instrument else "off"
        subprocess.run(
            ["callgrind_control", "-i", state, str(os.getpid())], capture_output=True, check=False
        )


def run(connections: int, rounds: int, direct: bool, batch: int = 0, profile: int = 0) -> float:
    """CPU microseconds per command over ``rounds`` rounds, after a warm-up; ``profile`` > 0
    prints that many of the functions with the most internal time under cProfile."""
    from graft.gc_policy import apply_node_policy

    load = WriteLoad(connections)
    one_round = load.direct_round if direct else load.http_round
    apply_node_policy()
    # Warm up on about as many commands as the single writes do, at least a few rounds.
    for _ in range(max(3, WARM_UP_ROUNDS // (batch or 1))):
        one_round(batch)
    if batch:  # a single write's command costs the client little: built in the rounds
        load.prepare(rounds, batch, direct)
    gc.collect()
    profiler = cProfile.Profile() if profile else None
    _callgrind(True)
    started = time.process_time()
    if profiler is not None:
        profiler.enable()
    for _ in range(rounds):
        one_round(batch)
    if profiler is not None:
        profiler.disable()
    elapsed = time.process_time() - started
    _callgrind(False)
    load.stop()
    if profiler is not None:
        stats = pstats.Stats(profiler, stream=sys.stdout)
        stats.sort_stats("tottime").print_stats(profile)
        stats.sort_stats("cumulative").print_stats(profile)
    return elapsed / (rounds * connections * (batch or 1)) * 1e6


def under_callgrind(argv: list[str], commands: int) -> int:
    """Run this module under callgrind, counting the measured rounds only: instructions per
    command, given how many ``commands`` the measured rounds send."""
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
    return int(found[1]) // commands


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.write_instructions")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--direct", action="store_true", help="GraftNode.submit, no HTTP")
    parser.add_argument(
        "--batch",
        type=int,
        default=0,
        metavar="N",
        help="each request a POST /commands of N commands; figures per command",
    )
    parser.add_argument("--callgrind", action="store_true", help="count instructions")
    parser.add_argument(
        "--profile", type=int, default=0, metavar="K", help="cProfile: print the top K functions"
    )
    args = parser.parse_args(argv)
    if args.batch < 0:
        parser.error("--batch must be 0 (single commands) or more")
    what = "command" if args.batch else "write"
    if args.callgrind:
        inner = [f"--connections={args.connections}", f"--rounds={args.rounds}"]
        inner += ["--direct"] if args.direct else []
        inner += [f"--batch={args.batch}"] if args.batch else []
        commands = args.rounds * args.connections * (args.batch or 1)
        per_command = under_callgrind(inner, commands)
        print(f"instructions per {what}: {per_command}")
        return
    us = run(args.connections, args.rounds, args.direct, args.batch, args.profile)
    print(f"CPU us per {what}: {us:.1f}", flush=True)


if __name__ == "__main__":
    main()
