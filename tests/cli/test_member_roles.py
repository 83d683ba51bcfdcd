"""`graft members add --non-voter`, `promote`, `demote`, `update`, and how the member list and
`graft status` show non-voters, against a fake node."""

from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import SkipTest

from graft.cli import node as node_commands
from graft.cli import render
from tests.support.http_node import error_reply, json_reply, start_fake_node
from tests.test_cli import CLITestCase, run, write_join_config

MEMBERS: dict[str, Any] = {
    "leader": "alpha",
    "voters": ["alpha", "beta", "gamma"],
    "learners": ["delta", "omega"],
    "non_voters": ["delta"],
    "addresses": {
        "alpha": {"host": "127.0.0.1", "p2p": 19080, "api": 18080},
        "beta": {"host": "127.0.0.1", "p2p": 19081, "api": 18081},
        "gamma": {"host": "127.0.0.1", "p2p": 19082, "api": 18082},
        "delta": {"host": "10.0.0.4", "p2p": 19083, "api": 18083},
    },
}


class MemberRolesCLITests(CLITestCase):
    def test_add_non_voter(self) -> None:
        """`members add --non-voter` posts the flag and says it added a non-voter."""
        node = start_fake_node(self, json_reply(200, MEMBERS))
        result = run(
            [
                *("members", "add", "delta", "--host", "10.0.0.4", "--non-voter"),
                *("--p2p", "19083", "--api", "18083", "--url", node.url),
            ]
        )
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertEqual(
            json.loads(node.seen[0].body),
            {
                "id": "delta",
                "host": "10.0.0.4",
                "ports": {"p2p": 19083, "api": 18083},
                "non_voter": True,
            },
        )
        self.assertIn("delta is a non-voter", result.stderr)
        self.assertIn("non-voters delta", result.stderr)

    def test_promote_and_demote(self) -> None:
        node = start_fake_node(self, json_reply(200, MEMBERS))
        result = run(["members", "promote", "delta", "--url", node.url])
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertIn("delta is a voter", result.stderr)
        result = run(["members", "demote", "beta", "--url", node.url])
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertIn("beta is a non-voter", result.stderr)
        self.assertEqual(
            [(s.method, s.path) for s in node.seen],
            [
                ("POST", "/cluster/members/delta/promote"),
                ("POST", "/cluster/members/beta/demote"),
            ],
        )

    def test_update(self) -> None:
        """`members update ID --host H` sends only the host; --p2p-port/--api-port (or
        --p2p/--api) add the ports; a refusal is one line."""
        node = start_fake_node(self, json_reply(200, MEMBERS))
        result = run(["members", "update", "delta", "--host", "10.0.0.4", "--url", node.url])
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertIn("delta is now advertised at 10.0.0.4", result.stderr)
        args = ["--p2p-port", "19093", "--api", "18093", "--url", node.url]
        result = run(["members", "update", "delta", "--host", "db4.example", *args])
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertEqual(
            [(s.method, s.path) for s in node.seen], [("PUT", "/cluster/members/delta")] * 2
        )
        self.assertEqual(json.loads(node.seen[0].body), {"host": "10.0.0.4"})
        self.assertEqual(
            json.loads(node.seen[1].body),
            {"host": "db4.example", "ports": {"p2p": 19093, "api": 18093}},
        )
        refusing = start_fake_node(self, error_reply(404, "not_found", "zed is not a member"))
        result = run(["members", "update", "zed", "--host", "h", "--url", refusing.url])
        self.assertOneLineError(result, "zed is not a member")

    def test_list_and_status_name_non_voters(self) -> None:
        """The member list shows a non-voter's role as non-voter (a joining learner stays a
        learner); the status table's member column too."""
        node = start_fake_node(self, json_reply(200, MEMBERS))
        result = run(["members", "list", "--url", node.url])
        self.assertEqual(result.exit_code, 0, result.output)
        roles = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()[2:]}
        self.assertEqual(roles["delta"], "non-voter")
        self.assertEqual(roles["omega"], "learner")
        self.assertEqual(roles["beta"], "voter")
        self.assertEqual(render._member_kind(MEMBERS, "delta"), "non-voter")
        self.assertEqual(render._member_kind(MEMBERS, "omega"), "learner")
        self.assertEqual(render._member_kind(MEMBERS, "gamma"), "voter")


class JoinAsNonVoterTests(CLITestCase):
    def setUp(self) -> None:
        try:
            from graft.certs import generate_certificates
        except ImportError as e:
            raise SkipTest(f"graft.certs is not available: {e}") from None
        from graft.config import load_config

        self.path = write_join_config(self.tmpdir())
        generate_certificates(load_config(self.path))
        self.started: list[Any] = []
        self.patch(node_commands, "run_twist", self.started.append)

    def test_start_join_non_voter(self) -> None:
        """`graft start ID --join URL --non-voter` asks for a non-voter, then starts."""
        added = dict(MEMBERS, learners=["delta"], non_voters=["delta"])
        node = start_fake_node(self, json_reply(200, added))
        args = ["start", "delta", "-c", str(self.path), "--join", node.url, "--non-voter"]
        result = run(args)
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertEqual(len(self.started), 1)
        self.assertTrue(json.loads(node.seen[0].body)["non_voter"])
        self.assertIn("as a non-voter", result.stderr)

    def test_non_voter_needs_join(self) -> None:
        result = run(["start", "delta", "-c", str(self.path), "--non-voter"])
        self.assertOneLineError(result, "--non-voter goes with --join")
        self.assertEqual(self.started, [])
