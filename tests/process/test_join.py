"""Membership on real processes: the documented join (`graft start --help`, word for word) and
a removed member staying refused after the others restart."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from graft.testing.cluster import HOST, LocalCluster
from graft.testing.kv import get, put
from graft.testing.ports import hold_ports
from graft.testing.process_case import ProcessTestCase

# `graft ARGS...` as the installed command runs it.
GRAFT = [sys.executable, "-c", "import sys; from graft.cli import main; sys.exit(main())"]


class MembershipProcessTests(ProcessTestCase):
    def wait_for(self, what: str, condition: Any, timeout: float, logs: Any = "") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(0.1)
        self.fail(f"{what} within {timeout:g} s\n{logs() if callable(logs) else logs}")

    def write(self, cluster: LocalCluster, node: str, key: str, value: str) -> None:
        resp = cluster.request(node, "POST", "/command", put(key, value))
        self.assertEqual(resp.status, 200, resp.body)

    def test_join_with_only_its_own_peer_entry(self) -> None:
        """`graft start --help`, step by step: the new node's config has the cluster name, the
        tls settings and only its own peer; its certificate comes from `graft certs --if-missing`
        with the cluster CA copied beside it; `graft start NEW -c new.yaml --join URL` starts
        it. It accepts the members' connections, receives the log, is promoted to voter, and
        serves a write made before it joined; after a restart without --join (step 4) it
        rejoins and serves a write made while it was down."""
        cluster = self.make_cluster()
        leader, _ = cluster.wait_for_leader(timeout=30)
        self.write(cluster, leader, "before", "join")
        self.join_as_the_help_says(cluster, leader)

    def test_join_through_a_snapshot_with_only_its_own_peer_entry(self) -> None:
        """The same join after the leader compacted its log: the new node gets the leader's
        snapshot (crc32 checked), learns the members from it and the log after it, and is
        promoted."""
        cluster = self.make_cluster(
            extra={"snapshot": {"entries": 100, "trailing": 0, "segment_bytes": 4096}}
        )
        leader, _ = cluster.wait_for_leader(timeout=30)
        self.write(cluster, leader, "before", "join")
        batch = json.dumps([put(f"k{i}", str(i)).decode() for i in range(150)]).encode()
        resp = cluster.request(leader, "POST", "/commands", batch, timeout=20)
        self.assertEqual(resp.status, 200, resp.body)
        self.wait_for(
            "the leader did not compact its log",
            lambda: ((cluster.status(leader) or {}).get("first_index") or 0) > 100,
            20,
        )
        logs = self.join_as_the_help_says(cluster, leader)
        self.assertIn("installed snapshot", logs())

    def join_as_the_help_says(self, cluster: LocalCluster, leader: str) -> Any:
        """Steps 1-4 of `graft start --help` for a new node n4; returns its log reader."""
        # 1. Its own config file: cluster name, tls (the default paths) and its own entry.
        new = cluster.base.parent / "new-machine"
        new.mkdir()
        held = hold_ports(2)  # n4 binds them itself, over the hold (graft.testing.ports)
        for port in held:
            self.addCleanup(port.release)
        p2p, api = (port.port for port in held)
        config = {
            "cluster": cluster.config["cluster"],
            "timeouts": cluster.config["timeouts"],
            "peers": {"n4": {"host": HOST, "ports": {"p2p": p2p, "api": api}}},
            "data_dir": "data/{id}",
            "fsm": cluster.config["fsm"],
        }
        config_path = new / "new.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        # 2. The cluster CA (ca.pem and ca.key) at its tls paths, then `graft certs`.
        (new / "certs").mkdir()
        for name in ("ca.pem", "ca.key"):
            shutil.copy(cluster.base / "certs" / name, new / "certs" / name)
        certs = subprocess.run(
            [*GRAFT, "certs", "-c", str(config_path), "--if-missing"],
            capture_output=True,
            cwd=new,
            timeout=60,
        )
        self.assertEqual(certs.returncode, 0, certs.stderr)
        # 3. graft start NEW -c new.yaml --join http://LEADER-OR-ANY-MEMBER:PORT
        log_path = new / "n4.log"
        logs = lambda: log_path.read_text(errors="replace")[-4000:]  # noqa: E731
        start = [*GRAFT, "start", "n4", "-c", str(config_path)]
        process = self.start_process([*start, "--join", cluster.api_url(leader)], log_path, cwd=new)
        url = f"http://{HOST}:{api}"

        def voter() -> bool:
            members = self.members(cluster)
            return members is not None and "n4" in members["voters"]

        self.wait_for("n4 was not promoted to voter", voter, 60, logs)
        self.wait_for("no join report", lambda: "n4 joined" in logs(), 10, logs)
        self.assertNotIn("not a member of the cluster", logs())
        self.assertEqual(self.read(url, "before"), {"value": "join"}, logs())

        # 4. Later restarts: without --join. Its log now names the members and addresses.
        process.terminate()
        self.assertIn(process.wait(30), (0, -15), logs())  # twist exits by the signal
        leader, _ = cluster.wait_for_leader(timeout=30, among=["n1", "n2", "n3"])
        self.write(cluster, leader, "while", "down")
        self.start_process(start, log_path, cwd=new)
        self.wait_for("n4 did not catch up after its restart", lambda: self.read(url, "while"), 30)
        self.assertEqual(self.read(url, "while"), {"value": "down"}, logs())
        return logs

    def test_removed_member_stays_refused_after_the_others_restart(self) -> None:
        """A member removed at run time and still listed in every node's YAML is refused by the
        remaining members after they restart: their membership comes from their log."""
        cluster = self.make_cluster()
        cluster.wait_for_leader(timeout=30)
        resp = cluster.request("n1", "DELETE", "/cluster/members/n3", timeout=30)
        self.assertEqual(resp.status, 200, resp.body)
        cluster.stop("n3")
        for node in ("n1", "n2"):
            cluster.stop(node)
        cluster.start("n1", "n2")
        leader, _ = cluster.wait_for_leader(timeout=30, among=["n1", "n2"])
        self.write(cluster, leader, "after", "restart")
        cluster.start("n3")  # its YAML and its old log both still name n1 and n2
        refused = "refused hello from node 'n3': not a member of the cluster"
        self.wait_for(
            "the removed n3 was not refused",
            lambda: all(refused in cluster.logs(n) for n in ("n1", "n2")),
            20,
            lambda: cluster.logs("n1")[-3000:],
        )
        members = self.members(cluster)
        assert members is not None
        self.assertEqual(sorted(members["voters"]), ["n1", "n2"])

    def start_process(self, cmd: list[str], log_path: Path, cwd: Path) -> Any:
        log = open(log_path, "ab")  # noqa: SIM115 (closed in cleanup)
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)

        def stop() -> None:
            if process.poll() is None:
                process.kill()
            process.wait(10)
            log.close()

        self.addCleanup(stop)
        return process

    def members(self, cluster: LocalCluster) -> dict[str, Any] | None:
        for node in cluster.alive():
            try:
                resp = cluster.request(node, "GET", "/cluster/members", timeout=2)
            except OSError:
                continue
            if resp.status == 200 and resp.json().get("leader"):
                body: dict[str, Any] = resp.json()
                return body
        return None

    def read(self, url: str, key: str) -> Any:
        import urllib.error
        import urllib.request

        request = urllib.request.Request(
            url + "/query?consistency=weak", data=get(key), method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                body = json.loads(resp.read())
        except (OSError, urllib.error.HTTPError, ValueError):
            return None
        return body if body.get("value") is not None else None
