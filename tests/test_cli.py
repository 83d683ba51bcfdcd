"""The ``graft`` command through click's CliRunner: output, exit codes and one-line errors."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
from click.testing import CliRunner, Result
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from graft.cli import app, cluster, dev, join, render
from graft.cli import node as node_commands
from graft.cli.errors import DEBUG_ENV
from graft.cluster_status import MemberStatus
from graft.testing.ports import dead_url
from tests.support.http_node import (
    Reply,
    Seen,
    error_reply,
    json_reply,
    start_fake_node,
)


def run(args: Sequence[str], stdin: str | bytes | None = None) -> Result:
    return CliRunner().invoke(app.main, list(args), input=stdin)


def write_config(directory: Path, api_ports: Sequence[int] = (18080, 18081, 18082)) -> Path:
    """A three-node config in ``directory`` (certificates at the default certs/ paths)."""
    lines = ["cluster: test", "peers:"]
    for number, (name, api) in enumerate(zip(("alpha", "beta", "gamma"), api_ports, strict=True)):
        lines += [
            f"  {name}:",
            "    host: 127.0.0.1",
            f"    ports: {{p2p: {19080 + number}, api: {api}}}",
        ]
    path = directory / "cluster.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


class CLITestCase(SynchronousTestCase):
    def tmpdir(self) -> Path:
        path = Path(self.mktemp())
        path.mkdir(parents=True)
        return path.resolve()

    def assertOneLineError(self, result: Result, *fragments: str) -> str:
        """The command failed with exactly one line on stderr containing ``fragments``."""
        self.assertNotEqual(result.exit_code, 0, result.output)
        self.assertNotIn("Traceback", result.output)
        lines = result.stderr.splitlines()
        self.assertEqual(len(lines), 1, result.stderr)
        self.assertTrue(lines[0].startswith("graft: error: "), lines[0])
        for fragment in fragments:
            self.assertIn(fragment, lines[0])
        return lines[0]

    def assertErrorAfterProgress(self, result: Result, *fragments: str) -> str:
        """Progress lines may come first; the failure itself is the last stderr line, the only
        one that is an error, and holds ``fragments``."""
        self.assertNotEqual(result.exit_code, 0, result.output)
        self.assertNotIn("Traceback", result.output)
        errors = [line for line in result.stderr.splitlines() if "error" in line]
        self.assertEqual(errors, result.stderr.splitlines()[-1:], result.stderr)
        self.assertTrue(errors[0].startswith("graft: error: "), errors[0])
        for fragment in fragments:
            self.assertIn(fragment, errors[0])
        return errors[0]


class GroupTests(CLITestCase):
    def test_version(self) -> None:
        """-v and --version print "graft 0.1.0"."""
        for flag in ("-v", "--version"):
            result = run([flag])
            self.assertEqual((result.exit_code, result.output), (0, "graft 0.1.0\n"))

    def test_help_lists_commands(self) -> None:
        """--help lists every top-level command."""
        result = run(["--help"])
        self.assertEqual(result.exit_code, 0)
        for name in ("start", "dev", "certs", "command", "query", "status", "completion"):
            self.assertIn(f"  {name} ", result.output)

    def test_usage_error_is_one_line(self) -> None:
        """An unknown option is one line naming the help to read, exit code 2."""
        result = run(["status", "--bogus"])
        self.assertOneLineError(result, "--bogus", "graft status --help")
        self.assertEqual(result.exit_code, 2)

    def test_unexpected_error_is_one_line(self) -> None:
        """A bug (an unexpected exception) is still one line, pointing at GRAFT_DEBUG."""

        def broken(settings: Any) -> Any:
            raise ZeroDivisionError("oops")

        self.patch(cluster, "make_client", broken)
        self.patch(os, "environ", {k: v for k, v in os.environ.items() if k != DEBUG_ENV})
        result = run(["status", "--url", "http://127.0.0.1:1"])
        self.assertOneLineError(result, "internal error ZeroDivisionError: oops", "GRAFT_DEBUG")


class CompletionTests(CLITestCase):
    def test_scripts(self) -> None:
        """`graft completion SHELL` prints a script wired to graft's completion variable."""
        for shell, marker in (("bash", "complete -o"), ("zsh", "compdef"), ("fish", "complete")):
            result = run(["completion", shell])
            self.assertEqual(result.exit_code, 0, result.output)
            self.assertIn("_GRAFT_COMPLETE", result.output)
            self.assertIn(marker, result.output)

    def test_unknown_shell(self) -> None:
        """An unsupported shell is a one-line usage error."""
        self.assertOneLineError(run(["completion", "tcsh"]), "tcsh")


class ConfigErrorTests(CLITestCase):
    def test_bad_config_is_one_line(self) -> None:
        """A config error is one line naming the file, and a non-zero exit."""
        path = self.tmpdir() / "bad.yaml"
        path.write_text("peers: [1, 2]\n")
        for args in (["status"], ["certs"], ["start", "alpha"], ["dev"]):
            self.assertOneLineError(run([*args, "-c", str(path)]), str(path), "peers")

    def test_missing_config_file(self) -> None:
        """A config path that does not exist is one line saying to pass an existing file."""
        path = self.tmpdir() / "nope.yaml"
        self.assertOneLineError(run(["status", "-c", str(path)]), "not found")

    def test_no_config_and_no_default(self) -> None:
        """Without -c and without conf/cluster.yaml, the error says to pass -c."""
        here = Path.cwd()
        os.chdir(self.tmpdir())
        self.addCleanup(os.chdir, here)
        self.patch(os, "environ", {k: v for k, v in os.environ.items() if k != "GRAFT_CONFIG"})
        self.assertOneLineError(run(["status"]), "pass -c FILE")

    def test_start_unknown_node(self) -> None:
        """`graft start` with a node that is not in the file lists the known ones."""
        path = write_config(self.tmpdir())
        self.assertOneLineError(run(["start", "delta", "-c", str(path)]), "alpha, beta, gamma")

    def test_start_needs_a_node(self) -> None:
        """`graft start` without a node (and no `node:` key) asks for one."""
        path = write_config(self.tmpdir())
        self.assertOneLineError(run(["start", "-c", str(path)]), "graft start NODE")

    def test_start_and_dev_without_certificates(self) -> None:
        """Missing certificates stop `start` and `dev` with advice to run `graft certs`."""
        path = write_config(self.tmpdir())
        for args in (["start", "alpha"], ["dev"]):
            self.assertOneLineError(run([*args, "-c", str(path)]), "graft certs -c")


class CertsTests(CLITestCase):
    def setUp(self) -> None:
        try:
            import graft.certs  # noqa: F401
        except ImportError as e:
            raise SkipTest(f"graft.certs is not available: {e}") from None

    def test_writes_then_refuses_to_overwrite(self) -> None:
        """certs writes the CA and each node's pair; a second run refuses without --force,
        --if-missing succeeds writing nothing, --force writes again."""
        directory = self.tmpdir()
        path = write_config(directory)
        first = run(["certs", "-c", str(path)])
        self.assertEqual(first.exit_code, 0, first.output)
        for name in ("ca.pem", "alpha.pem", "alpha.key", "gamma.pem", "gamma.key"):
            self.assertTrue((directory / "certs" / name).is_file(), name)
            self.assertIn(name, first.output)
        before = (directory / "certs" / "alpha.pem").read_bytes()

        self.assertOneLineError(run(["certs", "-c", str(path)]), "already exists", "--force")
        again = run(["certs", "-c", str(path), "--if-missing"])
        self.assertEqual(again.exit_code, 0, again.output)
        self.assertIn("nothing written", again.output)
        self.assertEqual((directory / "certs" / "alpha.pem").read_bytes(), before)

        forced = run(["certs", "-c", str(path), "--force"])
        self.assertEqual(forced.exit_code, 0, forced.output)
        self.assertNotEqual((directory / "certs" / "alpha.pem").read_bytes(), before)

    def test_force_and_if_missing_conflict(self) -> None:
        """--force with --if-missing is refused before anything is written."""
        directory = self.tmpdir()
        path = write_config(directory)
        self.assertOneLineError(run(["certs", "-c", str(path), "--force", "--if-missing"]))
        self.assertFalse((directory / "certs").exists())


class CommandTests(CLITestCase):
    def test_command_argument(self) -> None:
        """The argument is sent as the command; the FSM's JSON answer is printed for people
        and the index goes to stderr."""
        node = start_fake_node(
            self,
            Reply(
                body=b'{"changes": 2}',
                headers={"Graft-Index": "5", "Graft-Term": "2", "Graft-Leader": "alpha"},
            ),
        )
        result = run(["command", "--url", node.url, "INSERT 1;"])
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertEqual(node.seen[0].body, b"INSERT 1;")
        self.assertEqual(json.loads(result.stdout), {"changes": 2})
        self.assertIn("applied at index 5 (term 2, leader alpha)", result.stderr)

    def test_command_json_from_file(self) -> None:
        """-f FILE sends the file; --json prints index, term, leader and the parsed output."""
        node = start_fake_node(
            self, Reply(body=b'{"prev": null}', headers={"Graft-Index": "3", "Graft-Term": "1"})
        )
        script = self.tmpdir() / "cmd.json"
        script.write_bytes(b'{"op": "put"}')
        result = run(["command", "--url", node.url, "-f", str(script), "--json"])
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertEqual(node.seen[0].body, b'{"op": "put"}')
        self.assertEqual(
            json.loads(result.stdout),
            {"index": 3, "term": 1, "leader": None, "output": {"prev": None}},
        )

    def test_command_from_stdin(self) -> None:
        """Without an argument the command is read from stdin."""
        node = start_fake_node(self, Reply(body=b"done"))
        result = run(["command", "--url", node.url], stdin=b"DELETE FROM t;")
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertEqual(node.seen[0].body, b"DELETE FROM t;")
        self.assertEqual(result.stdout, "done\n")

    def test_empty_command_is_refused(self) -> None:
        """An empty command (e.g. stdin from /dev/null) is refused before anything is sent."""
        node = start_fake_node(self)
        self.assertOneLineError(run(["command", "--url", node.url], stdin=b""), "is empty")
        self.assertOneLineError(run(["command", "--url", node.url, "x", "-f", "y"]), "not both")
        self.assertEqual(node.seen, [])

    def test_fsm_error_rendering(self) -> None:
        """A 422 is one line saying the command was committed and rejected everywhere."""
        node = start_fake_node(
            self,
            json_reply(422, {"error": {"code": "fsm_error", "message": "no such table: t"}}),
        )
        result = run(["command", "--url", node.url, "INSERT INTO t VALUES (1);"])
        self.assertOneLineError(result, "rejected the command", "no such table: t", "fix")

    def test_forbidden_rendering(self) -> None:
        """An API error is one line with the code, status and the server's message."""
        node = start_fake_node(self, error_reply(403, "forbidden", "token lacks write"))
        result = run(["command", "--url", node.url, "x"])
        self.assertOneLineError(result, "forbidden (403): token lacks write")

    def test_bad_url(self) -> None:
        """A --url without a scheme is refused with an example of the expected form."""
        result = run(["command", "--url", "localhost:8080", "x"])
        self.assertOneLineError(result, "http://127.0.0.1:8080")

    def test_unreachable_node(self) -> None:
        """A node where nothing listens gives one line naming it as unreachable."""
        url = dead_url()
        result = run(["command", "--url", url, "--timeout", "0.2", "x"])
        self.assertOneLineError(result, f"{url} is unreachable")


class QueryTests(CLITestCase):
    def test_sql_result_as_table(self) -> None:
        """An SQL answer ({"columns", "rows"}) is printed as an aligned table with a count."""
        answer = {"columns": ["id", "name"], "rows": [[1, "turing"], [2, None]]}
        node = start_fake_node(self, json_reply(200, answer))
        result = run(["query", "--url", node.url, "SELECT * FROM users;"])
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertEqual(
            result.stdout.splitlines(),
            ["id  name", "--  ------", "1   turing", "2   NULL", "(2 rows)"],
        )

    def test_query_options_and_json(self) -> None:
        """--consistency and --min-index are passed on; --json prints the raw answer."""
        node = start_fake_node(self, json_reply(200, {"value": "v"}))
        result = run(
            [
                *("query", "--url", node.url, '{"op":"get"}'),
                *("--consistency", "strong", "--min-index", "12", "--json"),
            ]
        )
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertEqual(node.seen[0].path, "/query?consistency=strong&min_index=12")
        self.assertEqual(json.loads(result.stdout), {"value": "v"})

    def test_unknown_consistency(self) -> None:
        """An unknown consistency is a one-line usage error listing the valid ones."""
        result = run(["query", "--url", "http://127.0.0.1:1", "q", "--consistency", "eventual"])
        self.assertOneLineError(result, "eventual", "strong")


def leader_status(**extra: Any) -> dict[str, Any]:
    return {
        "id": "alpha",
        "role": "leader",
        "term": 3,
        "leader": "alpha",
        "commit": 10,
        "applied": 10,
        "last_index": 11,
        "progress": {"beta": {"match": 8, "lag": 3}},
        **extra,
    }


def follower_status(node: str, applied: int) -> dict[str, Any]:
    return {
        "id": node,
        "role": "follower",
        "term": 3,
        "leader": "alpha",
        "commit": 10,
        "applied": applied,
        "last_index": 10,
    }


class StatusTests(CLITestCase):
    def test_table_with_one_unreachable_node(self) -> None:
        """Without a membership from the cluster (these fakes answer /cluster/members with a
        status), status asks every member of the config; the dead one is a row and the exit
        code is 3, naming it."""
        alpha = start_fake_node(self, json_reply(200, leader_status()))
        beta = start_fake_node(self, json_reply(200, follower_status("beta", 9)))
        gamma = dead_url()
        path = write_config(self.tmpdir(), [port_of(u) for u in (alpha.url, beta.url, gamma)])
        result = run(["status", "-c", str(path)])
        self.assertEqual(result.exit_code, render.STATUS_UNREACHABLE_EXIT, result.output)
        self.assertEqual(
            result.stdout.splitlines(),
            [
                "node   member  role         term  leader  commit  applied  last index  lag  log"
                "  fsm  cert expires  reachable",
                "-----  ------  -----------  ----  ------  ------  -------  ----------  ---  ---"
                "  ---  ------------  ---------",
                "alpha  -       leader       3     alpha   10      10       11          0    -"
                "    -    -             yes",
                "beta   -       follower     3     alpha   10      9        10          3    -"
                "    -    -             yes",
                "gamma  -       unreachable  -     -       -       -        -           -    -"
                "    -    -             no",
            ],
        )
        self.assertIn("showing the configured members", result.stderr)
        self.assertIn("graft status: gamma did not answer: node gamma at", result.stderr)

    def test_json(self) -> None:
        """--json gives one object per member with reachable and the fields of the table."""
        alpha = start_fake_node(self, json_reply(200, leader_status(log_bytes=4096)))
        dead = dead_url()
        result = run(["status", "--url", alpha.url, "--url", dead, "--json"])
        self.assertEqual(result.exit_code, render.STATUS_UNREACHABLE_EXIT, result.output)
        rows = json.loads(result.stdout)
        self.assertEqual([row["reachable"] for row in rows], [True, False])
        self.assertEqual((rows[0]["role"], rows[0]["last_index"]), ("leader", 11))
        self.assertEqual(rows[0]["log_bytes"], 4096)
        self.assertEqual(
            set(rows[0]),
            {
                "node", "member", "url", "reachable", "role", "term", "leader", "commit",
                "applied", "last_index", "lag", "log_bytes", "fsm_bytes", "cert_expires",
            },
        )  # fmt: skip
        self.assertEqual(set(rows[1]), {"node", "member", "url", "reachable", "error"})

    def cluster(self, members: dict[str, Any], learners: tuple[str, ...] = ()) -> str:
        """Fake nodes for ``members`` (id -> its /status document, or None for a member that
        is down); each answers GET /cluster/members with all of them at their fake address.
        Returns the URL of the first, the only one a client is given."""
        nodes = {node: start_fake_node(self) for node, doc in members.items() if doc}
        addresses = {}
        for node, doc in members.items():
            port = port_of(nodes[node].url) if doc else port_of(dead_url())
            addresses[node] = {"host": "127.0.0.1", "p2p": 1, "api": port}
        document = {
            "leader": next((d["leader"] for d in members.values() if d), None),
            "voters": [n for n in members if n not in learners],
            "learners": list(learners),
            "addresses": addresses,
        }
        for node, fake in nodes.items():
            status = members[node]

            def answer(seen: Seen, status: dict[str, Any] = status) -> Reply:
                if seen.path == "/cluster/members":
                    return json_reply(200, document)
                return json_reply(200, status)

            fake.default = answer
        return nodes[next(iter(nodes))].url

    def test_membership_comes_from_the_cluster(self) -> None:
        """The client is given one member; the cluster's membership adds a voter and a
        learner added at run time, each asked at the address the cluster knows; exit 0."""
        url = self.cluster(
            {
                "alpha": leader_status(
                    certificate={"not_after": "2030-01-01T00:00:00Z"}, fsm_bytes=1536
                ),
                "beta": follower_status("beta", 10),
                "delta": {**follower_status("delta", 10), "role": "learner"},
            },
            learners=("delta",),
        )
        result = run(["status", "--url", url, "--json"])
        self.assertEqual(result.exit_code, 0, result.output)
        rows = json.loads(result.stdout)
        self.assertEqual(
            [(r["node"], r["member"], r["role"]) for r in rows],
            [("alpha", "voter", "leader"), ("beta", "voter", "follower"),
             ("delta", "learner", "learner")],
        )  # fmt: skip
        self.assertEqual(rows[0]["cert_expires"], "2030-01-01T00:00:00Z")
        table = run(["status", "--url", url])
        self.assertEqual(table.exit_code, 0, table.output)
        self.assertIn("1.5K", table.stdout)
        self.assertIn("2030-01-01T00:00:00Z", table.stdout)

    def test_unreachable_member_is_named(self) -> None:
        """A member the cluster knows (not in the client's list) that does not answer: exit
        3, and the line names it, its membership and why."""
        url = self.cluster(
            {"alpha": leader_status(), "beta": follower_status("beta", 10), "gamma": None}
        )
        result = run(["status", "--url", url])
        self.assertEqual(result.exit_code, render.STATUS_UNREACHABLE_EXIT, result.output)
        self.assertIn("graft status: voter gamma did not answer: node gamma at", result.stderr)
        self.assertIn("connection refused", result.stderr)
        self.assertNotIn("alpha did not answer", result.stderr)

    def test_no_leader(self) -> None:
        """No member that answers knows a leader: exit 4, naming each one's role and the
        member that is down."""
        down = {**follower_status("alpha", 10), "leader": None, "role": "pre-candidate"}
        url = self.cluster({"alpha": down, "beta": None, "gamma": None})
        result = run(["status", "--url", url])
        self.assertEqual(result.exit_code, render.STATUS_NO_LEADER_EXIT, result.output)
        self.assertIn("no leader (alpha pre-candidate); beta, gamma did not answer", result.stderr)
        self.assertIn("4  no member knows a leader", run(["status", "--help"]).stdout)

    def test_nobody_answers(self) -> None:
        """When no member answers, status exits non-zero saying why for each and to start the
        cluster."""
        url = dead_url()
        result = run(["status", "--url", url])
        self.assertNotEqual(result.exit_code, 0)
        self.assertIn("is the cluster running?", result.stderr)
        self.assertIn(f"graft status: {url} did not answer: ", result.stderr)

    def test_lag_without_leader(self) -> None:
        """Without a leader's view, lag is how far applied is behind the highest commit."""
        rows = render.status_rows(
            [
                MemberStatus(node="a", url="u1", status=follower_status("a", 4)),
                MemberStatus(node="b", url="u2", status={**follower_status("b", 10), "commit": 12}),
            ]
        )
        self.assertEqual([row["lag"] for row in rows], [8, 2])


class EntryPreviewTests(SynchronousTestCase):
    def test_text(self) -> None:
        """Text payloads are shown escaped on one line."""
        self.assertEqual(render.entry_preview(b"a\nb"), "a\\nb")

    def test_long_text_is_cut(self) -> None:
        """Long payloads are cut to PREVIEW_CHARS with an ellipsis."""
        preview = render.entry_preview(b"x" * 500)
        self.assertEqual(len(preview), render.PREVIEW_CHARS)
        self.assertTrue(preview.endswith("..."))

    def test_binary(self) -> None:
        """Binary payloads are shown as hex with their size."""
        self.assertEqual(render.entry_preview(b"\xff\x00"), "0xff00 (2 bytes)")


class DevClusterTests(CLITestCase):
    """DevCluster with stand-in child processes (plain Python), so no node code is needed."""

    def make(self, script: str) -> tuple[dev.DevCluster, list[str]]:
        path = write_config(self.tmpdir())
        from graft.config import load_config

        lines: list[str] = []
        cluster = dev.DevCluster(
            load_config(path),
            command_for=lambda node_id: [sys.executable, "-c", script, node_id],
            echo=lines.append,
        )
        self.addCleanup(cluster.stop)
        return cluster, lines

    def test_output_prefixed_and_deaths_reported(self) -> None:
        """Each child's lines carry its node id; when every child exits, wait() says which and
        with what code and returns 1."""
        script = "import sys; print('hello from', sys.argv[1]); sys.exit(3)"
        cluster, lines = self.make(script)
        cluster.start()
        self.assertEqual(cluster.wait(), 1)
        cluster.stop()  # joins the relays, so all output is in
        plain = [click.unstyle(line) for line in lines]
        for node in ("alpha", "beta", "gamma"):
            self.assertIn(f"{node:<5} | hello from {node}", plain)
            self.assertIn(f"graft dev: node {node} exited with code 3", plain)
        self.assertIn("graft dev: every node has exited; stopping", plain)

    def test_stop_terminates_children(self) -> None:
        """stop() ends running children (SIGTERM) and reports nothing was killed."""
        cluster, lines = self.make("import sys, time; print('up', flush=True); time.sleep(60)")
        cluster.start()
        cluster.stop()
        self.assertEqual(cluster.exit_codes(), {"alpha": -15, "beta": -15, "gamma": -15})
        self.assertFalse(any("killing" in line for line in lines))

    def test_failure_after_start_stops_the_nodes(self) -> None:
        """When `graft dev` fails after starting its nodes (here: printing the banner), it
        still stops them before reporting the error."""
        from graft.certs import generate_certificates
        from graft.config import load_config

        path = write_config(self.tmpdir())
        generate_certificates(load_config(path))
        marker = f"graft-dev-stand-in-{os.getpid()}-{id(self)}"
        script = "import time; print('up', flush=True); time.sleep(60)"

        def stand_in(config: Path, node_id: str, **options: Any) -> list[str]:
            return [sys.executable, "-c", script, marker, node_id]

        def broken_banner(cfg: Any) -> None:
            raise ZeroDivisionError("banner")

        self.patch(dev, "node_command", stand_in)
        self.patch(dev, "_print_dev_banner", broken_banner)
        self.patch(os, "environ", {k: v for k, v in os.environ.items() if k != DEBUG_ENV})
        self.addCleanup(lambda: kill_all(processes_mentioning(marker)))
        result = run(["dev", "-c", str(path)])
        self.assertOneLineError(result, "internal error ZeroDivisionError: banner")
        self.assertEqual(processes_mentioning(marker), [])

    def test_announce_leader(self) -> None:
        """Once a majority of members name the same leader, the cluster says it is ready."""
        alpha = start_fake_node(self, json_reply(200, leader_status()))
        beta = start_fake_node(self, json_reply(200, follower_status("beta", 10)))
        gamma = dead_url()
        path = write_config(self.tmpdir(), [port_of(u) for u in (alpha.url, beta.url, gamma)])
        from graft.client import GraftClient
        from graft.config import load_config

        lines: list[str] = []
        cluster = dev.DevCluster(load_config(path), echo=lines.append)
        client = GraftClient(urls=[alpha.url, beta.url, gamma], timeout=1.0)
        cluster.announce_leader(client, poll_s=0.001)
        self.assertEqual(
            [click.unstyle(line) for line in lines],
            ["graft dev: leader elected: alpha (term 3); the cluster is ready"],
        )


class StartTests(CLITestCase):
    def test_start_runs_twist_graft(self) -> None:
        """`graft start NODE -c FILE` runs the twist runner with `graft --config FILE --node
        NODE`, in this process, once the node's certificates exist; text logs unless asked."""
        try:
            from graft.certs import generate_certificates
        except ImportError as e:
            raise SkipTest(f"graft.certs is not available: {e}") from None
        from graft.config import load_config

        path = write_config(self.tmpdir())
        generate_certificates(load_config(path))
        calls: list[list[str]] = []
        self.patch(node_commands, "run_twist", calls.append)
        result = run(["start", "beta", "-c", str(path)])
        self.assertEqual(result.exit_code, 0, result.output)
        twist = ["--log-format=text", "--log-level=info"]
        self.assertEqual(calls, [[*twist, "graft", "--config", str(path), "--node", "beta"]])
        run(["start", "beta", "-c", str(path), "--log-format", "json", "--log-level", "warn"])
        self.assertEqual(calls[1][0:2], ["--log-format=json", "--log-level=warn"])


class StorageTests(CLITestCase):
    def setUp(self) -> None:
        from twisted.internet.task import Clock

        from graft.raft.types import Entry, EntryKind, HardState
        from graft.storage import DurableLog

        self.dir = self.tmpdir() / "data"
        log = DurableLog.open(
            self.dir,
            node_id="alpha",
            cluster="test",
            segment_bytes=4096,
            reactor=Clock(),
            threaded=False,
        )
        entries = [Entry(index=1, term=1, kind=EntryKind.NOOP)]
        entries += [Entry(index=i, term=2, data=b"SET k%d;" % i) for i in range(2, 201)]
        log.append_sync(entries)
        log.set_hard_state_sync(HardState(term=2, vote="alpha", commit=200))
        self.successResultOf(log.close())

    def corrupt(self) -> None:
        """Flip one byte in the middle of the second segment (not a torn tail)."""
        middle = sorted(self.dir.glob("*.seg"))[1]
        raw = bytearray(middle.read_bytes())
        raw[len(raw) // 2] ^= 0x40
        middle.write_bytes(bytes(raw))

    def test_check_good_dir(self) -> None:
        """`storage check` on a healthy data dir prints the report and exits 0."""
        result = run(["storage", "check", str(self.dir)])
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertIn("node 'alpha', cluster 'test'", result.stdout)
        self.assertEqual(result.stdout.splitlines()[-1], "OK")

    def test_check_corrupted_dir(self) -> None:
        """`storage check` on a damaged dir prints the problem and exits 1 with one error
        line saying what to do."""
        self.corrupt()
        result = run(["storage", "check", str(self.dir)])
        self.assertEqual(result.exit_code, 1, result.output)
        self.assertIn("PROBLEM", result.stdout)
        self.assertOneLineError(result, "is damaged", "restore")

    def test_dump_range(self) -> None:
        """`storage dump --from --to` prints one line per entry: index, term, kind, preview."""
        result = run(["storage", "dump", str(self.dir), "--to", "3"])
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertEqual(
            result.stdout.splitlines(),
            ["1\t1\tnoop\t", "2\t2\tnormal\tSET k2;", "3\t2\tnormal\tSET k3;"],
        )
        result = run(["storage", "dump", str(self.dir), "--from", "199", "--json"])
        records = [json.loads(line) for line in result.stdout.splitlines()]
        self.assertEqual([r["index"] for r in records], [199, 200])
        self.assertEqual(records[0]["data_b64"], "U0VUIGsxOTk7")

    def test_dump_corrupted_dir(self) -> None:
        """`storage dump` of a damaged log ends with one error line, no traceback."""
        self.corrupt()
        result = run(["storage", "dump", str(self.dir)])
        self.assertOneLineError(result)

    def test_dump_reversed_range(self) -> None:
        """--from after --to is refused with advice."""
        self.assertOneLineError(
            run(["storage", "dump", str(self.dir), "--from", "9", "--to", "2"]), "swap"
        )

    def test_missing_dir(self) -> None:
        """A data dir that does not exist is a one-line usage error."""
        self.assertOneLineError(run(["storage", "check", str(self.dir / "nope")]), "nope")


def processes_mentioning(text: str) -> list[int]:
    """The live processes whose command line contains ``text`` (from /proc): the nodes of one
    test's config, wherever they were re-parented to, so that a failure can clean them up."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        pid = int(cmdline.parent.name)
        try:
            if text in cmdline.read_bytes().decode(errors="replace") and not is_zombie(pid):
                found.append(pid)
        except OSError:
            continue  # exited while we looked
    return found


def is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True  # gone


def kill_all(pids: Sequence[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class DevProcessTests(CLITestCase):
    """`graft dev` for real: three `twist graft` children on free ports, driven by the CLI."""

    def setUp(self) -> None:
        try:
            import graft.certs
            import graft.service  # noqa: F401
        except ImportError as e:
            raise SkipTest(f"the node runtime is not available: {e}") from None

    def dev_config(self) -> Path:
        """A three-node config on free ports (p2p ports first, then API ports in
        ``self.ports``), with its certificates."""
        from graft.testing.cluster import free_ports

        self.ports = free_ports(6)
        path = self.tmpdir() / "cluster.yaml"
        path.write_text(
            "cluster: devtest\npeers:\n"
            + "".join(
                f"  {name}: {{host: 127.0.0.1, ports: {{p2p: {self.ports[i]}, "
                f"api: {self.ports[i + 3]}}}}}\n"
                for i, name in enumerate(("alpha", "beta", "gamma"))
            )
        )
        self.assertEqual(run(["certs", "-c", str(path)]).exit_code, 0)
        return path

    def start_dev(self, path: Path) -> tuple[subprocess.Popen[str], queue.Queue[str]]:
        dev = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from graft.cli.app import main; main()",
                "dev",
                "-c",
                str(path),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()

        def read() -> None:
            assert dev.stdout is not None
            for line in dev.stdout:
                lines.put(click.unstyle(line.rstrip("\n")))
            lines.put("<eof>")

        threading.Thread(target=read, daemon=True).start()

        def cleanup() -> None:
            if dev.poll() is None:
                dev.terminate()
                try:
                    dev.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    dev.kill()
                    dev.wait()
            # Whatever graft dev left behind (it crashed, or the test failed midway): its nodes
            # are the processes naming this test's config.
            kill_all(processes_mentioning(str(path)))
            if dev.stdout is not None:
                dev.stdout.close()

        self.addCleanup(cleanup)
        return dev, lines

    def wait_for_line(self, lines: queue.Queue[str], fragment: str, seen: list[str]) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            seen.append(line)
            if fragment in line or line == "<eof>":
                break
        self.assertIn(fragment, "\n".join(seen))

    def test_dev_cluster_serves_the_cli(self) -> None:
        """`graft dev` starts every node, announces the leader, serves `graft command`,
        `graft query` and `graft status`, and stops all nodes on SIGTERM with exit code 0."""
        path = self.dev_config()
        ports = self.ports
        dev, lines = self.start_dev(path)
        seen: list[str] = []
        self.wait_for_line(lines, "the cluster is ready", seen)
        output = "\n".join(seen)
        self.assertIn(f"alpha  API http://127.0.0.1:{ports[3]}", output)
        self.assertIn("Ctrl-C stops all nodes.", output)
        # Two nodes make the cluster ready; the third's prefixed lines may come after that.
        self.wait_for_line(lines, "beta  | ", seen)

        created = run(
            ["command", "-c", str(path), "CREATE TABLE t (v TEXT); INSERT INTO t VALUES ('x');"]
        )
        self.assertEqual(created.exit_code, 0, created.output)
        queried = run(
            ["query", "-c", str(path), "SELECT v FROM t;", "--consistency", "strong", "--json"]
        )
        self.assertEqual(json.loads(queried.stdout)["rows"], [["x"]])
        status = run(["status", "-c", str(path), "--json"])
        self.assertEqual([row["reachable"] for row in json.loads(status.stdout)], [True] * 3)

        dev.terminate()
        self.assertEqual(dev.wait(timeout=15), 0)
        self.wait_for_line(lines, "<eof>", seen)
        output = "\n".join(seen)
        self.assertIn("graft dev: stopping all nodes", output)
        self.assertNotIn("killing", output)
        self.assertNotIn("exited with", output)

    def test_nodes_stop_when_dev_is_killed(self) -> None:
        """If `graft dev` itself dies without cleaning up (SIGKILL), its nodes stop too: the
        kernel signals them when their parent dies, so nothing is left running."""
        path = self.dev_config()
        dev, lines = self.start_dev(path)
        self.wait_for_line(lines, "the cluster is ready", [])
        nodes = [pid for pid in processes_mentioning(str(path)) if pid != dev.pid]
        self.assertEqual(len(nodes), 3, nodes)
        dev.kill()
        dev.wait(timeout=10)
        deadline = time.monotonic() + 60  # a SIGTERMed node stops gracefully; slow under load
        left = nodes
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = [pid for pid in nodes if not is_zombie(pid)]
        self.assertEqual(left, [], "nodes still running after graft dev was killed")


MEMBERS = {
    "leader": "alpha",
    "voters": ["alpha", "beta"],
    "learners": ["delta"],
    "addresses": {
        "alpha": {"host": "127.0.0.1", "p2p": 19080, "api": 18080},
        "beta": {"host": "127.0.0.1", "p2p": 19081, "api": 18081},
        "delta": {"host": "10.0.0.4", "p2p": 19083, "api": 18083},
    },
}


class MembersTests(CLITestCase):
    def test_list_table_and_json(self) -> None:
        """`members list` shows one row per member with its role and addresses; --json prints
        the API's document."""
        node = start_fake_node(self, json_reply(200, MEMBERS))
        result = run(["members", "list", "--url", node.url])
        self.assertEqual(result.exit_code, 0, result.output)
        lines = result.stdout.splitlines()
        self.assertEqual(lines[0].split(), ["id", "role", "host", "p2p", "api"])
        self.assertEqual(lines[2].split(), ["alpha", "leader", "127.0.0.1", "19080", "18080"])
        self.assertEqual(lines[3].split()[:2], ["beta", "voter"])
        self.assertEqual(lines[4].split()[:2], ["delta", "learner"])
        result = run(["members", "list", "--url", node.url, "--json"])
        self.assertEqual(json.loads(result.stdout), MEMBERS)
        self.assertEqual(node.seen[0].path, "/cluster/members")

    def test_add(self) -> None:
        """`members add` posts id, host and ports, says what it is doing before and after, and
        prints the new membership."""
        promoted = dict(MEMBERS, voters=["alpha", "beta", "delta"], learners=[])
        node = start_fake_node(self, json_reply(200, promoted))
        result = run(
            [
                *("members", "add", "delta", "--host", "10.0.0.4"),
                *("--p2p", "19083", "--api", "18083", "--url", node.url),
            ]
        )
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertEqual(
            json.loads(node.seen[0].body),
            {"id": "delta", "host": "10.0.0.4", "ports": {"p2p": 19083, "api": 18083}},
        )
        progress = result.stderr.splitlines()
        self.assertIn("adding delta as a learner", progress[0])
        self.assertIn("delta caught up and is a voter", progress[1])
        self.assertIn("delta", result.stdout)

    def test_add_bad_port_and_refusal(self) -> None:
        """A port out of range is a usage error before anything is sent; a refusal by the
        cluster is one line with its message."""
        node = start_fake_node(self, error_reply(400, "bad_request", "delta is already a member"))
        result = run(
            [
                "members",
                "add",
                "delta",
                "--host",
                "h",
                "--p2p",
                "0",
                "--api",
                "1",
                "--url",
                node.url,
            ]
        )
        self.assertOneLineError(result, "--p2p")
        self.assertEqual(node.seen, [])
        result = run(
            [
                "members",
                "add",
                "delta",
                "--host",
                "h",
                "--p2p",
                "1",
                "--api",
                "2",
                "--url",
                node.url,
            ]
        )
        self.assertErrorAfterProgress(result, "delta is already a member")

    def test_remove(self) -> None:
        """`members remove ID` sends DELETE /cluster/members/ID and prints the membership."""
        node = start_fake_node(self, json_reply(200, MEMBERS))
        result = run(["members", "remove", "gamma", "--url", node.url])
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertEqual(
            (node.seen[0].method, node.seen[0].path), ("DELETE", "/cluster/members/gamma")
        )
        self.assertIn("removed gamma", result.stderr)

    def test_members_from_config(self) -> None:
        """With -c the members are the config's peers: an unreachable one is skipped."""
        node = start_fake_node(self, json_reply(200, MEMBERS))
        path = write_config(self.tmpdir(), api_ports=(port_of(dead_url()), port_of(node.url), 1))
        result = run(["members", "list", "-c", str(path)])
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertEqual(len(node.seen), 1)


class LeaderAndSnapshotTests(CLITestCase):
    def test_transfer(self) -> None:
        """`leader transfer [ID]` posts the target (null when omitted) and prints the new
        leader."""
        node = start_fake_node(self, json_reply(200, {"leader": "beta", "term": 7}))
        result = run(["leader", "transfer", "beta", "--url", node.url])
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertEqual(result.stdout, "leader is now beta (term 7)\n")
        run(["leader", "transfer", "--url", node.url, "--json"])
        self.assertEqual([json.loads(s.body) for s in node.seen], [{"id": "beta"}, {"id": None}])

    def test_snapshot_take(self) -> None:
        """`snapshot take` posts /cluster/snapshot and prints index and term."""
        node = start_fake_node(self, json_reply(200, {"index": 1200, "term": 3}))
        result = run(["snapshot", "take", "--url", node.url])
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertEqual(result.stdout, "snapshot taken at index 1200 (term 3)\n")
        self.assertEqual((node.seen[0].method, node.seen[0].path), ("POST", "/cluster/snapshot"))

    def test_snapshot_save(self) -> None:
        """`snapshot save FILE` downloads a recent enough snapshot as it is (no new one) and
        prints index, term, size and the file's sha256."""
        data = b"SQLite format 3\x00" + bytes(5000)
        node = start_fake_node(self, snapshot_node(data, snapshot_index=99, applied=120))
        target = self.tmpdir() / "backup.snap"
        result = run(["snapshot", "save", str(target), "--url", node.url])
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertEqual(target.read_bytes(), data)
        self.assertIn("saved the snapshot of ", result.stdout)
        self.assertIn("at index 99 (term 4) to ", result.stdout)
        digest = hashlib.sha256(data).hexdigest()
        self.assertIn(f"backup.snap: {len(data)} bytes, sha256 {digest}", result.stdout)
        self.assertEqual(
            [(s.method, s.path) for s in node.seen],
            [("GET", "/status"), ("GET", "/cluster/snapshot")],
        )
        result = run(["snapshot", "save", str(target), "--url", node.url, "--json"])
        document = json.loads(result.stdout)
        self.assertEqual(
            (document["size"], document["sha256"], document["taken"]), (len(data), digest, False)
        )

    def test_snapshot_save_takes_one_when_there_is_none(self) -> None:
        """On a node without a snapshot (a fresh cluster), `snapshot save` takes one there
        first, then downloads it, and says so."""
        node = start_fake_node(self, snapshot_node(b"data", snapshot_index=0, applied=3))
        target = self.tmpdir() / "backup.snap"
        result = run(["snapshot", "save", str(target), "--url", node.url])
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertTrue(result.stdout.startswith("took and saved the snapshot of "), result.stdout)
        self.assertEqual(
            [(s.method, s.path) for s in node.seen],
            [("GET", "/status"), ("POST", "/cluster/snapshot"), ("GET", "/cluster/snapshot")],
        )
        self.assertEqual(target.read_bytes(), b"data")

    def test_snapshot_save_takes_one_when_too_far_behind(self) -> None:
        """A snapshot more than --max-behind entries (default 1000) below the applied index is
        replaced by a new one before the download; within the bound it is downloaded as is."""
        node = start_fake_node(self, snapshot_node(b"data", snapshot_index=10, applied=1011))
        target = self.tmpdir() / "backup.snap"
        result = run(["snapshot", "save", str(target), "--url", node.url, "--json"])
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertTrue(json.loads(result.stdout)["taken"])
        self.assertIn(("POST", "/cluster/snapshot"), [(s.method, s.path) for s in node.seen])
        node.seen.clear()
        args = ["snapshot", "save", str(target), "--url", node.url, "--max-behind", "1001"]
        result = run(args)
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertNotIn(("POST", "/cluster/snapshot"), [(s.method, s.path) for s in node.seen])

    def test_snapshot_save_from_a_named_node(self) -> None:
        """--node picks that member of the config; a failed download is one line and leaves
        FILE absent."""
        node = start_fake_node(
            self, json_reply(200, {"applied": 7, "snapshot": {"index": 5, "term": 1}})
        )
        node.script = [
            json_reply(200, {"applied": 7, "snapshot": {"index": 5, "term": 1}}),
            error_reply(404, "not_found", "no snapshot yet: take one"),
        ]
        path = write_config(self.tmpdir(), api_ports=(1, port_of(node.url), 2))
        target = path.parent / "backup.snap"
        result = run(["snapshot", "save", str(target), "-c", str(path), "--node", "beta"])
        self.assertOneLineError(result, "not_found (404): no snapshot yet")
        self.assertFalse(target.exists())
        self.assertEqual(len(node.seen), 2)

    def test_snapshot_save_refuses_a_status_without_indexes(self) -> None:
        """A /status answer without snapshot.index and applied is one line, and nothing is
        taken or written."""
        node = start_fake_node(self, json_reply(200, {"id": "alpha"}))
        target = self.tmpdir() / "backup.snap"
        result = run(["snapshot", "save", str(target), "--url", node.url])
        self.assertOneLineError(result, "without snapshot.index and applied")
        self.assertEqual(len(node.seen), 1)
        self.assertFalse(target.exists())


def snapshot_node(data: bytes, *, snapshot_index: int, applied: int) -> Callable[[Seen], Reply]:
    """A fake node's answers for `snapshot save`: /status with these indexes, the take, and
    ``data`` as the snapshot."""

    def answer(seen: Seen) -> Reply:
        if seen.path == "/status":
            document = {"applied": applied, "snapshot": {"index": snapshot_index, "term": 4}}
            return json_reply(200, document)
        if seen.method == "POST":
            return json_reply(200, {"index": applied, "term": 4})
        headers = {"Graft-Snapshot-Index": str(snapshot_index or applied)}
        return Reply(body=data, headers={**headers, "Graft-Snapshot-Term": "4"})

    return answer


class ShutdownTests(CLITestCase):
    def test_shutdown_waits_until_down(self) -> None:
        """`shutdown NODE` posts /shutdown to NODE's API and returns once nothing answers."""
        stopper: list[threading.Thread] = []

        def stop_soon() -> None:
            time.sleep(0.2)
            node.stop()

        def answer(seen: Any) -> Reply:
            if seen.path == "/shutdown":
                # Stop listening a moment after answering, as a node does.
                stopper.append(threading.Thread(target=stop_soon))
                stopper[0].start()
                return json_reply(202, {"stopping": "beta"})
            return json_reply(200, {"status": "ok"})

        def join_stopper() -> None:
            for thread in stopper:
                thread.join(5)

        node = start_fake_node(self, answer)
        self.addCleanup(join_stopper)
        path = write_config(self.tmpdir(), api_ports=(1, port_of(node.url), 2))
        result = run(["shutdown", "beta", "-c", str(path), "--timeout", "5"])
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertEqual(result.stdout, "beta stopped\n")
        self.assertEqual(node.seen[0].path, "/shutdown")
        self.assertIn("/health", [s.path for s in node.seen])

    def test_still_running_after_timeout(self) -> None:
        """A node that keeps answering /health past --timeout is one line saying so."""
        node = start_fake_node(self, json_reply(202, {"stopping": "beta"}))
        result = run(["shutdown", "beta", "--url", node.url, "--timeout", "0.3"])
        self.assertErrorAfterProgress(result, "beta still answers", "--timeout")

    def test_unknown_node_and_many_urls(self) -> None:
        """NODE must be a peer of the config, and --url names one node only."""
        path = write_config(self.tmpdir())
        self.assertOneLineError(run(["shutdown", "zeta", "-c", str(path)]), "zeta")
        result = run(
            ["shutdown", "beta", "--url", "http://127.0.0.1:1", "--url", "http://127.0.0.1:2"]
        )
        self.assertOneLineError(result, "exactly one")


def write_join_config(directory: Path) -> Path:
    """A new node's own config: the cluster's name and just its own peer entry."""
    path = directory / "delta.yaml"
    path.write_text(
        "cluster: test\npeers:\n"
        "  delta:\n    host: 127.0.0.1\n    ports: {p2p: 19083, api: 18083}\n"
    )
    return path


class JoinTests(CLITestCase):
    def setUp(self) -> None:
        try:
            from graft.certs import generate_certificates
        except ImportError as e:
            raise SkipTest(f"graft.certs is not available: {e}") from None
        from graft.config import load_config

        self.path = write_join_config(self.tmpdir())
        generate_certificates(load_config(self.path))
        self.started: list[list[str]] = []
        self.patch(node_commands, "run_twist", self.started.append)
        self.patch(join, "JOIN_REFUSAL_WINDOW_S", 5.0)

    def test_join_then_start(self) -> None:
        """--join posts the node's id, host and ports from its own config, then starts it."""
        promoted = dict(MEMBERS, voters=["alpha", "beta", "delta"], learners=[])
        node = start_fake_node(self, json_reply(200, promoted))
        result = run(["start", "delta", "-c", str(self.path), "--join", node.url])
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertEqual(node.seen[0].path, "/cluster/members")
        self.assertEqual(
            json.loads(node.seen[0].body),
            {"id": "delta", "host": "127.0.0.1", "ports": {"p2p": 19083, "api": 18083}},
        )
        self.assertEqual(
            self.started[0][-5:], ["--config", str(self.path), "--node", "delta", "--join"]
        )
        self.assertIn("delta joined: voters alpha, beta, delta", result.stderr)

    def test_refusal_does_not_start(self) -> None:
        """A refusal is one line and the node is not started."""
        node = start_fake_node(self, error_reply(403, "forbidden", "needs an admin token"))
        result = run(["start", "delta", "-c", str(self.path), "--join", node.url])
        self.assertErrorAfterProgress(result, "was not started", "needs an admin token")
        self.assertEqual(self.started, [])
        result = run(["start", "delta", "-c", str(self.path), "--join", dead_url()])
        self.assertErrorAfterProgress(result, "was not started", "unreachable")
        self.assertEqual(self.started, [])

    def test_pending_answer_starts_the_node(self) -> None:
        """While the leader waits for the new node to catch up (no answer yet), the node is
        started; the answer is reported when it comes."""
        self.patch(join, "JOIN_REFUSAL_WINDOW_S", 0.1)
        release = threading.Event()
        self.addCleanup(release.set)

        def slow(seen: Any) -> Reply:
            release.wait(5)
            return json_reply(200, dict(MEMBERS, voters=["alpha", "delta"], learners=[]))

        node = start_fake_node(self, slow)
        result = run(["start", "delta", "-c", str(self.path), "--join", node.url])
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertEqual(len(self.started), 1)
        self.assertIn("no refusal", result.stderr)

    def test_node_must_be_in_its_config(self) -> None:
        """A node missing from its own config is one line, before any request."""
        node = start_fake_node(self)
        result = run(["start", "epsilon", "-c", str(self.path), "--join", node.url])
        self.assertOneLineError(result, "epsilon")
        self.assertEqual((node.seen, self.started), ([], []))


class FakeOps:
    """Stands in for graft.ops; records its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def restore_data_dir(self, cfg: Any, node_id: str, snapshot_file: Path) -> dict[str, Any]:
        self.calls.append(("restore", cfg.path, node_id, snapshot_file))
        return {"index": 42, "term": 3}

    def recover_membership(self, cfg: Any, node_id: str, members: list[str]) -> None:
        self.calls.append(("recover", cfg.path, node_id, members))

    def check_recovery(self, cfg: Any, node_id: str, members: list[str]) -> None:
        """Arguments are checked before the warning; the checks have tests of their own."""


class OfflineToolTests(CLITestCase):
    def use_ops(self, fake: FakeOps) -> None:
        """Stand ``fake``'s functions in for graft.ops's for this test."""
        import graft.ops

        self.patch(graft.ops, "restore_data_dir", fake.restore_data_dir)
        self.patch(graft.ops, "recover_membership", fake.recover_membership)
        self.patch(graft.ops, "check_recovery", fake.check_recovery)

    def setUp(self) -> None:
        self.path = write_config(self.tmpdir())
        self.snapshot = self.path.parent / "backup.snap"
        self.snapshot.write_bytes(b"snapshot")
        self.ops = FakeOps()

    def test_restore(self) -> None:
        """`restore FILE -c CONFIG --node ID` calls graft.ops.restore_data_dir with them."""
        self.use_ops(self.ops)
        result = run(["restore", str(self.snapshot), "-c", str(self.path), "--node", "beta"])
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertEqual(self.ops.calls, [("restore", self.path, "beta", self.snapshot)])
        self.assertIn("restored beta's data dir", result.stdout)
        self.assertIn("index: 42", result.stdout)

    def test_recover_asks_first(self) -> None:
        """`recover` prints a loud warning and changes nothing unless confirmed."""
        self.use_ops(self.ops)
        args = ["recover", "--members", "alpha,beta", "-c", str(self.path), "--node", "alpha"]
        result = run(args, stdin="n\n")
        self.assertIn("UNSAFE", result.stderr)
        self.assertErrorAfterProgress(result, "nothing was changed", "--yes")
        self.assertEqual(self.ops.calls, [])
        result = run(args, stdin="y\n")
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertEqual(self.ops.calls, [("recover", self.path, "alpha", ["alpha", "beta"])])

    def test_recover_yes(self) -> None:
        """--yes skips the question but not the warning."""
        self.use_ops(self.ops)
        result = run(
            ["recover", "--members", "alpha", "-c", str(self.path), "--node", "alpha", "--yes"]
        )
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertIn("UNSAFE", result.stderr)
        self.assertEqual(len(self.ops.calls), 1)

    def test_recover_bad_members(self) -> None:
        """Malformed --members are one line and nothing is called."""
        self.use_ops(self.ops)
        for members in ("", "a,,b", "Alpha", "a,a"):
            result = run(
                ["recover", "--members", members, "-c", str(self.path), "--node", "alpha", "--yes"]
            )
            self.assertOneLineError(result, "--members")
        self.assertEqual(self.ops.calls, [])
