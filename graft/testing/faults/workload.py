"""Concurrent clients doing put, cas and get through the HTTP API on a rolling set of keys.

Each client is a thread with its own seeded random source. It picks a key from the few active
ones, an operation, and a node (any node: followers forward to the leader), sends one request
on a fresh connection and records what it saw. A key is retired after a fixed number of
operations and a fresh one takes its place, which keeps every key's history small enough for
the linearizability search. Values are unique ("c3-17"), so a read names the write it saw.

The requests are the kv FSM's own JSON (``KvRequests``), or the same operations in SQL for the
SQLite FSM (graft.testing.faults.sql_registers); a record's ``output`` is always the register
model's (``prev``, ``ok``, ``value``), and for SQL its ``answer`` is what the FSM said.
"""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from graft.testing.faults.cluster import FaultCluster
from graft.testing.faults.history import OpRecord
from graft.testing.faults.sql_registers import MalformedAnswer

MALFORMED = "malformed_answer"  # a record's error when a 200 answer had no meaning for the model
# Cumulative weights of the operation mix.
MIX: Sequence[tuple[str, str | None, float]] = (
    ("get", "strong", 0.25),
    ("get", "default", 0.45),
    ("get", "weak", 0.55),
    ("put", None, 0.80),
    ("cas", None, 1.00),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkloadConfig:
    clients: int = 10
    active_keys: int = 3
    ops_per_key: int = 200
    request_timeout: float = 4.0  # above the nodes' 2 s command/query timeout


class Requests(Protocol):
    """How the operations are put to one FSM, and its answers read back in the model's terms."""

    fsm: str
    setup: bytes | None  # a command sent once before the history starts, or None

    def body(self, kind: str, key: str, *, value: str | None, expect: str | None) -> bytes: ...

    def output(self, kind: str, answer: Any, *, weak: bool = False) -> dict[str, Any]:
        """The model's output for the FSM's JSON answer (``weak``: to a weak read);
        MalformedAnswer if it has no meaning."""
        ...


class KvRequests:
    """The kv FSM (graft.fsm.kv): its commands and answers already are the model's."""

    fsm = "kv"
    setup: bytes | None = None

    def body(self, kind: str, key: str, *, value: str | None, expect: str | None) -> bytes:
        fields: dict[str, str | None]
        if kind == "get":
            fields = {"op": "get", "key": key}
        elif kind == "put":
            fields = {"op": "put", "key": key, "value": value}
        else:
            fields = {"op": "cas", "key": key, "expect": expect, "value": value}
        return json.dumps(fields).encode()

    def output(self, kind: str, answer: Any, *, weak: bool = False) -> dict[str, Any]:
        del kind, weak
        if not isinstance(answer, dict):
            raise MalformedAnswer(f"expected a JSON object, got {answer!r}")
        return answer


class KeyRoller:
    """The active keys; each retires after ops_per_key operations, replaced by a fresh key."""

    def __init__(self, active: int, ops_per_key: int) -> None:
        self._lock = threading.Lock()
        self._ops_per_key = ops_per_key
        self._counter = itertools.count()
        self._active: dict[str, int] = {}
        self.all_keys: list[str] = []
        self._seen: dict[str, str | None] = {}  # last value any client saw, for likely cas hits
        for _ in range(active):
            self._add()

    def _add(self) -> None:
        key = f"k{next(self._counter):04d}"
        self._active[key] = 0
        self.all_keys.append(key)

    def pick(self, rng: random.Random) -> str:
        with self._lock:
            key = rng.choice(sorted(self._active))
            self._active[key] += 1
            if self._active[key] >= self._ops_per_key:
                del self._active[key]
                self._add()
            return key

    def saw(self, key: str, value: str | None) -> None:
        with self._lock:
            self._seen[key] = value

    def last_seen(self, key: str) -> str | None:
        with self._lock:
            return self._seen.get(key)


class Workload:
    def __init__(
        self,
        cluster: FaultCluster,
        config: WorkloadConfig,
        seed: int,
        clock: Callable[[], float],
        requests: Requests | None = None,
    ) -> None:
        self.cluster = cluster
        self.requests: Requests = requests or KvRequests()
        self.config = config
        self.seed = seed
        self.clock = clock
        self.keys = KeyRoller(config.active_keys, config.ops_per_key)
        self.history: list[OpRecord] = []
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for i in range(self.config.clients):
            t = threading.Thread(target=self._client, args=(i,), name=f"client-{i}", daemon=True)
            self._threads.append(t)
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(self.config.request_timeout + 5)

    def _client(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        name = f"c{index}"
        seq = itertools.count()
        while not self._stop.is_set():
            key = self.keys.pick(rng)
            roll = rng.random()
            kind, consistency = next((k, c) for k, c, w in MIX if roll < w)
            node = rng.choice(self.cluster.node_ids)
            value = f"{name}-{next(seq)}"
            if kind == "get":
                self.invoke(name, node, "get", key, consistency=consistency)
            elif kind == "put":
                self.invoke(name, node, "put", key, value=value)
            else:
                expect = self.keys.last_seen(key) if rng.random() < 0.8 else f"{name}-nope"
                self.invoke(name, node, "cas", key, value=value, expect=expect)

    def invoke(
        self,
        client: str,
        node: str,
        kind: str,
        key: str,
        *,
        consistency: str | None = None,
        value: str | None = None,
        expect: str | None = None,
        min_index: int | None = None,
    ) -> OpRecord:
        """Send one operation, record it and return the record."""
        op_id = next(self._ids)
        body = self.requests.body(kind, key, value=value, expect=expect)
        if kind == "get":
            path = f"/query?consistency={consistency}"
            if min_index is not None:
                path += f"&min_index={min_index}"
        else:
            path = "/command"
        invoke = self.clock()
        status: int | None = None
        error: str | None = None
        output = None
        answer = None
        index: int | None = None
        try:
            reply = self.cluster.request(
                node, "POST", path, body, timeout=self.config.request_timeout
            )
            status = reply.status
            if reply.status == 200:
                try:
                    answer = reply.json()
                    output = self.requests.output(kind, answer, weak=consistency == "weak")
                except (ValueError, MalformedAnswer) as e:
                    # Recorded as is; the run reports it (run.malformed_answers).
                    error = f"{MALFORMED}: {e}"
                if self.requests.fsm == "kv":
                    answer = None  # the same as output
            else:
                try:
                    error = str(reply.json()["error"]["code"])
                except (ValueError, KeyError, TypeError):
                    error = reply.body[:200].decode("utf-8", "replace")
            if "graft-index" in reply.headers:
                index = int(reply.headers["graft-index"])
        except OSError as e:
            error = f"{type(e).__name__}: {e}"
        complete = self.clock()
        record = OpRecord(
            id=op_id,
            client=client,
            node=node,
            kind=kind,
            key=key,
            consistency=consistency,
            value=value,
            expect=expect,
            invoke=invoke,
            complete=complete,
            status=status,
            error=error,
            output=output,
            index=index,
            answer=answer,
        )
        if output is not None:
            seen = output.get("value") if kind in ("get", "cas") else value
            self.keys.saw(key, seen)
        with self._lock:
            self.history.append(record)
        return record


def monotonic_clock() -> Callable[[], float]:
    start = time.monotonic()
    return lambda: time.monotonic() - start
