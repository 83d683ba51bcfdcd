"""A poison entry: a committed command that makes the FSM raise on every replay.

The node stops naming the entry and the way out; `graft skip-entry` (graft.ops.reject_entry)
marks it rejected on the stopped node, which then starts and applies the entries after it.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial import unittest

from graft.config import ClusterConfig, load_config
from graft.driver.node import GraftNode
from graft.driver.settings import DriverSettings
from graft.driver.wiring import build_node
from graft.fsm.kv import KeyValueStateMachine
from graft.ops import OperationError, reject_entry
from graft.raft.config import RaftConfig
from graft.raft.node import RaftNode
from graft.raft.types import (
    Entry,
    EntryKind,
    HardState,
    Membership,
    SnapshotMeta,
    encode_membership,
)
from graft.storage import DurableLog
from graft.storage.rejected import REJECTED_FILE, data_digest, read_rejected
from graft.testing.kv import get, put
from tests.support.driver import TICK, run_until
from tests.test_cli import CLITestCase, run, write_config

POISON = b"poison"


class PoisonFSM(KeyValueStateMachine):
    """The kv FSM with a bug: it raises on one particular command."""

    def apply(self, command: bytes, index: int) -> bytes:
        if command == POISON:
            raise RuntimeError("FSM bug on a poison command")
        return super().apply(command, index)


def one_node_config(directory: Path) -> ClusterConfig:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "cluster.yaml"
    path.write_text(
        "cluster: test\npeers:\n  a:\n    host: 127.0.0.1\n    ports: {p2p: 19999, api: 18999}\n"
    )
    return load_config(path)


def seed_log(data_dir: Path, commands: list[bytes], *, snapshot_at: int = 0) -> None:
    """A stopped node's data dir: ``commands`` committed at indexes 1.. in term 1."""
    log = DurableLog.open(data_dir, node_id="a", cluster="test", threaded=False, reactor=Clock())
    try:
        log.append_sync([Entry(index=i, term=1, data=c) for i, c in enumerate(commands, start=1)])
        log.set_hard_state_sync(HardState(term=1, vote="a", commit=len(commands)))
        if snapshot_at:
            meta = SnapshotMeta(
                index=snapshot_at, term=1, membership=Membership(voters=frozenset({"a"}))
            )
            fsm = KeyValueStateMachine()
            log.save_snapshot(meta, "kv", fsm.begin_snapshot())
    finally:
        log.close()


class PoisonEntryTests(unittest.TestCase):
    def setUp(self) -> None:
        self.cfg = one_node_config(Path(self.mktemp()))
        self.data_dir = self.cfg.data_dir("a")
        self.clock = Clock()

    def start_node(self) -> tuple[GraftNode, PoisonFSM]:
        """Start node a on its data dir as make_service does: the marks read from the dir."""
        storage = DurableLog.open(
            self.data_dir, node_id="a", cluster="test", reactor=self.clock, threaded=False
        )
        raft = RaftNode(
            RaftConfig(id="a", bootstrap=Membership(voters=frozenset({"a"}))),
            storage,
            random.Random(0),
        )
        fsm = PoisonFSM()
        node = build_node(
            raft=raft,
            storage=storage,
            fsm=fsm,
            clock=self.clock,
            settings=DriverSettings(
                tick_seconds=TICK,
                command_timeout=2.0,
                query_timeout=2.0,
                api_urls={"a": "http://127.0.0.1:18999"},
            ),
        )
        node.skip_rejected_entries(read_rejected(self.data_dir))
        node.startService()
        return node, fsm

    def run_until(self, condition: Any) -> None:
        run_until(self.clock, condition, "the condition")

    def stop(self, node: GraftNode) -> None:
        done: list[object] = []
        node.stopService().addBoth(done.append)
        self.run_until(lambda: bool(done))

    def test_stops_at_the_entry_then_skips_it_after_skip_entry(self) -> None:
        """The node stops on replay at the poison entry, naming its index, term, the error and
        the command to run; after `reject_entry` on the stopped node it starts, skips that
        entry (state unchanged) and applies the ones after it, and takes new writes."""
        seed_log(self.data_dir, [put("x", "1"), POISON, put("y", "3")])
        with capturedLogs() as events:
            node, fsm = self.start_node()
            self.run_until(lambda: node.stopping)
        self.flushLoggedErrors(RuntimeError)
        text = "\n".join(formatEvent(e) for e in events)
        self.assertIn("entry 2 (term 1)", text)
        self.assertIn("RuntimeError: FSM bug on a poison command", text)
        self.assertIn("graft skip-entry 2 -c CONFIG --node a", text)
        self.assertEqual(json.loads(fsm.query(get("x"))), {"value": "1"})
        self.assertEqual(json.loads(fsm.query(get("y"))), {"value": None})
        self.stop(node)

        # Restarting without the mark stops at the same entry again.
        node, fsm = self.start_node()
        self.run_until(lambda: node.stopping)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.stop(node)

        result = reject_entry(self.cfg, "a", 2)
        self.assertEqual((result["index"], result["term"]), (2, 1))
        self.assertEqual(result["sha256"], data_digest(POISON))

        node, fsm = self.start_node()
        self.run_until(lambda: node.is_leader() and node.status().applied >= 3)
        self.assertFalse(node.stopping)
        self.assertEqual(json.loads(fsm.query(get("y"))), {"value": "3"})
        answered: list[Any] = []
        node.submit([put("z", "4")]).addBoth(answered.append)
        self.run_until(lambda: bool(answered))
        self.assertEqual(answered[0][0].error, None)
        self.assertEqual(json.loads(fsm.query(get("z"))), {"value": "4"})
        self.assertEqual(self.flushLoggedErrors(), [])
        self.stop(node)

    def test_a_mark_for_other_data_is_not_applied(self) -> None:
        """A mark whose entry has other data than the log's (another entry took the index) does
        not skip it: the node applies the log's entry."""
        seed_log(self.data_dir, [put("x", "1"), put("y", "2")])
        from graft.storage.rejected import RejectedEntry, write_rejected

        write_rejected(
            self.data_dir, {2: RejectedEntry(index=2, term=1, sha256=data_digest(POISON))}
        )
        node, fsm = self.start_node()
        self.run_until(lambda: node.status().applied >= 2)
        self.assertEqual(json.loads(fsm.query(get("y"))), {"value": "2"})
        self.stop(node)


class RejectEntryTests(unittest.TestCase):
    def setUp(self) -> None:
        self.cfg = one_node_config(Path(self.mktemp()))
        self.data_dir = self.cfg.data_dir("a")

    def test_marks_index_term_and_digest_and_keeps_earlier_marks(self) -> None:
        seed_log(self.data_dir, [put("x", "1"), POISON, b"other poison"])
        reject_entry(self.cfg, "a", 2)
        reject_entry(self.cfg, "a", 3)
        marks = read_rejected(self.data_dir)
        self.assertEqual(sorted(marks), [2, 3])
        self.assertEqual(marks[2].sha256, data_digest(POISON))
        self.assertEqual(marks[3].term, 1)
        self.assertEqual((self.data_dir / REJECTED_FILE).stat().st_mode & 0o777, 0o600)

    def test_refuses_an_index_the_node_does_not_replay(self) -> None:
        """Beyond the log, covered by the snapshot, or not a command: refused, nothing
        written."""
        seed_log(self.data_dir, [put("x", "1"), put("y", "2"), POISON], snapshot_at=1)
        for index, fragment in ((9, "holds entries"), (1, "covered by")):
            with self.assertRaises(OperationError) as caught:
                reject_entry(self.cfg, "a", index)
            self.assertIn(fragment, str(caught.exception))
        self.assertFalse((self.data_dir / REJECTED_FILE).exists())

    def test_refuses_a_membership_entry(self) -> None:
        log = DurableLog.open(
            self.data_dir, node_id="a", cluster="test", threaded=False, reactor=Clock()
        )
        membership = encode_membership(Membership(voters=frozenset({"a"})))
        log.append_sync([Entry(index=1, term=1, kind=EntryKind.MEMBERSHIP, data=membership)])
        log.close()
        with self.assertRaises(OperationError) as caught:
            reject_entry(self.cfg, "a", 1)
        self.assertIn("not a command", str(caught.exception))

    def test_refuses_a_missing_data_dir(self) -> None:
        with self.assertRaises(OperationError) as caught:
            reject_entry(self.cfg, "a", 1)
        self.assertIn("does not exist", str(caught.exception))
        self.assertFalse(self.data_dir.exists())


class FakeOps:
    """Stands in for graft.ops."""

    OperationError = OperationError

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def require_data_dir(self, path: Any, *, hint: str = "") -> None:
        """The data dir check before the warning has tests of its own (tests/cli)."""

    def stopped_node_hint(self, node_id: str) -> str:
        return ""

    def reject_entry(self, cfg: Any, node_id: str, index: int) -> dict[str, Any]:
        self.calls.append((cfg.path, node_id, index))
        if index == 99:
            raise OperationError("the log holds entries 1..3, not 99; check the index")
        return {"index": index, "term": 1}


class SkipEntryCommandTests(CLITestCase):
    def setUp(self) -> None:
        import sys

        self.path = write_config(self.tmpdir())
        self.ops = FakeOps()
        import graft.ops

        sys.modules["graft.ops"] = self.ops  # type: ignore[assignment]
        self.addCleanup(sys.modules.__setitem__, "graft.ops", graft.ops)

    def test_asks_first_then_calls_reject_entry(self) -> None:
        """A loud warning; nothing changes unless confirmed; then graft.ops.reject_entry."""
        args = ["skip-entry", "7", "-c", str(self.path), "--node", "beta"]
        result = run(args, stdin="n\n")
        self.assertIn("UNSAFE", result.stderr)
        self.assertIn("every node that stops at index 7", result.stderr)
        self.assertErrorAfterProgress(result, "nothing was changed", "--yes")
        self.assertEqual(self.ops.calls, [])
        result = run([*args, "--yes"])
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertEqual(self.ops.calls, [(self.path, "beta", 7)])
        self.assertIn("marked entry 7 rejected on beta", result.stdout)

    def test_refusal_is_one_line(self) -> None:
        """An index the node does not hold: one line naming the problem, not a traceback."""
        result = run(["skip-entry", "99", "-c", str(self.path), "--node", "beta", "--yes"])
        self.assertErrorAfterProgress(result, "not 99")
        self.assertNotIn("internal error", result.stderr)

    def test_bad_index(self) -> None:
        for bad in ("0", "-1", "x"):
            result = run(["skip-entry", bad, "-c", str(self.path), "--node", "beta", "--yes"])
            self.assertNotEqual(result.exit_code, 0)
        self.assertEqual(self.ops.calls, [])
