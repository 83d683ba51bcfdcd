"""The replica consistency check in the driver (graft.driver + graft.consistency): three
GraftNodes in memory (tests.test_node's network and storage), digests computed synchronously."""

from __future__ import annotations

import json
from typing import Any, cast

from prometheus_client import generate_latest
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure
from twisted.trial import unittest

from graft.consistency import MARKER_PREFIX, DigestBook, summarize
from graft.errors import NotFound
from graft.fsm import digest
from graft.fsm.kv import KeyValueStateMachine
from graft.raft.types import EntryKind
from graft.testing.kv import put
from tests.support.driver import NODES, DriverCluster


class RecordingFSM(KeyValueStateMachine):
    """kv that remembers every command it was given, and on ``diverge`` stores other values."""

    def __init__(self, *, diverge: bool = False) -> None:
        super().__init__()
        self.commands: list[bytes] = []
        self.diverge = diverge

    def apply(self, command: bytes, index: int) -> bytes:
        self.commands.append(command)
        if self.diverge:
            command = command.replace(b'"value": "', b'"value": "diverged-')
        return super().apply(command, index)


def run_now(f: Any, *args: Any) -> Deferred[Any]:
    return maybeDeferred(f, *args)


class CheckTests(DriverCluster):
    def setUp(self) -> None:
        made: list[RecordingFSM] = []

        def fsm() -> RecordingFSM:
            made.append(RecordingFSM())
            return made[-1]

        self.start_nodes(fsm=fsm, run_in_thread=run_now, check_timeout=1.0)
        self.fsms: dict[str, RecordingFSM] = dict(zip(NODES, made, strict=True))

    def result(self, d: Deferred[Any], seconds: float = 3.0) -> Any:
        """The outcome, a failure raised."""
        outcome = super().result(d, seconds)
        if isinstance(outcome, Failure):
            outcome.raiseException()
        return outcome

    def write(self, leader: str, count: int = 3) -> None:
        for k in range(count):
            self.result(self.network.nodes[leader].submit([put(f"k{k}", str(k))]))

    def test_equal_replicas_agree_and_markers_never_reach_the_fsm(self) -> None:
        leader = self.leader()
        self.write(leader)
        result = self.result(self.network.nodes[leader].check_replicas())
        self.assertTrue(result["ok"], result)
        self.assertTrue(result["complete"], result)
        self.assertEqual(result["mismatch"], [])
        self.assertEqual(sorted(result["members"]), sorted(NODES))
        expected = digest(self.fsms[leader])
        for member in result["members"].values():
            self.assertEqual(member, {"digest": expected, "error": None})
        # The marker is a NOOP with data at the check's index, on every node; no FSM saw it.
        for node_id in NODES:
            storage = self.network.nodes[node_id]._parts.storage
            entry = storage.entries(result["index"], result["index"] + 1)[0]
            self.assertEqual(entry.kind, EntryKind.NOOP)
            self.assertTrue(entry.data.startswith(MARKER_PREFIX))
            self.assertFalse(
                any(c.startswith(MARKER_PREFIX) for c in self.fsms[node_id].commands), node_id
            )
        status = self.network.nodes[leader].status()
        self.assertEqual(status.last_check, result)
        metrics = generate_latest(self.network.nodes[leader].metrics).decode()
        self.assertIn("graft_replica_digest_mismatch 0.0", metrics)
        self.assertIn(f"graft_replica_check_index {float(result['index'])}", metrics)

    def test_diverged_replica_is_reported(self) -> None:
        """A replica whose FSM stored other values is named in ``mismatch``; the gauge is 1 and
        the status of the node asked (a follower, forwarding to the leader) shows it."""
        leader = self.leader()
        odd, asked = (n for n in NODES if n != leader)
        self.fsms[odd].diverge = True
        self.write(leader)
        result = self.result(self.network.nodes[asked].check_replicas())
        self.assertFalse(result["ok"])
        self.assertTrue(result["complete"])
        self.assertEqual(result["mismatch"], [odd])
        for node_id in (leader, asked):
            node = self.network.nodes[node_id]
            self.assertEqual(cast(Any, node.status().last_check)["mismatch"], [odd])
            self.assertIn(
                "graft_replica_digest_mismatch 1.0", generate_latest(node.metrics).decode()
            )

    def test_unreachable_member_is_reported_not_a_mismatch(self) -> None:
        leader = self.leader()
        self.write(leader)
        cut = next(n for n in NODES if n != leader)
        self.network.isolate(cut)
        self.network.cut.discard(frozenset((cut, next(n for n in NODES if n not in (leader, cut)))))
        result = self.result(self.network.nodes[leader].check_replicas())
        self.assertTrue(result["ok"], result)
        self.assertFalse(result["complete"])
        self.assertIsNone(result["members"][cut]["digest"])
        self.assertIn("unreachable", result["members"][cut]["error"])

    def test_concurrent_checks_share_one_marker(self) -> None:
        """A check asked while one runs gets that one's result: one marker, one digest each."""
        leader = self.leader()
        node = self.network.nodes[leader]
        first, second = node.check_replicas(), node.check_replicas()
        a, b = self.result(first), self.result(second)
        self.assertEqual(a, b)
        markers = [
            e
            for e in node._parts.storage.entries(1, node._parts.storage.last_index() + 1)
            if e.kind is EntryKind.NOOP and e.data
        ]
        self.assertEqual(len(markers), 1)

    def test_digest_pins_the_state_at_the_marker(self) -> None:
        """A command proposed right after the marker commits and applies in the same batch as
        the marker on every node; each digest must still be of the state at the marker. (The
        fault suite saw replicas reported diverged: a batch's commands were all applied before
        its marker pinned the FSM, so a node that got the two in one batch digested a later
        state than a node that got the marker alone.)"""
        leader = self.leader()
        self.write(leader)
        at_marker = digest(self.fsms[leader])
        node = self.network.nodes[leader]
        check = node.check_replicas()
        later = node.submit([put("k0", "after the marker")])
        result = self.result(check)
        self.result(later)
        self.assertNotEqual(digest(self.fsms[leader]), at_marker)
        for member, answer in result["members"].items():
            self.assertEqual(answer["digest"], at_marker, member)

    def test_unknown_check_is_not_found(self) -> None:
        """A peer asking for a digest this node never computed gets not_found, not a hang."""
        leader = self.leader()
        node = self.network.nodes[leader]
        applied = node.status().applied
        d = node.handle_request("x", "replica_digest", {"check": "nope", "index": applied})
        box: list[Any] = []
        d.addBoth(box.append)
        self.assertIsInstance(box[0], Failure)
        self.assertIsInstance(box[0].value, NotFound)


class DigestBookTests(unittest.SynchronousTestCase):
    def test_at_most_max_running_and_keep(self) -> None:
        """Markers applied while MAX_RUNNING digests are still computing are skipped (a node
        replaying many markers pins few states); only the last ``keep`` are kept."""
        pending: list[Deferred[Any]] = []

        def later(f: Any) -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            pending.append(d)
            return d

        book = DigestBook(
            node_id="a", begin=lambda: lambda: "d", run_in_thread=later, keep=3, max_running=2
        )
        for index, check in enumerate(["c1", "c2", "c3", "c4"], start=1):
            book.marker_applied(index, MARKER_PREFIX + check.encode())
        self.assertEqual(len(pending), 2)
        skipped: list[Any] = []
        book.digest_of("c3", 3).addErrback(skipped.append)
        self.assertIn("skipped", skipped[0].getErrorMessage())
        gone: list[Any] = []
        book.digest_of("c1", 1).addErrback(gone.append)
        self.assertIsInstance(gone[0].value, NotFound)
        got: list[Any] = []
        book.digest_of("c2", 2).addCallback(got.append)
        pending[1].callback("ff")
        self.assertEqual(got, ["ff"])

    def test_other_markers_are_ignored(self) -> None:
        book = DigestBook(node_id="a", begin=lambda: lambda: "d", run_in_thread=maybeDeferred)
        book.marker_applied(5, b"something-else")
        failed: list[Any] = []
        book.digest_of("something-else", 5).addErrback(failed.append)
        self.assertEqual(len(failed), 1)

    def test_summarize_names_the_minority(self) -> None:
        result = summarize(
            "c",
            7,
            {
                "a": {"digest": "x", "error": None},
                "b": {"digest": "y", "error": None},
                "c": {"digest": "x", "error": None},
                "d": {"digest": None, "error": "unreachable"},
            },
        )
        self.assertEqual(
            (result["ok"], result["complete"], result["mismatch"]), (False, False, ["b"])
        )
        self.assertEqual(json.loads(json.dumps(result)), result)
