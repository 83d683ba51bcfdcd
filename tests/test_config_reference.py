"""docs/configuration.md against the config loader: every key the loader accepts is in the page,
every key the page documents is accepted, and the README's example config and conf/cluster.yaml
put data and certificates where they say."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import yaml
from twisted.trial import unittest

from graft.config import TOKEN_ROLES, load_config
from graft.config.reader import Reader

ROOT = Path(__file__).resolve().parents[1]
CONFIG_MD = ROOT / "docs" / "configuration.md"
# A key in the first column of a table: | `api.limits.max_connections` | ...
_KEY_ROW = re.compile(r"^\| *`([a-z_][a-z0-9_.<>]*)` *\|", re.MULTILINE)
_PEER = re.compile(r"^peers\.[^.]+")

# A config with every section the loader reads, so that each section's reader runs.
EVERY_SECTION: dict[str, Any] = {
    "cluster": "c",
    "node": "n1",
    "data_dir": "data/{id}",
    "timeouts": {"election": 350, "heartbeat": 35, "clock_drift": 0.1},
    "peers": {
        "n1": {
            "host": "127.0.0.1",
            "ports": {"p2p": 7001, "api": 8001},
            "listen": {"p2p": "0.0.0.0", "api": "::"},
        }
    },
    "tls": {"ca": "certs/ca.pem"},
    "api": {
        "tls": {"cert": "a.pem", "key": "a.key", "client_ca": "ca.pem"},
        "tokens": {role: ["0" * 64] for role in TOKEN_ROLES},
        "limits": {},
        "allowed_origins": [],
    },
    "fsm": {"factory": "graft.fsm.kv:KeyValueStateMachine", "options": {}},
    "snapshot": {},
    "transport": {},
    "raft": {},
    "storage": {"inline_fsync": True},
}


def accepted_keys(test: unittest.TestCase, tmp: Path) -> tuple[set[str], tuple[str, ...]]:
    """Every key path the loader accepts (sections and leaves, a peer id as ``<id>``), found by
    recording the allowed keys of each ``Reader.mapping`` call while EVERY_SECTION loads; and
    the top-level keys."""
    seen: list[tuple[str, tuple[str, ...]]] = []
    original = Reader.mapping

    def recording(
        self: Reader, key: str, value: Any, allowed: tuple[str, ...], expected: str
    ) -> dict[str, Any]:
        seen.append((key, allowed))
        return original(self, key, value, allowed, expected)

    test.patch(Reader, "mapping", recording)
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "every.yaml"
    path.write_text(yaml.safe_dump(EVERY_SECTION))
    load_config(path)
    keys: set[str] = set()
    top: tuple[str, ...] = ()
    for key, allowed in seen:
        if key == "":
            top = allowed
        prefix = _PEER.sub("peers.<id>", key)
        keys.update(f"{prefix}.{sub}" if prefix else sub for sub in allowed)
    keys.discard("peers")
    keys.add("peers.<id>")  # the peers mapping is read entry by entry, not with mapping()
    # The roles under api.tokens are checked against TOKEN_ROLES, not with mapping().
    keys.update(f"api.tokens.{role}" for role in TOKEN_ROLES)
    return keys, top


def documented_keys() -> set[str]:
    return set(_KEY_ROW.findall(CONFIG_MD.read_text(encoding="utf-8")))


def covered(key: str, documented: set[str]) -> bool:
    """A key is documented by its own row, or (a section) by rows of keys inside it."""
    return key in documented or any(d.startswith(key + ".") for d in documented)


class ConfigReferenceTests(unittest.TestCase):
    def test_every_section_is_read(self) -> None:
        """EVERY_SECTION holds every top-level key, so the recording sees every section's keys
        (a new section must be added to it)."""
        _, top = accepted_keys(self, Path(self.mktemp()).resolve())
        self.assertEqual(sorted(set(top) - set(EVERY_SECTION)), [])

    def test_every_accepted_key_is_documented(self) -> None:
        """Each key the loader accepts has a row in docs/configuration.md (or, for a section,
        rows for the keys in it)."""
        keys, _ = accepted_keys(self, Path(self.mktemp()).resolve())
        documented = documented_keys()
        missing = sorted(k for k in keys if not covered(k, documented))
        self.assertEqual(missing, [], f"accepted by the loader but not in {CONFIG_MD}")

    def test_every_documented_key_is_accepted(self) -> None:
        """Each row of docs/configuration.md names a key the loader accepts."""
        keys, _ = accepted_keys(self, Path(self.mktemp()).resolve())
        unknown = sorted(documented_keys() - keys)
        self.assertEqual(unknown, [], f"in {CONFIG_MD} but refused by the loader")

    def test_examples_load_and_agree_on_paths(self) -> None:
        """The README's example config and the one in docs/configuration.md, placed where
        conf/cluster.yaml is, load and put each node's data dir and certificates where
        conf/cluster.yaml does: relative paths start at the config file's directory."""
        tmp = Path(self.mktemp()).resolve()
        (tmp / "conf").mkdir(parents=True)
        shutil.copy(ROOT / "conf" / "cluster.yaml", tmp / "conf" / "cluster.yaml")
        reference = load_config(tmp / "conf" / "cluster.yaml")
        self.assertEqual(reference.data_dir("turing"), tmp / "data" / "turing")
        for name, doc in (("readme", ROOT / "README.md"), ("configuration", CONFIG_MD)):
            example = tmp / "conf" / f"{name}.yaml"
            example.write_text(_yaml_block(doc.read_text(encoding="utf-8"), "peers:"))
            cfg = load_config(example)
            self.assertEqual(list(cfg.peers), list(reference.peers), name)
            for node in reference.peers:
                self.assertEqual(cfg.data_dir(node), reference.data_dir(node), name)
                self.assertEqual(cfg.tls_for(node), reference.tls_for(node), name)


def _yaml_block(markdown: str, containing: str) -> str:
    for block in re.findall(r"^```yaml\n(.*?)^```", markdown, re.MULTILINE | re.DOTALL):
        if containing in block:
            return str(block)
    raise AssertionError(f"no yaml block with {containing!r}")
