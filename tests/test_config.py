"""graft.config: the seed's file loads unchanged, and every bad file fails with one exact line."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from graft.config import (
    DEFAULT_FSM_FACTORY,
    SCRIPT_FSM_FACTORY,
    ApiTLSFiles,
    ClusterConfig,
    ConfigError,
    PeerConfig,
    TLSFiles,
    load_config,
)

REPO = Path(__file__).resolve().parent.parent

# The configuration format of the user's original description, byte for byte.
SEED_YAML = """\
timeouts:
  election: 350 # ms
  heartbeat: 35 # ms
peers: # Define all cluster peers
  turing: # Peer id
    host: 127.0.0.1
    ports:
      p2p: 8880 # Peer to peer port
      api: 8080 # Public cluster API
  ritchie:
    host: 127.0.0.1
    ports:
      p2p: 8881
      api: 8081
  lovelace:
    host: 127.0.0.1
    ports:
      p2p: 8882
      api: 8082
"""

# The seed's second example: the FSM bindings (peers added, as a file needs them).
SEED_FSM_YAML = """\
---
fsm:
  eval: conf/fsm_eval.py
  init: conf/fsm_init.py
timeouts:
  election: 300 # ms
  heartbeat: 30 # ms
peers:
  turing: {host: 127.0.0.1, ports: {p2p: 8880, api: 8080}}
"""

PEERS = """\
peers:
  turing: {host: 127.0.0.1, ports: {p2p: 8880, api: 8080}}
  ritchie: {host: 127.0.0.1, ports: {p2p: 8881, api: 8081}}
"""

DIGEST = hashlib.sha256(b"secret").hexdigest()

# (name, file text, expected message with {file} standing for the path given to load_config)
BAD_CONFIGS: list[tuple[str, str, str]] = [
    (
        "unknown top-level key, close to a known one",
        "timeout: {election: 350}\n" + PEERS,
        "{file}: timeout: unknown key; did you mean timeouts?",
    ),
    (
        "unknown nested key",
        "timeouts: {electon: 350}\n" + PEERS,
        "{file}: timeouts.electon: unknown key; did you mean timeouts.election?",
    ),
    (
        "unknown key with no close match",
        "zzz: 1\n" + PEERS,
        "{file}: zzz: unknown key; expected one of: cluster, node, data_dir, timeouts, peers, "
        "tls, api, fsm, snapshot, transport, raft, storage",
    ),
    (
        "missing peers",
        "timeouts: {election: 350, heartbeat: 35}\n",
        "{file}: peers: missing; expected a mapping of peer id to {host, ports: {p2p, api}}",
    ),
    (
        "empty peers",
        "peers: {}\n",
        "{file}: peers: empty; expected at least one peer: a mapping of peer id to "
        "{host, ports: {p2p, api}}",
    ),
    (
        "peers as a list",
        "peers: [turing, ritchie]\n",
        '{file}: peers: ["turing", "ritchie"] is a list; expected a mapping of peer id to '
        "{host, ports: {p2p, api}}",
    ),
    (
        "peer without host",
        "peers:\n  turing: {ports: {p2p: 8880, api: 8080}}\n",
        "{file}: peers.turing.host: missing; expected a host name or IP address",
    ),
    (
        "peer with an empty host",
        'peers:\n  turing: {host: "", ports: {p2p: 8880, api: 8080}}\n',
        '{file}: peers.turing.host: "" is empty; expected a host name or IP address',
    ),
    (
        "peer without ports",
        "peers:\n  turing: {host: 127.0.0.1}\n",
        "{file}: peers.turing.ports: missing; expected {p2p: PORT, api: PORT}",
    ),
    (
        "peer without an api port",
        "peers:\n  turing: {host: 127.0.0.1, ports: {p2p: 8880}}\n",
        "{file}: peers.turing.ports.api: missing; expected an integer port in 1..65535",
    ),
    (
        "port as a string",
        'peers:\n  turing: {host: 127.0.0.1, ports: {p2p: "8880", api: 8080}}\n',
        '{file}: peers.turing.ports.p2p: "8880" is a string; expected an integer port in 1..65535',
    ),
    (
        "port above 65535",
        "peers:\n  turing: {host: 127.0.0.1, ports: {p2p: 70000, api: 8080}}\n",
        "{file}: peers.turing.ports.p2p: 70000 is out of range; "
        "expected an integer port in 1..65535",
    ),
    (
        "port zero",
        "peers:\n  turing: {host: 127.0.0.1, ports: {p2p: 0, api: 8080}}\n",
        "{file}: peers.turing.ports.p2p: 0 is out of range; expected an integer port in 1..65535",
    ),
    (
        "the same host and port twice",
        "peers:\n  turing: {host: 127.0.0.1, ports: {p2p: 8880, api: 8080}}\n"
        "  ritchie: {host: 127.0.0.1, ports: {p2p: 8080, api: 8081}}\n",
        "{file}: peers.ritchie.ports.p2p: 127.0.0.1:8080 is already used by "
        "peers.turing.ports.api; expected a distinct host and port for every peer and service",
    ),
    (
        "a peer id written twice",
        "peers:\n  turing: {host: 127.0.0.1, ports: {p2p: 8880, api: 8080}}\n"
        "  turing: {host: 127.0.0.1, ports: {p2p: 8881, api: 8081}}\n",
        '{file}: line 3: duplicate key "turing"; expected each key once in a mapping',
    ),
    (
        "election timeout not greater than twice the heartbeat",
        "timeouts: {election: 60, heartbeat: 35}\n" + PEERS,
        "{file}: timeouts.election: 60 is not greater than 2 x timeouts.heartbeat "
        "(2 x 35 = 70); expected an election timeout of about 10 x the heartbeat",
    ),
    (
        "negative heartbeat",
        "timeouts: {election: 350, heartbeat: -5}\n" + PEERS,
        "{file}: timeouts.heartbeat: -5 is not positive; expected a positive integer",
    ),
    (
        "boolean timeout",
        "timeouts: {election: yes}\n" + PEERS,
        "{file}: timeouts.election: true is a boolean; expected a positive integer",
    ),
    (
        "upper-case peer id",
        "peers:\n  Turing: {host: 127.0.0.1, ports: {p2p: 8880, api: 8080}}\n",
        '{file}: peers.Turing: invalid peer id "Turing"; expected lowercase letters, digits and '
        "hyphens, 1-63 characters, not starting or ending with a hyphen",
    ),
    (
        "YAML boolean as a peer id",
        "peers:\n  on: {host: 127.0.0.1, ports: {p2p: 8880, api: 8080}}\n",
        "{file}: peers.true: invalid peer id true (YAML reads yes/no/on/off as booleans: quote "
        "the id); expected lowercase letters, digits and hyphens, 1-63 characters, not starting "
        "or ending with a hyphen",
    ),
    (
        "host with a port in it",
        "peers:\n  turing: {host: '127.0.0.1:8880', ports: {p2p: 8880, api: 8080}}\n",
        '{file}: peers.turing.host: "127.0.0.1:8880" is not a host name or IP address; expected '
        "e.g. 127.0.0.1, ::1 or node1.example.com (no port, no scheme)",
    ),
    (
        "shared data_dir for peers on one host",
        "data_dir: /var/lib/graft\n" + PEERS,
        '{file}: data_dir: "/var/lib/graft" has no {id} but peers turing and ritchie share host '
        '127.0.0.1; expected {id} in the path (e.g. "data/{id}") so that their data directories '
        "differ",
    ),
    (
        "node not among the peers",
        "node: hopper\n" + PEERS,
        '{file}: node: "hopper" is not a peer; expected one of: turing, ritchie',
    ),
    (
        "fsm.factory without a colon",
        "fsm: {factory: graft.fsm.sqlite.SQLiteStateMachine}\n" + PEERS,
        '{file}: fsm.factory: "graft.fsm.sqlite.SQLiteStateMachine" is not of the form '
        '"module:Name"; expected e.g. "graft.fsm.sqlite:SQLiteStateMachine"',
    ),
    (
        "fsm mixing the seed's form and a factory",
        "fsm: {factory: 'a:B', init: x.py}\n" + PEERS,
        "{file}: fsm: init cannot be combined with factory/options; "
        "expected either {init, eval} or {factory, options}",
    ),
    (
        "fsm.init without fsm.eval",
        "fsm: {init: x.py}\n" + PEERS,
        "{file}: fsm.eval: missing; expected a Python file path",
    ),
    (
        "unknown token role",
        f"api: {{tokens: {{root: ['{DIGEST}']}}}}\n" + PEERS,
        '{file}: api.tokens.root: unknown role "root"; expected one of: read, write, admin',
    ),
    (
        "token hash that is not 64 hex characters",
        "api: {tokens: {read: [abc]}}\n" + PEERS,
        '{file}: api.tokens.read[0]: "abc" is not a sha256 hex digest; expected 64 hex '
        "characters (store the hash of the token, never the token: "
        "`printf %s TOKEN | sha256sum`)",
    ),
    (
        "api.tls without a key",
        "api: {tls: {cert: certs/api.pem}}\n" + PEERS,
        "{file}: api.tls: cert is set but key is missing; "
        "expected both cert and key (client_ca optional)",
    ),
    (
        "data_dir not a string",
        "data_dir: 5\n" + PEERS,
        '{file}: data_dir: 5 is an integer; expected a path string such as "data/{id}"',
    ),
    (
        "data_dir with an unknown placeholder",
        "data_dir: data/{node}\n" + PEERS,
        '{file}: data_dir: "data/{node}" uses the unknown placeholder {node}; '
        "expected only {id} (the node id)",
    ),
    (
        "YAML syntax error",
        "peers:\n  turing: {host: 127.0.0.1\n  ritchie: 1\n",
        "{file}: YAML syntax error at line 3, column 10: expected ',' or '}', but got ':'; "
        "fix the YAML syntax there",
    ),
    (
        "top level is a list",
        "- turing\n- ritchie\n",
        "{file}: the top level is a list; expected a mapping with at least `peers`",
    ),
    (
        "empty file",
        "",
        "{file}: the file is empty; expected a mapping with at least `peers`",
    ),
    (
        "snapshot.entries zero",
        "snapshot: {entries: 0}\n" + PEERS,
        "{file}: snapshot.entries: 0 is not positive; expected a positive integer",
    ),
    (
        "snapshot.log_ratio negative",
        "snapshot: {log_ratio: -1}\n" + PEERS,
        "{file}: snapshot.log_ratio: -1 is outside [0, 1000]; expected a multiple of the last "
        "snapshot's size such as 4 (0: snapshot every snapshot.entries entries)",
    ),
    (
        "snapshot.max_log_bytes negative",
        "snapshot: {max_log_bytes: -1}\n" + PEERS,
        "{file}: snapshot.max_log_bytes: -1 is out of range; expected an integer >= 0",
    ),
    (
        "snapshot.log_ratio not a number",
        'snapshot: {log_ratio: "4x"}\n' + PEERS,
        '{file}: snapshot.log_ratio: "4x" is a string; expected a number such as 4',
    ),
    (
        "snapshot.log_ratio NaN",
        "snapshot: {log_ratio: .nan}\n" + PEERS,
        "{file}: snapshot.log_ratio: NaN is outside [0, 1000]; expected a multiple of the last "
        "snapshot's size such as 4 (0: snapshot every snapshot.entries entries)",
    ),
    (
        "api body limit larger than a peer frame",
        "api: {max_body_bytes: 20000000}\n" + PEERS,
        "{file}: api.max_body_bytes: 20000000 does not fit in a peer frame; "
        "expected at most transport.max_frame_bytes - 65536 = 16711680",
    ),
    (
        "AppendEntries larger than a peer frame",
        "raft: {max_msg_bytes: 16000000}\n" + PEERS,
        "{file}: raft.max_msg_bytes: an AppendEntries may take 17146880 bytes (raft.max_msg_bytes "
        "16000000 + api.max_body_bytes 1048576 + 65536 + 32 per entry x raft.max_msg_entries "
        "1024), more than transport.max_frame_bytes 16777216; lower them or raise the frame limit",
    ),
    (
        "raft.max_inflight zero",
        "raft: {max_inflight: 0}\n" + PEERS,
        "{file}: raft.max_inflight: 0 is not positive; expected a positive integer",
    ),
]


class BadConfigTests(SynchronousTestCase):
    def write(self, text: str) -> Path:
        directory = Path(self.mktemp())
        directory.mkdir()
        path = directory / "cluster.yaml"
        path.write_text(text, encoding="utf-8")
        return path

    def test_table(self) -> None:
        """Each bad config fails with exactly its one-line message naming key, value and
        expectation."""
        self.assertGreaterEqual(len(BAD_CONFIGS), 15)
        for name, text, expected in BAD_CONFIGS:
            path = self.write(text)
            with self.subTest(name):
                error = self.assertRaises(ConfigError, load_config, str(path))
                self.assertEqual(str(error), expected.replace("{file}", str(path)))
                self.assertNotIn("\n", str(error))

    def test_file_not_found(self) -> None:
        """A missing config file says so and how to pass one."""
        error = self.assertRaises(ConfigError, load_config, "no/such/cluster.yaml")
        self.assertEqual(
            str(error),
            "no/such/cluster.yaml: config file not found; "
            "pass an existing YAML file with -c/--config",
        )

    def test_node_argument_not_a_peer(self) -> None:
        """--node must name a peer; the error lists the peers."""
        path = self.write(PEERS)
        error = self.assertRaises(ConfigError, load_config, path, "bob")
        self.assertEqual(
            str(error), f'{path}: --node: "bob" is not a peer; expected one of: turing, ritchie'
        )


class GoodConfigTests(SynchronousTestCase):
    def write(self, text: str, name: str = "cluster.yaml") -> Path:
        directory = Path(self.mktemp())
        directory.mkdir()
        path = directory / name
        path.write_text(text, encoding="utf-8")
        return path

    def test_seed_yaml_verbatim(self) -> None:
        """The seed's file loads unchanged, with its timeouts, peers in file order, and the
        defaults for everything it does not say."""
        path = self.write(SEED_YAML)
        cfg = load_config(path)
        self.assertEqual(cfg.cluster, "graft")
        self.assertIsNone(cfg.node)
        self.assertEqual((cfg.election_ms, cfg.heartbeat_ms), (350, 35))
        self.assertEqual(list(cfg.peers), ["turing", "ritchie", "lovelace"])
        self.assertEqual(
            cfg.peers["ritchie"],
            PeerConfig(id="ritchie", host="127.0.0.1", p2p_port=8881, api_port=8081),
        )
        self.assertEqual(cfg.fsm.factory, DEFAULT_FSM_FACTORY)
        self.assertEqual(cfg.snapshot.entries, 10000)
        self.assertEqual(cfg.snapshot.trailing, 1000)
        self.assertEqual(cfg.snapshot.log_ratio, 4.0)
        self.assertEqual(cfg.snapshot.max_log_bytes, 0)
        self.assertEqual(cfg.snapshot_max_log_bytes, 2 << 30)  # a quarter of the 8 GiB quota
        self.assertEqual(cfg.transport.max_frame_bytes, 16 << 20)
        self.assertEqual(cfg.raft.max_inflight, 64)
        self.assertEqual(cfg.api.max_body_bytes, 1 << 20)
        self.assertEqual(dict(cfg.api.tokens), {})
        self.assertEqual(cfg.path, path.resolve())
        self.assertEqual(cfg.base_dir, path.resolve().parent)

    def test_paths_relative_to_the_config_file(self) -> None:
        """data_dir and TLS paths are absolute, {id} replaced, relative to the file's directory."""
        path = self.write(SEED_YAML)
        cfg = load_config(path)
        base = path.resolve().parent
        self.assertEqual(cfg.data_dir("turing"), base / "data" / "turing")
        self.assertEqual(
            cfg.tls_for("ritchie"),
            TLSFiles(
                ca=base / "certs" / "ca.pem",
                cert=base / "certs" / "ritchie.pem",
                key=base / "certs" / "ritchie.key",
            ),
        )
        self.assertIsNone(cfg.api_tls_for("turing"))
        self.assertEqual(cfg.api_url("lovelace"), "http://127.0.0.1:8082")

    def test_repository_cluster_yaml(self) -> None:
        """conf/cluster.yaml (the demo cluster) loads, and its paths point into the checkout."""
        cfg = load_config(REPO / "conf" / "cluster.yaml", "turing")
        self.assertEqual(cfg.cluster, "demo")
        self.assertEqual(cfg.node, "turing")
        self.assertEqual(list(cfg.peers), ["turing", "ritchie", "lovelace"])
        self.assertEqual([p.api_port for p in cfg.peers.values()], [8080, 8081, 8082])
        self.assertEqual(cfg.data_dir("turing"), REPO / "data" / "turing")
        self.assertEqual(cfg.tls_for("turing").ca, REPO / "certs" / "ca.pem")

    def test_seed_fsm_bindings(self) -> None:
        """The seed's `fsm: {init, eval}` form selects the script FSM with those files."""
        path = self.write(SEED_FSM_YAML)
        cfg = load_config(path)
        self.assertEqual(cfg.fsm.factory, SCRIPT_FSM_FACTORY)
        self.assertEqual(
            dict(cfg.fsm.options), {"init": "conf/fsm_init.py", "eval": "conf/fsm_eval.py"}
        )
        self.assertEqual((cfg.election_ms, cfg.heartbeat_ms), (300, 30))
        base = path.resolve().parent
        self.assertEqual(
            cfg.script_files(),
            {"init": base / "conf" / "fsm_init.py", "eval": base / "conf" / "fsm_eval.py"},
        )

    def test_every_section(self) -> None:
        """A file using every optional section loads into the matching objects."""
        text = textwrap.dedent(
            f"""\
            cluster: prod
            node: ritchie
            data_dir: /var/lib/graft/{{id}}
            tls: {{ca: pki/ca.pem, cert: "pki/{{id}}.crt", key: "pki/{{id}}.key"}}
            api:
              tls:
                cert: pki/{{id}}-api.crt
                key: pki/{{id}}-api.key
                client_ca: pki/ca.pem
              tokens: {{read: ["{DIGEST.upper()}"], admin: "{DIGEST}"}}
              max_body_bytes: 4096
              command_timeout_ms: 100
              query_timeout_ms: 200
            fsm: {{factory: "graft.fsm.kv:KeyValueStateMachine", options: {{}}}}
            snapshot: {{entries: 50, log_ratio: 2.5, max_log_bytes: 4096, trailing: 0}}
            transport: {{max_frame_bytes: 1048576}}
            raft: {{max_msg_entries: 10, max_msg_bytes: 2048, max_inflight: 4}}
            """
        )
        path = self.write(text + PEERS.replace("127.0.0.1", '"::1"', 1))
        cfg = load_config(path)
        base = path.resolve().parent
        self.assertEqual(cfg.cluster, "prod")
        self.assertEqual(cfg.node, "ritchie")
        self.assertEqual(cfg.data_dir("turing"), Path("/var/lib/graft/turing"))
        self.assertEqual(cfg.tls_for("turing").cert, base / "pki" / "turing.crt")
        self.assertEqual(
            cfg.api_tls_for("turing"),
            ApiTLSFiles(
                cert=base / "pki" / "turing-api.crt",
                key=base / "pki" / "turing-api.key",
                client_ca=base / "pki" / "ca.pem",
            ),
        )
        self.assertEqual(dict(cfg.api.tokens), {"read": {DIGEST}, "admin": {DIGEST}})
        self.assertEqual(
            (cfg.api.max_body_bytes, cfg.api.command_timeout_ms, cfg.api.query_timeout_ms),
            (4096, 100, 200),
        )
        self.assertEqual(cfg.fsm.factory, "graft.fsm.kv:KeyValueStateMachine")
        self.assertEqual(
            (cfg.snapshot.entries, cfg.snapshot.log_ratio, cfg.snapshot.trailing), (50, 2.5, 0)
        )
        self.assertEqual(cfg.snapshot_max_log_bytes, 4096)
        self.assertEqual(cfg.max_frame_bytes, 1 << 20)
        self.assertEqual(
            (cfg.raft.max_msg_entries, cfg.raft.max_msg_bytes, cfg.raft.max_inflight), (10, 2048, 4)
        )
        self.assertEqual(cfg.api_url("turing"), "https://[::1]:8080")

    def test_node_argument_overrides_file(self) -> None:
        """load_config's node argument wins over the file's `node:` key."""
        cfg = load_config(self.write("node: turing\n" + PEERS), "ritchie")
        self.assertEqual(cfg.node, "ritchie")

    def test_frozen(self) -> None:
        """Config objects cannot be changed after loading."""
        cfg = load_config(self.write(SEED_YAML))
        with self.assertRaises(AttributeError):
            cfg.cluster = "other"  # type: ignore[misc]
        with self.assertRaises(TypeError):
            cfg.peers["x"] = cfg.peers["turing"]  # type: ignore[index]


class CheckFilesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.dir.mkdir()

    def write(self, text: str) -> Path:
        path = self.dir / "cluster.yaml"
        path.write_text(text, encoding="utf-8")
        return path

    def make_certs(self, *names: str) -> None:
        (self.dir / "certs").mkdir(exist_ok=True)
        for name in names:
            (self.dir / "certs" / name).write_text("pem")

    def test_missing_certificate_says_how_to_create_it(self) -> None:
        """A missing TLS file names the key and the file, and says to run `graft certs`."""
        path = self.write(PEERS)
        self.make_certs("ca.pem", "turing.key")
        cfg = load_config(path)
        error = self.assertRaises(ConfigError, cfg.check_files, "turing")
        self.assertEqual(
            str(error),
            f"{cfg.path}: tls.cert: file {self.dir.resolve() / 'certs' / 'turing.pem'} not found; "
            f"create the certificates with `graft certs -c {cfg.path}`",
        )

    def test_all_present(self) -> None:
        """With every file in place check_files passes."""
        self.make_certs("ca.pem", "turing.pem", "turing.key")
        load_config(self.write(PEERS)).check_files("turing")

    def test_missing_script(self) -> None:
        """The seed's fsm bindings are checked too: a missing script file is named."""
        self.make_certs("ca.pem", "turing.pem", "turing.key")
        cfg = load_config(self.write("fsm: {init: init.py, eval: eval.py}\n" + PEERS))
        (self.dir / "init.py").write_text("def init():\n    return {}\n")
        error = self.assertRaises(ConfigError, cfg.check_files, "turing")
        self.assertIn("fsm.eval: file ", str(error))
        self.assertIn("eval.py not found", str(error))

    def test_missing_api_certificate(self) -> None:
        """api.tls files are checked when api.tls is set."""
        self.make_certs("ca.pem", "turing.pem", "turing.key")
        cfg = load_config(self.write("api: {tls: {cert: api.pem, key: api.key}}\n" + PEERS))
        error = self.assertRaises(ConfigError, cfg.check_files, "turing")
        self.assertIn("api.tls.cert: file ", str(error))


class QueryTimeLimitConfigTests(SynchronousTestCase):
    def load(self, api: str) -> ClusterConfig:
        directory = Path(self.mktemp())
        directory.mkdir()
        path = directory / "cluster.yaml"
        path.write_text(f"api: {api}\n" + PEERS, encoding="utf-8")
        return load_config(path)

    def test_max_query_timeout(self) -> None:
        """api.max_query_timeout_ms caps ?timeout=; by default 60 s, or query_timeout_ms when
        that is larger; it may not be below query_timeout_ms."""
        self.assertEqual(self.load("{}").api.max_query_timeout_ms, 60000)
        self.assertEqual(self.load("{query_timeout_ms: 90000}").api.max_query_timeout_ms, 90000)
        cfg = self.load("{query_timeout_ms: 1000, max_query_timeout_ms: 2000}")
        self.assertEqual((cfg.api.query_timeout_ms, cfg.api.max_query_timeout_ms), (1000, 2000))
        for bad, problem in (
            ("{query_timeout_ms: 3000, max_query_timeout_ms: 2000}", "less than"),
            ("{max_query_timeout_ms: 0}", "not positive"),
            ("{max_query_timeout_ms: 1m}", "expected a positive integer"),
        ):
            error = self.assertRaises(ConfigError, self.load, bad)
            self.assertIn("api.max_query_timeout_ms", str(error))
            self.assertIn(problem, str(error))


class ClockDriftConfigTests(SynchronousTestCase):
    def load(self, timeouts: str) -> ClusterConfig:
        directory = Path(self.mktemp())
        directory.mkdir()
        path = directory / "cluster.yaml"
        path.write_text(f"timeouts: {timeouts}\n" + PEERS, encoding="utf-8")
        return load_config(path)

    def test_clock_drift(self) -> None:
        """timeouts.clock_drift: 0.1 by default, a fraction in [0, 0.5), reaching the core."""
        from graft.service import raft_config_for

        cfg = self.load("{election: 350, heartbeat: 35}")
        self.assertEqual(cfg.clock_drift, 0.1)
        self.assertEqual(raft_config_for(cfg, "turing").lease_ticks, 6)
        cfg = self.load("{election: 350, heartbeat: 35, clock_drift: 0.3}")
        self.assertEqual(raft_config_for(cfg, "turing").lease_ticks, 10 - 3 - 1 - 2)
        self.assertEqual(self.load("{clock_drift: 0}").clock_drift, 0.0)
        for bad, problem in (
            ("{clock_drift: 0.5}", "outside [0, 0.5)"),
            ("{clock_drift: -0.1}", "outside [0, 0.5)"),
            ("{clock_drift: ten}", "expected a fraction"),
            ("{clock_drift: true}", "expected a fraction"),
        ):
            error = self.assertRaises(ConfigError, self.load, bad)
            self.assertIn("timeouts.clock_drift", str(error))
            self.assertIn(problem, str(error))


class InlineFsyncConfigTests(SynchronousTestCase):
    def load(self, storage: str) -> ClusterConfig:
        directory = Path(self.mktemp())
        directory.mkdir()
        path = directory / "cluster.yaml"
        path.write_text(f"storage: {storage}\n" + PEERS, encoding="utf-8")
        return load_config(path)

    def test_inline_fsync(self) -> None:
        """storage.inline_fsync: off by default, a boolean, nothing else."""
        self.assertFalse(self.load("{}").storage.inline_fsync)
        self.assertTrue(self.load("{inline_fsync: true}").storage.inline_fsync)
        self.assertFalse(self.load("{inline_fsync: false}").storage.inline_fsync)
        for bad in ("{inline_fsync: 1}", "{inline_fsync: fast}"):
            error = self.assertRaises(ConfigError, self.load, bad)
            self.assertIn("storage.inline_fsync", str(error))
            self.assertIn("expected true or false", str(error))
