"""A replicated key-value store with compare-and-set, driven from the terminal.

    graft certs -c conf/examples.yaml          # once
    python examples/kv.py --node n1 -c conf/examples.yaml
    python examples/kv.py --node n2 -c conf/examples.yaml
    python examples/kv.py --node n3 -c conf/examples.yaml

Then type, in any of the three terminals:

    put colour blue          -> the previous value (or None)
    get colour [strong|weak] -> the value, read at that consistency (default: the leader's lease)
    cas colour blue red      -> true if the value was blue and is now red ('-' means absent)
    del colour               -> the previous value
    keys                     -> every key, sorted
    leader                   -> who leads now
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from twisted.internet import reactor, stdio
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)
from twisted.protocols.basic import LineReceiver

from graft import EmbeddedNode, Rejected, command, query, start_node

MAX_KEY = 256
MAX_VALUE = 64 * 1024


class Store:
    """The replicated state: a dict of strings. Commands check their input and refuse bad
    input with Rejected, the same way on every node."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    @staticmethod
    def _check(key: Any, value: Any = "") -> None:
        if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY:
            raise Rejected(f"a key is a string of 1 to {MAX_KEY} characters")
        if not isinstance(value, str) or len(value) > MAX_VALUE:
            raise Rejected(f"a value is a string of at most {MAX_VALUE} characters")

    @command
    def put(self, key: str, value: str) -> str | None:
        self._check(key, value)
        previous = self.data.get(key)
        self.data[key] = value
        return previous

    @command
    def cas(self, key: str, expect: str | None, value: str) -> bool:
        self._check(key, value)
        if self.data.get(key) != expect:
            return False
        self.data[key] = value
        return True

    @command
    def delete(self, key: str) -> str | None:
        self._check(key)
        return self.data.pop(key, None)

    @query
    def get(self, key: str) -> str | None:
        return self.data.get(key)

    @query
    def keys(self) -> list[str]:
        return sorted(self.data)


class Console(LineReceiver):
    delimiter = b"\n"

    def __init__(self, node: EmbeddedNode) -> None:
        self.node = node
        self.store = node.replica
        self.previous: Deferred[None] = succeed(None)  # lines run one after the other

    def connectionMade(self) -> None:
        self.say(f"node {self.node.node_id}; type put/get/cas/del/keys/leader")

    def say(self, text: str) -> None:
        self.transport.write(text.encode("utf-8") + b"\n")  # type: ignore[union-attr]

    def lineReceived(self, line: bytes) -> None:
        words = line.decode("utf-8", errors="replace").split()
        if words:
            self.previous.addCallback(lambda _: ensureDeferred(self.run(words)))

    async def run(self, words: list[str]) -> None:
        verb, args = words[0], words[1:]
        try:
            if verb == "put" and len(args) >= 2:
                answer = await self.store.put(args[0], " ".join(args[1:]))
            elif verb == "get" and len(args) in (1, 2):
                consistency = args[1] if len(args) == 2 else "default"
                answer = await self.store.get(args[0], consistency=consistency)
            elif verb == "cas" and len(args) == 3:
                expect = None if args[1] == "-" else args[1]
                answer = await self.store.cas(args[0], expect, args[2])
            elif verb == "del" and len(args) == 1:
                answer = await self.store.delete(args[0])
            elif verb == "keys" and not args:
                answer = await self.store.keys()
            elif verb == "leader" and not args:
                answer = self.node.leader()
            else:
                answer = "usage: put K V | get K [strong|weak] | cas K OLD NEW | del K | keys"
        except Rejected as e:
            answer = f"rejected: {e.message}"
        except Exception as e:  # NoLeader, Timeout, a bad consistency name: say so, go on
            answer = f"error: {e}"
        self.say(str(answer))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--node", required=True, help="this node's id in the config")
    parser.add_argument("-c", "--config", default="conf/examples.yaml")
    parser.add_argument("--api", action="store_true", help="also serve the HTTP API")
    args = parser.parse_args()
    warnings = LogLevelFilterPredicate(LogLevel.warn)
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stderr), [warnings])],
        redirectStandardIO=False,
    )
    node = start_node(args.config, args.node, Store(), http_api=args.api)
    stdio.StandardIO(Console(node))
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
