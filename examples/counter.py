"""The smallest Graft program: a counter replicated on three nodes.

Make the example cluster's certificates once, then start one node per terminal:

    graft certs -c conf/examples.yaml
    python examples/counter.py --node n1 -c conf/examples.yaml
    python examples/counter.py --node n2 -c conf/examples.yaml
    python examples/counter.py --node n3 -c conf/examples.yaml

Each node adds 1 every second, from whichever node it runs on (a follower forwards to the
leader), and prints the value its addition produced: no two additions anywhere get the same
value. Stop a node with Ctrl-C (it hands leadership over first) and the other two go on.
"""

from __future__ import annotations

import argparse
import sys

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


class Counter:
    """The replicated state machine: plain Python; Graft replicates its calls."""

    def __init__(self) -> None:
        self.value = 0

    @command
    def add(self, amount: int) -> int:
        if not isinstance(amount, int) or amount <= 0:
            raise Rejected(f"amount must be a positive integer, not {amount!r}")
        self.value += amount
        return self.value

    @query
    def get(self) -> int:
        return self.value


async def add_one(node: EmbeddedNode) -> None:
    try:
        value = await node.replica.add(1)
    except Exception as e:  # NoLeader, Timeout during an election: try again next time
        print(f"{node.node_id}: add failed: {e}", flush=True)
        return
    print(f"{node.node_id}: added 1 -> {value}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--node", required=True, help="this node's id in the config")
    parser.add_argument("-c", "--config", default="conf/examples.yaml")
    parser.add_argument("--every", type=float, default=1.0, help="seconds between additions")
    parser.add_argument("--api", action="store_true", help="also serve the HTTP API")
    args = parser.parse_args()
    warnings = LogLevelFilterPredicate(LogLevel.warn)
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stderr), [warnings])],
        redirectStandardIO=False,
    )

    node = start_node(args.config, args.node, Counter(), http_api=args.api)
    node.on_leader_change(lambda leader: print(f"{args.node}: leader is {leader}", flush=True))
    loop = task.LoopingCall(lambda: ensureDeferred(add_one(node)))
    loop.start(args.every, now=False)
    reactor.run()  # type: ignore[attr-defined]  # Ctrl-C: the node stops gracefully first


if __name__ == "__main__":
    main()
