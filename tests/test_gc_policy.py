"""The node process's garbage-collector policy."""

from __future__ import annotations

import gc

from twisted.trial.unittest import SynchronousTestCase

from graft.gc_policy import MIDDLE_THRESHOLD, YOUNG_THRESHOLD, apply_node_policy


class NodePolicyTests(SynchronousTestCase):
    def setUp(self) -> None:
        threshold = gc.get_threshold()
        self.addCleanup(gc.set_threshold, *threshold)
        self.addCleanup(gc.unfreeze)

    def test_loaded_state_leaves_the_collectors_view(self) -> None:
        """Objects alive when the policy is applied (the replayed log) are frozen, so later
        collections do not scan them; young collections run less often and the middle generation
        more often, so that its scans stay short."""
        gc.unfreeze()
        loaded = [index] = [[1]]  # lists are tracked by the collector
        apply_node_policy()
        for generation in (0, 1, 2):
            scanned = gc.get_objects(generation=generation)
            self.assertFalse(any(o is index for o in scanned), f"still in generation {generation}")
        self.assertGreater(gc.get_freeze_count(), len(loaded))
        self.assertEqual(gc.get_threshold()[:2], (YOUNG_THRESHOLD, MIDDLE_THRESHOLD))
