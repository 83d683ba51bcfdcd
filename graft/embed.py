# mypy: disable-error-code="no-untyped-call"
"""Graft as a library: run a node inside your own program, on its Twisted reactor.

    node = start_node("conf/cluster.yaml", "n1", Counter())   # a replicated object
    counter = node.replica                                     # its methods, as Deferreds
    value = await counter.add(5)

The node is built by the same composition root as ``twist graft`` (graft.service.make_service):
the same durable log, mutual-TLS peer transport, snapshots, space quota and hand-over on stop;
only the state machine is the caller's and the HTTP API is optional. docs/library.md is the
guide, with an asyncio example.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from graft.config import ClusterConfig, load_config
from graft.driver.node import GraftNode
from graft.driver.port import CommandResult, Consistency, NodeStatus, QueryResult
from graft.fsm import StateMachine
from graft.replicated import Replica, ReplicatedObject, as_consistency

if TYPE_CHECKING:
    from graft.service import GraftService

__all__ = ["EmbeddedNode", "start_node"]

log = Logger(namespace="graft.embed")

LeaderCallback = Callable[[str | None], object]


class EmbeddedNode:
    """A running Graft node, seen from the program that embeds it.

    ``submit`` and ``query`` are the HTTP API's /command and /query without HTTP: on a follower
    they are forwarded to the leader, and they fail with the same GraftErrors (NoLeader,
    Timeout, BadRequest, ...). Leadership changes are noticed by polling the node once per
    heartbeat interval, so a callback sees every change of the leader this node knows, at most a
    heartbeat late.
    """

    def __init__(
        self,
        node: GraftNode,
        *,
        clock: Any,
        poll_seconds: float,
        service: GraftService | None = None,
        cls: type | None = None,
    ) -> None:
        self.node = node
        self._service = service
        self._clock = clock
        self._callbacks: list[LeaderCallback] = []
        self._leader: str | None = None
        self._stop_waiters: list[Deferred[None]] | None = []
        self._watch = LoopingCall(self._poll)
        self._watch.clock = clock
        self._watch.start(poll_seconds, now=False)
        self._trigger: Any = None
        self.replica: Any = Replica(self, cls) if cls is not None else None

    @property
    def node_id(self) -> str:
        return self.node.node_id

    # -- the raw interface: bytes in, bytes out ----------------------------------------------

    def submit(self, commands: Sequence[bytes]) -> Deferred[list[CommandResult]]:
        """Commit the commands (in order) and return each one's result (output or error)."""
        return self.node.submit(list(commands))

    def query(
        self,
        query: bytes,
        consistency: Consistency | str = Consistency.DEFAULT,
        *,
        timeout: float | None = None,
    ) -> Deferred[QueryResult]:
        """Read at ``consistency``: "strong" (linearizable, on any node), "default" (the
        leader's lease, else strong), "weak" (this node's state as it is)."""
        return self.node.query(query, as_consistency(consistency), timeout=timeout)

    # -- leadership --------------------------------------------------------------------------

    def leader(self) -> str | None:
        """The leader this node knows, or None during an election."""
        return self.node.leader_id()

    def is_leader(self) -> bool:
        return self.node.is_leader()

    def status(self) -> NodeStatus:
        return self.node.status()

    def on_leader_change(self, callback: LeaderCallback) -> Callable[[], None]:
        """Call ``callback(leader)`` (a node id, or None) whenever the known leader changes;
        returns the function that unsubscribes it."""
        self._callbacks.append(callback)
        return lambda: self._callbacks.remove(callback) if callback in self._callbacks else None

    def wait_for_leader(self) -> Deferred[str]:
        """Fires with the leader's id as soon as one is known."""
        current = self.leader()
        if current is not None:
            return succeed(current)
        d: Deferred[str] = Deferred()

        def seen(leader: str | None) -> None:
            if leader is not None and not d.called:
                unsubscribe()
                d.callback(leader)

        unsubscribe = self.on_leader_change(seen)
        return d

    def _poll(self) -> None:
        leader = self.node.leader_id()
        if leader == self._leader:
            return
        self._leader = leader
        for callback in list(self._callbacks):
            callback(leader)

    # -- stopping ----------------------------------------------------------------------------

    def stop(self) -> Deferred[None]:
        """Stop gracefully: a leader hands leadership over first, then the node stops taking
        requests, fails what is waiting, finishes its log writes and closes its connections.
        Idempotent (each call gets a Deferred of its own); the reactor keeps running."""
        waiter: Deferred[None] = Deferred()
        if self._stop_waiters is None:  # already stopped
            waiter.callback(None)
            return waiter
        self._stop_waiters.append(waiter)
        if len(self._stop_waiters) > 1:
            return waiter
        if self._watch.running:
            self._watch.stop()
        if self._trigger is not None:
            self._clock.removeSystemEventTrigger(self._trigger)
            self._trigger = None
        target: Any = self._service if self._service is not None else self.node
        stopping: Deferred[None] = target.stopService()
        stopping.addBoth(self._stopped)
        return waiter

    def _stopped(self, result: object) -> None:
        waiters, self._stop_waiters = self._stop_waiters or [], None
        for waiter in waiters:
            waiter.callback(None)
        if isinstance(result, Failure):
            log.failure("the node did not stop cleanly", result)

    def stop_with_reactor(self) -> None:
        """Stop this node (gracefully) before the reactor shuts down (Ctrl-C, reactor.stop)."""
        self._trigger = self._clock.addSystemEventTrigger("before", "shutdown", self.stop)


def start_node(
    config: ClusterConfig | str | Path,
    node_id: str,
    state: object,
    *,
    http_api: bool = False,
    join: bool = False,
    reactor: Any = None,
) -> EmbeddedNode:
    """Start node ``node_id`` of the cluster described by ``config`` (a config file's path, as
    for ``twist graft``, or a loaded ClusterConfig) inside this process, and return it.

    ``state`` is the replicated state machine: an object whose class has ``@command`` and
    ``@query`` methods (graft.replicated; then ``node.replica`` calls them), or any
    graft.fsm.StateMachine. The config's ``fsm`` section is not used. ``http_api=True`` also
    serves the HTTP API on the node's api port (for the ``graft`` CLI and the console). The node
    stops before the reactor shuts down. A fatal error (a bug in a command, a failing disk)
    stops the reactor, as it stops ``twist graft``: a replica must not go on after it.

    Raises ConfigError or StorageError, before anything started, when the config or the data
    dir is not usable.
    """
    from graft.service import GraftService, make_service  # the whole node: imported on use

    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    cfg = config if isinstance(config, ClusterConfig) else load_config(config, node_id)
    cls: type | None = None
    if isinstance(state, StateMachine):
        fsm: StateMachine = state
        name = f"{type(state).__module__}:{type(state).__qualname__}"
    else:
        adapter = ReplicatedObject(state)
        fsm, name, cls = adapter, adapter.name, adapter.cls
    service = cast(
        GraftService,
        make_service(
            cfg, node_id, reactor=reactor, join=join, fsm=fsm, fsm_name=name, http_api=http_api
        ),
    )
    service.startService()
    node = service.node
    embedded = EmbeddedNode(
        node, clock=reactor, poll_seconds=cfg.heartbeat_ms / 1000, service=service, cls=cls
    )
    embedded.stop_with_reactor()
    return embedded
