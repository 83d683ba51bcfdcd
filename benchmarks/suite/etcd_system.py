"""etcd under test: Debian's `etcd-server`, three members on 127.0.0.1, data in a temp dir.

Default durability (fsync on), heartbeat 35 ms and election 350 ms like Graft, driven through
its HTTP/JSON gateway (/v3/kv/put, /v3/kv/range, /v3/kv/txn), which takes base64 keys and
values. Peer traffic is plain HTTP (Graft's is mutual TLS), which if anything favours etcd.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

from benchmarks.suite.errors import BenchmarkSetupError
from benchmarks.suite.http import call, call_json, wait_until
from benchmarks.suite.system import (
    BATCH,
    BODIES,
    KEY64_SLOT,
    KEYS,
    ProcessSystem,
    RequestShape,
    compact,
    key_name,
    value_text,
)
from graft.testing.cluster import HOST, free_ports


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _put(key: str, value: str) -> dict[str, str]:
    return {"key": _b64(key), "value": _b64(value)}


def _put_new(value: str) -> dict[str, str]:
    """A put to a key the driver makes up (it fills the placeholder with a base64 key)."""
    return {"key": KEY64_SLOT, "value": _b64(value)}


def etcd_binary() -> str:
    found = shutil.which("etcd")
    if found is None:
        raise BenchmarkSetupError("etcd is not installed: run `apt-get install -y etcd-server`")
    return found


class EtcdSystem(ProcessSystem):
    name = "etcd"
    durable = True

    def __init__(self, base: Path, *, election_ms: int = 350, heartbeat_ms: int = 35) -> None:
        super().__init__(base, ["e1", "e2", "e3"])
        self._election_ms = election_ms
        self._heartbeat_ms = heartbeat_ms
        ports = free_ports(2 * len(self._names))
        self._client = {n: ports[2 * i] for i, n in enumerate(self._names)}
        self._peer = {n: ports[2 * i + 1] for i, n in enumerate(self._names)}

    def command(self, node: str) -> list[str]:
        cluster = ",".join(f"{n}=http://{HOST}:{self._peer[n]}" for n in self._names)
        return [
            etcd_binary(),
            f"--name={node}",
            f"--data-dir={self._base / node}",
            f"--listen-client-urls=http://{HOST}:{self._client[node]}",
            f"--advertise-client-urls=http://{HOST}:{self._client[node]}",
            f"--listen-peer-urls=http://{HOST}:{self._peer[node]}",
            f"--initial-advertise-peer-urls=http://{HOST}:{self._peer[node]}",
            f"--initial-cluster={cluster}",
            "--initial-cluster-state=new",
            "--initial-cluster-token=graft-bench",
            f"--heartbeat-interval={self._heartbeat_ms}",
            f"--election-timeout={self._election_ms}",
            "--logger=zap",
            "--log-level=warn",
        ]

    def base_url(self, node: str) -> str:
        return f"http://{HOST}:{self._client[node]}"

    def leader(self, timeout: float = 15) -> str:
        def agreed() -> str | None:
            ids: dict[str, str] = {}
            leaders = set()
            for node in self.alive():
                status = call_json(self.base_url(node) + "/v3/maintenance/status", {})
                if not status:
                    return None
                ids[status["header"]["member_id"]] = node
                leaders.add(status.get("leader"))
            if len(leaders) != 1:
                return None
            leader = ids.get(str(leaders.pop()))
            if leader is None:
                return None
            # a put through the leader proves it can commit now
            ok = call_json(self.base_url(leader) + "/v3/kv/put", _put("bench-ready", "1"))
            return leader if ok is not None else None

        return str(wait_until(agreed, timeout=timeout, what="an etcd leader agreed by all members"))

    def data_path(self, node: str) -> Path:
        return self._base / node

    def put_shape(self, unique: bool = True) -> RequestShape:
        if unique:
            bodies = tuple(compact(_put_new(value_text(i))) for i in range(BODIES))
        else:
            bodies = tuple(compact(_put(key_name(i), value_text(i))) for i in range(KEYS))
        return RequestShape(method="POST", path="/v3/kv/put", bodies=bodies)

    def batch_shape(self) -> RequestShape:
        bodies = []
        for b in range(BODIES // BATCH):
            puts = [{"requestPut": _put_new(value_text(b * BATCH + j))} for j in range(BATCH)]
            bodies.append(compact({"success": puts}))
        return RequestShape(method="POST", path="/v3/kv/txn", bodies=tuple(bodies))

    def read_shape(self, strong: bool) -> RequestShape:
        return RequestShape(
            method="POST",
            path="/v3/kv/range",
            bodies=tuple(
                compact({"key": _b64(key_name(i)), "serializable": not strong}) for i in range(KEYS)
            ),
        )

    def probe_write(self, node: str, sequence: int, timeout: float) -> bool:
        body = compact(_put(f"probe-{sequence % KEYS}", str(sequence))).encode()
        status, _ = call(self.base_url(node) + "/v3/kv/put", body, timeout=timeout)
        return status == 200

    def version(self) -> str:
        out = subprocess.run([etcd_binary(), "--version"], capture_output=True, text=True)
        return " ".join(
            line.strip() for line in out.stdout.splitlines()[:1] + out.stdout.splitlines()[2:3]
        )

    def settings(self) -> dict[str, object]:
        return {
            "election_ms": self._election_ms,
            "heartbeat_ms": self._heartbeat_ms,
            "fsync": True,
            "peer_tls": "none (plain HTTP between members)",
            "command_e1": " ".join(self.command("e1")),
        }
