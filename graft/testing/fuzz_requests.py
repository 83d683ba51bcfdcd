"""The requests of the HTTP API fuzz (graft.testing.fuzz): hypothesis strategies for the
method, path, query string, headers and body of one request, for a kv or an SQLite cluster,
and the rule that keeps the requests that could take a cluster apart away from the admin
token."""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from graft.testing.hostile import TOKENS

_MAX_INT64 = 9223372036854775807

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
