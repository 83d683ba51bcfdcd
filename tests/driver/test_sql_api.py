"""The SQLite FSM's JSON form through the HTTP API (in memory) of real GraftNodes: POST /command
to a follower (forwarded to the leader) and GET /query?q= carry it unchanged, and every replica
ends with the same state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from treq.testing import StubTreq
from twisted.internet.defer import Deferred, maybeDeferred

from graft.api import make_api_resource
from graft.fsm import digest
from graft.fsm.sqlite import SQLiteStateMachine
from tests.api.fakes import Settings
from tests.support.driver import NODES, DriverCluster


class SqlJsonOverApiTests(DriverCluster):
    def setUp(self) -> None:
        self.fsms: dict[str, SQLiteStateMachine] = {}
        names = iter(NODES)

        def fsm() -> SQLiteStateMachine:
            name = next(names)
            data_dir = Path(self.mktemp())
            self.fsms[name] = machine = SQLiteStateMachine(data_dir=data_dir, base_dir=data_dir)
            self.addCleanup(machine.close)
            return machine

        # Queries run in the test's thread: the cluster's clock is not a reactor with threads.
        self.start_nodes(fsm=fsm, run_query=lambda f, *args: maybeDeferred(f, *args))
        self.leader_id = self.leader()
        self.follower_id = next(n for n in NODES if n != self.leader_id)
        node = self.network.nodes[self.follower_id]
        self.stub: Any = StubTreq(make_api_resource(node, Settings(), reactor=self.clock))

    def finish(self, pending: Deferred[Any]) -> tuple[int, Any, Any]:
        box: list[Any] = []
        pending.addBoth(box.append)

        def answered() -> bool:
            self.stub.flush()
            return bool(box)

        self.wait_until(answered, "the API answered", seconds=10.0)
        response = box[0]
        body: list[bytes] = []
        self.stub.content(response).addCallback(body.append)
        self.stub.flush()
        return response.code, response, json.loads(body[0])

    def command(self, document: Any) -> tuple[int, Any]:
        code, response, body = self.finish(
            self.stub.post(
                "http://127.0.0.1:8080/command",
                data=json.dumps(document).encode(),
                headers={"Content-Type": ["application/json"]},
            )
        )
        self.assertEqual(response.headers.getRawHeaders(b"Content-Type"), [b"application/json"])
        return code, body

    def test_parameterised_command_and_query(self) -> None:
        """A JSON-form command sent to a follower is applied once, with its parameters as
        data; a failing statement is a 200 with its error; GET /query?q= with the JSON form
        answers typed rows; every replica has the same digest."""
        code, body = self.command(
            {
                "statements": [
                    {"sql": "CREATE TABLE u(id INTEGER PRIMARY KEY, name TEXT, at DATETIME)"},
                    {"sql": "INSERT INTO u(name, at) VALUES (?, ?)", "params": ["o'neil", None]},
                    {"sql": "INSERT INTO u(name) VALUES (:n)", "params": {"n": 2**60}},
                ]
            }
        )
        self.assertEqual(code, 200)
        self.assertEqual(
            body["results"][1:],
            [{"last_insert_id": 1, "rows_affected": 1}, {"last_insert_id": 2, "rows_affected": 1}],
        )
        code, body = self.command(
            {
                "statements": [
                    {"sql": "INSERT INTO u(id, name) VALUES (?, ?)", "params": [3, "c"]},
                    {"sql": "INSERT INTO u(id, name) VALUES (?, ?)", "params": [1, "dup"]},
                ],
                "transaction": False,
            }
        )
        self.assertEqual(code, 200)
        self.assertEqual(body["results"][1], {"error": "UNIQUE constraint failed: u.id"})
        code, body = self.command({"statements": [{"sql": "SELECT ?", "params": [2**63]}]})
        self.assertEqual(code, 422)
        self.assertEqual(body["error"]["code"], "fsm_error")
        self.assertIn("outside SQLite's range", body["error"]["message"])
        query = {
            "statements": [{"sql": "SELECT * FROM u WHERE id <= ? ORDER BY id", "params": [3]}]
        }
        params = urlencode({"q": json.dumps(query), "consistency": "strong"})
        code, _, body = self.finish(self.stub.get(f"http://127.0.0.1:8080/query?{params}"))
        self.assertEqual(code, 200)
        self.assertEqual(
            body,
            {
                "results": [
                    {
                        "columns": ["id", "name", "at"],
                        "types": ["INTEGER", "TEXT", "DATETIME"],
                        "values": [[1, "o'neil", None], [2, str(2**60), None], [3, "c", None]],
                    }
                ]
            },
        )
        applied = self.network.nodes[self.leader_id].status().applied
        for name in NODES:
            self.wait_until(
                lambda name=name: self.network.nodes[name].status().applied >= applied,  # type: ignore[misc]
                f"{name} applied {applied}",
            )
        digests = {digest(fsm) for fsm in self.fsms.values()}
        self.assertEqual(len(digests), 1, "the replicas differ")
