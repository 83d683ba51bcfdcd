"""examples/counter.py run three times, as the README says: three processes embedding a node
each (graft.embed), with real storage, mutual TLS and a real reactor. Every addition gets a
value no other addition got, and a node stopped with SIGTERM exits cleanly while the other two
go on."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from twisted.trial import unittest

from graft.testing.cluster import LocalCluster

REPO = Path(__file__).resolve().parents[2]
COUNTER = REPO / "examples" / "counter.py"
ADDED = re.compile(r"^(n\d): added 1 -> (\d+)$", re.MULTILINE)


class CounterExample(unittest.TestCase):
    def setUp(self) -> None:
        # LocalCluster only writes the config (ports, certificates); the examples run the nodes.
        self.cluster = LocalCluster(Path(self.mktemp()))
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.addCleanup(self.kill_all)
        for node in self.cluster.node_ids:
            out = open(self.out_path(node), "wb")  # noqa: SIM115 (closed with the process)
            self.addCleanup(out.close)
            command = [sys.executable, str(COUNTER), "--node", node, "-c", "cluster.yaml"]
            self.processes[node] = subprocess.Popen(
                [*command, "--every", "0.2"],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.cluster.base,
            )

    def out_path(self, node: str) -> Path:
        return self.cluster.base / f"{node}.out"

    def kill_all(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)

    def additions(self) -> dict[str, list[int]]:
        found: dict[str, list[int]] = {node: [] for node in self.processes}
        for node in self.processes:
            for who, value in ADDED.findall(self.out_path(node).read_text(errors="replace")):
                found[who].append(int(value))
        return found

    def wait_for(self, condition: object, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not condition():  # type: ignore[operator]
            if time.monotonic() > deadline:
                outputs = {n: self.out_path(n).read_text()[-2000:] for n in self.processes}
                self.fail(f"{what}: not within {timeout} s; outputs: {outputs}")
            time.sleep(0.2)

    def test_three_counters_then_one_stops(self) -> None:
        self.wait_for(
            lambda: all(len(v) >= 3 for v in self.additions().values()),
            "every node added 3 times",
        )
        self.processes["n1"].send_signal(signal.SIGTERM)
        self.assertEqual(self.processes["n1"].wait(30), 0)
        before = self.additions()
        self.wait_for(
            lambda: all(len(self.additions()[n]) >= len(before[n]) + 3 for n in ("n2", "n3")),
            "n2 and n3 went on adding",
        )
        values = [v for node_values in self.additions().values() for v in node_values]
        self.assertEqual(len(values), len(set(values)), "two additions got the same value")
        for node_values in self.additions().values():
            self.assertEqual(node_values, sorted(node_values))
