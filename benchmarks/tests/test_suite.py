"""The benchmark suite's own logic: percentiles, merging, spreading, targets, plots, how
a failed failover trial is recorded, and the wrk driver's unique keys.

.venv/bin/trial benchmarks.tests
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import threading
import time
import xml.dom.minidom
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from benchmarks.suite import report, scenarios
from benchmarks.suite.failover import FailoverTrial
from benchmarks.suite.loadgen import (
    KEY_BYTES,
    LoadResult,
    Target,
    collect,
    run_load,
    spread,
    write_bodies,
)
from benchmarks.suite.svg import line_chart
from benchmarks.suite.system import KEY64_SLOT, KEY_SLOT, ProcessSystem, RequestShape


class _FakeWrk(subprocess.Popen[str]):
    """Stands in for a finished wrk process: communicate() returns its canned output."""

    def __init__(self, out: str, returncode: int = 0) -> None:  # no process is started
        self._out = out
        self.returncode = returncode

    def communicate(self, *args: Any, **kwargs: Any) -> tuple[str, str]:
        return self._out, ""


class LoadResultTests(SynchronousTestCase):
    def test_percentiles_come_from_the_histogram(self) -> None:
        """p50 and p99 are read off the latency histogram by rank, in milliseconds."""
        result = LoadResult(
            requests=100, failures=0, seconds=1.0, histogram={1000: 50, 2000: 49, 9000: 1}
        )
        self.assertEqual(result.percentile_ms(50), 1.0)
        self.assertEqual(result.percentile_ms(99), 2.0)
        self.assertEqual(result.percentile_ms(100), 9.0)

    def test_failures_do_not_count_as_throughput(self) -> None:
        """Throughput counts acknowledged requests only."""
        result = LoadResult(requests=1000, failures=400, seconds=2.0, histogram={1: 1000})
        self.assertEqual(result.ok_per_second, 300.0)

    def test_two_wrk_outputs_merge_exactly(self) -> None:
        """Requests and failures add up, the histograms merge, the longest duration is kept."""
        first = _FakeWrk("@@totals 10 1000000 0 0 0 2 0\n@@hist 100:5 200:5\n")
        second = _FakeWrk("@@totals 30 2000000 1 0 0 0 0\n@@hist 200:10 300:20\n")
        merged = collect([first, second])
        self.assertEqual((merged.requests, merged.failures, merged.seconds), (40, 3, 2.0))
        self.assertEqual(merged.histogram, {100: 5, 200: 15, 300: 20})

    def test_a_failed_wrk_is_an_error(self) -> None:
        """A wrk that exits non-zero or prints no totals stops the suite with its output."""
        with self.assertRaises(Exception) as caught:
            collect([_FakeWrk("unable to connect", returncode=1)])
        self.assertIn("unable to connect", str(caught.exception))


class SpreadTests(SynchronousTestCase):
    def test_connections_are_spread_evenly(self) -> None:
        """16 connections over three nodes are 6, 5 and 5; none is lost or invented."""
        targets = spread(["a", "b", "c"], 16)
        self.assertEqual([t.connections for t in targets], [6, 5, 5])
        self.assertEqual([t.url for t in targets], ["a", "b", "c"])

    def test_fewer_connections_than_nodes(self) -> None:
        """A node that would get no connection gets no wrk process."""
        self.assertEqual([t.url for t in spread(["a", "b", "c"], 2)], ["a", "b"])


class BodiesTests(SynchronousTestCase):
    def test_bodies_are_one_per_line(self) -> None:
        """The driver reads one body per line, so a body with a newline is refused."""
        directory = Path(self.mktemp())
        directory.mkdir()
        path = write_bodies(['{"a":1}', '{"b":2}'], directory)
        self.assertEqual(path.read_text().splitlines(), ['{"a":1}', '{"b":2}'])
        with self.assertRaises(ValueError):
            write_bodies(['{"a":\n1}'], directory)


class TargetTests(SynchronousTestCase):
    def _medians(self, graft_writes: float, klein: float) -> dict[str, dict[str, Any]]:
        return {
            "graft": {"write_c16": {"ok_per_s": graft_writes}},
            "klein": {"ceiling_c16": {"ok_per_s": klein}},
        }

    def _ceiling_target(self, med: dict[str, dict[str, Any]]) -> report.Target:
        return next(t for t in report.targets(med) if t.name == "writes c=16 vs Klein ceiling")

    def test_a_ratio_at_the_bound_is_met(self) -> None:
        """Graft at exactly 0.75x the ceiling meets the 0.75x target."""
        target = self._ceiling_target(self._medians(750, 1000))
        self.assertEqual((target.ratio, target.met), (0.75, True))

    def test_a_ratio_below_the_bound_is_not_met(self) -> None:
        """Graft below 0.75x the ceiling does not meet it."""
        target = self._ceiling_target(self._medians(700, 1000))
        self.assertEqual((target.ratio, target.met), (0.7, False))

    def test_a_missing_figure_is_not_a_verdict(self) -> None:
        """Without the reference figure the target is neither met nor failed."""
        target = self._ceiling_target({"graft": {"write_c16": {"ok_per_s": 700}}})
        self.assertIsNone(target.met)

    def test_failed_failover_trials_count_as_the_give_up_time(self) -> None:
        """A trial in which no write succeeded weighs in the median instead of vanishing."""
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {
            "etcd": {
                "failover": [
                    {"unavailable_ms": 400.0},
                    {"unavailable_ms": None},
                    {"unavailable_ms": None},
                ]
            }
        }
        med = report.medians(runs)
        self.assertEqual(med["etcd"]["failover"]["unavailable_ms"], 15000.0)

    def test_lower_is_better_for_latency(self) -> None:
        """The c=1 latency target is met when Graft's p50 is at most etcd's."""
        med = {"graft": {"write_c1": {"p50_ms": 0.8}}, "etcd": {"write_c1": {"p50_ms": 1.0}}}
        target = next(t for t in report.targets(med) if t.name.startswith("write p50"))
        self.assertTrue(target.met)


class PlotTests(SynchronousTestCase):
    def test_the_chart_is_well_formed_svg_with_one_line_per_series(self) -> None:
        """The SVG parses as XML and draws a polyline for each series."""
        svg = line_chart("t", "x", "y", {"a": [(1, 10), (16, 20)], "b <&>": [(1, 5), (64, 7)]})
        document = xml.dom.minidom.parseString(svg)
        self.assertEqual(len(document.getElementsByTagName("polyline")), 2)


class PairedCeilingTests(SynchronousTestCase):
    def test_the_paired_ceiling_is_preferred(self) -> None:
        """When the Klein load paired with Graft's was measured, the target uses it."""
        med = {
            "graft": {"write_c16": {"ok_per_s": 800.0}},
            "klein": {
                "ceiling_c16": {"ok_per_s": 4000.0},
                "paired_graft_write_c16": {"ok_per_s": 1000.0},
            },
        }
        target = next(t for t in report.targets(med) if t.name == "writes c=16 vs Klein ceiling")
        self.assertEqual((target.reference, target.met), (1000.0, True))


class FailoverScenarioTests(SynchronousTestCase):
    def test_a_cluster_that_does_not_settle_ends_the_trials_not_the_run(self) -> None:
        """When the cluster agrees on no leader after a trial's restart, that trial's figures
        are kept and no further trial is run against the broken cluster; nothing is raised,
        so the other systems' figures still get written."""
        trials = [
            FailoverTrial(killed="p1", unavailable_ms=3598.1, new_leader="p3", load_ok_per_s=10.0),
            FailoverTrial(
                killed="p3",
                unavailable_ms=1195.3,
                new_leader="p1",
                load_ok_per_s=10.0,
                settled=False,
            ),
        ]
        calls: list[object] = []

        def fake_trial(system: object, workdir: Path) -> FailoverTrial:
            calls.append(system)
            return trials[len(calls) - 1]

        self.patch(scenarios, "run_trial", fake_trial)
        self.patch(scenarios, "warm_up", lambda system, workdir: None)
        said: list[str] = []
        recorder = scenarios.Recorder(
            seconds=1, repetitions=3, workdir=Path(self.mktemp()), progress=said.append
        )

        class System:
            name = "pysyncobj"

            def leader(self) -> str:
                return "p1"

            def put_shape(self) -> None:
                return None

        scenarios.run_system(System(), recorder, {"failover"})  # type: ignore[arg-type]
        runs = recorder.runs["pysyncobj"]["failover"]
        self.assertEqual(len(calls), 2)
        self.assertEqual([r["unavailable_ms"] for r in runs], [3598.1, 1195.3])
        self.assertEqual([r["settled"] for r in runs], [True, False])
        self.assertIn("no more failover trials for pysyncobj", said[-1])


class _Sleepers(ProcessSystem):
    """Three processes that print their node name and sleep: a ProcessSystem without a server."""

    name = "sleepers"
    durable = False

    def __init__(self, base: Path) -> None:
        super().__init__(base, ["s1", "s2", "s3"])

    def command(self, node: str) -> list[str]:
        script = f"import sys, time; print({node!r}, flush=True); time.sleep(60)"
        return [sys.executable, "-c", script]

    def base_url(self, node: str) -> str:
        return f"http://127.0.0.1:1/{node}"

    def leader(self, timeout: float = 15) -> str:
        return self._names[0]

    def put_shape(self, unique: bool = True) -> RequestShape:
        return RequestShape(method="POST", path="/", bodies=("",))

    def probe_write(self, node: str, sequence: int, timeout: float) -> bool:
        return False

    def version(self) -> str:
        return "0"


class ProcessSystemTests(SynchronousTestCase):
    def test_kill_restart_and_close_act_on_the_node_processes(self) -> None:
        """A killed node is no longer alive and a restart brings it back with its log appended
        to; close stops every process."""
        base = Path(self.mktemp())
        system = _Sleepers(base)
        self.addCleanup(system.close)
        system.start()
        self.assertEqual(system.alive(), ["s1", "s2", "s3"])
        _wait_for_lines(base / "s2.log", 1)
        first = system.pid("s2")
        system.kill("s2")
        self.assertEqual(system.alive(), ["s1", "s3"])
        system.restart("s2")
        self.assertEqual(sorted(system.alive()), ["s1", "s2", "s3"])
        self.assertNotEqual(system.pid("s2"), first)
        _wait_for_lines(base / "s2.log", 2)
        system.close()
        self.assertEqual(system.alive(), [])
        self.assertEqual((base / "s2.log").read_text().split(), ["s2", "s2"])


def _wait_for_lines(log: Path, count: int) -> None:
    """Until ``log`` holds ``count`` lines (a started process has printed its name)."""
    deadline = time.monotonic() + 30
    while len(log.read_text().split()) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{log} never held {count} lines: {log.read_text()!r}")
        time.sleep(0.02)


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    bodies: list[bytes]
    lock: threading.Lock

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.lock:
            self.bodies.append(body)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # wrk resets its connections when its time is up


class UniqueKeyTests(SynchronousTestCase):
    """The wrk driver itself, against a small HTTP server on 127.0.0.1 that keeps the bodies."""

    def setUp(self) -> None:
        try:
            subprocess.run(["wrk", "-v"], capture_output=True)
        except FileNotFoundError:
            raise SkipTest("wrk is not installed (apt-get install -y wrk)") from None
        bodies: list[bytes] = []
        handler = type("Handler", (_Recorder,), {"bodies": bodies, "lock": threading.Lock()})
        self.server = _QuietServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        self.addCleanup(self.server.server_close)
        self.addCleanup(self.server.shutdown)
        self.received = bodies
        self.directory = Path(self.mktemp())
        self.directory.mkdir()

    def _load(self, lines: list[str]) -> None:
        path = write_bodies(lines, self.directory)
        url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        run_load([Target(url=url, connections=2)], seconds=1, method="POST", bodies_file=path)

    def test_every_key_is_new_across_requests_bodies_and_loads(self) -> None:
        """Each placeholder becomes a 24-byte key no request sent before, in two loads in a
        row; the base64 placeholder carries a key of the same form; keys of one body differ."""
        lines = [
            json.dumps({"key": KEY_SLOT, "value": "a"}),
            json.dumps([{"k": KEY_SLOT}, {"k": KEY_SLOT}]),
            json.dumps({"key": KEY64_SLOT, "value": "b"}),
        ]
        self._load(lines)
        self._load(lines)
        keys: list[str] = []
        for raw in self.received:
            body = json.loads(raw)
            if isinstance(body, list):
                keys += [item["k"] for item in body]
            elif body["value"] == "b":
                keys.append(base64.b64decode(body["key"], validate=True).decode())
            else:
                keys.append(body["key"])
        self.assertGreater(len(self.received), 30)
        self.assertEqual(len(keys), len(set(keys)))
        self.assertTrue(all(len(k) == KEY_BYTES for k in keys), keys[:5])
        self.assertTrue(all(re.fullmatch(r"u[0-9a-f]{10}-\d{12}", k) for k in keys), keys[:5])
        prefixes = {k[:12] for k in keys}
        self.assertEqual(len(prefixes), 2)  # one per wrk process

    def test_a_body_without_placeholders_is_sent_as_it_is(self) -> None:
        self._load(['{"key":"fixed","value":"@KEY"}'])
        self.assertTrue(self.received)
        self.assertEqual(set(self.received), {b'{"key":"fixed","value":"@KEY"}'})
