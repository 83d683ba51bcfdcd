"""benchmarks.library_bench's own logic: a phase's summary, the median table over rounds, the
one-measurer claim, and the PySyncObj cluster's command lines.

.venv/bin/trial benchmarks.tests.test_library_bench
"""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from benchmarks.library_bench import claim, median_table, pysyncobj_cluster, summary


class LibraryBenchTests(SynchronousTestCase):
    def test_summary_counts_calls_per_second_and_percentiles(self) -> None:
        latencies = [i / 1000 for i in range(1, 101)]  # 1..100 ms
        s = summary("sequential", latencies, errors=2, seconds=4.0)
        self.assertEqual((s["calls"], s["errors"], s["calls_per_s"]), (100, 2, 25.0))
        self.assertEqual((s["p50_ms"], s["p99_ms"]), (51.0, 100.0))
        self.assertIsNone(summary("sequential", [], 0, 1.0)["p50_ms"])

    def test_median_over_rounds_per_system_and_mode(self) -> None:
        def run(system: str, *rates: float) -> dict[str, object]:
            return {"system": system, "phases": [{"mode": "seq", "calls_per_s": r} for r in rates]}

        table = median_table([run("graft", 100.0), run("graft", 300.0), run("p", 7.0)])
        self.assertEqual(table, {"graft": {"seq": 200.0}, "p": {"seq": 7.0}})
        self.assertEqual(median_table([{"system": "x", "error": "no leader"}]), {})

    def test_only_the_first_claim_measures(self) -> None:
        path = Path(self.mktemp())
        self.assertTrue(claim(path))
        self.assertFalse(claim(path))

    def test_each_pysyncobj_node_lists_itself_first_and_the_others_as_partners(self) -> None:
        nodes = pysyncobj_cluster(Path("/tmp/x"))
        selves = [args[args.index("--raft") + 1] for args in nodes]
        self.assertEqual(len(set(selves)), 3)
        for me, args in zip(selves, nodes, strict=True):
            partners = args[args.index("--raft") + 2 :]
            self.assertEqual(sorted(partners), sorted(set(selves) - {me}))
