"""Non-voters and a member's move to a new address, across hosts: the namespaces harness of
graft.testing.hosts (each node in its own network namespace, reached by name)."""

from __future__ import annotations

import os
import shutil
from functools import partial
from pathlib import Path
from typing import Any

import yaml
from twisted.trial import unittest

from graft.certs import generate_certificates
from graft.config import load_config
from graft.testing.faults.netns import run
from graft.testing.hosts import (
    API_PORT,
    DOMAIN,
    SUBNET,
    Client,
    HostsCluster,
    hosts_cluster,
    name_of,
    url,
    wait_for,
)

# n3's new address and name, added to its host beside the old ones.
MOVED_ADDRESS = f"{SUBNET}.33"
MOVED_NAME = f"n3-moved.{DOMAIN}"


class HostsMembersTests(unittest.TestCase):
    def setUp(self) -> None:
        if os.geteuid() != 0 or shutil.which("ip") is None:
            raise unittest.SkipTest("network namespaces need root and iproute2")

    def test_non_voter_and_a_move_across_hosts(self) -> None:
        """n4 joins as a non-voter and serves a strong read of the latest write by name; with
        it killed the voters still commit. Then n3 gets a certificate for a new name on a new
        address, `PUT /cluster/members/n3` moves it there, its old address is deleted, and it
        still receives and serves writes: the members dialled the new address."""
        base = Path(self.mktemp()).resolve()
        base.mkdir(parents=True)
        with hosts_cluster(base) as (cluster, client):
            for host in cluster.network.hosts:
                with open(cluster.network.hosts_dir(host) / "hosts", "a") as hosts:
                    hosts.write(f"{MOVED_ADDRESS} {MOVED_NAME}\n")
            scenario(cluster, client)


def scenario(cluster: HostsCluster, client: Client) -> None:
    def request(method: str, address: str, body: Any = None) -> tuple[int, Any]:
        return client.request(method, address, body, timeout=30)

    def leader_of(nodes: list[str]) -> str | None:
        for node in nodes:
            code, body = request("GET", url(node, "/status"))
            if code == 200 and body.get("role") == "leader":
                return node
        return None

    def write(at: str, key: str, value: str) -> bool:
        code, _ = request("POST", at + "/command", {"op": "put", "key": key, "value": value})
        return code == 200

    def reads(at: str, key: str, value: str) -> bool:
        query = {"op": "get", "key": key}
        code, body = request("POST", at + "/query?consistency=strong", query)
        return code == 200 and isinstance(body, dict) and body.get("value") == value

    def base(node: str) -> str:
        return f"http://{name_of(node)}:{API_PORT}"

    voters = ["n1", "n2", "n3"]
    for node in voters:
        cluster.start(node)
    leader = wait_for("no leader", partial(leader_of, voters), 40, cluster.logs)

    # n4, a non-voter: asked of the leader, then started in joining mode.
    member = {"id": "n4", **cluster.peers["n4"], "non_voter": True}
    code, body = request("POST", url(leader, "/cluster/members"), member)
    if code != 200 or body.get("non_voters") != ["n4"]:
        raise AssertionError(f"adding n4 as a non-voter: {code} {body}")
    cluster.start("n4", join=True)
    wait_for("write", lambda: write(base(leader), "k", "v1") or None, 30, cluster.logs)
    wait_for("n4's strong read", lambda: reads(base("n4"), "k", "v1") or None, 30, cluster.logs)
    code, body = request("GET", url("n4", "/status"))
    if body.get("role") != "learner" or body["members"]["non_voters"] != ["n4"]:
        raise AssertionError(f"n4's status: {body}")

    cluster.kill("n4")
    wait_for("write without n4", lambda: write(base(leader), "k", "v2") or None, 30, cluster.logs)
    for node in voters:
        wait_for(f"{node} reads v2", partial(reads, base(node), "k", "v2"), 15, cluster.logs)

    # n3 moves: a second address and a certificate for the new name, reloaded.
    n3_ns = cluster.network.namespaces["n3"].name
    # The old address goes later; without this Linux drops the new one with it (a secondary
    # address of the same subnet).
    sysctl = "net.ipv4.conf.eth0.promote_secondaries=1"
    run(["ip", "netns", "exec", n3_ns, "sysctl", "-qw", sysctl])
    run(["ip", "-n", n3_ns, "addr", "add", f"{MOVED_ADDRESS}/24", "dev", "eth0"])
    renew = dict(cluster.config)
    renew["peers"] = {"n3": dict(cluster.peers["n3"], host=MOVED_NAME)}
    renew_path = cluster.base / "renew-n3.yaml"
    renew_path.write_text(yaml.safe_dump(renew, sort_keys=False))
    tls = load_config(renew_path).tls_for("n3")
    tls.cert.unlink()
    tls.key.unlink()
    generate_certificates(load_config(renew_path), if_missing=True)
    code, body = request("POST", url("n3", "/reload"))
    if code != 200:
        raise AssertionError(f"reloading n3's certificate: {code} {body}")
    new_base = f"http://{MOVED_NAME}:{API_PORT}"
    code, body = request("PUT", url("n1", "/cluster/members/n3"), {"host": MOVED_NAME})
    if code == 504:
        # When n3 leads, n1 forwards the move to it and drops its connection to n3's old
        # address as the change applies, so the answer can be lost: the 504 says to check the
        # member list, which is what the loop after the move does (seen once in CI).
        pass
    elif code != 200 or body["addresses"]["n3"]["host"] != MOVED_NAME:
        raise AssertionError(f"moving n3: {code} {body}")
    old = cluster.network.hosts["n3"]
    run(["ip", "-n", n3_ns, "addr", "del", f"{old}/24", "dev", "eth0"])
    # n1 forwards the write to whoever leads (n3 too, now only at its new address).
    wait_for("write after the move", lambda: write(base("n1"), "k", "v3") or None, 40, cluster.logs)
    wait_for(
        "n3 reads v3 at its new address", partial(reads, new_base, "k", "v3"), 30, cluster.logs
    )
    for node in ("n1", "n2"):
        code, body = request("GET", url(node, "/cluster/members"))
        if code != 200 or body["addresses"]["n3"]["host"] != MOVED_NAME:
            raise AssertionError(f"/cluster/members of {node} after the move: {code} {body}")
