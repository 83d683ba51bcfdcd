"""contrib/docker: what can be checked without a Docker daemon (none runs on the development
machine, and no registry is reachable, so the image is never built by the tests): the
Dockerfile copies files that exist in its build context and runs `graft start` as a non-root
user with a data volume; the compose file's nodes are the config's peers with their own data
volumes and the config and certificates mounted read-only; the config loads with
graft.config's loader, binds every interface and advertises the service names."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from twisted.trial import unittest

from graft.config import load_config

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "contrib" / "docker"


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of each line, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


class ContainerRecipeTests(unittest.TestCase):
    def setUp(self) -> None:
        self.compose: dict[str, Any] = yaml.safe_load(
            (DOCKER / "compose.yaml").read_text(encoding="utf-8")
        )
        self.services: dict[str, Any] = self.compose["services"]

    def test_dockerfile_copies_what_exists_and_runs_graft_start(self) -> None:
        steps = instructions(DOCKER / "Dockerfile")
        args = {
            rest.split("=", 1)[0]: rest.split("=", 1)[1] for word, rest in steps if word == "ARG"
        }
        froms = [rest.split()[0] for word, rest in steps if word == "FROM"]
        self.assertEqual(froms, ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"])
        self.assertRegex(args["PYTHON_IMAGE"], r"^python:3\.11-slim")
        build = self.services["graft1"]["build"]
        context = (DOCKER / build["context"]).resolve()
        self.assertEqual(context, ROOT)
        self.assertEqual((context / build["dockerfile"]).resolve(), DOCKER / "Dockerfile")
        copies = [rest.split() for word, rest in steps if word == "COPY"]
        for parts in copies:
            if parts[0].startswith("--from"):
                continue
            for source in parts[:-1]:
                self.assertTrue((context / source).exists(), f"COPY {source}: not in the context")
        # pyproject's packages are all copied (the wheel would miss any that is not).
        copied = {source for parts in copies for source in parts[:-1]}
        self.assertLessEqual({"pyproject.toml", "README.md", "graft", "twisted"}, copied)
        self.assertIn(("USER", "graft"), steps)
        self.assertIn(("VOLUME", '["/var/lib/graft"]'), steps)
        entry = next(rest for word, rest in steps if word == "ENTRYPOINT")
        self.assertIn('graft start \\"$GRAFT_NODE\\" -c /etc/graft/cluster.yaml', entry)

    def test_compose_runs_each_peer_with_its_own_volume(self) -> None:
        cfg = load_config(DOCKER / "cluster.yaml")
        self.assertEqual(set(self.services), set(cfg.peers))
        published = set()
        for name, service in self.services.items():
            self.assertEqual(service["environment"]["GRAFT_NODE"], name)
            volumes = service["volumes"]
            self.assertIn("./cluster.yaml:/etc/graft/cluster.yaml:ro", volumes)
            self.assertIn("./certs:/etc/graft/certs:ro", volumes)
            self.assertIn(f"{name}-data:/var/lib/graft", volumes)
            self.assertIn(f"{name}-data", self.compose["volumes"])
            [port] = service["ports"]
            self.assertTrue(port.startswith("127.0.0.1:"), port)
            self.assertTrue(port.endswith(f":{cfg.peers[name].api_port}"), port)
            published.add(port)
        self.assertEqual(len(published), len(self.services))

    def test_config_binds_everything_and_advertises_service_names(self) -> None:
        """The config loads; every node listens on 0.0.0.0, advertises its service name, keeps
        its data under the volume and its certificates under the read-only mount."""
        cfg = load_config(DOCKER / "cluster.yaml")
        for node_id, peer in cfg.peers.items():
            self.assertEqual((peer.listen_p2p, peer.listen_api), ("0.0.0.0", "0.0.0.0"))
            self.assertEqual(peer.host, node_id)
            self.assertEqual(self.services[node_id]["hostname"], node_id)
            self.assertEqual(str(cfg.data_dir(node_id)), f"/var/lib/graft/{node_id}")
            tls = cfg.tls_for(node_id)
            # Relative to the config: /etc/graft/certs in the container.
            for path in (tls.ca, tls.cert, tls.key):
                self.assertEqual(Path(path).parent, DOCKER / "certs")
