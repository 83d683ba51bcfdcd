"""A hypothesis-driven fuzz of the HTTP API against a live cluster: its runner (the requests
are drawn by graft.testing.fuzz_requests).

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

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from graft.testing.cluster import LocalCluster
from graft.testing.fuzz_requests import FuzzRequest, requests
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
