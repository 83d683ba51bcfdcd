"""A cluster spread over hosts: each node in a network namespace of its own, on a bridge.

``python -m graft.testing.hosts`` (`make hosts`, root and iproute2 needed) builds, for one run:

- a switch namespace holding a bridge, and per host (n1..n4 and a client) a namespace joined to
  the bridge by a veth pair, with its own address in 10.213.0.0/24 (the packets never leave
  these namespaces: none has a link to the machine's own network);
- per host a hosts file, /etc/netns/NAMESPACE/hosts (``ip netns exec`` mounts it on /etc/hosts),
  that names every node ``nX.graft.test`` and, as Debian does, maps the host's own name to
  127.0.1.1, so a node that bound what its own name resolves to is unreachable from elsewhere;
- nodes advertising those names: n1 and n2 listen on 0.0.0.0 (``peers.<id>.listen``), n3 and
  n4 follow the default rule (graft.addresses: a name binds every interface).

Then it checks, with every request made by name from the client's namespace: each node serves;
the cluster elects a leader and replicates a write made on a follower to every node; n4 joins
(POST /cluster/members, then ``--join``) and serves it; the leader is killed, another is
elected and takes writes; /cluster/members lists the advertised names. It deletes everything
it created (processes, namespaces, hosts files) on success and failure alike.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import yaml

from graft.certs import generate_certificates
from graft.config import load_config
from graft.launcher import node_command
from graft.testing.faults.netns import HarnessError, Namespace, run

SUBNET = "10.213.0"
DOMAIN = "graft.test"
NODES = ("n1", "n2", "n3", "n4")
CLIENT = "client"
# The host's last address byte; the client is 100.
ADDRESSES = {node: f"{SUBNET}.{i + 1}" for i, node in enumerate(NODES)} | {CLIENT: f"{SUBNET}.100"}
P2P_PORT, API_PORT = 7000, 8000  # the same on every host: each has its own address
# n1 binds 0.0.0.0 and n2 "::" (every interface, IPv6 and IPv4) explicitly; n3 and n4 follow
# the default rule for a name.
LISTEN = {"n1": "0.0.0.0", "n2": "::"}
SUBNET6 = "fd13:213::"  # each host also has SUBNET6 + its last IPv4 byte, on the bridge
T = TypeVar("T")


def ipv6_of(address: str) -> str:
    return SUBNET6 + address.rsplit(".", 1)[1]


def name_of(host: str) -> str:
    return f"{host}.{DOMAIN}"


class HostNetwork:
    """The switch namespace with its bridge, one namespace per host, and their hosts files."""

    def __init__(self, tag: str, hosts: dict[str, str]) -> None:
        self.tag = tag
        self.hosts = hosts
        self.switch = Namespace(f"graft-{tag}-sw")
        self.namespaces = {host: Namespace(f"graft-{tag}-{host}") for host in hosts}

    def create(self) -> None:
        sw = self.switch.name
        self.switch.create()
        run(["ip", "-n", sw, "link", "add", "br0", "type", "bridge"])
        run(["ip", "-n", sw, "link", "set", "br0", "up"])
        for index, (host, address) in enumerate(self.hosts.items()):
            ns = self.namespaces[host]
            ns.create()
            self._write_hosts_file(host)
            port = f"p{index}"
            run(["ip", "-n", sw, "link", "add", port, "type", "veth", "peer", "name", "eth0"])
            run(["ip", "-n", sw, "link", "set", "eth0", "netns", ns.name])
            run(["ip", "-n", sw, "link", "set", port, "master", "br0"])
            run(["ip", "-n", sw, "link", "set", port, "up"])
            run(["ip", "-n", ns.name, "addr", "add", f"{address}/24", "dev", "eth0"])
            run(["ip", "-n", ns.name, "addr", "add", f"{ipv6_of(address)}/64", "dev", "eth0"])
            run(
                [
                    "ip",
                    "-n",
                    ns.name,
                    "addr",
                    "change",
                    f"{ipv6_of(address)}/64",
                    "dev",
                    "eth0",
                    "nodad",
                ]
            )
            run(["ip", "-n", ns.name, "link", "set", "eth0", "up"])

    def _write_hosts_file(self, host: str) -> None:
        lines = ["127.0.0.1 localhost"]
        for other, address in self.hosts.items():
            # Debian's /etc/hosts: the machine's own name is a loopback address.
            lines.append(f"{'127.0.1.1' if other == host else address} {name_of(other)}")
        directory = self.hosts_dir(host)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "hosts").write_text("\n".join(lines) + "\n")

    def hosts_dir(self, host: str) -> Path:
        return Path("/etc/netns") / self.namespaces[host].name

    def exec_prefix(self, host: str) -> list[str]:
        return self.namespaces[host].exec_prefix()

    def delete(self) -> None:
        """Everything create made, whatever it got to; errors are collected, not raised early."""
        errors = []
        for host, ns in self.namespaces.items():
            try:
                ns.delete()
            except HarnessError as e:
                errors.append(str(e))
            shutil.rmtree(self.hosts_dir(host), ignore_errors=True)
        try:
            self.switch.delete()
        except HarnessError as e:
            errors.append(str(e))
        if errors:
            raise HarnessError("; ".join(errors))


class Client:
    """HTTP requests made from inside the client's namespace, by a helper process reading one
    JSON request per line (``python -m graft.testing.hosts --client``)."""

    def __init__(self, prefix: list[str]) -> None:
        self.process = subprocess.Popen(
            [*prefix, sys.executable, "-m", "graft.testing.hosts", "--client"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def request(
        self, method: str, url: str, body: Any = None, timeout: float = 5
    ) -> tuple[int, Any]:
        """(status, JSON body); status 0 when the connection failed."""
        assert self.process.stdin is not None and self.process.stdout is not None
        spec = {"method": method, "url": url, "body": body, "timeout": timeout}
        self.process.stdin.write(json.dumps(spec) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise HarnessError("the client process in the client namespace exited")
        reply = json.loads(line)
        return reply["status"], reply["body"]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


def client_loop() -> None:
    """The helper's side of Client: answers each request line with {status, body}."""
    for line in sys.stdin:
        spec = json.loads(line)
        data = None if spec["body"] is None else json.dumps(spec["body"]).encode()
        request = urllib.request.Request(spec["url"], data=data, method=spec["method"])
        try:
            with urllib.request.urlopen(request, timeout=spec["timeout"]) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        except OSError as e:
            status, raw = 0, json.dumps(str(e)).encode()
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw.decode(errors="replace")
        sys.stdout.write(json.dumps({"status": status, "body": body}) + "\n")
        sys.stdout.flush()


class HostsCluster:
    """Nodes n1..n4, each started in its own namespace; n4 joins later."""

    def __init__(self, base: Path, network: HostNetwork) -> None:
        self.base = base
        self.network = network
        peers: dict[str, Any] = {}
        for node in NODES:
            peers[node] = {"host": name_of(node), "ports": {"p2p": P2P_PORT, "api": API_PORT}}
            if node in LISTEN:
                peers[node]["listen"] = {"p2p": LISTEN[node], "api": LISTEN[node]}
        self.peers = peers
        config = {
            "cluster": "hosts",
            "peers": peers,
            "data_dir": "data/{id}",
            "fsm": {"factory": "graft.fsm.kv:KeyValueStateMachine"},
        }
        self.config_path = base / "cluster.yaml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        generate_certificates(load_config(self.config_path))
        # The first membership is n1..n3: n4's entry is in the file only once it joins.
        self.config = config | {"peers": {n: p for n, p in peers.items() if n != "n4"}}
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, node: str, *, join: bool = False) -> None:
        if join:
            self.config["peers"] = self.peers
            self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        log = open(self.base / f"{node}.log", "ab")  # noqa: SIM115 (the child holds it)
        with log:
            self.processes[node] = subprocess.Popen(
                [*self.network.exec_prefix(node), *node_command(self.config_path, node, join=join)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.base,
            )

    def kill(self, node: str) -> None:
        self.processes[node].kill()
        self.processes[node].wait(10)

    def alive(self) -> list[str]:
        return [n for n, p in self.processes.items() if p.poll() is None]

    def logs(self) -> str:
        return "\n".join(
            f"--- {node}\n{(self.base / f'{node}.log').read_text(errors='replace')[-1500:]}"
            for node in self.processes
        )

    def close(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


def url(node: str, path: str) -> str:
    return f"http://{name_of(node)}:{API_PORT}{path}"


def wait_for(
    what: str, check: Callable[[], T | None], timeout: float, logs: Callable[[], str]
) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout:g} s\n{logs()}")


def scenario(cluster: HostsCluster, client: Client, say: Callable[[str], None]) -> None:
    """Serve by name, elect, replicate, join, fail over; AssertionError at the first miss."""

    def status(node: str) -> dict[str, Any] | None:
        code, body = client.request("GET", url(node, "/status"))
        return body if code == 200 else None

    def serves(address: str) -> bool:
        return client.request("GET", address)[0] == 200

    def leader_among(nodes: list[str], not_: str | None = None) -> str | None:
        seen = {n: status(n) for n in nodes}
        leaders = [n for n, s in seen.items() if s and s["role"] == "leader" and n != not_]
        if len(leaders) != 1:
            return None
        agree = all(s and s["leader"] == leaders[0] for s in seen.values())
        return leaders[0] if agree else None

    def write(node: str, key: str, value: str) -> None:
        code, body = client.request(
            "POST", url(node, "/command"), {"op": "put", "key": key, "value": value}
        )
        if code != 200:
            raise AssertionError(f"write {key} on {node} by name: {code} {body}")

    def reads(node: str, key: str, value: str) -> bool:
        code, body = client.request(
            "POST", url(node, "/query?consistency=strong"), {"op": "get", "key": key}
        )
        return code == 200 and isinstance(body, dict) and body.get("value") == value

    first = ["n1", "n2", "n3"]
    for node in first:
        cluster.start(node)
    for node in first:
        wait_for(
            f"{name_of(node)}:{API_PORT} did not answer from the client's host",
            partial(serves, url(node, "/health")),
            30,
            cluster.logs,
        )
    say("n1..n3 serve their API by name from the client's namespace")
    n2_v6 = f"http://[{ipv6_of(ADDRESSES['n2'])}]:{API_PORT}/health"
    wait_for(
        "n2 (listen ::) did not answer at its IPv6 address",
        partial(serves, n2_v6),
        15,
        cluster.logs,
    )
    say("n2, listening on ::, also answers at its IPv6 address")
    leader = wait_for("no agreed leader", lambda: leader_among(first), 30, cluster.logs)
    follower = next(n for n in first if n != leader)
    write(follower, "where", "everywhere")
    for node in first:
        wait_for(
            f"{node} did not read the write",
            partial(reads, node, "where", "everywhere"),
            15,
            cluster.logs,
        )
    say(f"{leader} leads; a write on {follower} is read (strong) on n1..n3")

    # As docs/operations.md says: start the new node, then add it.
    cluster.start("n4", join=True)
    wait_for(
        "n4 did not answer by name",
        partial(serves, url("n4", "/health")),
        30,
        cluster.logs,
    )
    member = {"id": "n4", **cluster.peers["n4"]}
    code, body = client.request("POST", url(leader, "/cluster/members"), member, timeout=30)
    if code not in (200, 201, 202):
        raise AssertionError(f"adding n4: {code} {body}")

    def n4_voter() -> bool:
        code, body = client.request("GET", url(leader, "/cluster/members"))
        return code == 200 and "n4" in body["voters"]

    wait_for("n4 did not become a voter", n4_voter, 30, cluster.logs)
    wait_for(
        "n4 did not serve the write", lambda: reads("n4", "where", "everywhere"), 15, cluster.logs
    )
    say("n4 joined as a voter and serves the write by name")

    cluster.kill(leader)
    rest = [n for n in NODES if n != leader]
    new = wait_for(
        "no new leader after the kill", lambda: leader_among(rest, not_=leader), 30, cluster.logs
    )
    write(next(n for n in rest if n != new), "after", "failover")
    for node in rest:
        wait_for(
            f"{node} did not read after the failover",
            partial(reads, node, "after", "failover"),
            15,
            cluster.logs,
        )
    say(f"{leader} killed; {new} leads and the others read a write made after")

    code, body = client.request("GET", url(new, "/cluster/members"))
    hosts = {node: address["host"] for node, address in body["addresses"].items()}
    if hosts != {node: name_of(node) for node in NODES}:
        raise AssertionError(f"/cluster/members addresses are not the advertised names: {body}")
    say("/cluster/members lists every member by its advertised name")


@contextmanager
def hosts_cluster(base: Path) -> Iterator[tuple[HostsCluster, Client]]:
    """The network, the nodes' cluster (not started) and the client; torn down on exit."""
    network = HostNetwork(f"h{os.getpid()}", dict(ADDRESSES))
    had_netns_dir = Path("/etc/netns").exists()
    cluster: HostsCluster | None = None
    client: Client | None = None
    try:
        network.create()
        cluster = HostsCluster(base, network)
        client = Client(network.exec_prefix(CLIENT))
        yield cluster, client
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
        network.delete()
        if not had_netns_dir:
            with contextlib.suppress(OSError):  # created by this run, empty again
                Path("/etc/netns").rmdir()


def main(argv: list[str]) -> int:
    if argv[1:] == ["--client"]:
        client_loop()
        return 0
    if os.geteuid() != 0 or shutil.which("ip") is None:
        print("graft.testing.hosts needs root and iproute2 (ip netns)", file=sys.stderr)
        return 2
    base = Path(tempfile.mkdtemp(prefix="graft-hosts-"))
    started = time.monotonic()
    try:
        with hosts_cluster(base) as (cluster, client):
            scenario(cluster, client, lambda text: print(f"ok: {text}", flush=True))
    except (AssertionError, HarnessError) as e:
        print(f"FAILED: {e}\n(files kept in {base})", file=sys.stderr)
        return 1
    shutil.rmtree(base, ignore_errors=True)
    print(f"multi-host run passed in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
