"""Whom a node lets connect and dials: the members its core recovered from the log and
snapshot, never the config file's other peers; anyone of the cluster while it is joining."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from twisted.internet.task import Clock
from twisted.trial import unittest

from graft.driver.node import GraftNode
from graft.driver.settings import DriverSettings
from graft.driver.wiring import build_node
from graft.fsm.kv import KeyValueStateMachine
from graft.raft.config import RaftConfig
from graft.raft.node import RaftNode
from graft.raft.types import (
    Entry,
    EntryKind,
    HardState,
    MemberAddress,
    Membership,
    encode_membership,
)
from tests.support.driver import TICK, Channel, MemoryDurable, Network

FILE = {  # the config file's peers, as make_service passes them
    n: MemberAddress(host="127.0.0.1", p2p_port=9000 + i, api_port=8000 + i)
    for i, n in enumerate(("a", "b", "c"))
}
NEWCOMER = MemberAddress(host="127.0.0.1", p2p_port=9009, api_port=8009)


class RecordingChannel:
    """The peer channel, recording what the driver tells it about its peers."""

    def __init__(self) -> None:
        self.books: list[dict[str, MemberAddress]] = []
        self.admit: list[bool] = []

    def send_all(self, messages: Any) -> None:
        pass

    def call(self, peer: str, command: str, args: Any, *, timeout: float | None = None) -> Any:
        raise AssertionError("no calls expected")

    def connected_peers(self) -> set[str]:
        return set()

    def update_peers(self, peers: Mapping[str, MemberAddress]) -> None:
        self.books.append(dict(peers))

    def admit_unlisted(self, admit: bool, members: Any = ()) -> None:
        self.admit.append(admit)
        self.unlisted_members = set(members)


def make_node(node_id: str, storage: MemoryDurable, bootstrap: Membership) -> GraftNode:
    raft = RaftNode(RaftConfig(id=node_id, bootstrap=bootstrap), storage, random.Random(1))
    node = build_node(
        raft=raft,
        storage=storage,
        fsm=KeyValueStateMachine(),
        clock=Clock(),
        settings=DriverSettings(
            tick_seconds=0.035,
            command_timeout=2.0,
            query_timeout=2.0,
            api_urls={},
            static_addresses={**FILE, "d": NEWCOMER} if node_id == "d" else FILE,
            bootstrap=bootstrap,
        ),
    )
    node.peers = RecordingChannel()
    return node


class AddressBookTests(unittest.TestCase):
    def test_restarted_node_takes_members_from_its_log_not_its_file(self) -> None:
        """c was removed (a MEMBERSHIP entry in the log) but the file still lists it: after a
        restart the address book, hence whom the transport accepts and dials, leaves it out."""
        storage = MemoryDurable()
        removal = Membership(voters=frozenset({"a", "b"}))
        storage.append(
            [Entry(index=1, term=1, kind=EntryKind.MEMBERSHIP, data=encode_membership(removal))]
        )
        storage.set_hard_state(HardState(term=1, vote=None, commit=1))
        node = make_node("a", storage, Membership(voters=frozenset(FILE)))
        self.assertEqual(node.peer_addresses(), {"a": FILE["a"], "b": FILE["b"]})
        node.admit_while_joining()
        self.assertEqual(node.peers.admit, [False])  # type: ignore[union-attr]

    def test_joining_node_admits_the_cluster_until_it_learns_the_membership(self) -> None:
        """A joining node (fresh data dir, no membership) admits any node of the cluster; once
        its core adopts the leader's membership, only its members, at the log's addresses."""
        node = make_node("d", MemoryDurable(), Membership())
        self.assertEqual(node.peer_addresses(), {"d": NEWCOMER})
        node.admit_while_joining()
        channel: RecordingChannel = node.peers  # type: ignore[assignment]
        self.assertEqual(channel.admit, [True])
        elsewhere = MemberAddress(host="10.0.0.2", p2p_port=7000, api_port=7001)
        learned = Membership(
            voters=frozenset({"a", "b"}),
            learners=frozenset({"d"}),
            addresses=(("a", elsewhere), ("b", FILE["b"]), ("d", NEWCOMER)),
        )
        node._parts.membership.on_membership(learned)
        self.assertEqual(channel.admit, [True, False])
        self.assertEqual(channel.books[-1], {"a": elsewhere, "b": FILE["b"], "d": NEWCOMER})
        self.assertEqual(channel.unlisted_members, set())
        # A member whose address neither the log (written before addresses were recorded)
        # nor the file gives may still connect, and is answered on its own connection.
        node._parts.membership.on_membership(
            Membership(voters=frozenset({"a", "e"}), learners=frozenset({"d"}))
        )
        self.assertEqual(channel.admit[-1], False)
        self.assertEqual(channel.unlisted_members, {"e"})
        self.assertNotIn("e", channel.books[-1])

    def test_membership_change_records_every_members_address(self) -> None:
        """The leader writes each member's address into a membership it proposes, including
        the members the cluster was created with (known only from its file), so a new node's
        log tells it where everyone is."""
        node = make_node("a", MemoryDurable(), Membership(voters=frozenset(FILE)))
        proposed = Membership(
            voters=frozenset(FILE), learners=frozenset({"d"}), addresses=(("d", NEWCOMER),)
        )
        completed = node._parts.membership.with_known_addresses(proposed)
        self.assertEqual(dict(completed.addresses), {**FILE, "d": NEWCOMER})
        self.assertEqual((completed.voters, completed.learners), (proposed.voters, {"d"}))


class RecordedAtBirthTests(unittest.TestCase):
    def test_first_leader_records_the_file_membership_with_addresses(self) -> None:
        """A cluster's first leader writes the membership it was created with (from the file)
        into the log with every address; a node restarted on that log with a file that now
        lists another peer ignores it."""
        clock = Clock()
        network = Network(clock)
        storages = {n: MemoryDurable() for n in FILE}
        bootstrap = Membership(voters=frozenset(FILE))
        for i, n in enumerate(FILE):
            raft = RaftNode(RaftConfig(id=n, bootstrap=bootstrap), storages[n], random.Random(i))
            node = build_node(
                raft=raft,
                storage=storages[n],
                fsm=KeyValueStateMachine(),
                clock=clock,
                settings=DriverSettings(
                    tick_seconds=TICK,
                    command_timeout=2.0,
                    query_timeout=2.0,
                    api_urls={},
                    static_addresses=FILE,
                    bootstrap=bootstrap,
                ),
            )
            node.peers = Channel(network, n)
            network.nodes[n] = node
            node.startService()
        self.addCleanup(lambda: [node.stopService() for node in network.nodes.values()])

        def recorded(n: str) -> bool:
            _, membership = storages[n].initial_state()
            return membership is not None and dict(membership.addresses) == FILE

        for _ in range(4000):
            if all(recorded(n) for n in FILE):
                break
            clock.advance(0.005)
        self.assertTrue(all(recorded(n) for n in FILE), "the membership was not recorded")

        # Restart a on its log with a file that now also lists x: x is no member.
        stray = MemberAddress(host="127.0.0.1", p2p_port=9100, api_port=8100)
        network.nodes["a"].stopService()
        again = make_node("a", storages["a"], Membership(voters=frozenset({*FILE, "x"})))
        again._parts.membership._static_addresses["x"] = stray
        self.assertEqual(again.peer_addresses(), FILE)
