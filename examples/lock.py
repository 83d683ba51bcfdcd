"""A lease-based distributed lock with fencing tokens, and a resource that honours them.

    graft certs -c conf/examples.yaml          # once
    python examples/lock.py --node n1 -c conf/examples.yaml
    python examples/lock.py --node n2 -c conf/examples.yaml
    python examples/lock.py --node n3 -c conf/examples.yaml

Each node, in a loop, asks for the lock for a lease of --ttl seconds; when granted it gets a
fencing token (1, 2, 3, ... one per grant, never reused), writes to the guarded resource with
that token and releases the lock. A holder that stalls past its lease loses the lock to the next
client, and its late writes are refused: the resource accepts a write only with a token at least
as new as every token it has accepted before.

Time: a command may not read a clock (every replica must compute the same thing), so the caller
passes its clock's reading, ``now``, with each call. The lock never lets time go backwards: it
judges leases against the latest ``now`` it has seen. A client whose clock runs ahead can end a
lease early; the fencing tokens are what keep the resource safe then.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from twisted.internet import reactor, task
from twisted.internet.defer import ensureDeferred
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)

from graft import EmbeddedNode, Rejected, command, query, start_node

MAX_TTL = 60.0


class Lock:
    """The replicated state: who holds the lock until when, the last token granted, and the
    guarded resource (its data and the newest token it accepted)."""

    def __init__(self) -> None:
        self.holder: str | None = None
        self.until = 0.0
        self.clock = 0.0  # the latest `now` any call brought: lease time never goes back
        self.token = 0  # the last fencing token granted
        self.accepted = 0  # the newest token the resource accepted a write with
        self.data: dict[str, Any] = {}

    def _advance(self, now: Any) -> float:
        if not isinstance(now, (int, float)) or isinstance(now, bool) or now < 0:
            raise Rejected("now must be a non-negative number of seconds")
        self.clock = max(self.clock, float(now))
        return self.clock

    @command
    def acquire(self, owner: str, now: float, ttl: float) -> dict[str, Any]:
        """Grant the lock to ``owner`` for ``ttl`` seconds if it is free or its lease ended;
        answers ``{"granted": True, "token": N}`` or who holds it and until when."""
        if not isinstance(owner, str) or not owner:
            raise Rejected("owner must be a non-empty string")
        if not isinstance(ttl, (int, float)) or isinstance(ttl, bool) or not 0 < ttl <= MAX_TTL:
            raise Rejected(f"ttl must be a number of seconds in (0, {MAX_TTL}]")
        clock = self._advance(now)
        if self.holder is not None and self.holder != owner and clock < self.until:
            return {"granted": False, "holder": self.holder, "until": self.until}
        self.token += 1
        self.holder, self.until = owner, clock + float(ttl)
        return {"granted": True, "token": self.token, "until": self.until}

    @command
    def release(self, owner: str, token: int) -> bool:
        """Give the lock back; only its holder, with the token of the current grant, can."""
        if self.holder != owner or token != self.token:
            return False
        self.holder, self.until = None, 0.0
        return True

    @command
    def write(self, token: int, key: str, value: str) -> int:
        """The guarded resource: store ``value`` under ``key`` unless ``token`` is older than a
        token already accepted. Answers the token accepted."""
        if not isinstance(token, int) or isinstance(token, bool) or not 0 < token <= self.token:
            raise Rejected(f"token {token!r} was never granted")
        if token < self.accepted:
            raise Rejected(f"token {token} is older than token {self.accepted}, already used")
        if not isinstance(key, str) or not isinstance(value, str):
            raise Rejected("key and value must be strings")
        self.accepted = token
        self.data[key] = value
        return token

    @query
    def holder_now(self) -> dict[str, Any]:
        return {"holder": self.holder, "until": self.until, "token": self.token}


async def round_trip(node: EmbeddedNode, ttl: float) -> None:
    me = node.node_id
    lock = node.replica
    try:
        grant = await lock.acquire(me, time.time(), ttl)
        if not grant["granted"]:
            return
        token = grant["token"]
        print(f"{me}: granted token {token}", flush=True)
        await lock.write(token, "last-writer", me)
        print(f"{me}: wrote with token {token}", flush=True)
        await lock.release(me, token)
    except Rejected as e:
        print(f"{me}: refused: {e.message}", flush=True)
    except Exception as e:  # NoLeader, Timeout: try again next round
        print(f"{me}: failed: {e}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--node", required=True, help="this node's id in the config")
    parser.add_argument("-c", "--config", default="conf/examples.yaml")
    parser.add_argument("--every", type=float, default=1.0, help="seconds between rounds")
    parser.add_argument("--ttl", type=float, default=5.0, help="the lease, in seconds")
    parser.add_argument("--api", action="store_true", help="also serve the HTTP API")
    args = parser.parse_args()
    warnings = LogLevelFilterPredicate(LogLevel.warn)
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stderr), [warnings])],
        redirectStandardIO=False,
    )
    node = start_node(args.config, args.node, Lock(), http_api=args.api)
    rounds = task.LoopingCall(lambda: ensureDeferred(round_trip(node, args.ttl)))
    rounds.start(args.every, now=False)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
