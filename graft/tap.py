"""`twist graft --config FILE --node ID`: the options and the service for the twist plugin."""

from __future__ import annotations

import sys

from twisted.application.service import IService
from twisted.python import usage

from graft.config import ConfigError, load_config


class Options(usage.Options):
    synopsis = "--config conf/cluster.yaml --node turing"
    longdesc = "Run one Graft node: Raft over mutual TLS to its peers and the HTTP API."
    optFlags = [
        [
            "join",
            "j",
            "A new member: start with no membership of its own and wait for the leader to add it "
            "(graft members add); never campaigns before that.",
        ],
    ]
    optParameters = [
        ["config", "c", "conf/cluster.yaml", "The cluster configuration file (YAML)."],
        ["node", "n", None, "This node's id among the config's peers (or `node:` in the file)."],
    ]

    def postOptions(self) -> None:
        try:
            self["cluster"] = load_config(self["config"], node=self["node"])
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None
        if self["cluster"].node is None:
            peers = ", ".join(self["cluster"].peers)
            raise usage.UsageError(f"--node is required: name one of the peers ({peers})")


def makeService(options: Options) -> IService:
    from graft.config import ConfigError
    from graft.gc_policy import apply_node_policy
    from graft.service import make_service
    from graft.storage import StorageError
    from graft.storage.permissions import set_private_umask

    # Everything the node writes (its database, the log, received snapshots) is its own.
    set_private_umask()
    cfg = options["cluster"]
    try:
        service = make_service(cfg, cfg.node, join=bool(options["join"]))
    except (ConfigError, StorageError) as e:
        # One line, no traceback: these are the operator's to fix, and the message says how.
        print(f"graft: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    apply_node_policy()  # the log is replayed and the FSM restored by now
    return service
