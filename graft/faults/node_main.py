"""Run `twist` with every outbound TCP connection bound to one source address.

Usage: ``python -m graft.faults.node_main --bind ADDRESS <twist arguments>``.

Inside the fault namespace every node has its own loopback address, but the transport dials
peers without choosing a source address, so the kernel would give every connection the same
source (127.0.0.1) and an iptables rule could not tell which node sent a packet. This wrapper
makes each node's outbound connections leave from the node's own address, so a partition is a
plain pair of DROP rules on (source, destination). Nothing else about the node changes: the
code under test is the installed `twist graft`.
"""

from __future__ import annotations

import sys
from typing import Any

from graft.faults.disk import install_fsync_stall


def bind_outbound_connections(address: str) -> None:
    """Default ``bindAddress`` of every reactor's connectTCP to (address, any port)."""
    from twisted.internet.posixbase import PosixReactorBase

    original = PosixReactorBase.connectTCP

    def connect_tcp(
        self: Any,
        host: str,
        port: int,
        factory: Any,
        timeout: float = 30,
        bindAddress: tuple[str, int] | None = None,
    ) -> Any:
        return original(self, host, port, factory, timeout, bindAddress or (address, 0))

    PosixReactorBase.connectTCP = connect_tcp  # type: ignore[method-assign,assignment]


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--bind":
        print("usage: python -m graft.faults.node_main --bind ADDRESS <twist arguments>")
        return 2
    bind_outbound_connections(argv[2])
    install_fsync_stall()  # only if the harness asked (graft.faults.disk)
    twist_argv = [argv[0], *argv[3:]]
    sys.argv = twist_argv
    from twisted.application.twist._twist import Twist

    Twist.main(twist_argv)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
