"""The fault suite's SQL workload (graft.testing.faults.sql_registers): the request bodies,
their answers from a real SQLite FSM read back as the register model's outputs (the same as
the kv FSM's for the same operations), malformed answers refused, and the snapshot counts that
make a run without a delta snapshot fail (graft.testing.faults.snapshot_counts, from the node
logs)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from twisted.trial import unittest

from graft.client_requests import Response
from graft.fsm.kv import KeyValueStateMachine
from graft.fsm.sqlite import SQLiteStateMachine
from graft.testing.faults.checker import check_linearizability
from graft.testing.faults.history import OpRecord
from graft.testing.faults.run import malformed_answers, send_setup
from graft.testing.faults.snapshot_counts import count_lines, coverage_anomalies, snapshot_counts
from graft.testing.faults.sql_registers import SETUP, MalformedAnswer, SqlRequests
from graft.testing.faults.workload import KvRequests, Workload, WorkloadConfig
from graft.testing.linearizability import Operation, step

SELECT = "SELECT v FROM registers WHERE k = ?"


def statements(body: bytes) -> list[tuple[str, list[Any]]]:
    return [(s["sql"], s["params"]) for s in json.loads(body)["statements"]]


class RequestBodyTests(unittest.SynchronousTestCase):
    def test_bodies(self) -> None:
        """put reads the old value then upserts; cas writes conditionally then reads the value
        left; a cas expecting null inserts only if the key is absent; get is one SELECT.
        Values are bound parameters."""
        sql = SqlRequests()
        self.assertEqual(
            statements(sql.body("get", "k1", value=None, expect=None)), [(SELECT, ["k1"])]
        )
        put = statements(sql.body("put", "k1", value="c1-2", expect=None))
        self.assertEqual(put[0], (SELECT, ["k1"]))
        self.assertIn("ON CONFLICT(k) DO UPDATE SET v = excluded.v", put[1][0])
        self.assertEqual(put[1][1][:2], ["k1", "c1-2"])
        cas = statements(sql.body("cas", "k1", value="c1-3", expect="c0-1"))
        self.assertEqual(
            cas[0], ("UPDATE registers SET v = ? WHERE k = ? AND v = ?", ["c1-3", "k1", "c0-1"])
        )
        self.assertEqual(cas[1], (SELECT, ["k1"]))
        absent = statements(sql.body("cas", "k1", value="c1-4", expect=None))
        self.assertIn("ON CONFLICT(k) DO NOTHING", absent[0][0])
        self.assertEqual(absent[0][1][:2], ["k1", "c1-4"])
        self.assertEqual(absent[1], (SELECT, ["k1"]))

    def test_kv_bodies_are_unchanged(self) -> None:
        """The kv FSM still gets its own JSON commands, byte for byte as before."""
        kv = KvRequests()
        self.assertEqual(
            kv.body("cas", "k", value="v", expect=None),
            b'{"op": "cas", "key": "k", "expect": null, "value": "v"}',
        )
        self.assertEqual(kv.body("get", "k", value=None, expect=None), b'{"op": "get", "key": "k"}')


def run_sql(fsm: SQLiteStateMachine, kind: str, body: bytes, index: int) -> Any:
    return json.loads(fsm.query(body) if kind == "get" else fsm.apply(body, index))


class AgainstTheFSMTests(unittest.SynchronousTestCase):
    def setUp(self) -> None:
        self.fsm = SQLiteStateMachine(data_dir=self.mktemp())
        self.addCleanup(self.fsm.close)
        answer = json.loads(self.fsm.apply(SETUP, 1))
        self.assertFalse([r for r in answer["results"] if "error" in r], answer)
        self.index = 1

    def apply(
        self, kind: str, key: str, value: str | None = None, expect: str | None = None
    ) -> dict[str, Any]:
        sql = SqlRequests()
        self.index += 1
        body = sql.body(kind, key, value=value, expect=expect)
        return sql.output(kind, run_sql(self.fsm, kind, body, self.index))

    def test_each_outcome(self) -> None:
        """The model's outputs for each case, including a failed cas's current value."""
        self.assertEqual(self.apply("get", "a"), {"value": None})
        self.assertEqual(self.apply("put", "a", "1"), {"prev": None})
        self.assertEqual(self.apply("put", "a", "2"), {"prev": "1"})
        self.assertEqual(self.apply("cas", "a", "3", "1"), {"ok": False, "value": "2"})
        self.assertEqual(self.apply("cas", "a", "3", "2"), {"ok": True, "value": "3"})
        self.assertEqual(self.apply("cas", "b", "x", None), {"ok": True, "value": "x"})
        self.assertEqual(self.apply("cas", "b", "y", None), {"ok": False, "value": "x"})
        self.assertEqual(self.apply("cas", "c", "z", "q"), {"ok": False, "value": None})
        self.assertEqual(self.apply("get", "a"), {"value": "3"})

    def test_same_outputs_as_the_kv_fsm_and_the_model(self) -> None:
        """A random sequence of operations gets, through SQL, exactly the answers the kv FSM
        gives and the checker's register model (linearizability.step) accepts."""
        kv_fsm = KeyValueStateMachine()
        kv = KvRequests()
        rng = random.Random(7)
        state: dict[str, str | None] = {}
        for i in range(400):
            key = rng.choice(["k0", "k1", "k2"])
            kind = rng.choice(["get", "put", "cas", "cas"])
            value = f"v{i}"
            expect = rng.choice([state.get(key), None, f"v{rng.randrange(max(1, i))}"])
            got = self.apply(kind, key, value, expect)
            body = kv.body(kind, key, value=value, expect=expect)
            raw = kv_fsm.query(body) if kind == "get" else kv_fsm.apply(body, i + 2)
            self.assertEqual(got, kv.output(kind, json.loads(raw)), (i, kind, key, expect))
            op = Operation(
                id=i,
                kind=kind,
                key=key,
                invoke=0.0,
                complete=1.0,
                value=value if kind != "get" else None,
                expect=expect,
                prev=got.get("prev"),
                ok=got.get("ok"),
                current=got.get("value"),
            )
            fits, state[key] = step(state.get(key), op)
            self.assertTrue(fits, (i, op))
        self.assertTrue(any(self.apply("get", k)["value"] for k in ("k0", "k1", "k2")))


class BeforeTheTableTests(unittest.SynchronousTestCase):
    def test_weak_read_of_a_state_without_the_table(self) -> None:
        """A state older than the setup command answers a read "no such table": every
        register absent, so null for a weak read (which may be that stale); at strong or
        default consistency it is a malformed answer."""
        fsm = SQLiteStateMachine(data_dir=self.mktemp())
        self.addCleanup(fsm.close)
        sql = SqlRequests()
        answer = json.loads(fsm.query(sql.body("get", "k", value=None, expect=None)))
        self.assertEqual(sql.output("get", answer, weak=True), {"value": None})
        self.assertRaises(MalformedAnswer, sql.output, "get", answer)
        self.assertRaises(MalformedAnswer, sql.output, "cas", answer, weak=True)


class MalformedAnswerTests(unittest.SynchronousTestCase):
    def test_answers_without_a_meaning_are_refused(self) -> None:
        """A statement's error, a row count other than 0 or 1, several rows, a value that is
        not text, or the wrong number of results is never read as an output."""
        sql = SqlRequests()
        rows = {"columns": ["v"], "types": ["TEXT"], "values": [["a"]]}
        write = {"last_insert_id": None, "rows_affected": 1}
        bad = [
            ("get", {"results": [{"error": "no such table: registers"}]}),
            ("get", {"results": [{**rows, "values": [["a"], ["b"]]}]}),
            ("get", {"results": [{**rows, "values": [[1]]}]}),
            ("get", {"results": [rows, rows]}),
            ("put", {"results": [rows, {**write, "rows_affected": 0}]}),
            ("put", {"results": [rows]}),
            ("cas", {"results": [{**write, "rows_affected": 2}, rows]}),
            ("cas", {"results": [{"error": "rolled back"}, {"error": "not run"}]}),
            ("cas", {"results": [write, {**rows, "columns": ["k"]}]}),
            ("cas", ["not", "an", "object"]),
        ]
        for kind, answer in bad:
            self.assertRaises(MalformedAnswer, sql.output, kind, answer)
        self.assertEqual(sql.output("cas", {"results": [write, rows]}), {"ok": True, "value": "a"})


class FakeCluster:
    node_ids = ["n1"]

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.sent: list[tuple[str, bytes | None]] = []

    def request(
        self, node: str, method: str, path: str, body: bytes | None = None, timeout: float = 4.0
    ) -> Response:
        self.sent.append((path, body))
        return Response(status=200, headers={"graft-index": "9"}, body=self.body, url=path)


class SetupCluster:
    """A leader that commits the setup at index 5 and followers that apply it a poll later."""

    node_ids = ["n1", "n2"]

    def __init__(self) -> None:
        self.sent: list[bytes | None] = []
        self.polls = 0

    def request(
        self, node: str, method: str, path: str, body: bytes | None = None, timeout: float = 4.0
    ) -> Response:
        self.sent.append(body)
        answer = b'{"results": [{"rows_affected": 0}]}'
        return Response(status=200, headers={"graft-index": "5"}, body=answer, url=path)

    def status(self, node: str, timeout: float = 0.5) -> dict[str, Any]:
        self.polls += 1
        applied = 5 if node == "n1" or self.polls > 6 else 4
        return {
            "id": node,
            "role": "leader" if node == "n1" else "follower",
            "leader": "n1",
            "applied": applied,
        }


class SetupTests(unittest.SynchronousTestCase):
    def test_setup_is_applied_everywhere_before_the_history(self) -> None:
        """The setup command goes to the leader once, and send_setup returns only once every
        node has applied its index; the kv workload sends nothing."""
        cluster = SetupCluster()
        send_setup(cluster, SqlRequests())  # type: ignore[arg-type]
        self.assertEqual(cluster.sent, [SETUP])
        self.assertGreater(cluster.polls, 6)
        kv_cluster = SetupCluster()
        send_setup(kv_cluster, KvRequests())  # type: ignore[arg-type]
        self.assertEqual(kv_cluster.sent, [])


class WorkloadRecordTests(unittest.SynchronousTestCase):
    def invoke(self, answer: bytes, kind: str = "cas") -> tuple[OpRecord, FakeCluster]:
        cluster = FakeCluster(answer)
        workload = Workload(cluster, WorkloadConfig(), 1, lambda: 0.0, SqlRequests())  # type: ignore[arg-type]
        return workload.invoke("c0", "n1", kind, "k", value="c0-1", expect="c9-9"), cluster

    def test_record_holds_the_model_output_and_the_answer(self) -> None:
        """A 200 answer is recorded as the model's output, the FSM's answer kept beside it."""
        answer = {
            "results": [
                {"last_insert_id": None, "rows_affected": 0},
                {"columns": ["v"], "types": ["TEXT"], "values": [["c3-4"]]},
            ]
        }
        record, cluster = self.invoke(json.dumps(answer).encode())
        self.assertEqual(record.output, {"ok": False, "value": "c3-4"})
        self.assertEqual(record.answer, answer)
        self.assertEqual((record.index, record.error), (9, None))
        self.assertEqual(cluster.sent[0][0], "/command")
        self.assertEqual(malformed_answers([record]), [])

    def test_malformed_answer_fails_the_run(self) -> None:
        """A 200 whose answer has no meaning is recorded as such and is an anomaly."""
        record, _ = self.invoke(b'{"results": [{"error": "no such table: registers"}]}', "get")
        self.assertIsNone(record.output)
        anomalies = malformed_answers([record])
        self.assertEqual([a.kind for a in anomalies], ["malformed_answer"])
        self.assertIn("no such table", anomalies[0].message)

    def test_checker_judges_translated_outputs(self) -> None:
        """Translated outputs feed the checker: a failed cas with the value it found is
        linearizable after the put; the same cas answered as applied (rows_affected 1) while
        the register held another value than it expected is not."""

        def rec(op_id: int, kind: str, t: float, **kw: Any) -> OpRecord:
            return OpRecord(
                id=op_id,
                kind=kind,
                client="c0",
                node="n1",
                key="k",
                invoke=t,
                complete=t + 1,
                status=200,
                **kw,
            )

        sql = SqlRequests()
        write = {"last_insert_id": None, "rows_affected": 1}
        rows = {"columns": ["v"], "types": ["TEXT"], "values": [["a"]]}
        good = [
            rec(
                1,
                "put",
                0,
                value="a",
                output=sql.output("put", {"results": [{**rows, "values": []}, write]}),
            ),
            rec(
                2,
                "cas",
                2,
                value="b",
                expect="x",
                output=sql.output("cas", {"results": [{**write, "rows_affected": 0}, rows]}),
            ),
        ]
        self.assertEqual(check_linearizability(good), ([], []))
        lying = [
            good[0],
            rec(
                2,
                "cas",
                2,
                value="b",
                expect="x",
                output=sql.output("cas", {"results": [write, rows]}),
            ),
        ]
        anomalies, _ = check_linearizability(lying)
        self.assertEqual([a.kind for a in anomalies], ["not_linearizable"])


LOG = """\
2026-12-06T17:07:02+0000 [graft.node#info] node n1 starting in term 0: log 1..0, commit 0
2026-12-06T17:07:03+0000 [graft.node#info] snapshot at index 100 (term 1) written in 0.02 s, whole
2026-12-06T17:07:04+0000 [graft.node#info] snapshot at index 200 (term 1) written in 0.01 s, a delta
2026-12-06T17:07:05+0000 [graft.node#info] snapshot at index 300 (term 1) written in 0.01 s, a delta
2026-12-06T17:07:06+0000 [graft.service#info] restoring the FSM from the snapshot at index 300
2026-12-06T17:07:06+0000 [graft.node#info] node n1 starting in term 1: log 301..310, commit 0
2026-12-06T17:07:07+0000 [graft.snapshot#info] received snapshot 500 (581632 bytes) from n2
2026-12-06T17:07:07+0000 [graft.node#info] installed snapshot 500 from the leader (FSM restored \
in 0.03 s, off the reactor thread)
2026-12-06T17:07:08+0000 [graft.node#info] delta snapshot dropped: not the latest; keeping 500
2026-12-06T17:07:09+0000 [graft.node#critical] the core installed snapshot 600 but no file arrived
2026-12-06T17:07:10+0000 [graft.node#info] snapshot at index 700 (term 2) written in 0.02 s, whole
2026-12-06T17:07:11+0000 [graft.node#info] installed snapshot 900 from the leader (FSM restored \
in 0.03 s, off the reactor thread)
"""


class SnapshotCountTests(unittest.SynchronousTestCase):
    def test_counts_from_the_node_logs(self) -> None:
        """Whole and delta snapshots, installs (those on a node that had written a snapshot
        of its own since it started apart), restores and dropped deltas are counted per node
        from its log (a missing log counts nothing) and summed."""
        base = Path(self.mktemp())
        base.mkdir()
        (base / "n1.log").write_text(LOG)
        (base / "n2.log").write_text(LOG.splitlines()[1] + "\n")
        counts = snapshot_counts({"n1": base / "n1.log", "n2": base / "n2.log", "n3": base / "x"})
        self.assertEqual(
            counts["per_node"]["n1"],
            {
                "taken": 4,
                "whole": 2,
                "delta": 2,
                "installed": 2,
                "installed_live": 1,
                "restored_at_start": 1,
                "delta_dropped": 1,
            },
        )
        self.assertEqual((counts["taken"], counts["whole"], counts["delta"]), (5, 3, 2))
        self.assertEqual(counts["per_node"]["n3"]["taken"], 0)

    def test_a_run_without_a_delta_fails(self) -> None:
        """No delta snapshot in any log is the no_delta_snapshots anomaly; one is enough."""
        only_whole = count_lines(LOG.splitlines()[1])
        self.assertEqual(
            [a.kind for a in coverage_anomalies({**only_whole, "per_node": {}})],
            ["no_delta_snapshots"],
        )
        self.assertEqual(coverage_anomalies(count_lines(LOG)), [])
