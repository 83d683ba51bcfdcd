"""The fakes of tests/api/fakes.py against the real objects they stand in for: FakeBackend and
a GraftNode of the in-memory cluster (tests.support.driver), Settings and graft.config's
ApiConfig, answer the same calls with the same shapes: the same
keys, and values of the same types, all the way down. A fake that drifts from the real thing
makes the API tests test something the node never does."""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.python.failure import Failure
from twisted.trial import unittest

from graft.api.views import members_document, status_document
from graft.config import ApiConfig
from graft.driver.port import CommandResult, Consistency, QueryResult
from graft.raft.types import MemberAddress, Membership, SnapshotMeta
from graft.sessions.envelope import encode_command, encode_register
from graft.testing.kv import get, put
from tests.api.fakes import FakeBackend, Settings
from tests.support.driver import NODES, DriverCluster, MemoryDurable

# The keys of the mappings keyed by node id, which differ between clusters (their values'
# shapes must not): status()'s progress and members()'s addresses.
BY_NODE = frozenset({"progress", "addresses"})


def shape(value: Any, by_node: frozenset[str] = BY_NODE, key: str = "") -> Any:
    """A JSON-able description of ``value``'s structure: a dict's keys with their values'
    shapes (under a key named in ``by_node``, the keys are node ids and become "<node>"), a
    list's distinct element shapes, a dataclass's fields, and otherwise the type's name."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return {"<dataclass>": type(value).__name__, **shape(fields, by_node)}
    if isinstance(value, dict):
        if key in by_node:
            inner = {json.dumps(shape(v, by_node), sort_keys=True) for v in value.values()}
            return {"<node>": sorted(inner)}
        return {str(k): shape(v, by_node, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        inner = {json.dumps(shape(v, by_node), sort_keys=True) for v in value}
        return ["list", *sorted(inner)]
    return type(value).__name__


class SnapshotsInMemory(MemoryDurable):
    """Takes snapshots into memory, so that take_snapshot runs on the real node too."""

    def save_snapshot(
        self, meta: SnapshotMeta, fsm_name: str, write: Callable[[BinaryIO], object]
    ) -> None:
        write(io.BytesIO())

    def compact(self, index: int, keep: int = 0) -> Deferred[None]:  # type: ignore[override]
        return succeed(None)

    def install_snapshot(self, meta: SnapshotMeta, path: Path, fsm_name: str = "") -> None:
        raise NotImplementedError


def at_once(f: Callable[..., Any], *args: Any) -> Deferred[Any]:
    return maybeDeferred(f, *args)


class FakeBackendContractTests(DriverCluster):
    """FakeBackend (its default state: three voters, this node leads) and a real three-node
    cluster's leader and follower."""

    def setUp(self) -> None:
        self.start_nodes(
            storage=SnapshotsInMemory,
            run_in_thread=at_once,
            catch_up_timeout=5.0,
            static_addresses={  # as a real cluster's config and log give them
                n: MemberAddress(host="127.0.0.1", p2p_port=9000 + i, api_port=8000 + i)
                for i, n in enumerate(NODES)
            },
        )
        self.leader_id = self.leader()
        self.real = self.network.nodes[self.leader_id]
        self.follower_id = next(n for n in NODES if n != self.leader_id)
        self.result(self.real.submit([put("k", "1")]))
        self.wait_until(
            lambda: all(n.is_ready() for n in self.network.nodes.values()), "all nodes ready"
        )
        self.fake = FakeBackend()

    def same(self, fake: Any, real: Any, what: str, by_node: frozenset[str] = BY_NODE) -> None:
        self.assertEqual(
            shape(fake, by_node),
            shape(real, by_node),
            f"{what}: the fake's shape is not the node's",
        )

    def answer(self, d: Deferred[Any]) -> Any:
        """What ``d`` fires with; an error fails the test."""
        result = self.result(d)
        if isinstance(result, Failure):
            result.raiseException()
        return result

    def test_status_on_the_leader(self) -> None:
        """status() of the leader: id, role, term, leader, indexes, snapshot, members, peers
        connected and per-member progress, with the node's value types."""
        self.same(self.fake.status(), self.real.status(), "status() on the leader")
        self.same(
            status_document(self.fake.status()),
            status_document(self.real.status()),
            "GET /status of the leader",
        )

    def test_status_on_a_follower(self) -> None:
        """status() of a follower: the same document without progress."""
        self.fake.leader = "ritchie"
        follower = self.network.nodes[self.follower_id]
        self.same(self.fake.status(), follower.status(), "status() on a follower")
        self.same(
            status_document(self.fake.status()),
            status_document(follower.status()),
            "GET /status of a follower",
        )

    def test_is_ready_follows_the_same_rule(self) -> None:
        """is_ready() is a bool on both, true when a leader is known and everything committed
        is applied; false without a leader, and false while committed entries wait."""
        self.assertIs(self.fake.is_ready(), self.real.is_ready())
        self.assertIs(self.real.is_ready(), True)
        joining = self.add_node("d", Membership(), seed=9)
        self.fake.leader = None
        self.assertIs(self.fake.is_ready(), joining.is_ready())
        self.assertIs(joining.is_ready(), False)
        self.fake.leader = "turing"
        self.fake.apply_lag = 1
        self.assertIs(self.fake.is_ready(), False)

    def test_identity_calls(self) -> None:
        """node_id, content_type, leader_id(), is_leader() and api_url() have the node's types;
        an unknown member's api_url is None on both."""
        fake, real = self.fake, self.real
        for name in ("node_id", "content_type"):
            self.same(getattr(fake, name), getattr(real, name), name)
        self.same(fake.leader_id(), real.leader_id(), "leader_id()")
        self.same(fake.is_leader(), real.is_leader(), "is_leader()")
        self.same(fake.api_url("ritchie"), real.api_url(self.follower_id), "api_url(member)")
        self.same(fake.api_url("nobody"), real.api_url("nobody"), "api_url(stranger)")

    def test_submit_and_query(self) -> None:
        """submit() answers a list of CommandResult and query() a QueryResult, field by field
        of the same types."""
        fake = self.answer(self.fake.submit([put("k", "2")]))
        real = self.answer(self.real.submit([put("k", "2")]))
        self.assertIsInstance(real[0], CommandResult)
        self.same(fake, real, "submit()")
        for consistency in Consistency:
            fake_read = self.answer(self.fake.query(get("k"), consistency))
            real_read = self.answer(self.real.query(get("k"), consistency))
            self.assertIsInstance(real_read, QueryResult)
            self.same(fake_read, real_read, f"query({consistency.value})")

    def test_submit_operations(self) -> None:
        """submit_operations() answers a registration, a numbered command, its duplicate and
        a refusal with CommandResults of the same shapes on both."""
        for backend in (self.fake, self.real):
            (registered,) = self.answer(backend.submit_operations([encode_register()]))
            sid = json.loads(registered.output)["session"]
            ops = [
                encode_command(sid, 1, 0, put("k", "3")),
                encode_command(sid, 1, 0, put("k", "3")),
                encode_command("1-0", 1, 0, put("k", "3")),
            ]
            results = self.answer(backend.submit_operations(ops))
            self.assertEqual([r.duplicate for r in results], [False, True, False])
            self.assertEqual(results[2].refusal, "session_expired")
            if backend is self.fake:
                fake = [registered, *results]
            else:
                self.same(fake, [registered, *results], "submit_operations()")

    def test_members(self) -> None:
        """members(): leader, voters, learners and each member's addresses."""
        self.same(self.fake.members(), self.real.members(), "members()")
        self.same(
            members_document(self.fake.members()),
            members_document(self.real.members()),
            "GET /cluster/members",
        )

    def test_membership_changes(self) -> None:
        """add_member, transfer_leadership and remove_member answer as the node does."""
        self.add_node("d", Membership(), seed=9)
        added = self.answer(self.real.add_member("d", "127.0.0.1", 9004, 8004))
        self.same(self.answer(self.fake.add_member("d", "127.0.0.1", 9004, 8004)), added, "add")
        moved = self.answer(self.real.transfer_leadership(self.follower_id))
        self.same(self.answer(self.fake.transfer_leadership("ritchie")), moved, "transfer")
        new_leader = self.network.nodes[self.follower_id]
        removed = self.answer(new_leader.remove_member("d"))
        self.same(self.answer(self.fake.remove_member("d")), removed, "remove")

    def test_snapshot_and_check(self) -> None:
        """take_snapshot() and check_replicas() answer documents of the node's shape;
        latest_snapshot() is None on both before any snapshot is stored."""
        self.same(self.fake.latest_snapshot(), self.real.latest_snapshot(), "latest_snapshot()")
        snapshot = self.answer(self.real.take_snapshot())
        self.same(self.answer(self.fake.take_snapshot()), snapshot, "take_snapshot()")
        check = self.answer(self.real.check_replicas())
        fake_check = self.answer(self.fake.check_replicas())
        self.same(fake_check, check, "check_replicas()", by_node=frozenset({"members"}))


class SettingsContractTests(unittest.TestCase):
    """Settings stands in for graft.config's ApiConfig (the fakes use ApiLimits itself)."""

    def test_settings_have_the_fields_of_api_config(self) -> None:
        """Every field of ApiConfig that the API reads exists in Settings with a value of the
        same type, and the same default."""
        self.same_fields(Settings(), ApiConfig(), ignore={"limits"})

    def same_fields(self, fake: Any, real: Any, ignore: set[str]) -> None:
        fake_fields = {f.name for f in dataclasses.fields(fake)} - ignore
        real_fields = {f.name for f in dataclasses.fields(real)} - ignore
        self.assertEqual(fake_fields - real_fields, set(), "fields the real config lacks")
        for name in sorted(fake_fields):
            fake_value, real_value = _plain(getattr(fake, name)), _plain(getattr(real, name))
            self.assertEqual(
                (name, type(fake_value).__name__, fake_value),
                (name, type(real_value).__name__, real_value),
            )


def _plain(value: object) -> object:
    """A read-only mapping as a dict: the config freezes what the fake leaves mutable."""
    return dict(value) if isinstance(value, Mapping) else value
