"""The cluster-wide sections of the config file (``cluster``, ``node``, ``data_dir``,
``timeouts``, ``peers``, ``tls``, ``fsm``, ``snapshot``, ``transport``, ``raft``, ``storage``)
and the checks that span sections (a forwarded command and an AppendEntries fit in a frame)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from graft.config import (
    DEFAULT_ELECTION_MS,
    DEFAULT_FSM_FACTORY,
    DEFAULT_HEARTBEAT_MS,
    SCRIPT_FSM_FACTORY,
    ApiConfig,
    ClusterConfig,
    FSMConfig,
    PeerConfig,
    RaftTuning,
    SnapshotConfig,
    StorageConfig,
    TLSConfig,
    TransportConfig,
)
from graft.config.api_section import ApiSectionReader
from graft.config.reader import kind, load_document, show, valid_host
from graft.ids import NODE_ID_RULE, is_node_id
from graft.raft.config import DEFAULT_CLOCK_DRIFT

_FACTORY = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
_FRAME_OVERHEAD = 64 * 1024
# What one log entry adds to an AppendEntries frame besides its data (msgpack headers).
_ENTRY_OVERHEAD = 32


def read_cluster(path: str | Path, node: str | None = None) -> ClusterConfig:
    """Read and validate the cluster config file; ``node`` (``--node``) overrides ``node:``."""
    label, document = load_document(path)
    return _ClusterReader(label, Path(path).resolve()).cluster(document, node)


class _ClusterReader(ApiSectionReader):
    """Reads the whole file, section by section."""

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
                "", f"the top level is {kind(document)}; expected a mapping with at least `peers`"
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
                    f"{show(data_dir)} has no {{id}} but peers {by_host[peer.host]} and {peer.id} "
                    f'share host {peer.host}; expected {{id}} in the path (e.g. "data/{{id}}") '
                    "so that their data directories differ",
                )
            by_host[peer.host] = peer.id

    def known_peer(self, key: str, node: str, peers: Mapping[str, PeerConfig]) -> None:
        if node not in peers:
            raise self.fail(key, f"{show(node)} is not a peer; expected one of: {', '.join(peers)}")

    def timeouts(self, value: Any) -> tuple[int, int]:
        if value is None:
            return DEFAULT_ELECTION_MS, DEFAULT_HEARTBEAT_MS
        section = self.mapping(
            "timeouts",
            value,
            ("election", "heartbeat", "clock_drift"),
            "a mapping {election: ms, heartbeat: ms, clock_drift: fraction}",
        )
        election = self.integer(
            "timeouts.election", section.get("election", DEFAULT_ELECTION_MS), minimum=1
        )
        heartbeat = self.integer(
            "timeouts.heartbeat", section.get("heartbeat", DEFAULT_HEARTBEAT_MS), minimum=1
        )
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
            return DEFAULT_CLOCK_DRIFT
        drift = value["clock_drift"]
        if isinstance(drift, bool) or not isinstance(drift, int | float):
            raise self.wrong_type("timeouts.clock_drift", drift, "a fraction such as 0.1")
        if not 0 <= drift < 0.5:
            raise self.fail(
                "timeouts.clock_drift",
                f"{show(drift)} is outside [0, 0.5); expected a fraction of the election "
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
            key = f"peers.{peer_id if isinstance(peer_id, str) else show(peer_id)}"
            if not is_node_id(peer_id):
                hint = ""
                if isinstance(peer_id, bool):
                    hint = " (YAML reads yes/no/on/off as booleans: quote the id)"
                raise self.fail(
                    key, f"invalid peer id {show(peer_id)}{hint}; expected {NODE_ID_RULE}"
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
        spec = self.mapping(
            key, value, ("host", "ports", "listen"), "a mapping {host, ports: {p2p, api}, listen}"
        )
        if "host" not in spec:
            raise self.fail(f"{key}.host", "missing; expected a host name or IP address")
        host = self.string(f"{key}.host", spec["host"], "a host name or IP address")
        if not valid_host(host):
            raise self.fail(
                f"{key}.host",
                f"{show(host)} is not a host name or IP address; expected e.g. 127.0.0.1, "
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
        listen = self.listen(f"{key}.listen", spec.get("listen"))
        return PeerConfig(
            id=peer_id,
            host=host,
            p2p_port=numbers["p2p"],
            api_port=numbers["api"],
            listen_p2p=listen.get("p2p"),
            listen_api=listen.get("api"),
        )

    def listen(self, key: str, value: Any) -> dict[str, str]:
        """peers.<id>.listen: the IP address each port binds, when not the advertised host's
        (graft.addresses): e.g. {p2p: 0.0.0.0, api: "::"} for a node behind NAT or in a
        container, advertising the name others use in `host`."""
        if value is None:
            return {}
        section = self.mapping(key, value, ("p2p", "api"), "a mapping {p2p: ADDRESS, api: ADDRESS}")
        addresses = {}
        for service, address in section.items():
            where = f"{key}.{service}"
            text = self.string(where, address, "an IP address such as 0.0.0.0 or ::")
            try:
                ipaddress.ip_address(text)
            except ValueError:
                raise self.fail(
                    where,
                    f"{show(text)} is not an IP address; expected the address to bind, e.g. "
                    "0.0.0.0 (every IPv4 interface), :: (every interface) or 10.0.0.5 "
                    "(names belong in host, which peers and clients use)",
                ) from None
            addresses[service] = text
        return addresses

    def tls(self, value: Any) -> TLSConfig:
        section = self.mapping("tls", value, ("ca", "cert", "key"), "a mapping {ca, cert, key}")
        default = TLSConfig()
        return TLSConfig(
            ca=self.path_template("tls.ca", section.get("ca", default.ca), default.ca),
            cert=self.path_template("tls.cert", section.get("cert", default.cert), default.cert),
            key=self.path_template("tls.key", section.get("key", default.key), default.key),
        )

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
                    f'{show(factory)} is not of the form "module:Name"; '
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
                        f"{show(name)} is not a valid name; expected a Python identifier",
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
            ("entries", "log_ratio", "max_log_bytes", "trailing", "segment_bytes"),
            "a mapping {entries, log_ratio, max_log_bytes, trailing, segment_bytes}",
        )
        default = SnapshotConfig()
        return SnapshotConfig(
            entries=self.integer(
                "snapshot.entries", section.get("entries", default.entries), minimum=1
            ),
            log_ratio=self.snapshot_log_ratio(section.get("log_ratio", default.log_ratio)),
            max_log_bytes=self.integer(
                "snapshot.max_log_bytes",
                section.get("max_log_bytes", default.max_log_bytes),
                minimum=0,
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

    def snapshot_log_ratio(self, ratio: Any) -> float:
        """snapshot.log_ratio: log bytes per byte of the last snapshot before the next one."""
        key = "snapshot.log_ratio"
        if isinstance(ratio, bool) or not isinstance(ratio, int | float):
            raise self.wrong_type(key, ratio, "a number such as 4")
        if not 0 <= ratio <= 1000:
            raise self.fail(
                key,
                f"{show(ratio)} is outside [0, 1000]; expected a multiple of the last "
                "snapshot's size such as 4 (0: snapshot every snapshot.entries entries)",
            )
        return float(ratio)

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
        section = self.mapping(
            "storage",
            value,
            ("quota_bytes", "inline_fsync"),
            "a mapping {quota_bytes, inline_fsync}",
        )
        return StorageConfig(
            quota_bytes=self.integer(
                "storage.quota_bytes",
                section.get("quota_bytes", StorageConfig().quota_bytes),
                minimum=0,
            ),
            inline_fsync=self.storage_inline_fsync(section),
        )

    def storage_inline_fsync(self, section: dict[str, Any]) -> bool:
        value = section.get("inline_fsync", StorageConfig().inline_fsync)
        if not isinstance(value, bool):
            raise self.wrong_type("storage.inline_fsync", value, "true or false")
        return value
