"""graft.embed.start_node on the real reactor, in the test's process: a one-node cluster from a
config file, with its durable log, called through the replica, stopped and started again."""

from __future__ import annotations

from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial import unittest

from graft import start_node
from graft.config import load_config
from graft.service import hello_settings
from graft.testing.cluster import LocalCluster
from tests.test_replicated import Counter


class StartNode(unittest.TestCase):
    def setUp(self) -> None:
        # LocalCluster writes the config file and certificates; no process is started.
        self.cluster = LocalCluster(Path(self.mktemp()), node_ids=("n1",))

    def test_embedded_node_serves_calls_and_keeps_its_state(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self.run_twice())

    async def run_twice(self) -> None:
        node = start_node(self.cluster.config_path, "n1", Counter(), reactor=reactor)
        self.assertEqual(await node.wait_for_leader(), "n1")
        self.assertEqual((await node.replica.add(2))["value"], 2)
        self.assertEqual(await node.replica.get(consistency="strong"), 2)
        await node.stop()
        self.assertFalse(node.node.running)

        again = start_node(self.cluster.config_path, "n1", Counter(), reactor=reactor)
        try:
            await again.wait_for_leader()
            self.assertEqual(await again.replica.get(consistency="strong"), 2)  # from the log
            self.assertEqual((await again.replica.add(3))["value"], 5)
        finally:
            await again.stop()
        # The driver's coroutines wait a tick at a time; let the last wait end.
        await deferLater(reactor, 0.2, lambda: None)

    def test_the_hello_names_the_embedded_class(self) -> None:
        cfg = load_config(self.cluster.config_path)
        settings = hello_settings(cfg, "graft.replicated:app.Counter")
        self.assertEqual(settings["fsm.factory"], "graft.replicated:app.Counter")
