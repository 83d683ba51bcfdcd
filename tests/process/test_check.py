"""The replica consistency check on real 3-node clusters (kv and SQLite): equal replicas pass
GET /cluster/check and `graft check`; a replica made to diverge on purpose (a test-only FSM
that stores another value on one node) is named, in /metrics, `graft status`, and the exit code
of `graft check`."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from graft.fsm.kv import KeyValueStateMachine
from graft.fsm.sqlite import SQLiteStateMachine
from graft.testing.cli import graft_cli
from graft.testing.cluster import LocalCluster
from graft.testing.process_case import ProcessTestCase

# The FSMs below diverge on the node whose data dir is named ``diverge_on``, for commands that
# contain this word; everywhere else they are the built-in FSMs.
DIVERGE = b"diverge-here"
# Checks run one after another while clients write (test_equal_under_write_load).
CHECKS_UNDER_LOAD = 10


class DivergingKV(KeyValueStateMachine):
    def __init__(self, *, data_dir: Path, base_dir: Path | None = None, diverge_on: str) -> None:
        super().__init__(data_dir=data_dir, base_dir=base_dir)
        self._odd = Path(data_dir).name == diverge_on

    def apply(self, command: bytes, index: int) -> bytes:
        if self._odd:
            command = command.replace(DIVERGE, b"diverged")
        return super().apply(command, index)


class DivergingSQLite(SQLiteStateMachine):
    def __init__(self, *, data_dir: Path, base_dir: Path | None = None, diverge_on: str) -> None:
        super().__init__(data_dir=data_dir, base_dir=base_dir)
        self._odd = Path(data_dir).name == diverge_on

    def apply(self, command: bytes, index: int) -> bytes:
        if self._odd:
            command = command.replace(DIVERGE, b"diverged")
        return super().apply(command, index)


class CheckProcessMixin:
    fsm: str
    good: list[bytes]
    bad: bytes

    def setUp(self) -> None:
        test: Any = self
        factory = f"tests.process.test_check:{self.fsm}"
        self.cluster: LocalCluster = test.make_cluster(
            extra={"fsm": {"factory": factory, "options": {"diverge_on": "n3"}}}
        )
        for node in self.cluster.node_ids:
            self.cluster.wait_until_serving(node)
        self.leader, _ = self.cluster.wait_for_leader()

    def command(self, body: bytes) -> None:
        test: Any = self
        answer = self.cluster.request(self.leader, "POST", "/command", body)
        test.assertEqual(answer.status, 200, answer.body)

    def check(self, node: str) -> dict[str, Any]:
        test: Any = self
        answer = self.cluster.request(node, "GET", "/cluster/check", timeout=60)
        test.assertEqual(answer.status, 200, answer.body)
        result: dict[str, Any] = answer.json()
        return result

    def test_equal_then_diverged(self) -> None:
        test: Any = self
        for body in self.good:
            self.command(body)
        follower = next(n for n in self.cluster.node_ids if n != self.leader)
        result = self.check(follower)
        test.assertTrue(result["ok"], result)
        test.assertTrue(result["complete"], result)
        test.assertEqual(len({m["digest"] for m in result["members"].values()}), 1)
        ran = graft_cli("check", "-c", str(self.cluster.config_path))
        test.assertEqual(ran.returncode, 0, ran.stdout + ran.stderr)
        test.assertIn("ok", ran.stdout)

        self.command(self.bad)  # n3 stores another value than n1 and n2
        result = self.check(self.leader)
        test.assertFalse(result["ok"], result)
        test.assertEqual(result["mismatch"], ["n3"])
        metrics = self.cluster.request(self.leader, "GET", "/metrics").body.decode()
        test.assertIn("graft_replica_digest_mismatch 1.0", metrics)

        ran = graft_cli("check", "-c", str(self.cluster.config_path))
        test.assertEqual(ran.returncode, 3, ran.stdout + ran.stderr)
        test.assertIn("DIFFERS", ran.stdout)
        ran = graft_cli("check", "-c", str(self.cluster.config_path), "--json")
        test.assertEqual(json.loads(ran.stdout)["mismatch"], ["n3"])
        ran = graft_cli("status", "-c", str(self.cluster.config_path))
        test.assertEqual(ran.returncode, 0, ran.stdout + ran.stderr)
        test.assertIn("MISMATCH", ran.stdout)
        test.assertIn("n3", ran.stdout.split("MISMATCH", 1)[1])

    def test_equal_under_write_load(self) -> None:
        """Checks while clients write: followers then apply the marker in one batch with the
        commands after it, and every digest must still be of the state at the marker. Before
        the fix, most of these checks named one node or two as diverged."""
        test: Any = self
        for body in self.good:
            self.command(body)
        stop = threading.Event()
        failures: list[str] = []

        def write(writer: int) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                answer = self.cluster.request(
                    self.leader, "POST", "/command", self.load(f"w{writer}-{n}")
                )
                if answer.status != 200:
                    failures.append(f"{answer.status} {answer.body[:200]!r}")
                    return

        writers = [threading.Thread(target=write, args=(w,), daemon=True) for w in range(6)]
        for t in writers:
            t.start()
        try:
            follower = next(n for n in self.cluster.node_ids if n != self.leader)
            results = [self.check(follower) for _ in range(CHECKS_UNDER_LOAD)]
        finally:
            stop.set()
            for t in writers:
                t.join(10)
        test.assertEqual(failures, [])
        for result in results:
            test.assertEqual(result["mismatch"], [], result)

    def load(self, key: str) -> bytes:
        raise NotImplementedError


class KeyValueCheckTests(CheckProcessMixin, ProcessTestCase):
    fsm = "DivergingKV"

    def load(self, key: str) -> bytes:
        return json.dumps({"op": "put", "key": key, "value": "x" * 100}).encode()

    good = [json.dumps({"op": "put", "key": f"k{i}", "value": str(i)}).encode() for i in range(5)]
    bad = json.dumps({"op": "put", "key": "k1", "value": "diverge-here"}).encode()


class SQLiteCheckTests(CheckProcessMixin, ProcessTestCase):
    fsm = "DivergingSQLite"
    good = [
        b"CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)",
        *[f"INSERT INTO t(v) VALUES ('row {i}')".encode() for i in range(5)],
    ]
    bad = b"UPDATE t SET v = 'diverge-here' WHERE id = 2"

    def load(self, key: str) -> bytes:
        return f"INSERT INTO t(v) VALUES ('{key}')".encode()
