"""Bomb frames against a real node's peer port, over real TLS with a valid node certificate:
the node's memory barely moves and it keeps serving."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import sys
from pathlib import Path

from graft.config import load_config
from graft.testing.cluster import HOST
from graft.testing.process_case import ProcessTestCase

# A first frame of 1 MiB of empty arrays: ["_hello"-less] array header, then 2**20 times 0x90.
# The old decoder buffered it whole and decoded it into about 66 MiB of lists.
_BODY = b"\xdd" + (1 << 20).to_bytes(4, "big") + b"\x90" * (1 << 20)
BOMB = len(_BODY).to_bytes(4, "big") + _BODY
CONNECTIONS = 8
# What eight refused connections may add to the node's RSS. Each is refused from its first
# 12 bytes, so it holds only its TLS state and one TLS read (32 KiB) while it lasts; the rest
# is allocator noise and the requests below. One decoded bomb alone would take 66 MiB.
RSS_BOUND_KIB = 32 * 1024


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


class PeerLimitsTests(ProcessTestCase):
    def setUp(self) -> None:
        self.cluster = self.make_cluster(("n1",))
        self.cluster.wait_for_leader(timeout=30)

    def tls_context(self) -> ssl.SSLContext:
        """A client context presenting n1's own certificate: a valid node certificate of the
        cluster's CA, as an attacker holding one node's key would have."""
        files = load_config(self.cluster.config_path).tls_for("n1")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.load_verify_locations(files.ca)
        context.load_cert_chain(files.cert, files.key)
        return context

    def write(self, key: str) -> int:
        body = json.dumps({"op": "put", "key": key, "value": "v"}).encode()
        return self.cluster.request("n1", "POST", "/command", body).status

    def test_bomb_frames_leave_the_node_small_and_serving(self) -> None:
        """Eight connections each send a 1 MiB first frame of empty arrays; the node's RSS grows
        by less than RSS_BOUND_KIB, and it still answers /health and commits a write."""
        self.assertEqual(self.write("before"), 200)
        pid = self.cluster.processes["n1"].pid
        port = self.cluster.peers["n1"]["ports"]["p2p"]
        before = _rss_kib(pid)
        context = self.tls_context()
        sockets = []
        for _ in range(CONNECTIONS):
            raw = socket.create_connection((HOST, port), timeout=30)
            sockets.append(context.wrap_socket(raw))
        for sock in sockets:
            # The node may close it before all is sent: that is what a refusal looks like.
            with contextlib.suppress(OSError):
                sock.sendall(BOMB)
        for sock in sockets:  # until the node has dealt with each: it closes them all
            try:
                while sock.recv(65536):
                    pass
            except OSError:
                pass
            sock.close()
        self.assertEqual(self.cluster.request("n1", "GET", "/health").status, 200)
        self.assertEqual(self.write("after"), 200)
        after = _rss_kib(pid)
        print(
            f"\npeer bombs: VmRSS {before} KiB before, {after} KiB after,"
            f" +{after - before} KiB for {CONNECTIONS} connections",
            file=sys.stderr,
        )
        self.assertLess(after - before, RSS_BOUND_KIB)
        self.assertEqual(self.cluster.alive(), ["n1"])
