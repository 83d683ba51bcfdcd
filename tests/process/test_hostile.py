"""Hostile input against live 3-node clusters (kv and SQLite): each input of issue #14 gets its
agreed answer, and after each one every node is up, the replicas are equal, and at the end a
restart of every node replays the log to the same state. Then an HTTP fuzz of the API
(graft.testing.fuzz) against each FSM, with the same invariants.

One cluster per FSM serves all its inputs (a cluster takes seconds to start). Each input is a
named case: when one fails, the case is recorded, the cluster is replaced by a fresh one if the
input broke it, and the next case runs, so that one report names every input that fails.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from graft.testing import fuzz
from graft.testing.cluster import LocalCluster, Response
from graft.testing.hostile import (
    DOCUMENTED_5XX,
    KV_FSM,
    SQLITE_FSM,
    assert_nodes_up,
    assert_replicas_equal,
    assert_restart_replays,
    auth,
    down_nodes,
    hostile_cluster,
)
from graft.testing.kv import get, put
from graft.testing.process_case import ProcessTestCase

DEEP = b"[" * 5000
# Long enough for a deterministic work budget to run out on a slow, busy machine.
SLOW_REQUEST_S = 60.0
RECURSIVE = b"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT max(x) FROM c"
MAX_ROWID = 9223372036854775807
# Requests per FSM for the fuzz in `make test`; `make fuzz` runs many more.
FUZZ_REQUESTS = int(os.environ.get("GRAFT_TEST_FUZZ_REQUESTS", "400"))


class _Hostile(ProcessTestCase):
    fsm = KV_FSM

    def setUp(self) -> None:
        self.failures: list[str] = []
        self.keys: set[str] = set()
        self.cluster = self.new_cluster()
        self.leader, _ = self.cluster.wait_for_leader(timeout=30)

    def new_cluster(self) -> LocalCluster:
        cluster = hostile_cluster(Path(self.mktemp()), self.fsm)
        self.addCleanup(cluster.close)
        self.clusters().append(cluster)
        cluster.start()
        return cluster

    @property
    def followers(self) -> list[str]:
        return [n for n in self.cluster.node_ids if n != self.leader]

    def send(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        node: str | None = None,
        role: str | None = "write",
        timeout: float = 30.0,
    ) -> Response:
        headers = auth(role) if role else {}
        resp = self.cluster.request(node or self.leader, method, path, body, headers, timeout)
        if resp.status >= 500 and resp.status not in DOCUMENTED_5XX:
            raise AssertionError(f"{method} {path[:80]}: undocumented {resp.status}: {resp.body!r}")
        return resp

    def expect(self, resp: Response, status: int, code: str | None = None) -> None:
        """``resp`` has ``status`` and, for an error, the JSON error body with ``code``."""
        shown = resp.body[:300]
        if resp.status != status:
            raise AssertionError(f"expected {status} {code or ''}, got {resp.status}: {shown!r}")
        if code is not None:
            error = json.loads(resp.body).get("error", {})
            if error.get("code") != code or not error.get("message"):
                raise AssertionError(f"expected code {code} with a message, got {shown!r}")

    def expect_refused_or_ok(self, resp: Response) -> None:
        """Either outcome is agreed for an input an FSM may make deterministic or refuse: 200,
        or 422 fsm_error. The replica check after the case decides."""
        if resp.status != 200:
            self.expect(resp, 422, "fsm_error")

    def case(self, name: str, body: Callable[[], None]) -> None:
        """Run one input; then check every node is up and the replicas are equal. A failure
        is recorded under ``name``, and a broken cluster replaced by a fresh one."""
        try:
            body()
        except Exception as e:
            self.failures.append(f"{name}: {type(e).__name__}: {e}")
        try:
            assert_replicas_equal(self.cluster, self.keys)
        except Exception as e:
            self.failures.append(f"{name} (afterwards): {type(e).__name__}: {e}")
            self.replace_cluster()

    def replace_cluster(self) -> None:
        self.cluster.close()
        self.keys = set()
        self.cluster = self.new_cluster()
        self.leader, _ = self.cluster.wait_for_leader(timeout=30)

    def finish(self) -> None:
        """The last case: a restart of every node replays to the same state."""
        try:
            assert_restart_replays(self.cluster, self.keys)
        except Exception as e:
            self.failures.append(f"restart replays: {type(e).__name__}: {e}")
        if self.failures:
            self.fail(
                f"{len(self.failures)} hostile-input case(s) failed:\n" + "\n".join(self.failures)
            )


class KeyValueHostileTests(_Hostile):
    fsm = KV_FSM

    def test_bad_inputs(self) -> None:
        """Each of issue #14's kv and API inputs gets its agreed answer and breaks nothing."""
        self.case("kv lone surrogate", self.lone_surrogate)
        self.case("kv deep nesting as a command", self.deep_command)
        self.case("kv deep nesting as a query", self.deep_query)
        self.case("kv integer of 5,000 digits", self.huge_integer)
        self.case("deep nesting as a /commands body", self.deep_batch)
        self.case("deep nesting as an admin body", self.deep_admin)
        self.case("min_index with thousands of digits", self.huge_min_index)
        self.case("a batch of 100k tiny commands", self.huge_batch)
        self.finish()

    def lone_surrogate(self) -> None:
        """Issue #14: a put of a lone surrogate was answered 200, and the next put of the same
        key stopped every node for good. Now the first is refused (or stored as it came) and the
        second succeeds everywhere."""
        self.keys.add("k")
        first = self.send("POST", "/command", b'{"op":"put","key":"k","value":"\\ud800"}')
        self.expect_refused_or_ok(first)
        self.expect(self.send("POST", "/command", put("k", "x")), 200)
        for node in self.cluster.node_ids:
            got = self.send("POST", "/query", get("k"), node=node, role="read")
            self.expect(got, 200)
            if got.json() != {"value": "x"}:
                raise AssertionError(f"{node} answers {got.body!r} for k")

    def deep_command(self) -> None:
        self.expect(self.send("POST", "/command", DEEP), 422, "fsm_error")

    def deep_query(self) -> None:
        for node in self.cluster.node_ids:
            self.expect(
                self.send("POST", "/query", DEEP, node=node, role="read"), 400, "bad_request"
            )
            weak = self.send("POST", "/query?consistency=weak", DEEP, node=node, role="read")
            self.expect(weak, 400, "bad_request")

    def huge_integer(self) -> None:
        """Found by the fuzz: an integer past Python's digit limit (4,300) in a kv command
        raised ValueError in the FSM and stopped every node; in a query it was a 500."""
        number = b"1" * 5000
        command = b'{"op":"put","key":"k","value":' + number + b"}"
        self.expect(self.send("POST", "/command", command), 422, "fsm_error")
        query = b'{"op":"get","key":' + number + b"}"
        self.expect(self.send("POST", "/query", query, role="read"), 400, "bad_request")

    def deep_batch(self) -> None:
        self.expect(self.send("POST", "/commands", DEEP), 400, "bad_request")

    def deep_admin(self) -> None:
        for path in ("/cluster/members", "/cluster/leader"):
            self.expect(self.send("POST", path, DEEP, role="admin"), 400, "bad_request")

    def huge_min_index(self) -> None:
        """5,000 digits (past Python's int digit limit) and 4,000 (parsed, then too large for
        the forward to the leader): 400 on the leader and on a follower, at each consistency."""
        for digits in (5000, 4000):
            for node in (self.leader, self.followers[0]):
                for consistency in ("", "&consistency=weak", "&consistency=strong"):
                    path = f"/query?min_index={'9' * digits}{consistency}"
                    resp = self.send("POST", path, get("k"), node=node, role="read")
                    self.expect(resp, 400, "bad_request")

    def huge_batch(self) -> None:
        """100,000 commands of one byte each (~500 KB, under the body limit): refused whole."""
        batch = json.dumps(["x"] * 100_000).encode()
        self.expect(
            self.send("POST", "/commands", batch, timeout=SLOW_REQUEST_S), 413, "payload_too_large"
        )


class SQLiteHostileTests(_Hostile):
    fsm = SQLITE_FSM

    def test_bad_inputs(self) -> None:
        """Each of issue #14's SQLite inputs gets its agreed answer and breaks nothing."""
        self.case("AUTOINCREMENT at the largest rowid", self.autoincrement_full)
        self.case("unbounded WITH RECURSIVE in a command", self.recursive_command)
        self.case("unbounded WITH RECURSIVE in a query", self.recursive_query)
        self.case("a NUL character in SQL", self.nul_character)
        self.case("a command returning 200,000 rows", self.many_rows)
        self.case("random rowid after the largest", self.random_rowid)
        self.case("file name from pragma_database_list", self.database_list)
        self.case("sqlite_version() and friends in a command", self.library_functions)
        self.case("fts3_tokenizer() in a command", self.tokenizer_pointer)
        self.finish()

    def autoincrement_full(self) -> None:
        """Issue #14: SQLITE_FULL from AUTOINCREMENT was taken for a disk failure and stopped
        every node. It is the command's fault: 422, and nothing changes. (A row placed at the
        largest rowid directly may itself be refused; then there is nothing more to try.)"""
        create = b"CREATE TABLE a(id INTEGER PRIMARY KEY AUTOINCREMENT, x);"
        create += b"INSERT INTO a(id, x) VALUES (%d, 1);" % (MAX_ROWID - 1)
        self.expect(self.send("POST", "/command", create), 200)
        # The first row takes the largest rowid, the second finds none left.
        full = b"INSERT INTO a(x) VALUES (2); INSERT INTO a(x) VALUES (3);"
        self.expect(self.send("POST", "/command", full), 422, "fsm_error")
        at_max = b"CREATE TABLE b(id INTEGER PRIMARY KEY AUTOINCREMENT, x);"
        at_max += b"INSERT INTO b(id, x) VALUES (%d, 1);" % MAX_ROWID
        placed = self.send("POST", "/command", at_max)
        self.expect_refused_or_ok(placed)
        if placed.status == 200:
            next_row = self.send("POST", "/command", b"INSERT INTO b(x) VALUES (2)")
            self.expect(next_row, 422, "fsm_error")

    def recursive_command(self) -> None:
        """Issue #14: every node ran it forever, not even answering /health. A deterministic
        work budget ends it on every replica alike: 422."""
        resp = self.send("POST", "/command", RECURSIVE, timeout=SLOW_REQUEST_S)
        self.expect(resp, 422, "fsm_error")

    def recursive_query(self) -> None:
        """Issue #14: a query that never ends froze the node (it ran on the reactor thread).
        With a time limit it ends in 504 query_timeout, on a follower (weak) and forwarded to
        the leader (default), and the nodes answer /health afterwards."""
        follower = self.followers[0]
        for consistency in ("weak", "default"):
            path = f"/query?timeout=1s&consistency={consistency}"
            resp = self.send("POST", path, RECURSIVE, node=follower, role="read")
            self.expect(resp, 504, "query_timeout")
        assert_nodes_up(self.cluster)

    def nul_character(self) -> None:
        """Found by the fuzz: a NUL character in a script made sqlite3.complete_statement
        raise ValueError in the FSM, which stopped every node; in a query it was a 500."""
        self.expect(self.send("POST", "/command", b"SELECT 'a\x00b';"), 422, "fsm_error")
        query = self.send("POST", "/query", b"SELECT 'a\x00b'", role="read")
        self.expect(query, 400, "bad_request")

    def many_rows(self) -> None:
        """Issue #14: nothing bounded what a command's final SELECT returns (every replica
        builds the whole answer in memory). A row cap refuses it: 422."""
        script = b"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 200000) "
        script += b"SELECT x FROM c"
        resp = self.send("POST", "/command", script, timeout=SLOW_REQUEST_S)
        self.expect(resp, 422, "fsm_error")

    def random_rowid(self) -> None:
        """Issue #14: after a row at the largest rowid SQLite picks a random one: three nodes
        stored three rowids. Refused or made deterministic; the replica check decides."""
        script = b"CREATE TABLE w(x); INSERT INTO w(rowid, x) VALUES (%d, 1);" % MAX_ROWID
        script += b"INSERT INTO w(x) VALUES (2);"
        self.expect_refused_or_ok(self.send("POST", "/command", script))

    def database_list(self) -> None:
        """Issue #14: each node stored its own file path."""
        script = b"CREATE TABLE p(f); INSERT INTO p SELECT file FROM pragma_database_list;"
        self.expect_refused_or_ok(self.send("POST", "/command", script))

    def library_functions(self) -> None:
        """What the SQLite library says of itself. The nodes of this test share one library, so
        this shows only that the commands are answered (200, or 422 if refused) and break
        nothing; a mismatch of libraries is refused when nodes connect."""
        self.expect(self.send("POST", "/command", b"CREATE TABLE v(a);"), 200)
        calls = (
            "sqlite_version()",
            "sqlite_source_id()",
            "sqlite_compileoption_get(0)",
            "timediff('now', '2000-01-01')",  # SQLite 3.43+; elsewhere "no such function"
        )
        for call in calls:
            resp = self.send("POST", "/command", f"INSERT INTO v VALUES ({call});".encode())
            self.expect_refused_or_ok(resp)

    def tokenizer_pointer(self) -> None:
        """fts3_tokenizer('simple') returns a pointer into the process: a different value on
        each node (where the library has it at all)."""
        script = b"CREATE TABLE ft(a); INSERT INTO ft VALUES (fts3_tokenizer('simple'));"
        self.expect_refused_or_ok(self.send("POST", "/command", script))


class FuzzTests(ProcessTestCase):
    """A few hundred random requests per FSM (hypothesis, derandomized): no undocumented 5xx,
    no client timeout, no node death; then the replicas are equal and replay after a restart."""

    def run_fuzz(self, fsm: str) -> None:
        cluster = fuzz.fuzz_cluster(Path(self.mktemp()), fsm)
        self.addCleanup(cluster.close)
        self.clusters().append(cluster)
        cluster.start()
        cluster.wait_for_leader(timeout=30)
        fuzz.prepare(cluster)
        stats = fuzz.run(cluster, FUZZ_REQUESTS)
        (cluster.base / "fuzz-summary.txt").write_text(stats.summary() + "\n")
        problems = list(stats.violations)
        if stats.sent < FUZZ_REQUESTS and not stats.stopped:
            problems.append(f"hypothesis generated only {stats.sent} requests")
        if stats.deaths or stats.stopped:
            problems.append(f"stopped early: {stats.stopped}; deaths: {stats.deaths}")
        down = down_nodes(cluster)
        if down:
            problems.append(f"nodes down after the run: {down}")
        else:
            try:
                assert_restart_replays(cluster, stats.kv_keys)
            except Exception as e:
                problems.append(f"replicas/restart: {type(e).__name__}: {e}")
        if problems:
            self.fail(f"{stats.summary()}\n" + "\n".join(problems[:20]))

    def test_kv(self) -> None:
        self.run_fuzz(KV_FSM)

    def test_sqlite(self) -> None:
        self.run_fuzz(SQLITE_FSM)
