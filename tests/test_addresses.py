"""Where a node listens and where it is reached: peers.<id>.listen, the one default rule
(graft.addresses) and the names `graft certs` puts in certificates."""

from __future__ import annotations

import contextlib
import queue
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from graft.addresses import listen_interface
from graft.cli import app
from graft.config import ConfigError, load_config

_PEERS = """\
cluster: test
peers:
  alpha: {host: 10.0.0.1, ports: {p2p: 7001, api: 8001}}
  beta: {host: db2.example.net, ports: {p2p: 7002, api: 8002}}
  gamma: {host: "fd00::3", ports: {p2p: 7003, api: 8003}}
  delta:
    host: db4.example.net
    ports: {p2p: 7004, api: 8004}
    listen: {p2p: 10.0.0.4, api: "::"}
"""


class ListenTests(SynchronousTestCase):
    def load(self, text: str) -> Path:
        path = Path(self.mktemp())
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def test_default_rule_is_one_for_both_ports(self) -> None:
        """Without listen, both ports bind the host when it is an IP address (IPv6 too) and
        every IPv4 interface when it is a name; listen overrides each port on its own."""
        peers = load_config(self.load(_PEERS)).peers
        self.assertEqual(
            {n: (p.p2p_interface, p.api_interface) for n, p in peers.items()},
            {
                "alpha": ("10.0.0.1", "10.0.0.1"),
                "beta": ("0.0.0.0", "0.0.0.0"),
                "gamma": ("fd00::3", "fd00::3"),
                "delta": ("10.0.0.4", "::"),
            },
        )
        # The advertised host is unchanged by listen: it is what peers and clients use.
        self.assertEqual(peers["delta"].host, "db4.example.net")
        self.assertEqual(listen_interface("db4.example.net", "10.1.1.1"), "10.1.1.1")

    def test_listen_is_an_ip_address(self) -> None:
        """A name (or anything but an IP address) as a listen address stops loading with the
        key and what to write instead."""
        for bad in ("db4.example.net", "0.0.0.0:7004", "[::]"):
            text = _PEERS.replace('api: "::"', f'api: "{bad}"')
            with self.assertRaises(ConfigError) as raised:
                load_config(self.load(text))
            self.assertIn("peers.delta.listen.api", str(raised.exception))
            self.assertIn("not an IP address", str(raised.exception))
        with self.assertRaises(ConfigError) as raised:
            load_config(self.load(_PEERS.replace('api: "::"}', 'api: "::", web: 1}')))
        self.assertIn("peers.delta.listen", str(raised.exception))


class CertificateNamesTests(SynchronousTestCase):
    def test_certs_says_which_names(self) -> None:
        """`graft certs` names each new certificate's SANs: the id, and the advertised host as
        an IP or DNS name (never a listen address)."""
        directory = Path(self.mktemp())
        directory.mkdir()
        path = directory / "cluster.yaml"
        path.write_text(_PEERS)
        result = CliRunner().invoke(app.main, ["certs", "-c", str(path)])
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertIn("alpha's certificate names DNS:alpha, IP:10.0.0.1", result.output)
        self.assertIn("beta's certificate names DNS:beta, DNS:db2.example.net", result.output)
        self.assertIn("gamma's certificate names DNS:gamma, IP:fd00::3", result.output)
        self.assertIn("delta's certificate names DNS:delta, DNS:db4.example.net", result.output)
        self.assertNotIn("0.0.0.0", result.output)


class ServiceBindTests(SynchronousTestCase):
    def bound(self, text: str, node: str) -> dict[int, str]:
        """port -> interface of every listener node's service opens, on a MemoryReactor."""
        from twisted.internet.testing import MemoryReactorClock

        from graft.certs import generate_certificates
        from graft.service import make_service

        directory = Path(self.mktemp())
        directory.mkdir()
        path = directory / "cluster.yaml"
        path.write_text(text)
        generate_certificates(load_config(path))
        calls: queue.Queue[tuple[Any, tuple[Any, ...], dict[str, Any]]] = queue.Queue()

        class Reactor(MemoryReactorClock):
            def callFromThread(self, f: Any, *args: Any, **kwargs: Any) -> None:
                calls.put((f, args, kwargs))

        reactor = Reactor()
        service: Any = make_service(load_config(path), node, reactor=reactor)
        service.startService()
        bound = {port: interface for port, _, _, interface in reactor.tcpServers}
        # Stop it, running what the storage thread hands back, so that no thread is left.
        stopped: Deferred[None] = service.stopService()
        while not stopped.called:
            with contextlib.suppress(queue.Empty):
                f, args, kwargs = calls.get(timeout=0.01)
                f(*args, **kwargs)
            reactor.advance(0.01)
        return bound

    def test_each_port_binds_its_listen_address(self) -> None:
        """The peer port and the API bind peers.<id>.listen.p2p / .api, each its own."""
        self.assertEqual(self.bound(_PEERS, "delta"), {7004: "10.0.0.4", 8004: "::"})

    def test_without_listen_both_ports_follow_one_rule(self) -> None:
        """Without listen: a named host binds every interface on both ports (the API used to
        bind what the name resolved to), an IP host binds itself on both."""
        self.assertEqual(self.bound(_PEERS, "beta"), {7002: "0.0.0.0", 8002: "0.0.0.0"})
        self.assertEqual(self.bound(_PEERS, "gamma"), {7003: "fd00::3", 8003: "fd00::3"})
