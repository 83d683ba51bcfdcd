"""The growth scenario's pieces (intervals, bucketing, RSS and disk sampling, per-minute rows,
targets, plot, files) and which runs get which systems.

.venv/bin/trial benchmarks.tests.test_growth
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import xml.dom.minidom
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from benchmarks.suite import growth, report, run
from benchmarks.suite.errors import BenchmarkSetupError
from benchmarks.suite.growth import Sample, Window, bucket, disk_bytes, minute_row, rss_bytes
from benchmarks.suite.loadgen import LoadResult, Target
from benchmarks.suite.system import KEY_SLOT, RequestShape

MB = 1_000_000


def _sample(at: float, rss: int = 0, disk: int = 0) -> Sample:
    return Sample(at=at, rss={"n1": rss, "n2": rss + 1}, disk={"n1": disk, "n2": disk})


class BucketTests(SynchronousTestCase):
    def test_each_sample_counts_for_the_window_it_fell_in(self) -> None:
        """A sample belongs to the last window that started at or before it: one in the gap
        after a load counts for the minute that just ended, one after the last load for the
        last minute, one before the first load for none."""
        windows = [Window(10.0, 70.0), Window(70.5, 130.0), Window(130.2, 190.0)]
        samples = [_sample(t) for t in (5.0, 10.0, 69.9, 70.2, 70.5, 129.0, 130.1, 200.0)]
        buckets = bucket(samples, windows)
        self.assertEqual(
            [[s.at for s in b] for b in buckets],
            [[10.0, 69.9, 70.2], [70.5, 129.0, 130.1], [200.0]],
        )

    def test_samples_out_of_order_are_sorted(self) -> None:
        """Samples from the sampler thread and from the end of each load may arrive out of
        order; each bucket lists its samples in time order."""
        buckets = bucket([_sample(50.0), _sample(20.0), _sample(90.0)], [Window(0, 60)])
        self.assertEqual([s.at for s in buckets[0]], [20.0, 50.0, 90.0])


class RssTests(SynchronousTestCase):
    def test_rss_grows_with_memory_the_process_touches(self) -> None:
        """Touching 64 MB more shows up in the RSS read from /proc."""
        before = rss_bytes(os.getpid())
        assert before is not None
        block = b"x" * (64 << 20)  # filled, so every page is resident
        after = rss_bytes(os.getpid())
        assert after is not None
        self.assertGreater(after - before, 48 << 20)
        self.assertEqual(len(block), 64 << 20)

    def test_a_process_that_is_gone_has_no_rss(self) -> None:
        """A node that died reads as None, not as 0 or an error."""
        proc = subprocess.Popen([sys.executable, "-c", "pass"])
        proc.wait()
        self.assertIsNone(rss_bytes(proc.pid))


class DiskTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.directory.mkdir()

    def test_every_file_below_the_directory_counts(self) -> None:
        """Files in the directory and in its subdirectories add up (within block rounding)."""
        (self.directory / "a").write_bytes(os.urandom(100_000))
        (self.directory / "sub" / "deeper").mkdir(parents=True)
        (self.directory / "sub" / "deeper" / "b").write_bytes(os.urandom(200_000))
        os.sync()
        size = disk_bytes(self.directory)
        self.assertGreaterEqual(size, 300_000)
        self.assertLess(size, 300_000 + 64 * 1024)

    def test_space_is_what_is_allocated_not_the_apparent_size(self) -> None:
        """A sparse (or preallocated-then-punched) file counts for the blocks it holds, as
        `du` reports it, not for its length."""
        with open(self.directory / "sparse", "wb") as f:
            f.truncate(50 * MB)
        self.assertLess(disk_bytes(self.directory), MB)

    def test_a_file_and_a_missing_path(self) -> None:
        """A data path that is one file (PySyncObj's journal) is measured; a path that does
        not exist yet is 0."""
        path = self.directory / "journal"
        path.write_bytes(os.urandom(40_000))
        os.sync()
        self.assertGreaterEqual(disk_bytes(path), 40_000)
        self.assertEqual(disk_bytes(self.directory / "nothing"), 0)


class _Nodes:
    """A system whose two nodes are this test process, with data in two directories."""

    name = "fake"

    def __init__(self, base: Path) -> None:
        self.base = base

    def node_ids(self) -> list[str]:
        return ["n1", "n2"]

    def pid(self, node: str) -> int:
        if node == "n2":
            raise KeyError(node)  # never started
        return os.getpid()

    def data_path(self, node: str) -> Path:
        return self.base / node


class ProbeTests(SynchronousTestCase):
    def test_a_probe_reads_every_node(self) -> None:
        """Each node's RSS (None for one without a process) and its data on disk."""
        base = Path(self.mktemp())
        (base / "n1").mkdir(parents=True)
        (base / "n1" / "log").write_bytes(os.urandom(80_000))
        os.sync()
        sample = growth.probe(_Nodes(base), ["n1", "n2"])  # type: ignore[arg-type]
        self.assertGreater(sample.rss["n1"] or 0, 10 * MB)
        self.assertIsNone(sample.rss["n2"])
        self.assertGreaterEqual(sample.disk["n1"], 80_000)
        self.assertEqual(sample.disk["n2"], 0)

    def test_the_sampler_samples_on_its_own_until_stopped(self) -> None:
        """One sample at start, more from its thread, none after stop; stop returns them in
        time order."""
        taken: list[Sample] = []

        def take() -> Sample:
            sample = _sample(time.monotonic())
            taken.append(sample)
            return sample

        sampler = growth.Sampler(take, every=0.01)
        sampler.start()
        self.assertEqual(len(taken), 1)
        deadline = time.monotonic() + 30
        while len(taken) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        samples = sampler.stop()
        count = len(taken)
        self.assertGreaterEqual(count, 4)
        self.assertEqual(len(samples), count)
        self.assertEqual(samples, sorted(samples, key=lambda s: s.at))
        time.sleep(0.05)
        self.assertEqual(len(taken), count)


def _load(ok_per_s: float, p99: float, requests: int = 600, failures: int = 0) -> dict[str, Any]:
    return {
        "ok_per_s": ok_per_s,
        "p50_ms": p99 / 4,
        "p99_ms": p99,
        "requests": requests,
        "failures": failures,
        "seconds": 60.0,
    }


class MinuteRowTests(SynchronousTestCase):
    def test_a_row_reports_the_end_of_the_minute_and_the_peak(self) -> None:
        """RSS and disk from the minute's last sample, the peak RSS of each node over the
        minute, the data total of all nodes; in MB."""
        samples = [
            _sample(1.0, rss=100 * MB, disk=10 * MB),
            _sample(2.0, rss=300 * MB, disk=20 * MB),
            _sample(3.0, rss=150 * MB, disk=30 * MB),
        ]
        row = minute_row(4, _load(900.0, 20.0), samples, leader="n1")
        self.assertEqual((row["minute"], row["leader"], row["ok_per_s"]), (4, "n1", 900.0))
        self.assertEqual(row["rss_mb"], {"n1": 150.0, "n2": 150.0})
        self.assertEqual(row["rss_max_mb"], {"n1": 300.0, "n2": 300.0})
        self.assertEqual(row["data_mb"], {"n1": 30.0, "n2": 30.0})
        self.assertEqual(row["data_total_mb"], 60.0)

    def test_a_node_that_died_in_the_minute(self) -> None:
        """Its end-of-minute RSS is None, its peak is what was seen while it lived."""
        samples = [
            Sample(at=1.0, rss={"n1": 200 * MB}, disk={"n1": 0}),
            Sample(at=2.0, rss={"n1": None}, disk={"n1": 0}),
        ]
        row = minute_row(1, _load(1.0, 1.0), samples)
        self.assertEqual((row["rss_mb"], row["rss_max_mb"]), ({"n1": None}, {"n1": 200.0}))

    def test_a_minute_without_samples(self) -> None:
        """No sample: the load's figures stand and the memory and disk cells are None."""
        row = minute_row(1, _load(500.0, 9.0), [])
        self.assertEqual(
            (row["ok_per_s"], row["rss_mb"], row["data_total_mb"]), (500.0, None, None)
        )

    def test_the_summary_compares_the_last_minute_with_the_first(self) -> None:
        """Throughput ratio last/first, the last and worst p99, acknowledged writes."""
        rows = [
            minute_row(1, _load(1000.0, 10.0, requests=60_000, failures=0), []),
            minute_row(2, _load(950.0, 40.0, requests=57_000, failures=3), []),
            minute_row(3, _load(800.0, 25.0, requests=48_000, failures=0), []),
        ]
        summary = growth.summarise(rows)
        self.assertEqual(summary["last_over_first"], 0.8)
        self.assertEqual((summary["last_p99_ms"], summary["max_p99_ms"]), (25.0, 40.0))
        self.assertEqual((summary["writes"], summary["failures"]), (164_997, 3))


class _Cluster:
    name = "graft"

    def __init__(self, base: Path) -> None:
        self.base = base

    def leader(self, timeout: float = 15) -> str:
        return "n1"

    def base_url(self, node: str) -> str:
        return "http://127.0.0.1:1"

    def node_ids(self) -> list[str]:
        return ["n1"]

    def put_shape(self, unique: bool = True) -> RequestShape:
        return RequestShape(method="POST", path="/command", bodies=(KEY_SLOT,))


class RunGrowthTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.workdir = Path(self.mktemp())
        self.workdir.mkdir()
        self.lengths: list[float] = []
        self.patch(growth, "warm_up", lambda system, workdir: None)
        self.patch(
            growth, "probe", lambda system, nodes: Sample(at=time.monotonic(), rss={}, disk={})
        )

    def _fake_load(self, fail_at: int | None = None) -> Any:
        def load(
            targets: list[Target], *, seconds: float, method: str, bodies_file: Path
        ) -> LoadResult:
            self.lengths.append(seconds)
            if len(self.lengths) == fail_at:
                raise BenchmarkSetupError("wrk failed (1): unable to connect")
            n = len(self.lengths)
            return LoadResult(
                requests=1000 * n, failures=0, seconds=seconds, histogram={1000 * n: 10}
            )

        return load

    def test_the_run_is_cut_into_intervals_with_a_row_each(self) -> None:
        """150 s in intervals of 60 s: loads of 60, 60 and 30 s, a row for each in order."""
        self.patch(growth, "run_load", self._fake_load())
        result = growth.run_growth(
            _Cluster(self.workdir),  # type: ignore[arg-type]
            self.workdir,
            seconds=150,
            interval=60,
            sample_every=60,
            progress=lambda line: None,
        )
        self.assertEqual(self.lengths, [60, 60, 30])
        self.assertEqual([r["minute"] for r in result["minutes"]], [1, 2, 3])
        self.assertEqual([r["p99_ms"] for r in result["minutes"]], [1.0, 2.0, 3.0])
        self.assertNotIn("error", result)
        self.assertEqual(list(self.workdir.iterdir()), [])  # the bodies file is gone

    def test_a_failed_load_ends_the_run_with_what_it_measured(self) -> None:
        """A load that fails stops the scenario; earlier minutes are kept, the error says
        which minute."""
        self.patch(growth, "run_load", self._fake_load(fail_at=2))
        result = growth.run_growth(
            _Cluster(self.workdir),  # type: ignore[arg-type]
            self.workdir,
            seconds=300,
            interval=60,
            sample_every=60,
            progress=lambda line: None,
        )
        self.assertEqual(len(result["minutes"]), 1)
        self.assertIn("minute 2", result["error"])
        self.assertIn("unable to connect", result["error"])


def _growth(ok: list[float], p99: list[float]) -> dict[str, Any]:
    rows = [
        minute_row(
            i + 1,
            _load(o, p),
            [_sample(float(i), rss=(100 + i) * MB, disk=(i + 1) * 10 * MB)],
        )
        for i, (o, p) in enumerate(zip(ok, p99, strict=True))
    ]
    return {
        "seconds": 60 * len(rows),
        "interval_s": 60,
        "concurrency": 16,
        "load_average_start": [1.0, 1.0],
        "load_average_end": [2.0, 1.5],
        "minutes": rows,
        "summary": growth.summarise(rows),
    }


class GrowthReportTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.growth = {
            "graft": _growth([1000.0, 950.0], [20.0, 30.0]),
            "graft-sqlite": _growth([800.0, 600.0], [10.0, 12.0]),
            "etcd": _growth([2000.0, 2000.0], [15.0, 15.0]),
        }

    def test_the_targets_of_issue_16(self) -> None:
        """Flat throughput: 0.95 is met, 0.75 is not; p99 against etcd's last minute:
        2.0x is not met, 0.8x is."""
        targets = {t.name: t for t in report.growth_targets(self.growth)}
        flat = targets["growth graft: last minute's throughput vs its first"]
        self.assertEqual((flat.ratio, flat.met), (0.95, True))
        flat_sql = targets["growth graft-sqlite: last minute's throughput vs its first"]
        self.assertEqual((flat_sql.ratio, flat_sql.met), (0.75, False))
        tail = targets["growth graft: last minute's p99 vs etcd's"]
        self.assertEqual((tail.ratio, tail.met), (2.0, False))
        tail_sql = targets["growth graft-sqlite: last minute's p99 vs etcd's"]
        self.assertEqual((tail_sql.ratio, tail_sql.met), (0.8, True))

    def test_without_etcd_the_p99_target_has_no_verdict(self) -> None:
        del self.growth["etcd"]
        targets = {t.name: t for t in report.growth_targets(self.growth)}
        self.assertIsNone(targets["growth graft: last minute's p99 vs etcd's"].met)

    def test_the_markdown_has_a_row_per_minute_and_system(self) -> None:
        """The side-by-side table holds each system's figures for each minute, and each
        system's own table its RSS and data per node."""
        text = "\n".join(report.growth_markdown(self.growth))
        self.assertIn("| 2 | 950, 30.00, 40.00 | 600, 12.00, 40.00 | 2,000, 15.00, 40.00 |", text)
        self.assertIn(
            "| 1 | 1,000 | 5.00 | 20.00 | 0 | 100 / 100 | 100 / 100 | 10.00 / 10.00 |", text
        )

    def test_the_plot_has_four_panels_with_a_line_per_system(self) -> None:
        """Throughput, p99, RSS and data: four charts in one well-formed SVG, three lines each,
        and the values plotted are the rows' (a chart's y axis tops at its largest value)."""
        svg = report.growth_svg(self.growth)
        document = xml.dom.minidom.parseString(svg)
        self.assertEqual(len(document.getElementsByTagName("polyline")), 12)
        self.assertEqual(len(document.getElementsByTagName("svg")), 5)
        root = document.documentElement
        assert root is not None
        charts = [n for n in root.childNodes if getattr(n, "tagName", None) == "svg"]
        self.assertEqual(len(charts), 4)

        def labels(chart: Any) -> list[str]:
            return [
                t.firstChild.toxml() for t in chart.getElementsByTagName("text") if t.firstChild
            ]

        self.assertIn("2000", labels(charts[0]))  # throughput: etcd's 2,000 req/s on top
        self.assertIn("Write latency p99 per minute", labels(charts[1]))
        self.assertEqual(labels(charts[1])[1:7], ["0", "10", "20", "30", "40", "50"])  # 30 ms
        self.assertEqual(labels(charts[2])[6], "200")  # RSS up to 101 MB
        self.assertEqual(labels(charts[3])[6], "50")  # data up to 40 MB

    def test_a_growth_only_run_writes_its_own_files(self) -> None:
        """A growth-only run leaves <stem>.json/.md/.svg (the stem ends in -growth), not the
        write plots; its JSON keeps every minute."""
        out = Path(self.mktemp())
        result = {
            "started": "2026-12-06T09:35:00+00:00",
            "machine": {
                "cores": 2,
                "cpu_model": "x",
                "memory_gib": 1,
                "kernel": "k",
                "data_filesystem": "ext4",
                "fsync": {"p50_ms": 1, "p99_ms": 2},
                "load_average_at_start": [1, 1],
                "load_average_at_end": [2, 2],
            },
            "medians": {},
            "versions": {"graft": "0"},
            "growth": self.growth,
        }
        paths = report.write_files(result, out, "2026-12-06-growth")
        self.assertEqual(
            sorted(p.name for p in paths),
            ["2026-12-06-growth.json", "2026-12-06-growth.md", "2026-12-06-growth.svg"],
        )
        saved = json.loads((out / "2026-12-06-growth.json").read_text())
        self.assertEqual(len(saved["growth"]["etcd"]["minutes"]), 2)
        self.assertIn("### graft-sqlite", (out / "2026-12-06-growth.md").read_text())


class PlanTests(SynchronousTestCase):
    def test_the_default_run_has_no_growth(self) -> None:
        """`make bench`: the short scenarios on Graft kv, etcd and PySyncObj, nothing else."""
        plan = run.plan(None, set(run.DEFAULT_SCENARIOS))
        self.assertEqual(list(plan), ["graft", "etcd", "pysyncobj"])
        self.assertTrue(all("growth" not in s for s in plan.values()))

    def test_growth_runs_on_graft_kv_sqlite_and_etcd(self) -> None:
        """`make bench SCENARIOS=growth`: Graft kv, Graft SQLite and etcd."""
        plan = run.plan(None, {"growth"})
        self.assertEqual(
            plan, {"graft": {"growth"}, "graft-sqlite": {"growth"}, "etcd": {"growth"}}
        )

    def test_both_kinds_together(self) -> None:
        plan = run.plan(None, {"writes", "growth"})
        self.assertEqual(plan["graft"], {"writes", "growth"})
        self.assertEqual(plan["graft-sqlite"], {"growth"})
        self.assertEqual(plan["pysyncobj"], {"writes"})

    def test_given_systems_run_every_given_scenario(self) -> None:
        plan = run.plan("etcd,graft-sqlite", {"writes", "growth"})
        self.assertEqual(list(plan), ["graft-sqlite", "etcd"])
        self.assertEqual(plan["etcd"], {"writes", "growth"})

    def test_the_default_scenarios_are_what_make_bench_runs(self) -> None:
        self.assertEqual(run.parse_args([]).scenarios, ",".join(run.DEFAULT_SCENARIOS))
        self.assertNotIn("growth", run.DEFAULT_SCENARIOS)
