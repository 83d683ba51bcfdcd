"""A hypothesis-driven fuzz of the HTTP API against a live cluster, and its runner.

Each request has a random method, path (the real routes and junk), query string (the real
parameters with hostile values: huge, negative, unicode, empty, repeated), headers
(Content-Type, Authorization junk or a real token, Origin, a large header within the server's
limits) and body (random bytes, JSON of random shapes including deep nesting, kv commands,
SQL from a small grammar that includes the constructs known to hurt an FSM). It goes to one of
the nodes' API ports on 127.0.0.1, never anywhere else.

What must hold (checked here and by the caller): every answer is a 1xx-4xx, or the documented
503/504, or a dropped connection; no answer takes longer than CLIENT_TIMEOUT_S; no node dies;
afterwards the replicas are equal and a restart of every node replays to the same state.

The requests that could legitimately take a cluster apart (POST /shutdown, removing a member,
adding a well-formed member) never carry the admin token: they get 403.

``python -m graft.testing.fuzz --requests N`` (``make fuzz``) runs N requests against a kv
and an SQLite cluster in turn and prints requests sent, status counts, node deaths and whether
the replicas were equal before and after a restart.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.parse
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from graft.testing.cluster import LocalCluster
from graft.testing.hostile import (
    DOCUMENTED_5XX,
    KV_FSM,
    SQLITE_FSM,
    TOKENS,
    assert_restart_replays,
    down_nodes,
    fsm_kind,
    hostile_cluster,
    log_tail,
)

# The longest a request may take: commands and queries time out within seconds and admin
# operations the fuzz can start (a snapshot, a leadership transfer) finish well within this.
CLIENT_TIMEOUT_S = 30.0
# Examples per hypothesis run; long runs are made of many runs with successive seeds (the
# engine remembers what it generated within a run).
CHUNK = 1000
# Waits on an index that never comes end at the query timeout: keep it short for the fuzz.
QUERY_TIMEOUT_MS = 2000

_MAX_INT64 = 9223372036854775807


def fuzz_cluster(base: Path, fsm: str) -> LocalCluster:
    """The cluster the fuzz runs against: tokens on, a short query timeout."""
    return hostile_cluster(base, fsm, api={"query_timeout_ms": QUERY_TIMEOUT_MS})


def prepare(cluster: LocalCluster) -> None:
    """Give the fuzz something to work on: for SQLite, the tables its grammar names (a random
    script rarely creates one and then writes to it)."""
    if fsm_kind(cluster) != "sqlite":
        return
    leader, _ = cluster.wait_for_leader(timeout=30)
    script = ";".join(
        f"CREATE TABLE {name}(id INTEGER PRIMARY KEY{autoincrement}, x, y TEXT)"
        for name, autoincrement in (("t", ""), ("u", ""), ("w", ""), ("a", " AUTOINCREMENT"))
    )
    resp = cluster.request(leader, "POST", "/command", script.encode(), _auth("write"), 30)
    if resp.status != 200:
        raise AssertionError(f"could not create the fuzz's tables: {resp.status} {resp.body!r}")


def _auth(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


# -- generators ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FuzzRequest:
    node: int  # index into the cluster's nodes
    method: str
    path: str  # with the query string, already percent-encoded
    headers: tuple[tuple[str, str], ...]
    body: bytes | None
    role: str | None  # the token's role, None for no or a junk token

    def describe(self) -> str:
        body = "" if self.body is None else f" body={self.body[:120]!r}({len(self.body)} B)"
        return f"{self.method} {self.path[:200]} role={self.role}{body}"


ROUTES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("/command", ("POST",)),
    ("/command/", ("POST",)),
    ("/commands", ("POST",)),
    ("/query", ("GET", "POST")),
    ("/query/", ("GET", "POST")),
    ("/status", ("GET",)),
    ("/health", ("GET",)),
    ("/ready", ("GET",)),
    ("/metrics", ("GET",)),
    ("/cluster/members", ("GET", "POST")),
    ("/cluster/leader", ("POST",)),
    ("/cluster/snapshot", ("GET", "POST")),
    ("/cluster/check", ("GET",)),
    ("/shutdown", ("POST",)),
)
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "FOO", "get")
PARAMS = ("consistency", "min_index", "max_lag_ms", "q", "redirect", "encoding", "timeout")
KV_KEYS = ("k0", "k1", "k2", "k3", "", "ключ", "a b", "\ud800", "k\x00")
TABLES = ("t", "u", "w", '"odd name"', "sqlite_sequence", "a")

_surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
# Text with every kind of character, lone surrogates included.
any_text = st.text(st.one_of(st.characters(), _surrogates), max_size=24)
digits = st.integers(1, 5000).map(lambda n: "9" * n)
hostile_ints = st.one_of(
    st.integers(-10, 100).map(str),
    st.sampled_from(
        [str(_MAX_INT64), str(_MAX_INT64 + 1), str(-_MAX_INT64 - 1), "1e9", "0x10", "1.5"]
    ),
    st.integers(19, 40).map(lambda n: "1" + "0" * n),
    digits,
    st.integers(1, 500).map(lambda n: "-" + "9" * n),
)


def _json_ascii(value: Any) -> str:
    return json.dumps(value, ensure_ascii=True)


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        any_text,
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(
            st.sampled_from(
                ("op", "key", "value", "id", "host", "ports", "p2p", "api", "b64", "expect")
            )
            | any_text,
            inner,
            max_size=5,
        ),
    ),
    max_leaves=20,
)
deep_nesting = st.builds(
    lambda opener, n, closed: (opener * n + ("]" * n if closed and opener == "[" else "")).encode(),
    st.sampled_from(["[", '{"a":', '[{"op":', "(", '{"id":']),
    st.integers(1, 20000),
    st.booleans(),
)
huge_number_json = st.builds(
    lambda n, key: b'{"op":"put","key":"k0","value":' + b"1" * n + b"}" if key else b"1" * n,
    st.integers(1, 6000),
    st.booleans(),
)


@st.composite
def kv_commands(draw: st.DrawFn) -> str:
    op = draw(st.sampled_from(["put", "cas", "delete", "get", "nope", None]))
    doc: dict[str, Any] = {"op": op}
    key = draw(st.one_of(st.sampled_from(KV_KEYS), any_text, st.integers(), st.none()))
    if draw(st.integers(0, 9)):
        doc["key"] = key
    if op in ("put", "cas") or draw(st.integers(0, 9)) == 0:
        doc["value"] = draw(st.one_of(any_text, st.just("\ud800"), json_values))
    if op == "cas" or draw(st.integers(0, 9)) == 0:
        doc["expect"] = draw(st.one_of(st.none(), any_text))
    text = _json_ascii(doc)
    if draw(st.integers(0, 19)) == 0:  # a field written twice
        text = text[:-1] + ', "key": "k1"}'
    return text


@st.composite
def sql_exprs(draw: st.DrawFn) -> str:
    return draw(
        st.one_of(
            st.integers(-(2**63), 2**63 - 1).map(str),
            st.sampled_from(
                [
                    str(_MAX_INT64),
                    "99999999999999999999999",
                    "1e308",
                    "-0.0",
                    "NULL",
                    "x",
                    "'text'",
                    "X'00ff'",
                    "random()",
                    "randomblob(8)",
                    "hex(randomblob(4))",
                    "sqlite_version()",
                    "sqlite_source_id()",
                    "sqlite_compileoption_get(0)",
                    "fts3_tokenizer('simple')",
                    "datetime('now')",
                    "date('2020-01-01', 'localtime')",
                    "changes()",
                    "last_insert_rowid()",
                    "total_changes()",
                    "zeroblob(100)",
                    "printf('%.*c', 1000, 'x')",
                    "length(zeroblob(5000))",
                    "abs(-9223372036854775808)",
                    "1/0",
                    "(SELECT count(*) FROM sqlite_master)",
                    "json_extract('[[[[1]]]]', '$[0][0][0][0]')",
                    "unicode('\ud7ff')",
                ]
            ),
            any_text.map(lambda s: "'" + s.replace("'", "''") + "'"),
        )
    )


@st.composite
def sql_statements(draw: st.DrawFn) -> str:
    table = draw(st.sampled_from(TABLES))
    e1, e2 = draw(sql_exprs()), draw(sql_exprs())
    limit = draw(st.integers(0, 2000))
    recursive = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c{}) "
    bounded = recursive.format(f" LIMIT {limit}")
    # Unbounded recursion only in aggregates: a row per step would grow memory or the disk
    # without bound on a build without a work budget, and this runs on a shared machine.
    unbounded = recursive.format("")
    return draw(
        st.sampled_from(
            [
                f"CREATE TABLE IF NOT EXISTS {table}(id INTEGER PRIMARY KEY, x, y TEXT)",
                f"CREATE TABLE IF NOT EXISTS {table}(id INTEGER PRIMARY KEY AUTOINCREMENT, x)",
                f"CREATE TABLE IF NOT EXISTS {table}(x PRIMARY KEY, y) WITHOUT ROWID",
                f"INSERT INTO {table}(x) VALUES ({e1})",
                f"INSERT INTO {table}(id, x) VALUES ({e1}, {e2})",
                f"INSERT INTO {table}(rowid, x) VALUES ({_MAX_INT64}, {e1})",
                f"INSERT OR REPLACE INTO {table}(x, y) VALUES ({e1}, {e2})",
                f"UPDATE {table} SET x = {e1} WHERE id = {e2}",
                f"DELETE FROM {table} WHERE x = {e1}",
                f"SELECT {e1}, {e2} FROM {table}",
                f"SELECT {e1}",
                f"DROP TABLE IF EXISTS {table}",
                f"ALTER TABLE {table} ADD COLUMN z DEFAULT {e1}",
                f"CREATE INDEX IF NOT EXISTS i_{len(table)} ON {table}(x)",
                "CREATE TEMP TABLE tt(x)",
                f"CREATE VIEW v AS SELECT {e1}",
                f"CREATE TRIGGER tr AFTER INSERT ON {table} BEGIN SELECT 1; END",
                f"{bounded}SELECT max(x) FROM c",
                f"{bounded}INSERT INTO {table}(x) SELECT x FROM c",
                f"{unbounded}SELECT max(x) FROM c",
                f"{unbounded}SELECT count(*) FROM c",
                f"INSERT INTO {table}(x) SELECT file FROM pragma_database_list",
                "SELECT * FROM pragma_database_list",
                f"PRAGMA user_version = {e1}",
                "PRAGMA journal_mode = DELETE",
                "PRAGMA table_info(t)",
                "ATTACH ':memory:' AS other",
                "BEGIN",
                "COMMIT",
                "ROLLBACK",
                "VACUUM",
                "SELECT load_extension('x')",
                f"SELECT {e1} FROM {table} ORDER BY 1 LIMIT {e2}",
            ]
        )
    )


@st.composite
def sql_scripts(draw: st.DrawFn) -> str:
    # Mostly one statement: a script fails whole when any of its statements does.
    statements = draw(
        st.lists(sql_statements(), min_size=1, max_size=draw(st.sampled_from([1, 1, 4])))
    )
    script = "; ".join(statements)
    return draw(
        st.sampled_from(
            [script, script + ";", script + "; --", "/*" + script, script + "'", script * 2]
        )
    )


@st.composite
def batches(draw: st.DrawFn, kind: str) -> bytes:
    element = kv_commands() if kind == "kv" else sql_scripts()
    items: list[Any] = draw(
        st.lists(
            st.one_of(
                element,
                element.map(lambda s: {"b64": _b64(s)}),
                json_values,
                st.just({"b64": "%%%"}),
            ),
            min_size=0,
            max_size=30,
        )
    )
    return _json_ascii(items).encode()


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode("utf-8", errors="surrogatepass")).decode("ascii")


@st.composite
def admin_bodies(draw: st.DrawFn) -> bytes:
    member = {
        "id": draw(st.one_of(st.sampled_from(["n9", "n1", "N!", ""]), any_text, st.integers())),
        "host": draw(st.one_of(st.sampled_from(["127.0.0.1", "::1", "a" * 300]), any_text)),
        "ports": draw(
            st.one_of(
                st.fixed_dictionaries(
                    {"p2p": st.integers(-5, 70000), "api": st.integers(-5, 70000)}
                ),
                json_values,
            )
        ),
    }
    for key in draw(st.lists(st.sampled_from(["id", "host", "ports"]), max_size=3)):
        member.pop(key, None)
    if draw(st.booleans()):
        member["extra"] = draw(json_values)
    return _json_ascii(member).encode()


def bodies(kind: str) -> st.SearchStrategy[bytes | None]:
    fsm_body = kv_commands() if kind == "kv" else sql_scripts()
    return st.one_of(
        st.none(),
        st.just(b""),
        fsm_body.map(lambda s: s.encode("utf-8", errors="surrogatepass")),
        fsm_body.map(lambda s: s.encode("utf-8", errors="surrogatepass")),
        batches(kind),
        admin_bodies(),
        json_values.map(lambda v: _json_ascii(v).encode()),
        deep_nesting,
        huge_number_json,
        st.binary(max_size=2048),
        st.sampled_from([b"\xed\xa0\x80", b"\xff\xfe", b"\x00" * 100, b"{}", b"[]", b"null"]),
    )


@st.composite
def query_strings(draw: st.DrawFn, kind: str) -> str:
    query_text = kv_commands() if kind == "kv" else sql_statements()
    names = st.one_of(st.sampled_from(PARAMS), any_text)
    values = st.one_of(
        hostile_ints,
        any_text,
        st.sampled_from(
            [
                "",
                "weak",
                "strong",
                "default",
                "WEAK",
                "linearizable",
                "true",
                "false",
                "maybe",
                "base64",
                "raw",
                "1s",
                "500ms",
                "0ms",
                "-5s",
                "2m",
                "10h",
                "1e400s",
                "99999999999999999999999999ms",
                "-1",
                "0",
            ]
        ),
        query_text,
    )
    pairs = draw(st.lists(st.tuples(names, values), max_size=5))
    raw = "&".join(
        urllib.parse.quote(n, safe="", errors="surrogatepass")
        + ("" if draw(st.integers(0, 19)) == 0 else "=")
        + urllib.parse.quote(v, safe="", errors="surrogatepass")
        for n, v in pairs
    )
    return raw[:12000]


@st.composite
def paths(draw: st.DrawFn) -> tuple[str, tuple[str, ...]]:
    choice = draw(st.integers(0, 9))
    if choice < 8:
        return draw(st.sampled_from(ROUTES))
    if choice == 8:
        member = draw(st.one_of(st.sampled_from(["n1", "n9", "", "%00", ".."]), any_text))
        return "/cluster/members/" + _quote_path(member), ("DELETE",)
    junk = draw(
        st.one_of(
            any_text.map(lambda s: "/" + _quote_path(s)),
            st.sampled_from(["//", "/..", "/command/../status", "/%2e%2e/", "/query//"]),
            st.integers(1, 3000).map(lambda n: "/" + "a" * n),
        )
    )
    return junk, ()


def _quote_path(text: str) -> str:
    return urllib.parse.quote(text, safe="/", errors="surrogatepass")


def _header_safe(text: str) -> str:
    # http.client sends str headers as latin-1 and refuses line breaks; send UTF-8 bytes.
    raw = text.encode("utf-8", errors="surrogatepass").decode("latin-1")
    return "".join(c for c in raw if c not in "\r\n\x00")


@st.composite
def header_sets(draw: st.DrawFn) -> tuple[tuple[tuple[str, str], ...], str | None]:
    headers: list[tuple[str, str]] = []
    role: str | None = draw(st.sampled_from([None, "read", "write", "write", "admin", "admin"]))
    if role is not None:
        headers.append(("Authorization", f"Bearer {TOKENS[role]}"))
    else:
        junk = draw(
            st.one_of(
                st.none(),
                st.sampled_from(
                    ["Bearer", "Bearer ", "Basic YTpi", "bearer x", "Bearer " + "x" * 4000]
                ),
                any_text.map(lambda s: "Bearer " + _header_safe(s)),
            )
        )
        if junk is not None:
            headers.append(("Authorization", junk))
    content_type = draw(
        st.one_of(
            st.none(),
            st.sampled_from(
                [
                    "application/json",
                    "text/plain",
                    "application/x-www-form-urlencoded",
                    "multipart/form-data; boundary=x",
                    "multipart/form-data",
                    "application/octet-stream",
                    "text/plain; charset=utf-16",
                ]
            ),
            any_text.map(_header_safe),
        )
    )
    if content_type is not None:
        headers.append(("Content-Type", content_type))
    origin = draw(
        st.one_of(
            st.none(),
            st.sampled_from(["http://evil.example", "null", "http://127.0.0.1", "file://"]),
        )
    )
    if origin is not None:
        headers.append(("Origin", origin))
    if draw(st.integers(0, 9)) == 0:
        headers.append(("X-Filler", "f" * draw(st.integers(1, 6000))))
    if draw(st.integers(0, 19)) == 0:
        headers.append(("Accept-Encoding", "gzip, deflate, br"))
    return tuple(headers), role


def requests(kind: str, nodes: int) -> st.SearchStrategy[FuzzRequest]:
    """Six in ten requests are plausible (a real route and method, a body of the kind it takes,
    a token of the role it needs) with hostile content; the rest are random in every part."""

    @st.composite
    def build(draw: st.DrawFn) -> FuzzRequest:
        if draw(st.integers(0, 9)) < 6:
            path, method, body, role = draw(_plausible(kind))
            headers: tuple[tuple[str, str], ...] = ()
            if role is not None:
                headers = (("Authorization", f"Bearer {TOKENS[role]}"),)
            if draw(st.integers(0, 3)) == 0:
                extra, _ = draw(header_sets())
                headers += tuple(h for h in extra if h[0] != "Authorization")
        else:
            path, methods = draw(paths())
            real_method = bool(methods) and draw(st.integers(0, 4)) > 0  # mostly the route's
            method = draw(st.sampled_from(methods if real_method else METHODS))
            headers, role = draw(header_sets())
            body = draw(bodies(kind))
        if role == "admin" and _dangerous(method, path, body):
            headers = tuple(h for h in headers if h[0] != "Authorization")
            headers += (("Authorization", f"Bearer {TOKENS['write']}"),)
            role = "write"
        query = draw(query_strings(kind)) if draw(st.booleans()) else ""
        separator = "&" if "?" in path else "?"
        full = path + separator + query if query else path
        return FuzzRequest(draw(st.integers(0, nodes - 1)), method, full, headers, body, role)

    return build()


def _encode(text: str) -> bytes:
    return text.encode("utf-8", errors="surrogatepass")


@st.composite
def _plausible(draw: st.DrawFn, kind: str) -> tuple[str, str, bytes | None, str | None]:
    """(path, method, body, role) for a request the API would take as well formed, apart from
    its content."""
    fsm_body = kv_commands() if kind == "kv" else sql_scripts()
    fsm_query = kv_commands() if kind == "kv" else sql_statements()
    route = draw(st.integers(0, 9))
    if route < 4:
        path = draw(st.sampled_from(["/command", "/command/"]))
        body = draw(st.one_of(fsm_body.map(_encode), deep_nesting, huge_number_json))
        return path, "POST", body, draw(st.sampled_from(["write", "admin"]))
    if route < 6:
        body = draw(st.one_of(batches(kind), batches(kind), deep_nesting))
        return "/commands", "POST", body, draw(st.sampled_from(["write", "admin"]))
    if route < 9:
        path = draw(st.sampled_from(["/query", "/query/"]))
        role = draw(st.sampled_from(["read", "write", "admin"]))
        if draw(st.booleans()):
            return path, "POST", draw(st.one_of(fsm_query.map(_encode), deep_nesting)), role
        text = draw(fsm_query)
        return (
            f"{path}?q={urllib.parse.quote(text, safe='', errors='surrogatepass')}",
            "GET",
            None,
            role,
        )
    path = draw(st.sampled_from(["/cluster/members", "/cluster/leader", "/cluster/snapshot"]))
    body = draw(
        st.one_of(admin_bodies(), deep_nesting, json_values.map(lambda v: _encode(_json_ascii(v))))
    )
    return path, "POST", body, "admin"


def _dangerous(method: str, path: str, body: bytes | None) -> bool:
    """What an admin may do that would take the cluster under test apart."""
    if path.startswith("/shutdown") or path.startswith("/cluster/members/"):
        return True
    if path.rstrip("/") == "/cluster/members" and method == "POST":
        from graft.api.admin import parse_new_member

        try:
            parse_new_member(body or b"")
        except Exception:  # refused, however it fails: harmless to send
            return False
        return True
    return False


# -- the runner ----------------------------------------------------------------------------


@dataclass
class FuzzStats:
    kind: str = ""
    sent: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    deaths: list[str] = field(default_factory=list)
    kv_keys: set[str] = field(default_factory=set)
    stopped: str | None = None
    seconds: float = 0.0

    def summary(self) -> str:
        counts = ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items()))
        return (
            f"{self.kind}: {self.sent} requests in {self.seconds:.0f} s; statuses {{{counts}}}; "
            f"violations {len(self.violations)}; node deaths {len(self.deaths)}"
            + (f"; stopped early: {self.stopped}" if self.stopped else "")
        )


def send(cluster: LocalCluster, request: FuzzRequest, stats: FuzzStats) -> None:
    """Send one request and record its outcome; stop the run once a node is lost."""
    node = cluster.node_ids[request.node]
    stats.sent += 1
    _remember_keys(request, stats)
    started = time.monotonic()
    outcome: str
    try:
        resp = cluster.request(
            node,
            request.method,
            request.path,
            request.body,
            dict(request.headers),
            timeout=CLIENT_TIMEOUT_S,
        )
        outcome = str(resp.status)
        if resp.status >= 500 and resp.status not in DOCUMENTED_5XX:
            stats.violations.append(
                f"{resp.status} for {request.describe()} on {node}: {resp.body[:300]!r}"
            )
    except TimeoutError:
        outcome = "client timeout"
        took = time.monotonic() - started
        stats.violations.append(f"no answer in {took:.0f} s to {request.describe()} on {node}")
    except urllib.error.URLError as e:
        outcome = _connection_outcome(e.reason, stats, request, node)
    except (http.client.HTTPException, ConnectionError) as e:
        outcome = _connection_outcome(e, stats, request, node)
    stats.statuses[outcome] += 1
    dead = [n for n in cluster.node_ids if cluster.processes[n].poll() is not None]
    if dead:
        for n in dead:
            tail = log_tail(cluster, n)
            stats.deaths.append(f"{n} exited after {request.describe()}:\n{tail}")
        stats.stopped = f"node(s) {', '.join(dead)} died"
    elif outcome in ("client timeout", "refused"):
        down = down_nodes(cluster, timeout=10)
        if down:
            stats.stopped = f"node(s) {', '.join(down)} not answering /health"
            for n, why in down.items():
                if cluster.processes[n].poll() is not None:  # it died meanwhile
                    stats.deaths.append(f"{n} exited after {request.describe()}: {why}")
                else:
                    stats.violations.append(f"{n} does not answer /health: {why}")


def _connection_outcome(reason: object, stats: FuzzStats, request: FuzzRequest, node: str) -> str:
    if isinstance(reason, TimeoutError | socket.timeout):
        stats.violations.append(f"no answer in time to {request.describe()} on {node}")
        return "client timeout"
    if isinstance(reason, ConnectionRefusedError):
        stats.violations.append(f"connection refused by {node} for {request.describe()}")
        return "refused"
    # The server closed the connection on a malformed request: an allowed answer.
    return "dropped"


def _remember_keys(request: FuzzRequest, stats: FuzzStats) -> None:
    """The kv keys a request may write, for the replica comparison afterwards."""
    if request.body is None or not request.path.startswith("/command"):
        return
    try:
        document = json.loads(request.body)
    except (ValueError, RecursionError):
        return
    commands = document if isinstance(document, list) else [document]
    for command in commands[:50]:
        if isinstance(command, str):
            try:
                command = json.loads(command)
            except (ValueError, RecursionError):
                continue
        key = command.get("key") if isinstance(command, dict) else None
        if isinstance(key, str) and len(stats.kv_keys) < 500:
            stats.kv_keys.add(key)


def run(
    cluster: LocalCluster,
    count: int,
    *,
    seed: int | None = None,
    stats: FuzzStats | None = None,
    progress: bool = False,
) -> FuzzStats:
    """Send ``count`` requests to ``cluster``; stop early once a node is lost. Without a seed
    the requests are the same on every run (hypothesis derandomized)."""
    kind = fsm_kind(cluster)
    stats = stats or FuzzStats(kind=kind)
    stats.kind = kind
    strategy = requests(kind, len(cluster.node_ids))
    started = time.monotonic()
    chunk = 0
    while stats.sent < count and stats.stopped is None:
        # Derandomized, one run of them all: another run would repeat the same requests.
        size = count - stats.sent if seed is None else min(CHUNK, count - stats.sent)

        @given(st.data())
        def one(data: st.DataObject) -> None:
            request = data.draw(strategy)  # always: the engine wants the same draws each time
            if stats.stopped is None and stats.sent < count:
                send(cluster, request, stats)

        test = settings(
            max_examples=size,
            derandomize=seed is None,
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
            print_blob=False,
        )(one)
        if seed is not None:
            test = hypothesis_seed(seed + chunk)(test)
        before = stats.sent
        test()
        chunk += 1
        if stats.sent == before:
            break  # the engine found nothing more to generate
        if seed is None:
            break
        if progress:
            stats.seconds = time.monotonic() - started
            print(f"  {stats.summary()}", file=sys.stderr, flush=True)
    stats.seconds = time.monotonic() - started
    return stats


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m graft.testing.fuzz",
        description="Fuzz the HTTP API of a live 3-node kv and SQLite cluster on 127.0.0.1.",
    )
    parser.add_argument("--requests", type=int, default=100_000, help="in all, split per FSM")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fsm", choices=["kv", "sqlite", "both"], default="both")
    args = parser.parse_args(argv)
    fsms = (
        [KV_FSM, SQLITE_FSM] if args.fsm == "both" else [{"kv": KV_FSM}.get(args.fsm, SQLITE_FSM)]
    )
    failed = False
    for position, fsm in enumerate(fsms):
        count = args.requests // len(fsms) + (1 if position < args.requests % len(fsms) else 0)
        with tempfile.TemporaryDirectory(prefix="graft-fuzz-") as base:
            cluster = fuzz_cluster(Path(base), fsm)
            down: dict[str, str] = {}
            try:
                cluster.start()
                cluster.wait_for_leader(timeout=30)
                prepare(cluster)
                stats = run(cluster, count, seed=args.seed, progress=True)
                equal = "not checked (nodes down)"
                down = down_nodes(cluster)
                if not down:
                    try:
                        assert_restart_replays(cluster, stats.kv_keys)
                        equal = "yes, before and after a restart of every node"
                    except AssertionError as e:
                        equal = f"NO: {e}"
            finally:
                cluster.close()
            print(stats.summary())
            print(f"  node deaths: {len(stats.deaths)}; nodes down at the end: {len(down)}")
            print(f"  replicas equal: {equal}")
            for line in stats.violations[:20] + stats.deaths[:5]:
                print(f"  ! {line}")
            failed |= bool(stats.violations or stats.deaths or down or stats.stopped)
            failed |= not equal.startswith("yes")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
