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
    peers: {ID: {host: H, ports: {p2p: P, api: P}}, ...}
    tls: {ca: certs/ca.pem, cert: certs/{id}.pem, key: certs/{id}.key}
    api: {tls: {cert, key, client_ca}, tokens: {read|write|admin: [sha256 hex, ...]},
          max_body_bytes: 1048576, command_timeout_ms: 5000, query_timeout_ms: 5000,
          max_query_timeout_ms: 60000,
          limits: {max_batch_commands: 1000, max_pending_commands: 100000,
                   max_read_waiters: 10000, max_connections: 512, request_deadline_ms: 10000},
          allowed_origins: ["https://console.example.com", ...]}
    fsm: {factory: "module:Name", options: {...}}   or the seed's   fsm: {init: F, eval: F}
    snapshot: {entries: 10000, trailing: 1000, segment_bytes: 67108864}
    transport: {max_frame_bytes: 16777216, max_connections: 256,
                max_connections_per_address: 16, max_unauthenticated: 32}
    storage: {quota_bytes: 8589934592}                 # 0 turns the space quota off
    raft: {max_msg_entries: 1024, max_msg_bytes: 1048576, max_inflight: 64}
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from graft.ids import NODE_ID_RULE, is_node_id
from graft.origin import normalize_origin, url_host

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
_FACTORY = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
# A DNS name or an IPv4 address (letters, digits, hyphens, underscores, dots).
_HOST = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,252}[A-Za-z0-9_.])?$")
_SHA256_HEX = re.compile(r"^[0-9a-fA-F]{64}$")
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")
_FRAME_OVERHEAD = 64 * 1024
# What one log entry adds to an AppendEntries frame besides its data (msgpack headers).
_ENTRY_OVERHEAD = 32


class ConfigError(Exception):
    """The config file cannot be used. ``str(error)`` is one line: file, key, value, expectation."""


# --- the objects -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerConfig:
    id: str
    host: str
    p2p_port: int
    api_port: int


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
    # Take a snapshot once this many entries were applied since the last one.
    entries: int = 10000
    # Entries kept in the log below the snapshot index, so slow followers catch up from the log.
    trailing: int = 1000
    # The log's segment files roll at this size; compaction deletes whole segments, so this is
    # also the granularity at which snapshots free disk space.
    segment_bytes: int = 64 * _MIB


@dataclass(frozen=True, slots=True, kw_only=True)
class StorageConfig:
    # The space quota of the data dir (etcd's NOSPACE alarm): at this size the node refuses new
    # writes with 507 no_space until it is below again; 0 turns it off. 8 GiB: a data dir holds
    # about twice the FSM's size (the database and its latest snapshot) plus a few log
    # segments, so this fits an FSM of 3-4 GiB; size it to a fraction of the disk (e.g. 50-70%)
    # so that the alarm, not a full disk, is what stops writes.
    quota_bytes: int = 8 * 1024 * _MIB


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
    """Flow control for AppendEntries; defaults match graft.raft.config.RaftConfig."""

    max_msg_entries: int = 1024
    max_msg_bytes: int = _MIB
    max_inflight: int = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterConfig:
    path: Path  # the config file, absolute
    base_dir: Path  # its directory: relative paths in the file start here
    peers: Mapping[str, PeerConfig]  # the initial membership, in file order
    cluster: str = "graft"
    node: str | None = None
    election_ms: int = 350
    heartbeat_ms: int = 35
    # The lease's clock-drift bound, a fraction of the election timeout (graft.raft.config).
    clock_drift: float = 0.1
    data_dir_template: str = "data/{id}"
    tls: TLSConfig = field(default_factory=TLSConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    fsm: FSMConfig = field(default_factory=FSMConfig)
    snapshot: SnapshotConfig = field(default_factory=SnapshotConfig)
    transport: TransportConfig = field(default_factory=TransportConfig)
    raft: RaftTuning = field(default_factory=RaftTuning)
    storage: StorageConfig = field(default_factory=StorageConfig)

    @property
    def limits(self) -> TransportConfig:
        """Alias of ``transport`` (it holds the size limits of the peer protocol)."""
        return self.transport

    @property
    def max_frame_bytes(self) -> int:
        return self.transport.max_frame_bytes

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
    label = str(path)
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{label}: config file not found; pass an existing YAML file with -c/--config"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{label}: is a directory; expected a YAML config file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{label}: cannot read the config file ({e}); check the file") from None
    try:
        document = yaml.load(text, Loader=_StrictLoader)
    except _DuplicateKey as e:
        raise ConfigError(f"{label}: line {e.line}: {e.message}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{label}: {_describe_yaml_error(e)}") from None
    absolute = file.resolve()
    return _Reader(label, absolute).cluster(document, node)


class _DuplicateKey(Exception):
    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice in one mapping (YAML keeps the last one,
    which would silently drop a peer)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, list | dict):
                continue  # let the base class report an unhashable key
            if key in seen:
                raise _DuplicateKey(
                    f"duplicate key {json.dumps(key, default=str)}; expected each key once "
                    "in a mapping",
                    key_node.start_mark.line + 1,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _describe_yaml_error(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "?"
    hint = "fix the YAML syntax there"
    if "'{'" in problem:
        # `cert: certs/{id}.pem` inside a {...} mapping is the usual culprit.
        hint += ' (inside {...}, quote values that contain braces: "certs/{id}.pem")'
    return f"YAML syntax error at {where}: {problem}; {hint}"


def _valid_host(host: str) -> bool:
    if ":" in host:  # only an IPv6 address may hold colons (a port belongs in ports)
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
        return True
    return _HOST.match(host) is not None


def _show(value: Any) -> str:
    """A value as the operator wrote it, short enough for one line."""
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def _join(key: str, sub: Any) -> str:
    return f"{key}.{sub}" if key else str(sub)


class _Reader:
    """Walks the parsed YAML; every error names the file and the key path."""

    def __init__(self, label: str, path: Path) -> None:
        self.label = label
        self.path = path

    def fail(self, key: str, problem: str) -> ConfigError:
        where = f"{self.label}: {key}: " if key else f"{self.label}: "
        return ConfigError(where + problem)

    def wrong_type(self, key: str, value: Any, expected: str) -> ConfigError:
        return self.fail(key, f"{_show(value)} is {_kind(value)}; expected {expected}")

    def mapping(
        self, key: str, value: Any, allowed: tuple[str, ...], expected: str
    ) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.wrong_type(key, value, expected)
        for sub in value:
            if not isinstance(sub, str):
                raise self.fail(
                    _join(key, sub), f"key {_show(sub)} is {_kind(sub)}; expected a string key"
                )
            if sub not in allowed:
                raise self.unknown_key(key, sub, allowed)
        return value

    def unknown_key(self, key: str, sub: str, allowed: tuple[str, ...]) -> ConfigError:
        close = difflib.get_close_matches(sub, allowed, n=1, cutoff=0.6)
        if close:
            return self.fail(_join(key, sub), f"unknown key; did you mean {_join(key, close[0])}?")
        return self.fail(_join(key, sub), f"unknown key; expected one of: {', '.join(allowed)}")

    def integer(
        self, key: str, value: Any, *, minimum: int, maximum: int | None = None, noun: str = ""
    ) -> int:
        if maximum is None:
            expected = f"an integer >= {minimum}" if minimum != 1 else "a positive integer"
        else:
            expected = f"an integer {noun}{' ' if noun else ''}in {minimum}..{maximum}"
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.wrong_type(key, value, expected)
        if value < minimum or (maximum is not None and value > maximum):
            positive = minimum == 1 and maximum is None
            problem = "is not positive" if positive else "is out of range"
            raise self.fail(key, f"{value} {problem}; expected {expected}")
        return value

    def string(self, key: str, value: Any, expected: str) -> str:
        if not isinstance(value, str):
            raise self.wrong_type(key, value, expected)
        if not value.strip():
            raise self.fail(key, f"{_show(value)} is empty; expected {expected}")
        return value

    def path_template(self, key: str, value: Any, example: str) -> str:
        template = self.string(key, value, f'a path string such as "{example}"')
        for placeholder in _PLACEHOLDER.findall(template):
            if placeholder != "{id}":
                raise self.fail(
                    key,
                    f"{_show(template)} uses the unknown placeholder {placeholder}; "
                    "expected only {id} (the node id)",
                )
        return template

    # --- sections ------------------------------------------------------------------------------

    _TOP = (
        "cluster",
        "node",
        "data_dir",
        "timeouts",
        "peers",
        "tls",
        "api",
        "fsm",
        "snapshot",
        "transport",
        "raft",
        "storage",
    )

    def cluster(self, document: Any, node_arg: str | None) -> ClusterConfig:
        if document is None:
            raise self.fail("", "the file is empty; expected a mapping with at least `peers`")
        if not isinstance(document, dict):
            raise self.fail(
                "", f"the top level is {_kind(document)}; expected a mapping with at least `peers`"
            )
        top = self.mapping("", document, self._TOP, "a mapping")
        cluster = "graft"
        if "cluster" in top:
            cluster = self.string("cluster", top["cluster"], "a non-empty cluster name string")
        election_ms, heartbeat_ms = self.timeouts(top.get("timeouts"))
        clock_drift = self.clock_drift(top.get("timeouts"))
        if "peers" not in top:
            raise self.fail(
                "peers", "missing; expected a mapping of peer id to {host, ports: {p2p, api}}"
            )
        peers = self.peers(top["peers"])
        data_dir = "data/{id}"
        if "data_dir" in top:
            data_dir = self.path_template("data_dir", top["data_dir"], "data/{id}")
        transport = self.transport(top["transport"]) if "transport" in top else TransportConfig()
        api = self.api(top["api"]) if "api" in top else ApiConfig()
        # A forwarded command travels in one peer frame, with room for the envelope.
        if api.max_body_bytes > transport.max_frame_bytes - _FRAME_OVERHEAD:
            raise self.fail(
                "api.max_body_bytes",
                f"{api.max_body_bytes} does not fit in a peer frame; expected at most "
                f"transport.max_frame_bytes - {_FRAME_OVERHEAD} "
                f"= {transport.max_frame_bytes - _FRAME_OVERHEAD}",
            )
        raft = self.raft(top["raft"]) if "raft" in top else RaftTuning()
        self.append_fits_in_a_frame(raft, api, transport)
        if "{id}" not in data_dir:
            self.distinct_data_dirs(data_dir, peers)
        node = None
        if "node" in top:
            node = self.string("node", top["node"], "the id of one of the peers")
            self.known_peer("node", node, peers)
        if node_arg is not None:
            self.known_peer("--node", node_arg, peers)
            node = node_arg
        return ClusterConfig(
            path=self.path,
            base_dir=self.path.parent,
            peers=MappingProxyType(peers),
            cluster=cluster,
            node=node,
            election_ms=election_ms,
            heartbeat_ms=heartbeat_ms,
            clock_drift=clock_drift,
            data_dir_template=data_dir,
            tls=self.tls(top["tls"]) if "tls" in top else TLSConfig(),
            api=api,
            fsm=self.fsm(top["fsm"]) if "fsm" in top else FSMConfig(),
            snapshot=self.snapshot(top["snapshot"]) if "snapshot" in top else SnapshotConfig(),
            transport=transport,
            raft=raft,
            storage=self.storage(top["storage"]) if "storage" in top else StorageConfig(),
        )

    def append_fits_in_a_frame(
        self, raft: RaftTuning, api: ApiConfig, transport: TransportConfig
    ) -> None:
        """An AppendEntries holds up to raft.max_msg_bytes of entries plus the one entry that
        crosses it (a command of up to api.max_body_bytes) and a few bytes per entry; a leader
        whose messages the peers' frame limit refuses would never replicate."""
        largest = (
            raft.max_msg_bytes
            + api.max_body_bytes
            + _FRAME_OVERHEAD
            + _ENTRY_OVERHEAD * raft.max_msg_entries
        )
        if largest > transport.max_frame_bytes:
            raise self.fail(
                "raft.max_msg_bytes",
                f"an AppendEntries may take {largest} bytes (raft.max_msg_bytes "
                f"{raft.max_msg_bytes} + api.max_body_bytes {api.max_body_bytes} + "
                f"{_FRAME_OVERHEAD} + {_ENTRY_OVERHEAD} per entry x raft.max_msg_entries "
                f"{raft.max_msg_entries}), more than transport.max_frame_bytes "
                f"{transport.max_frame_bytes}; lower them or raise the frame limit",
            )

    def distinct_data_dirs(self, data_dir: str, peers: Mapping[str, PeerConfig]) -> None:
        """Peers on one host (e.g. `graft dev`) need a data_dir each: they would share it."""
        by_host: dict[str, str] = {}
        for peer in peers.values():
            if peer.host in by_host:
                raise self.fail(
                    "data_dir",
                    f"{_show(data_dir)} has no {{id}} but peers {by_host[peer.host]} and {peer.id} "
                    f'share host {peer.host}; expected {{id}} in the path (e.g. "data/{{id}}") '
                    "so that their data directories differ",
                )
            by_host[peer.host] = peer.id

    def known_peer(self, key: str, node: str, peers: Mapping[str, PeerConfig]) -> None:
        if node not in peers:
            raise self.fail(
                key, f"{_show(node)} is not a peer; expected one of: {', '.join(peers)}"
            )

    def timeouts(self, value: Any) -> tuple[int, int]:
        if value is None:
            return 350, 35
        section = self.mapping(
            "timeouts",
            value,
            ("election", "heartbeat", "clock_drift"),
            "a mapping {election: ms, heartbeat: ms, clock_drift: fraction}",
        )
        election = self.integer("timeouts.election", section.get("election", 350), minimum=1)
        heartbeat = self.integer("timeouts.heartbeat", section.get("heartbeat", 35), minimum=1)
        if election <= 2 * heartbeat:
            raise self.fail(
                "timeouts.election",
                f"{election} is not greater than 2 x timeouts.heartbeat "
                f"(2 x {heartbeat} = {2 * heartbeat}); expected an election timeout of "
                "about 10 x the heartbeat",
            )
        return election, heartbeat

    def clock_drift(self, value: Any) -> float:
        """timeouts.clock_drift: the bound on clock-rate drift the lease leaves room for."""
        if not isinstance(value, dict) or "clock_drift" not in value:
            return 0.1
        drift = value["clock_drift"]
        if isinstance(drift, bool) or not isinstance(drift, int | float):
            raise self.wrong_type("timeouts.clock_drift", drift, "a fraction such as 0.1")
        if not 0 <= drift < 0.5:
            raise self.fail(
                "timeouts.clock_drift",
                f"{_show(drift)} is outside [0, 0.5); expected a fraction of the election "
                "timeout such as 0.1 (10 %)",
            )
        return float(drift)

    def peers(self, value: Any) -> dict[str, PeerConfig]:
        expected = "a mapping of peer id to {host, ports: {p2p, api}}"
        if not isinstance(value, dict):
            raise self.wrong_type("peers", value, expected)
        if not value:
            raise self.fail("peers", f"empty; expected at least one peer: {expected}")
        peers: dict[str, PeerConfig] = {}
        used: dict[tuple[str, int], str] = {}
        for peer_id, spec in value.items():
            key = f"peers.{peer_id if isinstance(peer_id, str) else _show(peer_id)}"
            if not is_node_id(peer_id):
                hint = ""
                if isinstance(peer_id, bool):
                    hint = " (YAML reads yes/no/on/off as booleans: quote the id)"
                raise self.fail(
                    key, f"invalid peer id {_show(peer_id)}{hint}; expected {NODE_ID_RULE}"
                )
            peer = self.peer(key, peer_id, spec)
            for service, port in (("p2p", peer.p2p_port), ("api", peer.api_port)):
                address = (peer.host, port)
                where = f"{key}.ports.{service}"
                if address in used:
                    raise self.fail(
                        where,
                        f"{peer.host}:{port} is already used by {used[address]}; "
                        "expected a distinct host and port for every peer and service",
                    )
                used[address] = where
            peers[peer_id] = peer
        return peers

    def peer(self, key: str, peer_id: str, value: Any) -> PeerConfig:
        spec = self.mapping(key, value, ("host", "ports"), "a mapping {host, ports: {p2p, api}}")
        if "host" not in spec:
            raise self.fail(f"{key}.host", "missing; expected a host name or IP address")
        host = self.string(f"{key}.host", spec["host"], "a host name or IP address")
        if not _valid_host(host):
            raise self.fail(
                f"{key}.host",
                f"{_show(host)} is not a host name or IP address; expected e.g. 127.0.0.1, "
                "::1 or node1.example.com (no port, no scheme)",
            )
        if "ports" not in spec:
            raise self.fail(f"{key}.ports", "missing; expected {p2p: PORT, api: PORT}")
        ports = self.mapping(
            f"{key}.ports", spec["ports"], ("p2p", "api"), "a mapping {p2p: PORT, api: PORT}"
        )
        numbers = {}
        for service in ("p2p", "api"):
            where = f"{key}.ports.{service}"
            if service not in ports:
                raise self.fail(where, "missing; expected an integer port in 1..65535")
            numbers[service] = self.integer(
                where, ports[service], minimum=1, maximum=65535, noun="port"
            )
        return PeerConfig(id=peer_id, host=host, p2p_port=numbers["p2p"], api_port=numbers["api"])

    def tls(self, value: Any) -> TLSConfig:
        section = self.mapping("tls", value, ("ca", "cert", "key"), "a mapping {ca, cert, key}")
        default = TLSConfig()
        return TLSConfig(
            ca=self.path_template("tls.ca", section.get("ca", default.ca), default.ca),
            cert=self.path_template("tls.cert", section.get("cert", default.cert), default.cert),
            key=self.path_template("tls.key", section.get("key", default.key), default.key),
        )

    def api(self, value: Any) -> ApiConfig:
        section = self.mapping(
            "api",
            value,
            (
                "tls",
                "tokens",
                "max_body_bytes",
                "command_timeout_ms",
                "query_timeout_ms",
                "max_query_timeout_ms",
                "limits",
                "allowed_origins",
            ),
            "a mapping {tls, tokens, max_body_bytes, command_timeout_ms, query_timeout_ms, "
            "max_query_timeout_ms, limits, allowed_origins}",
        )
        default = ApiConfig()
        tls = None
        if section.get("tls") is not None:
            tls = self.api_tls(section["tls"])
        tokens: dict[str, frozenset[str]] = {}
        if section.get("tokens") is not None:
            tokens = self.tokens(section["tokens"])
        return ApiConfig(
            tls=tls,
            tokens=MappingProxyType(tokens),
            max_body_bytes=self.integer(
                "api.max_body_bytes",
                section.get("max_body_bytes", default.max_body_bytes),
                minimum=1,
            ),
            command_timeout_ms=self.integer(
                "api.command_timeout_ms",
                section.get("command_timeout_ms", default.command_timeout_ms),
                minimum=1,
            ),
            query_timeout_ms=self.integer(
                "api.query_timeout_ms",
                section.get("query_timeout_ms", default.query_timeout_ms),
                minimum=1,
            ),
            max_query_timeout_ms=self.max_query_timeout(section, default),
            limits=self.api_limits(section.get("limits")),
            allowed_origins=self.allowed_origins(section.get("allowed_origins")),
        )

    def max_query_timeout(self, section: Mapping[str, Any], default: ApiConfig) -> int:
        query_ms = section.get("query_timeout_ms", default.query_timeout_ms)
        value = section.get("max_query_timeout_ms", max(default.max_query_timeout_ms, query_ms))
        maximum = self.integer("api.max_query_timeout_ms", value, minimum=1)
        if maximum < query_ms:
            raise self.fail(
                "api.max_query_timeout_ms",
                f"{maximum} is less than api.query_timeout_ms ({query_ms}); expected the largest "
                "time limit a query may ask for, at least the default one",
            )
        return maximum

    # --- api.limits and api.allowed_origins (issue 14) ----------------------------------------

    def api_limits(self, value: Any) -> ApiLimits:
        default = ApiLimits()
        if value is None:
            return default
        names = (
            "max_batch_commands",
            "max_pending_commands",
            "max_read_waiters",
            "max_connections",
            "request_deadline_ms",
        )
        section = self.mapping("api.limits", value, names, "a mapping {" + ", ".join(names) + "}")
        numbers = {
            name: self.integer(
                f"api.limits.{name}", section.get(name, getattr(default, name)), minimum=1
            )
            for name in names
        }
        limits = ApiLimits(**numbers)
        if limits.max_pending_commands < limits.max_batch_commands:
            raise self.fail(
                "api.limits.max_pending_commands",
                f"{limits.max_pending_commands} is less than api.limits.max_batch_commands "
                f"({limits.max_batch_commands}); expected room for at least one whole batch",
            )
        return limits

    def allowed_origins(self, value: Any) -> frozenset[str]:
        if value is None:
            return frozenset()
        expected = 'a list of origins such as "https://console.example.com:8443"'
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise self.wrong_type("api.allowed_origins", value, expected)
        origins = set()
        for i, item in enumerate(value):
            origin = normalize_origin(item) if isinstance(item, str) else None
            if origin is None:
                raise self.fail(
                    f"api.allowed_origins[{i}]",
                    f"{_show(item)} is not an origin; expected scheme://host[:port] with "
                    "scheme http or https and no path",
                )
            origins.add(origin)
        return frozenset(origins)

    def api_tls(self, value: Any) -> ApiTLSConfig:
        section = self.mapping(
            "api.tls", value, ("cert", "key", "client_ca"), "a mapping {cert, key, client_ca}"
        )
        for needed, other in (("cert", "key"), ("key", "cert")):
            if needed not in section:
                has = f"{other} is set but " if other in section else ""
                raise self.fail(
                    "api.tls",
                    f"{has}{needed} is missing; expected both cert and key (client_ca optional)",
                )
        client_ca = None
        if section.get("client_ca") is not None:
            client_ca = self.path_template(
                "api.tls.client_ca", section["client_ca"], "certs/ca.pem"
            )
        return ApiTLSConfig(
            cert=self.path_template("api.tls.cert", section["cert"], "certs/{id}-api.pem"),
            key=self.path_template("api.tls.key", section["key"], "certs/{id}-api.key"),
            client_ca=client_ca,
        )

    def tokens(self, value: Any) -> dict[str, frozenset[str]]:
        expected = "a mapping of role (read, write, admin) to a list of sha256 hex digests"
        if not isinstance(value, dict):
            raise self.wrong_type("api.tokens", value, expected)
        tokens: dict[str, frozenset[str]] = {}
        for role, digests in value.items():
            key = f"api.tokens.{role}"
            if role not in TOKEN_ROLES:
                raise self.fail(
                    key, f"unknown role {_show(role)}; expected one of: {', '.join(TOKEN_ROLES)}"
                )
            if isinstance(digests, str):
                digests = [digests]
            if not isinstance(digests, list):
                raise self.wrong_type(key, digests, "a list of sha256 hex digests")
            checked = set()
            for i, digest in enumerate(digests):
                if not isinstance(digest, str) or not _SHA256_HEX.match(digest):
                    raise self.fail(
                        f"{key}[{i}]",
                        f"{_show(digest)} is not a sha256 hex digest; expected 64 hex characters "
                        "(store the hash of the token, never the token: "
                        "`printf %s TOKEN | sha256sum`)",
                    )
                checked.add(digest.lower())
            tokens[role] = frozenset(checked)
        return tokens

    def fsm(self, value: Any) -> FSMConfig:
        section = self.mapping(
            "fsm",
            value,
            ("factory", "options", "init", "eval"),
            'a mapping {factory: "module:Name", options: {...}} or {init: FILE, eval: FILE}',
        )
        script_keys = [k for k in ("init", "eval") if k in section]
        if script_keys:
            # The seed's form: the script FSM with its two files.
            if "factory" in section or "options" in section:
                raise self.fail(
                    "fsm",
                    f"{' and '.join(script_keys)} cannot be combined with factory/options; "
                    "expected either {init, eval} or {factory, options}",
                )
            files: dict[str, Any] = {}
            for name in ("init", "eval"):
                if name not in section:
                    raise self.fail(f"fsm.{name}", "missing; expected a Python file path")
                files[name] = self.string(f"fsm.{name}", section[name], "a Python file path")
            return FSMConfig(factory=SCRIPT_FSM_FACTORY, options=MappingProxyType(files))
        factory = DEFAULT_FSM_FACTORY
        if "factory" in section:
            factory = section["factory"]
            if not isinstance(factory, str) or not _FACTORY.match(factory):
                raise self.fail(
                    "fsm.factory",
                    f'{_show(factory)} is not of the form "module:Name"; '
                    f'expected e.g. "{DEFAULT_FSM_FACTORY}"',
                )
        options: dict[str, Any] = {}
        if section.get("options") is not None:
            raw = section["options"]
            if not isinstance(raw, dict):
                raise self.wrong_type("fsm.options", raw, "a mapping of keyword arguments")
            for name in raw:
                if not isinstance(name, str) or not name.isidentifier():
                    raise self.fail(
                        f"fsm.options.{name}",
                        f"{_show(name)} is not a valid name; expected a Python identifier",
                    )
            options = dict(raw)
        if factory == SCRIPT_FSM_FACTORY:
            for name in ("init", "eval"):
                self.string(f"fsm.options.{name}", options.get(name), "a Python file path")
        return FSMConfig(factory=factory, options=MappingProxyType(options))

    def snapshot(self, value: Any) -> SnapshotConfig:
        section = self.mapping(
            "snapshot",
            value,
            ("entries", "trailing", "segment_bytes"),
            "a mapping {entries, trailing, segment_bytes}",
        )
        default = SnapshotConfig()
        return SnapshotConfig(
            entries=self.integer(
                "snapshot.entries", section.get("entries", default.entries), minimum=1
            ),
            trailing=self.integer(
                "snapshot.trailing", section.get("trailing", default.trailing), minimum=0
            ),
            segment_bytes=self.integer(
                "snapshot.segment_bytes",
                section.get("segment_bytes", default.segment_bytes),
                minimum=4096,
            ),
        )

    def transport(self, value: Any) -> TransportConfig:
        keys = (
            "max_frame_bytes",
            "max_connections",
            "max_connections_per_address",
            "max_unauthenticated",
        )
        section = self.mapping("transport", value, keys, "a mapping {" + ", ".join(keys) + "}")
        default = TransportConfig()
        return TransportConfig(
            max_frame_bytes=self.integer(
                "transport.max_frame_bytes",
                section.get("max_frame_bytes", default.max_frame_bytes),
                minimum=64 * 1024,
            ),
            **{
                key: self.integer(
                    f"transport.{key}", section.get(key, getattr(default, key)), minimum=1
                )
                for key in keys[1:]
            },
        )

    def raft(self, value: Any) -> RaftTuning:
        section = self.mapping(
            "raft",
            value,
            ("max_msg_entries", "max_msg_bytes", "max_inflight"),
            "a mapping {max_msg_entries, max_msg_bytes, max_inflight}",
        )
        default = RaftTuning()
        return RaftTuning(
            max_msg_entries=self.integer(
                "raft.max_msg_entries",
                section.get("max_msg_entries", default.max_msg_entries),
                minimum=1,
            ),
            max_msg_bytes=self.integer(
                "raft.max_msg_bytes", section.get("max_msg_bytes", default.max_msg_bytes), minimum=1
            ),
            max_inflight=self.integer(
                "raft.max_inflight", section.get("max_inflight", default.max_inflight), minimum=1
            ),
        )

    def storage(self, value: Any) -> StorageConfig:
        section = self.mapping("storage", value, ("quota_bytes",), "a mapping {quota_bytes}")
        return StorageConfig(
            quota_bytes=self.integer(
                "storage.quota_bytes",
                section.get("quota_bytes", StorageConfig().quota_bytes),
                minimum=0,
            )
        )
