"""The network namespace a fault run lives in, and the faults its network can suffer.

`Namespace` is used from outside: it creates the namespace (only a loopback interface, so no
packet can leave it), lists and kills what runs inside, and deletes it. `NetworkFaults` is used
from inside (the run's driver process is started under ``ip netns exec``): it cuts links between
node addresses with iptables DROP rules in a chain of its own, drops a fraction of node-to-node
packets, and slows the loopback link with tc.

Every node listens on and dials from its own address in 127.0.1.0/24 (see node_main), and the
clients connect from 127.0.0.1, so rules between node addresses cut peer traffic only: a client
can still reach a node on the minority side and see what it answers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence

NODE_NET = "127.0.1.0/24"
CHAIN = "GRAFT-FAULTS"


class HarnessError(Exception):
    """The harness could not set up or drive the environment (not a finding about Graft)."""


def run(
    cmd: Sequence[str], *, check: bool = True, retries: int = 0
) -> subprocess.CompletedProcess[str]:
    """Run a system command; on failure retry a few times, then raise HarnessError."""
    for attempt in range(retries + 1):
        proc = subprocess.run(list(cmd), capture_output=True, text=True, check=False)
        if proc.returncode == 0 or not check:
            return proc
        if attempt < retries:
            time.sleep(0.2 * (attempt + 1))
    raise HarnessError(
        f"`{' '.join(cmd)}` failed with exit code {proc.returncode}: {proc.stderr.strip()}; "
        "check that iproute2 and iptables are installed and that this runs as root"
    )


class Namespace:
    """One network namespace with only `lo`, created for one run and deleted after it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.created = False

    def create(self) -> None:
        run(["ip", "netns", "add", self.name], retries=2)
        self.created = True
        run(["ip", "-n", self.name, "link", "set", "lo", "up"], retries=2)

    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def pids(self) -> list[int]:
        proc = run(["ip", "netns", "pids", self.name], check=False)
        return [int(p) for p in proc.stdout.split() if p.isdigit()]

    def kill_all(self) -> None:
        """SIGKILL everything still running in the namespace (stopped processes included)."""
        for _ in range(20):
            pids = [p for p in self.pids() if p != os.getpid()]
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)

    def delete(self) -> None:
        if not self.created:
            return
        self.kill_all()
        run(["ip", "netns", "del", self.name], retries=5)
        self.created = False


def netem_available() -> bool:
    """Can this kernel add a netem qdisc? (Some container kernels lack sch_netem.)"""
    ok = run(["tc", "qdisc", "replace", "dev", "lo", "root", "netem", "delay", "1ms"], check=False)
    run(["tc", "qdisc", "del", "dev", "lo", "root"], check=False)
    return ok.returncode == 0


class NetworkFaults:
    """Link faults inside the current namespace; every method is idempotent; heal() undoes all."""

    def __init__(self, addresses: dict[str, str]) -> None:
        self.addresses = addresses
        self.netem = False

    def setup(self) -> None:
        run(["iptables", "-w", "-N", CHAIN], retries=2)
        run(["iptables", "-w", "-I", "INPUT", "-j", CHAIN], retries=2)
        self.netem = netem_available()

    def partition(self, groups: Iterable[Iterable[str]]) -> None:
        """Cut every link between nodes of different groups, both directions."""
        sides = [list(g) for g in groups]
        for i, side in enumerate(sides):
            for other in sides[i + 1 :]:
                self.cut(side, other)

    def cut(self, left: Iterable[str], right: Iterable[str]) -> None:
        right = list(right)
        for a in left:
            for b in right:
                for src, dst in ((a, b), (b, a)):
                    run(self._rule("-A", "-s", self.addresses[src], "-d", self.addresses[dst]))

    def loss(self, probability: float) -> None:
        """Drop this fraction of packets between node addresses (clients unaffected)."""
        run(
            self._rule(
                "-A",
                "-s",
                NODE_NET,
                "-d",
                NODE_NET,
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                f"{probability:.3f}",
            )
        )

    def slow(self, delay_ms: int, jitter_ms: int) -> str:
        """Delay the loopback link (netem), or throttle it (tbf) where netem is missing."""
        if self.netem:
            run(
                [
                    "tc",
                    "qdisc",
                    "replace",
                    "dev",
                    "lo",
                    "root",
                    "netem",
                    "delay",
                    f"{delay_ms}ms",
                    f"{jitter_ms}ms",
                ]
            )
            return f"netem delay {delay_ms}ms ±{jitter_ms}ms"
        run(
            [
                "tc",
                "qdisc",
                "replace",
                "dev",
                "lo",
                "root",
                "tbf",
                "rate",
                "2mbit",
                "burst",
                "256kb",
                "latency",
                f"{delay_ms * 4}ms",
            ]
        )
        return f"tbf 2mbit, queue up to {delay_ms * 4}ms (netem unavailable)"

    def heal(self) -> None:
        run(["iptables", "-w", "-F", CHAIN], retries=2)
        run(["tc", "qdisc", "del", "dev", "lo", "root"], check=False)

    def rules(self) -> str:
        return run(["iptables", "-w", "-S", CHAIN], check=False).stdout

    @staticmethod
    def _rule(op: str, *spec: str) -> list[str]:
        return ["iptables", "-w", op, CHAIN, "-p", "tcp", *spec, "-j", "DROP"]
