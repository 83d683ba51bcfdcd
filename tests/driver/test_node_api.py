"""/status, /ready and /metrics of a real GraftNode (of the in-memory cluster) through the HTTP
API in memory: what operators and load balancers read comes from the node, not a fake."""

from __future__ import annotations

import json
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.internet.defer import Deferred

from graft.api import make_api_resource
from graft.api.views import status_document
from graft.driver.node import GraftNode
from graft.raft.types import Membership
from graft.testing.kv import put
from tests.api.fakes import Settings
from tests.support.driver import NODES, DriverCluster


class NodeApiTests(DriverCluster):
    def setUp(self) -> None:
        self.start_nodes()
        self.leader_id = self.leader()
        self.result(self.network.nodes[self.leader_id].submit([put("k", "1")]))
        self.wait_until(
            lambda: all(n.is_ready() for n in self.network.nodes.values()), "all nodes ready"
        )

    def get(self, node: GraftNode, path: str) -> tuple[int, Any, bytes]:
        """GET ``path`` from ``node``'s API: the status, the response and the body."""
        stub: Any = StubTreq(make_api_resource(node, Settings(), reactor=self.clock))
        box: list[Any] = []
        pending: Deferred[Any] = stub.get(f"http://127.0.0.1:8080{path}")
        pending.addBoth(box.append)

        def answered() -> bool:
            stub.flush()
            return bool(box)

        self.wait_until(answered, f"GET {path} answered")
        response = box[0]
        body: list[bytes] = []
        stub.content(response).addCallback(body.append)
        stub.flush()
        return response.code, response, body[0]

    def test_status_is_the_nodes_document(self) -> None:
        """GET /status on the leader and on a follower is that node's status() as JSON: its
        id and role, the cluster's term and leader, and (on the leader) progress."""
        for node_id in NODES:
            node = self.network.nodes[node_id]
            code, _, body = self.get(node, "/status")
            self.assertEqual(code, 200)
            document = json.loads(body)
            self.assertEqual(document, json.loads(json.dumps(status_document(node.status()))))
            self.assertEqual(document["id"], node_id)
            self.assertEqual(document["leader"], self.leader_id)
            self.assertEqual("progress" in document, node_id == self.leader_id)

    def test_ready_follows_the_node(self) -> None:
        """GET /ready is 200 on a caught-up member; 503 with Retry-After on a follower that
        knows the leader but has not applied what is committed (its disk is held), and on a
        node that knows no leader (one started with --join that nobody has added)."""
        follower_id = next(n for n in NODES if n != self.leader_id)
        follower = self.network.nodes[follower_id]
        code, _, body = self.get(follower, "/ready")
        self.assertEqual(code, 200)
        storage = self.storages[follower_id]
        storage.hold = True
        self.result(self.network.nodes[self.leader_id].submit([put("k", "2")]))
        self.wait_until(lambda: follower.status().commit > follower.status().applied, "lagging")
        code, _, body = self.get(follower, "/ready")
        self.assertEqual(code, 503)
        self.assertEqual(json.loads(body)["leader"], self.leader_id)
        storage.hold = False
        storage.release()
        self.wait_until(follower.is_ready, "the follower caught up")
        code, _, body = self.get(follower, "/ready")
        self.assertEqual(code, 200)
        self.assertEqual(
            json.loads(body), {"ready": True, "node": follower.node_id, "leader": self.leader_id}
        )
        joining = self.add_node("d", Membership(), seed=9)
        code, response, body = self.get(joining, "/ready")
        self.assertEqual(code, 503)
        self.assertEqual(json.loads(body), {"ready": False, "node": "d", "leader": None})
        self.assertEqual(response.headers.getRawHeaders(b"Retry-After"), [b"1"])

    def test_index_gauges_follow_every_node(self) -> None:
        """After more writes, each node's term, leader flag, commit, applied and last index
        gauges are its status's, on the followers too (the gauges are set only on change)."""
        leader = self.network.nodes[self.leader_id]
        for i in range(5):
            self.result(leader.submit([put(f"g{i}", str(i))]))
        self.wait_until(
            lambda: all(
                n.status().applied == leader.status().commit for n in self.network.nodes.values()
            ),
            "every node applied the writes",
        )
        for node_id, node in self.network.nodes.items():
            _, _, body = self.get(node, "/metrics")
            samples = {
                s.name: s.value
                for family in text_string_to_metric_families(body.decode())
                for s in family.samples
                if not s.labels
            }
            status = node.status()
            shown = tuple(
                samples[f"graft_{name}"]
                for name in ("term", "is_leader", "commit_index", "applied_index", "last_index")
            )
            expected = (
                status.term,
                int(node_id == self.leader_id),
                status.commit,
                status.applied,
                status.last_index,
            )
            self.assertEqual(shown, expected, node_id)

    def test_metrics_are_the_nodes(self) -> None:
        """GET /metrics is the node's registry in Prometheus text: the leader reports itself
        leader, its term, and commit and applied indexes that match its status."""
        leader = self.network.nodes[self.leader_id]
        code, _, body = self.get(leader, "/metrics")
        self.assertEqual(code, 200)
        samples = {
            s.name: s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples
            if not s.labels
        }
        status = leader.status()
        self.assertEqual(samples["graft_is_leader"], 1)
        self.assertEqual(samples["graft_term"], status.term)
        self.assertEqual(samples["graft_commit_index"], status.commit)
        self.assertEqual(samples["graft_applied_index"], status.applied)
