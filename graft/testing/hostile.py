"""What must hold for a cluster after hostile input, checked on real processes.

Used by the hostile-input tests and the HTTP fuzz (graft.testing.fuzz): every node is up and
answers ``/health``; the replicas are equal (``GET /cluster/check`` where the node serves it,
plus a comparison of what every node answers to weak reads at one applied index); and a
restart of every node replays the log to the same state.

The clusters these helpers build require bearer tokens (``TOKENS``), so that a test or the
fuzz can send requests without a token, with a wrong one or with a role too low, and so that
the fuzz never holds a token that could shut a node down or remove a member by accident.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from graft.testing.cluster import LocalCluster, Response

KV_FSM = "graft.fsm.kv:KeyValueStateMachine"
SQLITE_FSM = "graft.fsm.sqlite:SQLiteStateMachine"
TOKENS = {"read": "hostile-read-token", "write": "hostile-write-token", "admin": "hostile-admin"}

# Generous: the machine running the tests may be busy with other work.
UP_TIMEOUT_S = 15.0
SETTLE_TIMEOUT_S = 60.0
# Documented 5xx answers: 503 (no leader, overloaded) and 504 (command or query timeout).
DOCUMENTED_5XX = frozenset({503, 504})


def auth(role: str) -> dict[str, str]:
    """The Authorization header for one of TOKENS' roles."""
    return {"Authorization": f"Bearer {TOKENS[role]}"}


def hostile_cluster(
    base: Path, fsm: str, *, api: Mapping[str, Any] | None = None, **kwargs: Any
) -> LocalCluster:
    """A 3-node LocalCluster (not started) whose API requires TOKENS."""
    section: dict[str, Any] = {
        "tokens": {role: [hashlib.sha256(t.encode()).hexdigest()] for role, t in TOKENS.items()}
    }
    section.update(api or {})
    return LocalCluster(
        base, fsm=fsm, extra={"api": section}, status_token=TOKENS["read"], **kwargs
    )


def fsm_kind(cluster: LocalCluster) -> str:
    factory = str(cluster.config["fsm"]["factory"])
    return {KV_FSM: "kv", SQLITE_FSM: "sqlite"}.get(factory, factory)


# -- liveness ------------------------------------------------------------------------------


def down_nodes(cluster: LocalCluster, timeout: float = UP_TIMEOUT_S) -> dict[str, str]:
    """Node -> why it is not up (process gone, or /health not answered within ``timeout``)."""
    problems: dict[str, str] = {}
    for node in cluster.node_ids:
        proc = cluster.processes.get(node)
        if proc is None or proc.poll() is not None:
            code = None if proc is None else proc.returncode
            problems[node] = f"process exited ({code}); log tail:\n{log_tail(cluster, node)}"
            continue
        deadline = time.monotonic() + timeout
        reason = "no answer"
        while True:
            try:
                resp = cluster.request(node, "GET", "/health", timeout=max(0.5, timeout / 3))
                if resp.status == 200:
                    break
                reason = f"/health answered {resp.status}"
            except (OSError, http.client.HTTPException) as e:
                reason = f"/health failed: {e!r}"
            if time.monotonic() >= deadline:
                problems[node] = reason
                break
            time.sleep(0.1)
    return problems


def assert_nodes_up(cluster: LocalCluster, timeout: float = UP_TIMEOUT_S) -> None:
    problems = down_nodes(cluster, timeout)
    if problems:
        raise AssertionError(
            "nodes not up: " + "; ".join(f"{n}: {why}" for n, why in problems.items())
        )


def log_tail(cluster: LocalCluster, node: str, lines: int = 6) -> str:
    """The end of the node's log, or the last error in it with its traceback's last line."""
    log = cluster.logs(node).splitlines()
    errors = [i for i, line in enumerate(log) if "#critical]" in line or "#error]" in line]
    if not errors:
        return "\n".join(log[-lines:])
    first = errors[-1]
    end = first + 1
    while end < len(log) and log[end].startswith("\t") and log[end].strip():
        end += 1
    return "\n".join(
        [log[first][:400], *(line[:400] for line in log[max(first + 1, end - 2) : end])]
    )


# -- replica equality ----------------------------------------------------------------------


def wait_settled(cluster: LocalCluster, timeout: float = SETTLE_TIMEOUT_S) -> int:
    """Wait until there is one leader, it has committed everything in its log, and every node
    has applied that far; the index they all reached."""
    deadline = time.monotonic() + timeout
    seen: dict[str, Any] = {}
    while time.monotonic() < deadline:
        seen = {n: cluster.status(n) for n in cluster.node_ids}
        statuses = [s for s in seen.values() if s]
        leaders = [s for s in statuses if s["role"] == "leader"]
        if len(statuses) == len(seen) and len(leaders) == 1:
            last = leaders[0]["last_index"]
            if leaders[0]["commit"] == last and all(s["applied"] >= last for s in statuses):
                return int(last)
        time.sleep(0.05)
    raise AssertionError(f"the nodes did not reach the same applied index in {timeout}s: {seen}")


def _weak(cluster: LocalCluster, node: str, query: bytes, index: int) -> Response:
    return cluster.request(
        node,
        "POST",
        f"/query?consistency=weak&min_index={index}",
        query,
        auth("read"),
        timeout=30,
    )


def _answer(resp: Response) -> Any:
    """A read's outcome, comparable between nodes."""
    try:
        body = resp.json()
    except ValueError:
        body = resp.body.decode("utf-8", errors="replace")
    if resp.status != 200 and isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"].get("code")  # messages may name the node
    return [resp.status, body]


def kv_state(cluster: LocalCluster, node: str, index: int, keys: Iterable[str]) -> Any:
    """What ``node`` answers for each key (status and body), at ``index`` or later."""
    state = {}
    for key in sorted(set(keys)):
        query = json.dumps({"op": "get", "key": key}).encode()
        state[key] = _answer(_weak(cluster, node, query, index))
    return state


def sqlite_state(cluster: LocalCluster, node: str, index: int) -> Any:
    """Every table of ``node``'s database (schema and rows with rowids), its user_version."""
    schema = _weak(cluster, node, b"SELECT type, name, sql FROM sqlite_master ORDER BY name", index)
    if schema.status != 200:
        return {"schema": _answer(schema)}
    state: dict[str, Any] = {"schema": schema.json()["rows"]}
    state["user_version"] = _answer(_weak(cluster, node, b"PRAGMA user_version", index))
    for kind, name, _sql in state["schema"]:
        if kind != "table":
            continue
        quoted = '"' + str(name).replace('"', '""') + '"'
        resp = _weak(cluster, node, f"SELECT rowid, * FROM {quoted}".encode(), index)
        if resp.status != 200:  # a WITHOUT ROWID table
            resp = _weak(cluster, node, f"SELECT * FROM {quoted}".encode(), index)
        if resp.status == 200:
            rows = resp.json()["rows"]
            state[f"rows of {name}"] = sorted(rows, key=lambda r: json.dumps(r, sort_keys=True))
        else:
            state[f"rows of {name}"] = _answer(resp)
    return state


def replica_state(cluster: LocalCluster, node: str, index: int, keys: Iterable[str] = ()) -> Any:
    kind = fsm_kind(cluster)
    if kind == "kv":
        return kv_state(cluster, node, index, keys)
    if kind == "sqlite":
        return sqlite_state(cluster, node, index)
    raise ValueError(f"no state reader for the FSM {kind}")


def cluster_check(cluster: LocalCluster, timeout: float = SETTLE_TIMEOUT_S) -> Any:
    """``GET /cluster/check``'s answer once it says ok, None where no node serves it (404);
    AssertionError when every member answered and they differ, or when no complete answer
    comes within ``timeout``. (Each check appends a marker entry to the log.)"""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        for node in cluster.node_ids:
            try:
                resp = cluster.request(node, "GET", "/cluster/check", None, auth("admin"), 30)
            except OSError as e:
                last = repr(e)
                continue
            if resp.status == 404:
                return None
            try:
                last = resp.json()
            except ValueError:
                last = [resp.status, resp.body[:500]]
            if resp.status == 200 and isinstance(last, dict) and last.get("ok") is True:
                return last
            if resp.status == 200 and isinstance(last, dict) and last.get("complete") is True:
                # Every member answered at one index and they differ: no retry will mend it.
                raise AssertionError(f"GET /cluster/check says the replicas differ: {last}")
        if time.monotonic() >= deadline:
            raise AssertionError(f"GET /cluster/check gave no complete answer: {last}")
        time.sleep(0.2)


def assert_replicas_equal(cluster: LocalCluster, keys: Iterable[str] = ()) -> Any:
    """Every node up and holding the same state; that state (as replica_state reads it).

    Uses ``GET /cluster/check`` (digests at one applied index) where the nodes serve it, and
    compares what each node answers to weak reads once all have applied the same index (for
    kv, the answers for ``keys``: the FSM cannot list its keys)."""
    assert_nodes_up(cluster)
    index = wait_settled(cluster)
    cluster_check(cluster)
    keys = sorted(set(keys))
    states = {n: replica_state(cluster, n, index, keys) for n in cluster.node_ids}
    first = cluster.node_ids[0]
    different = [n for n in cluster.node_ids if states[n] != states[first]]
    if different:
        shown = {n: _shorten(states[n]) for n in cluster.node_ids}
        raise AssertionError(f"replicas differ at index {index}: {shown}")
    return states[first]


def _shorten(value: Any, limit: int = 1500) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[:limit] + "..."


# -- restart -------------------------------------------------------------------------------


def restart_all(cluster: LocalCluster, timeout: float = 30.0) -> None:
    """SIGTERM every node (SIGKILL if it does not exit), start them all again, wait until each
    serves and a leader is agreed."""
    for node in cluster.node_ids:
        proc = cluster.processes.get(node)
        if proc is None or proc.poll() is not None:
            continue
        try:
            cluster.stop(node, timeout=timeout)
        except Exception:  # it did not stop in time: it goes the hard way
            cluster.kill(node)
    cluster.start()
    for node in cluster.node_ids:
        cluster.wait_until_serving(node, timeout=timeout)
    cluster.wait_for_leader(timeout=timeout)


def assert_restart_replays(cluster: LocalCluster, keys: Iterable[str] = ()) -> None:
    """The replicas are equal; after a restart of every node they still are, with the same
    state as before."""
    keys = sorted(set(keys))
    before = assert_replicas_equal(cluster, keys)
    restart_all(cluster)
    after = assert_replicas_equal(cluster, keys)
    if after != before:
        raise AssertionError(
            f"the state changed across the restart: before {_shorten(before)}, "
            f"after {_shorten(after)}"
        )


def quote(text: str) -> str:
    """Percent-encode text for a query-string value."""
    return urllib.parse.quote(text, safe="")
