"""Markers: NOOP entries with data that the leader proposes for the driver (the replica
consistency check). The core treats them as any entry: replicated, persisted, committed."""

from __future__ import annotations

from twisted.trial import unittest

from graft.raft.errors import NotLeader
from graft.raft.types import EntryKind
from tests.raft.helpers import make_cluster


class MarkerTests(unittest.SynchronousTestCase):
    def test_marker_is_committed_on_every_node_at_one_index(self) -> None:
        """Every node applies the marker as a NOOP with its data, at the index the leader
        returned, between the commands proposed before and after it."""
        c = make_cluster()
        c.elect("n1")
        c.propose("n1", [b"before"])
        index = c.propose_marker("n1", b"graft-check:abc")
        c.propose("n1", [b"after"])
        c.stabilize()
        for nid in ("n1", "n2", "n3"):
            applied = [(e.index, e.kind, e.data) for e in c.nodes[nid].applied]
            self.assertEqual(
                applied[-3:],
                [
                    (index - 1, EntryKind.NORMAL, b"before"),
                    (index, EntryKind.NOOP, b"graft-check:abc"),
                    (index + 1, EntryKind.NORMAL, b"after"),
                ],
                nid,
            )

    def test_marker_survives_a_restart(self) -> None:
        """The marker is persisted with its data: a restarted node replays it as it was."""
        c = make_cluster()
        c.elect("n1")
        index = c.propose_marker("n1", b"graft-check:restart")
        c.stabilize()
        c.crash("n2")
        c.start("n2")
        c.stabilize()
        entry = c.node("n2").log.entries(index, index + 1)[0]
        self.assertEqual((entry.kind, entry.data), (EntryKind.NOOP, b"graft-check:restart"))

    def test_only_the_leader_proposes_a_marker(self) -> None:
        c = make_cluster()
        c.elect("n1")
        with self.assertRaises(NotLeader):
            c.node("n2").propose_marker(b"graft-check:x")

    def test_empty_marker_is_refused(self) -> None:
        """An empty NOOP is a term's first entry; a marker must be told apart from it."""
        c = make_cluster()
        c.elect("n1")
        last = c.node("n1").log.last_index()
        with self.assertRaises(ValueError):
            c.node("n1").propose_marker(b"")
        self.assertEqual(c.node("n1").log.last_index(), last)
