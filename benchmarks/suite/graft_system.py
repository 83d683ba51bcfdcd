"""Graft under test: three `twist graft` processes through graft.testing.cluster.LocalCluster.

kv FSM, the durable log with fsync on, mutual TLS between peers (LocalCluster generates the
CA and certificates), the seed's timeouts (election 350 ms, heartbeat 35 ms). The HTTP API is
plain HTTP on loopback, as etcd's client gateway is here.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

from benchmarks.suite.http import call, call_json, wait_until
from benchmarks.suite.system import (
    BATCH,
    KEYS,
    ReplicatedSystem,
    RequestShape,
    compact,
    key_name,
)
from graft.testing.cluster import LocalCluster


def _put(key: str, value: str) -> str:
    return compact({"op": "put", "key": key, "value": value})


class GraftSystem(ReplicatedSystem):
    name = "graft"
    durable = True

    def __init__(self, base: Path, *, election_ms: int = 350, heartbeat_ms: int = 35) -> None:
        self._base = base
        self._election_ms = election_ms
        self._heartbeat_ms = heartbeat_ms
        self.cluster: LocalCluster | None = None

    def _cluster(self) -> LocalCluster:
        if self.cluster is None:
            raise RuntimeError("GraftSystem.start() was not called")
        return self.cluster

    def start(self) -> None:
        self.cluster = LocalCluster(
            self._base, election_ms=self._election_ms, heartbeat_ms=self._heartbeat_ms
        )
        self.cluster.start()
        self.leader(timeout=30)

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.close()

    def node_ids(self) -> list[str]:
        return list(self._cluster().node_ids)

    def base_url(self, node: str) -> str:
        return self._cluster().api_url(node)

    def pid(self, node: str) -> int:
        return self._cluster().processes[node].pid

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

    def put_shape(self) -> RequestShape:
        return RequestShape(
            method="POST",
            path="/command",
            bodies=tuple(_put(key_name(i), f"value-{i}") for i in range(KEYS)),
        )

    def batch_shape(self) -> RequestShape:
        bodies = []
        for b in range(KEYS // BATCH * 2):
            commands = [_put(key_name(b * BATCH + j), f"batch-{b}-{j}") for j in range(BATCH)]
            bodies.append(compact(commands))
        return RequestShape(method="POST", path="/commands", bodies=tuple(bodies))

    def read_shape(self, strong: bool) -> RequestShape:
        consistency = "strong" if strong else "default"
        return RequestShape(
            method="POST",
            path=f"/query?consistency={consistency}",
            bodies=tuple(compact({"op": "get", "key": key_name(i)}) for i in range(KEYS)),
        )

    def probe_write(self, node: str, sequence: int, timeout: float) -> bool:
        body = _put(f"probe-{sequence % KEYS}", str(sequence)).encode()
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
            "fsm": "graft.fsm.kv:KeyValueStateMachine",
            "fsync": True,
            "peer_tls": "mutual TLS",
            "config_yaml": cluster.config_path.read_text(),
        }
