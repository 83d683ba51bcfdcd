"""The cluster config file: YAML in, frozen and validated objects out (DESIGN.md section 7).

The seed's file (``timeouts`` and ``peers`` only) loads unchanged; every other section is
optional. Any problem stops loading with one ``ConfigError`` line of the form
``<file>: <key path>: <value and problem>; <what was expected>`` so that an operator can fix the
file without reading code. Paths in the file are relative to the file's own directory, and
``{id}`` in a path stands for the node id.

Keys (all optional except ``peers``)::

    cluster: graft                      # cluster name, checked in the peer hello
    node: turing                        # this node's id (or `--node` on the command line)
    data_dir: data/{id}
    timeouts: {election: 350, heartbeat: 35}            # milliseconds
    peers: {ID: {host: H, ports: {p2p: P, api: P}, listen: {p2p: ADDR, api: ADDR}}, ...}
    tls: {ca: certs/ca.pem, cert: certs/{id}.pem, key: certs/{id}.key}
    api: {tls: {cert, key, client_ca}, tokens: {read|write|admin: [sha256 hex, ...]},
          max_body_bytes: 1048576, command_timeout_ms: 5000, query_timeout_ms: 5000,
          max_query_timeout_ms: 60000,
          limits: {max_batch_commands: 1000, max_pending_commands: 100000,
                   max_read_waiters: 10000, max_connections: 512, request_deadline_ms: 10000},
          allowed_origins: ["https://console.example.com", ...]}
    fsm: {factory: "module:Name", options: {...}}   or the seed's   fsm: {init: F, eval: F}
    snapshot: {entries: 10000, log_ratio: 4, max_log_bytes: 0, trailing: 1000,
               segment_bytes: 67108864}
    transport: {max_frame_bytes: 16777216, max_connections: 256,
                max_connections_per_address: 16, max_unauthenticated: 32}
    storage: {quota_bytes: 8589934592,                 # 0 turns the space quota off
              inline_fsync: false}                     # true: followers fsync inline
    raft: {max_msg_entries: 1024, max_msg_bytes: 1048576, max_inflight: 64}

This module holds the objects and ``load_config``; the reading is in ``reader`` (the YAML
and the checks every section shares), ``api_section`` (``api``) and ``sections`` (the rest).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from graft.addresses import listen_interface
from graft.origin import url_host
from graft.raft.config import (
    DEFAULT_CLOCK_DRIFT,
    DEFAULT_MAX_INFLIGHT,
    DEFAULT_MAX_MSG_BYTES,
    DEFAULT_MAX_MSG_ENTRIES,
)

__all__ = [
    "DEFAULT_FSM_FACTORY",
    "SCRIPT_FSM_FACTORY",
    "TOKEN_ROLES",
    "ApiConfig",
    "ApiLimits",
    "ApiTLSConfig",
    "ApiTLSFiles",
    "ClusterConfig",
    "ConfigError",
    "FSMConfig",
    "PeerConfig",
    "RaftTuning",
    "SnapshotConfig",
    "StorageConfig",
    "TLSConfig",
    "TLSFiles",
    "TransportConfig",
    "load_config",
]

DEFAULT_FSM_FACTORY = "graft.fsm.sqlite:SQLiteStateMachine"
SCRIPT_FSM_FACTORY = "graft.fsm.script:ScriptStateMachine"
TOKEN_ROLES = ("read", "write", "admin")

_MIB = 1 << 20
# The seed's timeouts, in milliseconds; the test and fault harnesses start clusters with them.
DEFAULT_ELECTION_MS = 350
DEFAULT_HEARTBEAT_MS = 35


class ConfigError(Exception):
    """The config file cannot be used. ``str(error)`` is one line: file, key, value, expectation."""


# --- the objects -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerConfig:
    id: str
    host: str  # the advertised host: what peers dial, clients use and the certificate names
    p2p_port: int
    api_port: int
    # The addresses the ports listen on (peers.<id>.listen); None follows graft.addresses.
    listen_p2p: str | None = None
    listen_api: str | None = None

    @property
    def p2p_interface(self) -> str:
        """The address the peer port binds (graft.addresses.listen_interface)."""
        return listen_interface(self.host, self.listen_p2p)

    @property
    def api_interface(self) -> str:
        """The address the HTTP API binds (graft.addresses.listen_interface)."""
        return listen_interface(self.host, self.listen_api)


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSFiles:
    """One node's peer TLS files, absolute."""

    ca: Path
    cert: Path
    key: Path


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSConfig:
    """Peer TLS paths as written, with ``{id}`` placeholders, relative to the config file."""

    ca: str = "certs/ca.pem"
    cert: str = "certs/{id}.pem"
    key: str = "certs/{id}.key"


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiTLSFiles:
    """One node's HTTPS files, absolute; with ``client_ca`` clients must present a certificate."""

    cert: Path
    key: Path
    client_ca: Path | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiTLSConfig:
    """HTTPS paths as written, with ``{id}`` placeholders, relative to the config file."""

    cert: str
    key: str
    client_ca: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiLimits:
    """What one client may hold of a node's API (``api.limits``)."""

    # Commands in one POST /commands; more is a 413.
    max_batch_commands: int = 1000
    # Commands proposed on this node as leader and not yet applied; more is a 503 overloaded.
    max_pending_commands: int = 100_000
    # Reads waiting for this node to apply an index (min_index, ReadIndex); more is a 503.
    max_read_waiters: int = 10_000
    # Open HTTP connections; a connection over it gets a 503 and is closed.
    max_connections: int = 512
    # From a request's first byte to its last: a slower client is answered 408 and dropped.
    request_deadline_ms: int = 10_000


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiConfig:
    tls: ApiTLSConfig | None = None
    # role -> lowercase sha256 hex digests of the bearer tokens; empty means no authentication.
    tokens: Mapping[str, frozenset[str]] = field(default_factory=lambda: MappingProxyType({}))
    max_body_bytes: int = _MIB
    command_timeout_ms: int = 5000
    query_timeout_ms: int = 5000
    # The largest time limit a query may ask for with ?timeout= (query_timeout_ms is the default).
    max_query_timeout_ms: int = 60000
    limits: ApiLimits = field(default_factory=ApiLimits)
    # Origins (scheme://host[:port]) besides the node's own whose browsers may change state.
    allowed_origins: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True, kw_only=True)
class FSMConfig:
    """Which state machine to build: ``factory`` is ``"module:Name"``, called with ``options``
    as keyword arguments (plus ``data_dir`` and ``base_dir``, see graft.fsm)."""

    factory: str = DEFAULT_FSM_FACTORY
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotConfig:
    # A snapshot is taken once the log applied since the last one is log_ratio times that
    # snapshot's size (graft.driver.snapshot_policy), and never before `entries` entries.
    entries: int = 10000
    log_ratio: float = 4.0
    # ... or once the log since the last one is this large, whatever its size, so the data dir
    # stays under its quota; 0: a quarter of storage.quota_bytes (no cap if that is off).
    max_log_bytes: int = 0
    # Entries kept in the log below the snapshot index, so slow followers catch up from the log.
    trailing: int = 1000
    # The log's segment files roll at this size; compaction deletes whole segments, so this is
    # also the granularity at which snapshots free disk space.
    segment_bytes: int = 64 * _MIB


@dataclass(frozen=True, slots=True, kw_only=True)
class StorageConfig:
    # The space quota of the data dir (etcd's NOSPACE alarm): at this size the node refuses new
    # writes with 507 no_space until it is below again; 0 turns it off. 8 GiB: a data dir holds
    # about twice the FSM's size (the database and its latest snapshot) plus the log since
    # that snapshot (at most snapshot.max_log_bytes, a quarter of this), so this fits an FSM
    # of about 3 GiB; size it to a fraction of the disk (e.g. 50-70%)
    # so that the alarm, not a full disk, is what stops writes.
    quota_bytes: int = 8 * 1024 * _MIB
    # A follower's small writes, while idle, fsync on the reactor thread while the disk is fast
    # (graft.storage.inline_fsync has the rule). Off by default: on the benchmark machine it
    # did not lower the c=1 latency (docs/benchmarks.md, "Latency").
    inline_fsync: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class TransportConfig:
    # A peer frame larger than this drops the connection (snapshots travel in smaller chunks).
    max_frame_bytes: int = 16 * _MIB
    # Inbound peer connections beyond these are closed as soon as they are accepted
    # (graft.transport.ConnectionLimits): in total, from one address, and before their hello.
    max_connections: int = 256
    max_connections_per_address: int = 16
    max_unauthenticated: int = 32


@dataclass(frozen=True, slots=True, kw_only=True)
class RaftTuning:
    """Flow control for AppendEntries; the defaults are the core's (graft.raft.config)."""

    max_msg_entries: int = DEFAULT_MAX_MSG_ENTRIES
    max_msg_bytes: int = DEFAULT_MAX_MSG_BYTES
    max_inflight: int = DEFAULT_MAX_INFLIGHT


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterConfig:
    path: Path  # the config file, absolute
    base_dir: Path  # its directory: relative paths in the file start here
    peers: Mapping[str, PeerConfig]  # the initial membership, in file order
    cluster: str = "graft"
    node: str | None = None
    election_ms: int = DEFAULT_ELECTION_MS
    heartbeat_ms: int = DEFAULT_HEARTBEAT_MS
    # The lease's clock-drift bound, a fraction of the election timeout (graft.raft.config).
    clock_drift: float = DEFAULT_CLOCK_DRIFT
    data_dir_template: str = "data/{id}"
    tls: TLSConfig = field(default_factory=TLSConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    fsm: FSMConfig = field(default_factory=FSMConfig)
    snapshot: SnapshotConfig = field(default_factory=SnapshotConfig)
    transport: TransportConfig = field(default_factory=TransportConfig)
    raft: RaftTuning = field(default_factory=RaftTuning)
    storage: StorageConfig = field(default_factory=StorageConfig)

    @property
    def max_frame_bytes(self) -> int:
        return self.transport.max_frame_bytes

    @property
    def snapshot_max_log_bytes(self) -> int:
        """snapshot.max_log_bytes, its 0 read as a quarter of the space quota."""
        return self.snapshot.max_log_bytes or self.storage.quota_bytes // 4

    def peer(self, node_id: str) -> PeerConfig:
        """The peer ``node_id`` of the file; ConfigError naming the known peers otherwise."""
        try:
            return self.peers[node_id]
        except KeyError:
            raise ConfigError(
                f"{self.path}: peers: {json.dumps(node_id)} is not a peer; "
                f"expected one of: {', '.join(self.peers)}"
            ) from None

    def resolve(self, template: str, node_id: str) -> Path:
        """A path of the file, ``{id}`` replaced, made absolute from the config's directory."""
        return (self.base_dir / template.replace("{id}", node_id)).resolve()

    def data_dir(self, node_id: str) -> Path:
        return self.resolve(self.data_dir_template, node_id)

    def tls_for(self, node_id: str) -> TLSFiles:
        return TLSFiles(
            ca=self.resolve(self.tls.ca, node_id),
            cert=self.resolve(self.tls.cert, node_id),
            key=self.resolve(self.tls.key, node_id),
        )

    def api_tls_for(self, node_id: str) -> ApiTLSFiles | None:
        tls = self.api.tls
        if tls is None:
            return None
        return ApiTLSFiles(
            cert=self.resolve(tls.cert, node_id),
            key=self.resolve(tls.key, node_id),
            client_ca=None if tls.client_ca is None else self.resolve(tls.client_ca, node_id),
        )

    def api_url(self, node_id: str) -> str:
        """The base URL of a peer's HTTP API, e.g. ``http://127.0.0.1:8080``."""
        peer = self.peer(node_id)
        scheme = "http" if self.api.tls is None else "https"
        return f"{scheme}://{url_host(peer.host)}:{peer.api_port}"

    def script_files(self) -> dict[str, Path]:
        """The ``init``/``eval`` files of the script FSM (empty for other FSMs), absolute."""
        if self.fsm.factory != SCRIPT_FSM_FACTORY:
            return {}
        return {
            name: (self.base_dir / str(self.fsm.options[name])).resolve()
            for name in ("init", "eval")
            if isinstance(self.fsm.options.get(name), str)
        }

    def check_files(self, node_id: str) -> None:
        """Fail with ConfigError if a file this node needs at start is missing."""
        tls = self.tls_for(node_id)
        for key, path in (("tls.ca", tls.ca), ("tls.cert", tls.cert), ("tls.key", tls.key)):
            if not path.is_file():
                raise ConfigError(
                    f"{self.path}: {key}: file {path} not found; "
                    f"create the certificates with `graft certs -c {self.path}`"
                )
        api_tls = self.api_tls_for(node_id)
        if api_tls is not None:
            files = [("api.tls.cert", api_tls.cert), ("api.tls.key", api_tls.key)]
            if api_tls.client_ca is not None:
                files.append(("api.tls.client_ca", api_tls.client_ca))
            for key, path in files:
                if not path.is_file():
                    raise ConfigError(
                        f"{self.path}: {key}: file {path} not found; "
                        "expected an existing PEM file (paths are relative to the config file)"
                    )
        for name, path in self.script_files().items():
            if not path.is_file():
                raise ConfigError(
                    f"{self.path}: fsm.{name}: file {path} not found; expected a Python file "
                    f"(paths are relative to the config file's directory {self.base_dir})"
                )


# --- loading -----------------------------------------------------------------------------------


def load_config(path: str | Path, node: str | None = None) -> ClusterConfig:
    """Read and validate the cluster config file; ``node`` (``--node``) overrides ``node:``."""
    # Imported here: the readers build the objects above, so they import this module.
    from graft.config.sections import read_cluster

    return read_cluster(path, node)
