"""Membership on real processes: the documented join (`graft start --help`, word for word) and
a removed member staying refused after the others restart."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from graft.testing.cluster import HOST, LocalCluster
from graft.testing.kv import get, put
from graft.testing.ports import hold_ports
from graft.testing.process_case import ProcessTestCase

# `graft ARGS...` as the installed command runs it.
GRAFT = [sys.executable, "-m", "graft.cli"]


class MembershipProcessTests(ProcessTestCase):
    def write(self, cluster: LocalCluster, node: str, key: str, value: str) -> None:
        resp = cluster.request(node, "POST", "/command", put(key, value))
        self.assertEqual(resp.status, 200, resp.body)

    def test_join_with_only_its_own_peer_entry(self) -> None:
        """`graft start --help`, step by step: the new node's config has the cluster name, the
        fsm, timeouts and tls settings and only its own peer; its certificate comes from
        `graft certs --if-missing` run on the CA's machine, which signs only the new node's;
        ca.pem and its certificate and key (never ca.key) go to the new machine;
        `graft start NEW -c new.yaml --join URL` starts it. It accepts the members'
        connections, receives the log, is promoted to voter, the join is reported, and it
        serves a write made before it joined (weak and strong reads); after a restart without
        --join (step 4) it rejoins and serves a write made while it was down."""
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
            lambda: ((cluster.status(leader) or {}).get("first_index") or 0) > 100,
            "the leader compacts its log",
            20,
        )
        logs = self.join_as_the_help_says(cluster, leader)
        self.assertIn("installed snapshot", logs())

    def join_as_the_help_says(self, cluster: LocalCluster, leader: str) -> Any:
        """Steps 1-4 of `graft start --help` for a new node n4; returns its log reader."""
        # 1. Its own config file, new.yaml: the members' cluster, fsm, timeouts and tls
        #    settings (tls at the default paths) and only its own entry under peers.
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
        text = yaml.safe_dump(config, sort_keys=False)
        # 2. On the CA's machine (here: the cluster's own directory, which holds ca.pem and
        #    ca.key), new.yaml beside the cluster's config, then `graft certs --if-missing`.
        ca_machine = cluster.config_path.parent
        (ca_machine / "new.yaml").write_text(text)
        before = {path.name: path.read_bytes() for path in (ca_machine / "certs").iterdir()}
        certs = subprocess.run(
            [*GRAFT, "certs", "-c", "new.yaml", "--if-missing"],
            capture_output=True,
            cwd=ca_machine,
            timeout=60,
        )
        self.assertEqual(certs.returncode, 0, certs.stderr)
        after = {path.name: path.read_bytes() for path in (ca_machine / "certs").iterdir()}
        self.assertEqual(sorted(set(after) - set(before)), ["n4.key", "n4.pem"])
        self.assertEqual({name: after[name] for name in before}, before)  # nothing rewritten
        #    Copy ca.pem, NEW.pem and NEW.key to the new machine's tls paths; ca.key stays.
        new = cluster.base.parent / "new-machine"
        (new / "certs").mkdir(parents=True)
        config_path = new / "new.yaml"
        config_path.write_text(text)
        for name in ("ca.pem", "n4.pem", "n4.key"):
            shutil.copy(ca_machine / "certs" / name, new / "certs" / name)
        # 3. graft start NEW -c new.yaml --join http://LEADER-OR-ANY-MEMBER:PORT
        log_path = new / "n4.log"
        logs = lambda: log_path.read_text(errors="replace")[-4000:]  # noqa: E731
        start = [*GRAFT, "start", "n4", "-c", str(config_path)]
        process = self.start_process([*start, "--join", cluster.api_url(leader)], log_path, cwd=new)
        url = f"http://{HOST}:{api}"

        def voter() -> bool:
            members = self.members(cluster)
            return members is not None and "n4" in members["voters"]

        self.wait_for(voter, "n4 promoted to voter", 60, detail=logs)
        self.wait_for(lambda: "n4 joined" in logs(), "the join reported", 10, detail=logs)
        self.assertNotIn("not a member of the cluster", logs())
        self.assertEqual(self.read(url, "before"), {"value": "join"}, logs())
        self.assertEqual(self.read(url, "before", "strong"), {"value": "join"}, logs())
        self.assertFalse((new / "certs" / "ca.key").exists())

        # 4. Later restarts: without --join. Its log now names the members and addresses.
        process.terminate()
        self.assertIn(process.wait(30), (0, -15), logs())  # twist exits by the signal
        leader, _ = cluster.wait_for_leader(timeout=30, among=["n1", "n2", "n3"])
        self.write(cluster, leader, "while", "down")
        self.start_process(start, log_path, cwd=new)
        self.wait_for(lambda: self.read(url, "while"), "n4 catches up after its restart", 30)
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
            lambda: all(refused in cluster.logs(n) for n in ("n1", "n2")),
            "the removed n3 refused by n1 and n2",
            20,
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

    def read(self, url: str, key: str, consistency: str = "weak") -> Any:
        import urllib.error
        import urllib.request

        request = urllib.request.Request(
            url + f"/query?consistency={consistency}", data=get(key), method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                body = json.loads(resp.read())
        except (OSError, urllib.error.HTTPError, ValueError):
            return None
        return body if body.get("value") is not None else None
