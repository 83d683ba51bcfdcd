"""Bound parameters in `graft command`/`graft query` (-p, --param-json) and in graft.client
(execute, select): the SQLite state machine's JSON form on the wire, its answers rendered."""

from __future__ import annotations

import json
from typing import Any

from click.testing import CliRunner, Result
from twisted.trial.unittest import SynchronousTestCase

from graft.cli import app
from graft.client import GraftClient
from graft.sql_form import sql_request
from tests.support.http_node import json_reply, start_fake_node

WRITE = {"results": [{"last_insert_id": 3, "rows_affected": 1}]}
ROWS = {
    "results": [
        {"columns": ["id", "name"], "types": ["INTEGER", "TEXT"], "values": [[3, "o'neil"]]}
    ]
}


def run(args: list[str]) -> Result:
    return CliRunner().invoke(app.main, args)


class CliParameterTests(SynchronousTestCase):
    def assertOneLineError(self, result: Result, *fragments: str) -> None:
        """The command failed with one error line on stderr holding ``fragments``."""
        self.assertNotEqual(result.exit_code, 0, result.output)
        lines = result.stderr.splitlines()
        self.assertEqual(len(lines), 1, result.stderr)
        self.assertTrue(lines[0].startswith("graft: error: "), lines[0])
        for fragment in fragments:
            self.assertIn(fragment, lines[0])

    def test_command_with_typed_params(self) -> None:
        """Each -p binds the next ?, typed: numbers, null and true as JSON, "quoted" text as
        a string, anything else as the text itself; the body is the JSON form."""
        node = start_fake_node(self, json_reply(200, WRITE))
        result = run(
            [
                *("command", "--url", node.url, "INSERT INTO t VALUES (?, ?, ?, ?, ?, ?)"),
                *("-p", "42", "-p", "o'neil", "-p", "null", "-p", '"7"', "-p", "2.5"),
                *("--param", "9007199254740993"),
            ]
        )
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertEqual(node.seen[0].headers.get("content-type"), "application/json")
        self.assertEqual(
            json.loads(node.seen[0].body),
            {
                "statements": [
                    {
                        "sql": "INSERT INTO t VALUES (?, ?, ?, ?, ?, ?)",
                        "params": [42, "o'neil", None, "7", 2.5, 9007199254740993],
                    }
                ]
            },
        )
        self.assertEqual(result.stdout, "1 row affected, last insert id 3\n")

    def test_query_with_named_params_as_a_table(self) -> None:
        """--param-json binds names; the rows print as a table."""
        node = start_fake_node(self, json_reply(200, ROWS))
        result = run(
            [
                *("query", "--url", node.url, "SELECT id, name FROM t WHERE id = :id"),
                *("--param-json", '{"id": 3}'),
            ]
        )
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertEqual(json.loads(node.seen[0].body)["statements"][0]["params"], {"id": 3})
        self.assertEqual(
            result.stdout.splitlines(), ["id  name", "--  ------", "3   o'neil", "(1 row)"]
        )

    def test_failed_statement_exits_non_zero(self) -> None:
        """A statement's error is printed and the command exits 1 naming it."""
        answer = {"results": [{"error": "rolled back: statement 2 failed"}, {"error": "boom"}]}
        node = start_fake_node(self, json_reply(200, answer))
        result = run(["command", "--url", node.url, '{"statements": []}'])
        self.assertEqual(result.exit_code, 1, result.output)
        self.assertIn("error: boom", result.stdout)
        self.assertIn("statement 1 failed", result.stderr)

    def test_bad_parameters_are_refused_before_sending(self) -> None:
        node = start_fake_node(self)
        self.assertOneLineError(
            run(["query", "--url", node.url, "SELECT ?", "-p", "1", "--param-json", "[1]"]),
            "not both",
        )
        self.assertOneLineError(
            run(["query", "--url", node.url, "SELECT ?", "--param-json", "{"]), "not valid JSON"
        )
        self.assertEqual(node.seen, [])

    def test_without_params_the_text_is_sent_as_is(self) -> None:
        node = start_fake_node(self, json_reply(200, {"changes": 1}))
        result = run(["command", "--url", node.url, "INSERT INTO t VALUES (1);"])
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertEqual(node.seen[0].body, b"INSERT INTO t VALUES (1);")
        self.assertEqual(node.seen[0].headers.get("content-type"), "text/plain")


class ClientSqlTests(SynchronousTestCase):
    def test_execute_and_select(self) -> None:
        """execute() posts the JSON form (bytes as BLOBs) to /command and returns the results;
        select() posts to /query with the consistency."""
        node = start_fake_node(self, json_reply(200, WRITE))
        client = GraftClient(urls=[node.url], timeout=5.0)
        results = client.execute(
            [("INSERT INTO t VALUES (?, ?)", [b"\x00\xff", None]), "DELETE FROM u"],
            transaction=False,
        )
        self.assertEqual(results, WRITE["results"])
        seen = node.seen[0]
        self.assertEqual((seen.method, seen.path), ("POST", "/command"))
        self.assertEqual(seen.headers.get("content-type"), "application/json")
        self.assertEqual(
            json.loads(seen.body),
            {
                "statements": [
                    {"sql": "INSERT INTO t VALUES (?, ?)", "params": [{"blob": "AP8="}, None]},
                    {"sql": "DELETE FROM u"},
                ],
                "transaction": False,
            },
        )
        node.script.append(json_reply(200, ROWS))
        rows = client.select([("SELECT * FROM t WHERE id = :id", {"id": 3})], consistency="weak")
        self.assertEqual(rows, ROWS["results"])
        self.assertEqual(node.seen[1].path, "/query?consistency=weak")

    def test_sql_request_refuses_what_cannot_be_bound(self) -> None:
        """A lone string (not a list of statements) and values SQLite cannot bind (a list,
        a dict: JSON could carry them, the node would refuse them) are TypeErrors here."""
        self.assertRaises(TypeError, sql_request, "SELECT 1")
        for value in ([1, 2], {"a": 1}, object()):
            bad: Any = [("SELECT ?", [value])]
            self.assertRaises(TypeError, sql_request, bad)
