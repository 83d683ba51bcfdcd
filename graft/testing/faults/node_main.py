"""Run `twist` with every outbound TCP connection bound to one source address.

Usage:
``python -m graft.testing.faults.node_main --bind ADDRESS [--clock-file PATH] <twist arguments>``.

Inside the fault namespace every node has its own loopback address, but the transport dials
peers without choosing a source address, so the kernel would give every connection the same
source (127.0.0.1) and an iptables rule could not tell which node sent a packet. This wrapper
makes each node's outbound connections leave from the node's own address, so a partition is a
plain pair of DROP rules on (source, destination). Nothing else about the node changes: the
code under test is the installed `twist graft`.

``--clock-file PATH`` steps the node's wall clock, and only it, like an NTP step: Python's
``time.time`` and ``time.time_ns`` return the real time plus the offset in seconds the
clock-step nemesis writes to PATH (read by a thread every 10 ms); ``time.monotonic`` and
everything outside Python (the kernel, OpenSSL) keep the true time. Installed before Twisted is
imported, so the reactor's ``seconds()`` steps too. (libfaketime would step the same clocks
but slows the nodes ~15x and breaks ``time.sleep`` with FAKETIME_DONT_FAKE_MONOTONIC.)
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

from graft.launcher import run_twist
from graft.testing.faults.disk import install_fsync_stall

CLOCK_POLL_SECONDS = 0.01


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


class WallClockOffset:
    """Offsets ``time.time``/``time.time_ns`` by the seconds written in a file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0.0
        self._real_time = time.time
        self._real_time_ns = time.time_ns

    def read(self) -> None:
        try:
            text = self.path.read_text().strip()
        except OSError:
            return  # no file yet: no offset change
        try:
            self.offset = float(text) if text else 0.0
        except ValueError:
            return  # half-written by hand: keep the last offset

    def time(self) -> float:
        return self._real_time() + self.offset

    def time_ns(self) -> int:
        return self._real_time_ns() + int(self.offset * 1e9)

    def install(self) -> None:
        self.read()
        time.time = self.time
        time.time_ns = self.time_ns
        threading.Thread(target=self._poll, name="clock-offset", daemon=True).start()

    def _poll(self) -> None:
        while True:
            time.sleep(CLOCK_POLL_SECONDS)  # on the monotonic clock: the offset does not move it
            self.read()


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--bind":
        print(
            "usage: python -m graft.testing.faults.node_main --bind ADDRESS [--clock-file PATH] "
            "<twist arguments>"
        )
        return 2
    rest = argv[3:]
    if len(rest) >= 2 and rest[0] == "--clock-file":
        WallClockOffset(Path(rest[1])).install()
        rest = rest[2:]
    bind_outbound_connections(argv[2])
    install_fsync_stall()  # only if the harness asked (graft.testing.faults.disk)
    sys.argv = [argv[0], *rest]
    run_twist(rest)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
