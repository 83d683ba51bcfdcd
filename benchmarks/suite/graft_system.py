"""Graft under test: three `twist graft` processes through graft.testing.cluster.LocalCluster.

The kv FSM (system "graft") or the SQLite FSM (system "graft-sqlite": one table
``bench(k TEXT PRIMARY KEY, v TEXT)``, written and read through the JSON form with bound
parameters, as applications do); the durable log with fsync on, the default snapshot
settings, mutual TLS between peers (LocalCluster generates the CA and certificates), the
seed's timeouts (election 350 ms, heartbeat 35 ms). The HTTP API is plain HTTP on loopback,
as etcd's client gateway is here.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

from benchmarks.suite.errors import BenchmarkError
from benchmarks.suite.http import call, call_json, wait_until
from benchmarks.suite.system import (
    BATCH,
    BODIES,
    KEY_SLOT,
    KEYS,
    ReplicatedSystem,
    RequestShape,
    compact,
    key_name,
    value_text,
)
from graft.testing.cluster import LocalCluster

FSM_FACTORIES = {
    "kv": "graft.fsm.kv:KeyValueStateMachine",
    "sqlite": "graft.fsm.sqlite:SQLiteStateMachine",
}
SQLITE_SCHEMA = "CREATE TABLE IF NOT EXISTS bench(k TEXT PRIMARY KEY, v TEXT NOT NULL)"
SQLITE_UPSERT = "INSERT INTO bench(k, v) VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v"
SQLITE_SELECT = "SELECT v FROM bench WHERE k = ?"


def _kv_put(key: str, value: str) -> str:
    return compact({"op": "put", "key": key, "value": value})


def _sqlite_put(key: str, value: str) -> str:
    return compact({"statements": [{"sql": SQLITE_UPSERT, "params": [key, value]}]})


class GraftSystem(ReplicatedSystem):
    durable = True

    def __init__(
        self, base: Path, *, election_ms: int = 350, heartbeat_ms: int = 35, fsm: str = "kv"
    ) -> None:
        if fsm not in FSM_FACTORIES:
            raise ValueError(f"fsm must be one of {sorted(FSM_FACTORIES)}, not {fsm!r}")
        self.name = "graft" if fsm == "kv" else f"graft-{fsm}"
        self._fsm = fsm
        self._base = base
        self._election_ms = election_ms
        self._heartbeat_ms = heartbeat_ms
        self.cluster: LocalCluster | None = None

    def _put(self, key: str, value: str) -> str:
        return _kv_put(key, value) if self._fsm == "kv" else _sqlite_put(key, value)

    def _cluster(self) -> LocalCluster:
        if self.cluster is None:
            raise RuntimeError("GraftSystem.start() was not called")
        return self.cluster

    def start(self) -> None:
        self.cluster = LocalCluster(
            self._base,
            fsm=FSM_FACTORIES[self._fsm],
            election_ms=self._election_ms,
            heartbeat_ms=self._heartbeat_ms,
        )
        self.cluster.start()
        leader = self.leader(timeout=30)
        if self._fsm == "sqlite":
            status, body = call(
                self.base_url(leader) + "/command", SQLITE_SCHEMA.encode(), timeout=30
            )
            if status != 200:
                raise BenchmarkError(f"creating the bench table failed: {status} {body[:200]!r}")

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.close()

    def node_ids(self) -> list[str]:
        return list(self._cluster().node_ids)

    def base_url(self, node: str) -> str:
        return self._cluster().api_url(node)

    def pid(self, node: str) -> int:
        return self._cluster().processes[node].pid

    def data_path(self, node: str) -> Path:
        return self._cluster().data_dir(node)

    def leader(self, timeout: float = 15) -> str:
        cluster = self._cluster()

        def agreed() -> str | None:
            views = [call_json(cluster.api_url(n) + "/status") for n in cluster.alive()]
            leaders = {v.get("leader") if v else None for v in views}
            if len(leaders) == 1:
                (leader,) = leaders
                if leader is not None:
                    ready = call_json(cluster.api_url(leader) + "/ready")
                    return leader if ready and ready.get("ready") else None
            return None

        return str(wait_until(agreed, timeout=timeout, what="a Graft leader agreed by all nodes"))

    def put_shape(self, unique: bool = True) -> RequestShape:
        if unique:
            bodies = tuple(self._put(KEY_SLOT, value_text(i)) for i in range(BODIES))
        else:
            bodies = tuple(self._put(key_name(i), value_text(i)) for i in range(KEYS))
        return RequestShape(method="POST", path="/command", bodies=bodies)

    def batch_shape(self) -> RequestShape:
        bodies = []
        for b in range(BODIES // BATCH):
            commands = [self._put(KEY_SLOT, value_text(b * BATCH + j)) for j in range(BATCH)]
            bodies.append(compact(commands))
        return RequestShape(method="POST", path="/commands", bodies=tuple(bodies))

    def read_shape(self, strong: bool) -> RequestShape:
        consistency = "strong" if strong else "default"
        if self._fsm == "kv":
            queries = [compact({"op": "get", "key": key_name(i)}) for i in range(KEYS)]
        else:
            queries = [
                compact({"statements": [{"sql": SQLITE_SELECT, "params": [key_name(i)]}]})
                for i in range(KEYS)
            ]
        return RequestShape(
            method="POST", path=f"/query?consistency={consistency}", bodies=tuple(queries)
        )

    def probe_write(self, node: str, sequence: int, timeout: float) -> bool:
        body = self._put(f"probe-{sequence % KEYS}", str(sequence)).encode()
        status, _ = call(self.base_url(node) + "/command", body, timeout=timeout)
        return status == 200

    def kill(self, node: str) -> None:
        self._cluster().kill(node)

    def restart(self, node: str) -> None:
        self._cluster().start(node)

    def version(self) -> str:
        return f"graft {version('graft')}"

    def settings(self) -> dict[str, object]:
        cluster = self._cluster()
        return {
            "election_ms": self._election_ms,
            "heartbeat_ms": self._heartbeat_ms,
            "fsm": FSM_FACTORIES[self._fsm],
            "fsync": True,
            "peer_tls": "mutual TLS",
            "config_yaml": cluster.config_path.read_text(),
        }
