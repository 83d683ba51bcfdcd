"""Ports for test processes on 127.0.0.1 that no one else can take in the meantime.

Picking a port by binding to 0 and closing the socket leaves a gap in which the kernel may give
the same port to another process (an outgoing connection, another test's bind to 0) before the
node binds it. Here the test process keeps its socket bound, with SO_REUSEADDR and never
listening, for as long as the port is in use:

- Linux lets a node's listening socket (Twisted sets SO_REUSEADDR too) bind the same port while
  ours is bound and not listening, so the node binds "its" port at any later time, restarts
  included.
- The kernel never hands a bound port to a bind to 0 or to an outgoing connection, so other
  tests cannot collide with it.
- Nothing listens on a held port until the node does, so a connection to it is refused at once:
  ``dead_url`` is a held port no node ever binds.

A process that names the port number explicitly can still take it (it chose the number from a
racy pick of its own); ``LocalCluster`` retries a start that fails that way.
"""

from __future__ import annotations

import socket

HOST = "127.0.0.1"


class HeldPort:
    """One port on HOST kept bound (not listening) by this process until ``release()``."""

    def __init__(self, *, shared: bool = True) -> None:
        # shared: a node's listening socket (SO_REUSEADDR) may bind the port while it is held;
        # not shared: no one may (a dead URL).
        self._sock: socket.socket | None = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if shared:
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._sock.bind((HOST, 0))
        except BaseException:
            self._sock.close()
            raise
        self.port: int = self._sock.getsockname()[1]

    def release(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __repr__(self) -> str:
        return f"HeldPort({self.port}{'' if self._sock else ', released'})"


def hold_ports(count: int) -> list[HeldPort]:
    """``count`` distinct held ports (all released again if one cannot be had)."""
    held: list[HeldPort] = []
    try:
        for _ in range(count):
            held.append(HeldPort())
    except BaseException:
        for port in held:
            port.release()
        raise
    return held


# Held for the life of the test process: a dead URL must stay dead while any test uses it.
_DEAD: list[HeldPort] = []


def dead_url(scheme: str = "http") -> str:
    """A URL on HOST where nothing listens and nothing will: a connection is refused at once."""
    held = HeldPort(shared=False)
    _DEAD.append(held)
    return f"{scheme}://{HOST}:{held.port}"
