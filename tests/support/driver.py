"""The driver's in-memory test cluster: GraftNodes with real Raft cores on a deterministic
Clock, an in-memory Network, and the waiting helpers the driver tests share. No sockets, no
threads, no sleeps."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial import unittest

from graft.driver.node import GraftNode
from graft.driver.settings import DriverSettings
from graft.driver.wiring import build_node
from graft.errors import NoLeader
from graft.fsm import StateMachine
from graft.fsm.kv import KeyValueStateMachine
from graft.raft.config import RaftConfig
from graft.raft.memory import MemoryStorage
from graft.raft.messages import Message
from graft.raft.node import RaftNode
from graft.raft.types import Entry, HardState, Membership, SnapshotMeta
from graft.transport import PeerUnavailable

TICK = 0.035
NODES = ("a", "b", "c")


def run_until(
    clock: Clock, condition: Callable[[], object], what: str, *, seconds: float = 7.0
) -> None:
    """Advance ``clock`` a tick at a time until ``condition()`` is true; after ``seconds`` of
    clock time without, raise AssertionError naming ``what``. For a single node; a cluster's
    tests use DriverCluster.wait_until, which advances in finer steps."""
    waited = 0.0
    while not condition():
        if waited >= seconds:
            raise AssertionError(f"{what}: not after {seconds} s of clock time")
        clock.advance(TICK)
        waited += TICK


# build_node's arguments besides the settings that a test may replace.
_WIRING = (
    *("monotonic", "stop_process", "metrics", "incoming_dir", "run_in_thread", "run_query"),
    *("seeds", "wall_ns", "run_apply"),
)


class MemoryDurable(MemoryStorage):
    """MemoryStorage with the driver's asynchronous persist; ``hold`` delays durability."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = False
        self.pending: list[tuple[Deferred[None], HardState | None, Sequence[Entry]]] = []

    def persist(self, hard_state: HardState | None, entries: Sequence[Entry]) -> Deferred[None]:
        if self.hold:
            d: Deferred[None] = Deferred()
            self.pending.append((d, hard_state, entries))
            return d
        self._write(hard_state, entries)
        return succeed(None)

    @property
    def durable_index(self) -> int:
        return self.last_index()  # held writes reach the log only when released

    def release(self) -> None:
        """Make the held writes durable (later writes are held while ``hold`` stays set)."""
        pending, self.pending = self.pending, []
        for d, hard_state, entries in pending:
            self._write(hard_state, entries)
            d.callback(None)

    def _write(self, hard_state: HardState | None, entries: Sequence[Entry]) -> None:
        if hard_state is not None:
            self.set_hard_state(hard_state)
        self.append(list(entries))

    def close(self) -> Deferred[None]:
        return succeed(None)

    @property
    def log_bytes(self) -> int:
        """As DurableLog.log_bytes: here the entries' data, as the log has no files."""
        return sum(len(e.data) for e in self._entries)

    # Snapshots are off in these tests (snapshot_entries=0); the driver never calls these.
    def save_snapshot(
        self, meta: SnapshotMeta, fsm_name: str, write: Callable[[BinaryIO], object]
    ) -> None:
        raise NotImplementedError

    def snapshot_info(self) -> None:
        return None

    def compact(self, index: int, keep: int = 0) -> Deferred[None]:  # type: ignore[override]
        raise NotImplementedError

    def install_snapshot(self, meta: SnapshotMeta, path: Path, fsm_name: str = "") -> None:
        raise NotImplementedError


class Network:
    """Delivers messages on the next clock turn; ``cut`` blocks both directions of a link, and
    ``hold`` delays one direction's messages until ``release``."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.nodes: dict[str, GraftNode] = {}
        self.cut: set[frozenset[str]] = set()
        self.holds: dict[tuple[str, str], tuple[type[Message], ...]] = {}
        self.held_back: list[tuple[str, Message]] = []

    def blocked(self, a: str, b: str) -> bool:
        return frozenset((a, b)) in self.cut

    def isolate(self, node: str) -> None:
        for other in self.nodes:
            if other != node:
                self.cut.add(frozenset((node, other)))

    def heal(self) -> None:
        self.cut.clear()

    def hold(self, sender: str, to: str, *kinds: type[Message]) -> None:
        """Hold back messages of these kinds (all kinds if none are named) from ``sender`` to
        ``to`` until ``release``: delivered late, in order, rather than lost."""
        self.holds[(sender, to)] = kinds

    def held(self, sender: str, message: Message) -> bool:
        """Whether ``message`` is held (and so kept for ``release``) rather than sent now."""
        kinds = self.holds.get((sender, message.to))
        if kinds is None or (kinds and not isinstance(message, kinds)):
            return False
        self.held_back.append((sender, message))
        return True

    def release(self, sender: str, to: str) -> None:
        """Stop holding that link and deliver what it held, on the next clock turn."""
        del self.holds[(sender, to)]
        kept = []
        for origin, message in self.held_back:
            if (origin, message.to) == (sender, to):
                if not self.blocked(origin, message.to) and message.to in self.nodes:
                    self.clock.callLater(0, self.nodes[message.to].receive, message)
            else:
                kept.append((origin, message))
        self.held_back = kept


class Channel:
    def __init__(self, network: Network, me: str) -> None:
        self.network = network
        self.me = me

    def send(self, message: Message) -> None:
        if self.network.blocked(self.me, message.to):
            return
        if self.network.held(self.me, message):
            return
        target = self.network.nodes.get(message.to)
        if target is None:
            return  # a member that does not run (yet): its messages are lost
        self.network.clock.callLater(0, target.receive, message)

    def send_all(self, messages: Sequence[Message]) -> None:
        for message in messages:
            self.send(message)

    def call(
        self, peer: str, command: str, args: dict[str, Any], *, timeout: float | None = None
    ) -> Deferred[dict[str, Any]]:
        if self.network.blocked(self.me, peer) or peer not in self.network.nodes:
            d: Deferred[dict[str, Any]] = Deferred()
            d.errback(PeerUnavailable(peer, "not connected"))
            return d
        return self.network.nodes[peer].handle_request(self.me, command, args)

    def update_peers(self, peers: Any) -> None:
        pass

    def admit_unlisted(self, admit: bool, members: Any = ()) -> None:
        pass

    def connected_peers(self) -> set[str]:
        return {
            n for n in self.network.nodes if n != self.me and not self.network.blocked(self.me, n)
        }


class DriverCluster(unittest.TestCase):
    """GraftNodes on a deterministic Clock and an in-memory Network, and the waiting helpers
    the driver tests share. A subclass's setUp calls ``start_nodes`` (or fills ``self.clock``
    and ``self.network`` and registers ``self._stop`` as a cleanup itself)."""

    clock: Clock
    network: Network
    storages: dict[str, MemoryDurable]

    def start_nodes(
        self,
        node_ids: Sequence[str] = NODES,
        *,
        clock: Clock | None = None,
        fsm: Callable[[], StateMachine] = KeyValueStateMachine,
        storage: Callable[[], MemoryDurable] = MemoryDurable,
        **options: Any,
    ) -> None:
        """Start a cluster of ``node_ids`` (all voters) on ``self.clock`` and ``self.network``;
        ``options`` go to every GraftNode (over the defaults of ``node_options``)."""
        self.clock = clock or Clock()
        self.network = Network(self.clock)
        self.storages = {}
        self.addCleanup(self._stop)
        members = Membership(voters=frozenset(node_ids))
        for i, node_id in enumerate(node_ids):
            self.add_node(node_id, members, seed=i, fsm=fsm, storage=storage, **options)

    def add_node(
        self,
        node_id: str,
        bootstrap: Membership,
        *,
        seed: int = 0,
        fsm: Callable[[], StateMachine] = KeyValueStateMachine,
        storage: Callable[[], MemoryDurable] = MemoryDurable,
        **options: Any,
    ) -> GraftNode:
        """Start one more node on the network: ``Membership()`` as ``bootstrap`` is a node
        started with ``--join`` (it knows no membership until the leader sends its log).
        ``options`` are DriverSettings fields, or build_node's collaborators named in _WIRING."""
        durable = self.storages[node_id] = storage()
        raft = RaftNode(RaftConfig(id=node_id, bootstrap=bootstrap), durable, random.Random(seed))
        settings: dict[str, Any] = {
            "tick_seconds": TICK,
            "command_timeout": 2.0,
            "query_timeout": 2.0,
            "api_urls": {n: f"http://{n}:8080" for n in (*bootstrap.members, node_id)},
            "bootstrap": bootstrap,
            **options,
        }
        wiring = {k: settings.pop(k) for k in _WIRING if k in settings}
        # An FSM that applies in a worker thread (SQLite) applies at once here, so tests on
        # the fake clock need no reactor; tests/driver/test_apply_thread.py runs it threaded.
        wiring.setdefault("run_apply", maybeDeferred)
        node = build_node(
            raft=raft,
            storage=durable,
            fsm=fsm(),
            clock=self.clock,
            settings=DriverSettings(**settings),
            peers=Channel(self.network, node_id),
            **wiring,
        )
        self.network.nodes[node_id] = node
        node.startService()
        return node

    def wait_until(self, condition: Callable[[], object], what: str, seconds: float = 3.0) -> None:
        """Advance the clock a tick at a time until ``condition()`` is true, at most
        ``seconds`` of clock time; fail naming ``what`` otherwise."""
        waited = 0.0
        while not condition():
            if waited >= seconds:
                self.fail(f"{what}: not after {seconds} s of clock time")
            self.advance(TICK)
            waited += TICK

    def wait_applied(self, node_id: str, index: int, seconds: float = 3.0) -> None:
        """Advance the clock until ``node_id`` has applied ``index``."""
        node = self.network.nodes[node_id]
        self.wait_until(
            lambda: node.status().applied >= index, f"{node_id} applied {index}", seconds
        )

    def _stop(self) -> None:
        for node in self.network.nodes.values():
            if node.running:
                node.stopService()
        self.flushLoggedErrors(NoLeader)

    def advance(self, seconds: float) -> None:
        steps = int(seconds / 0.005)
        for _ in range(steps):
            self.clock.advance(0.005)

    def leader(self) -> str:
        for _ in range(400):
            leaders = [n for n, node in self.network.nodes.items() if node.is_leader()]
            if len(leaders) == 1:
                return leaders[0]
            self.advance(TICK)
        self.fail("no leader elected")

    def result(self, d: Deferred[Any], seconds: float = 3.0) -> Any:
        box: list[Any] = []
        d.addBoth(box.append)
        waited = 0.0
        while not box and waited < seconds:
            self.advance(TICK)
            waited += TICK
        self.assertTrue(box, "the operation did not finish")
        return box[0]


class HeldThread:
    """A worker thread played by the test: a call that ``holds`` picks (every call by default)
    waits until ``release``, which runs the oldest held one on the test's thread and hands its
    outcome back; any other call runs at once."""

    def __init__(self, holds: Callable[[Callable[..., Any]], bool] = lambda f: True) -> None:
        self.holds = holds
        self.held: list[tuple[Deferred[Any], Callable[[], Any]]] = []

    def __call__(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        if not self.holds(f):
            return maybeDeferred(f, *args)
        d: Deferred[Any] = Deferred()
        self.held.append((d, lambda: f(*args)))
        return d

    def release(self) -> None:
        d, run = self.held.pop(0)
        outcome = maybeDeferred(run)
        outcome.addBoth(lambda r: d.errback(r) if isinstance(r, Failure) else d.callback(r))
