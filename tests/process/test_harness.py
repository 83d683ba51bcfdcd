"""The process-test harness itself (graft.testing.cluster, .ports, .load, .process_case): it
cleans up whatever fails, survives a taken port, classifies every write, and shows the nodes'
logs when a test fails."""

from __future__ import annotations

import http.client
import io
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from twisted.trial import reporter
from twisted.trial.unittest import SynchronousTestCase

from graft.testing.cluster import HOST, LocalCluster, Response, parse_metric
from graft.testing.load import WriteLoad
from graft.testing.pipes import LineReader
from graft.testing.ports import HeldPort, dead_url, hold_ports
from graft.testing.process_case import ProcessTestCase


def sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])


class _WontDie:
    """A process whose wait() always times out, as one stuck in the kernel would."""

    def __init__(self, real: subprocess.Popen[bytes]) -> None:
        self.real = real
        self.pid = real.pid

    def poll(self) -> None:
        return None

    def kill(self) -> None:
        pass

    def wait(self, timeout: float | None = None) -> int:
        raise subprocess.TimeoutExpired("stuck", timeout or 0)


class CleanupTests(SynchronousTestCase):
    def test_close_goes_on_past_a_process_that_will_not_die(self) -> None:
        """close() kills and reaps every other process after one wait() times out, releases the
        ports, and then raises naming the stuck one."""
        cluster = LocalCluster(Path(self.mktemp()), ("n1", "n2", "n3"))
        stuck = sleeper()
        self.addCleanup(stuck.wait)
        self.addCleanup(stuck.kill)
        others = [sleeper(), sleeper()]
        cluster.processes = {"n1": _WontDie(stuck), "n2": others[0], "n3": others[1]}  # type: ignore[dict-item]
        port = cluster.ports("n3")[1]
        with self.assertRaises(AssertionError) as caught:
            cluster.close()
        self.assertIn("n1", str(caught.exception))
        self.assertEqual([p.poll() for p in others], [-9, -9])
        with socket.socket() as s:  # released: a plain bind succeeds
            s.bind((HOST, port))

    def test_alive_survives_a_node_started_while_it_polls(self) -> None:
        """alive() is called from load threads while the test thread starts nodes: a process
        added between two poll() calls neither breaks the call nor is counted before it runs
        (CI once failed a membership test with 'dictionary changed size during iteration')."""
        cluster = LocalCluster(Path(self.mktemp()), ("n1", "n2"))
        self.addCleanup(cluster.close)

        class _StartsAnother:
            pid = 0

            def poll(self) -> None:
                cluster.processes.setdefault("n2", self)  # type: ignore[arg-type]
                return None

        cluster.processes = {"n1": _StartsAnother()}  # type: ignore[dict-item]
        self.addCleanup(setattr, cluster, "processes", {})  # nothing real to kill
        self.assertEqual(cluster.alive(), ["n1"])
        self.assertEqual(cluster.alive(), ["n1", "n2"])

    def test_setup_failing_half_way_leaves_no_process(self) -> None:
        """A ProcessTestCase whose setUp starts a cluster and then fails kills its nodes."""
        started: list[subprocess.Popen[bytes]] = []

        class HalfWay(ProcessTestCase):
            dump_to = io.StringIO()

            def setUp(self) -> None:
                cluster = self.make_cluster(("n1",))
                started.extend(cluster.processes.values())
                raise RuntimeError("setUp failed half-way")

            def test_nothing(self) -> None:
                pass

        result = reporter.TestResult()
        HalfWay("test_nothing").run(result)
        self.assertEqual(len(result.errors), 1, result.errors)
        self.assertEqual(len(started), 1)
        self.assertIsNotNone(started[0].poll(), "the node outlived its test")


class LogDumpTests(SynchronousTestCase):
    def test_a_failing_test_shows_the_nodes_logs(self) -> None:
        """A failing process test's failure message and dump stream carry the end of each
        node's real log."""
        stream = io.StringIO()

        class Failing(ProcessTestCase):
            dump_to = stream

            def test_fails(self) -> None:
                cluster = self.make_cluster(("n1",))
                cluster.wait_for_leader(timeout=30)
                self.fail("the assertion that failed")

        result = reporter.TestResult()
        Failing("test_fails").run(result)
        self.assertEqual(len(result.failures), 1, result.errors)
        failure: Any = result.failures[0][1]
        message = failure.getErrorMessage()
        for text in (message, stream.getvalue()):
            self.assertIn("----- n1 log", text)
            self.assertIn("node n1 starting in term 0", text)
        self.assertIn("the assertion that failed", message)


class PortTests(ProcessTestCase):
    def test_a_taken_port_moves_the_node_instead_of_failing_the_election(self) -> None:
        """Someone else listens on n2's API port before the start (it picked the number
        itself): n2 cannot bind, is given new ports, and the cluster starts and elects."""
        cluster = self.make_cluster(start=False)
        taken = cluster.ports("n2")[1]
        squatter = socket.socket()
        self.addCleanup(squatter.close)
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind((HOST, taken))
        squatter.listen()
        cluster.start()
        self.assertNotEqual(cluster.ports("n2")[1], taken)
        self.assertIn("Address already in use", cluster.logs("n2"))
        leader, _ = cluster.wait_for_leader(timeout=30)
        self.assertEqual(cluster.request(leader, "GET", "/health").status, 200)

    def test_held_ports_are_not_handed_out_and_dead_urls_refuse(self) -> None:
        """A held port is never what another bind to port 0 gets; a dead URL refuses at once,
        and no one, not even a SO_REUSEADDR listener, can take its port."""
        held = hold_ports(4)
        for h in held:
            self.addCleanup(h.release)
        taken = {h.port for h in held}
        for _ in range(200):
            with socket.socket() as s:
                s.bind((HOST, 0))
                self.assertNotIn(s.getsockname()[1], taken)
        url = dead_url()
        port = int(url.rsplit(":", 1)[1])
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection((HOST, port), timeout=5).close()
        with socket.socket() as s, self.assertRaises(OSError):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((HOST, port))
        self.assertIn("released", repr(_released(HeldPort())))


def _released(port: HeldPort) -> HeldPort:
    port.release()
    return port


class MetricTests(SynchronousTestCase):
    def test_a_missing_metric_raises_instead_of_reading_zero(self) -> None:
        page = "# TYPE graft_elections counter\ngraft_elections_total 3.0\ngraft_term 2.0\n"
        self.assertEqual(parse_metric(page, "graft_elections"), 3.0)
        self.assertEqual(parse_metric(page, "graft_term"), 2.0)
        with self.assertRaises(KeyError):
            parse_metric(page, "graft_election_timeouts")


class _ScriptedCluster:
    """Answers /command from a script per key: a list of outcomes, one per attempt; an
    exception instance is raised, an int is a status. Unscripted: 200, or 422 for a put
    without a value."""

    def __init__(self, script: dict[str, list[Any]], block: threading.Event | None = None):
        self.script = script
        self.block = block
        self.lock = threading.Lock()

    def alive(self) -> list[str]:
        return ["n1", "n2"]

    def request(self, node: str, method: str, path: str, body: bytes, **kw: Any) -> Response:
        if self.block is not None:
            self.block.wait()
        key = body.split(b'"key": "')[1].split(b'"')[0].decode()
        with self.lock:
            steps = self.script.get(key)
            outcome = steps.pop(0) if steps else 200 if b'"value"' in body else 422
        if isinstance(outcome, BaseException):
            raise outcome
        return Response(outcome, {}, b"{}")


class WriteLoadTests(SynchronousTestCase):
    def test_every_key_lands_in_exactly_one_class(self) -> None:
        """A torn response (IncompleteRead) is retried, not fatal; a refusal after an open
        attempt is unknown, not failed; a refusal with none is failed; the deliberately refused
        keys are failed; every issued key is in one class and no worker errors."""
        script: dict[str, list[Any]] = {
            "w0-0": [http.client.IncompleteRead(b"par"), 200],
            "w0-1": [504, 409],
            "w0-2": [409],
            "w0-3": [ConnectionResetError(), 503, 200],
            "w0-5": [ValueError("not JSON")] * 1000,
        }
        cluster: Any = _ScriptedCluster(script)
        load = WriteLoad(cluster, workers=1, deadline=0.5, refuse_every=5)
        with load:
            load.wait_acked(10, timeout=30)
        self.assertEqual(load.errors, [])
        classes = [set(load.acked), set(load.failed), set(load.unknown)]
        self.assertEqual(set().union(*classes), set(load.issued))
        self.assertEqual(sum(map(len, classes)), len(load.issued))
        self.assertIn("w0-0", load.acked)
        self.assertIn("w0-1", load.unknown)
        self.assertIn("409", load.failed["w0-2"])
        self.assertIn("w0-3", load.acked)
        self.assertIn("ValueError", load.unknown["w0-5"])
        self.assertIn("w0-4", load.refused_on_purpose)
        self.assertIn("422", load.failed["w0-4"])
        self.assertEqual(set(load.unexpected_failures()), {"w0-2"})

    def test_stop_raises_when_a_worker_does_not_end(self) -> None:
        block = threading.Event()
        self.addCleanup(block.set)
        cluster: Any = _ScriptedCluster({}, block)
        load = WriteLoad(cluster, workers=1, deadline=0.1, request_timeout=0.1, join_slack=0.1)
        load.__enter__()
        with self.assertRaises(AssertionError) as caught:
            load.stop()
        self.assertIn("still running", str(caught.exception))


class LineReaderTests(SynchronousTestCase):
    def test_a_silent_child_times_out_instead_of_hanging_the_test(self) -> None:
        """Lines come through; a child that then says nothing is a TimeoutError within the
        limit, with the partial line; end of file gives what is left, then b""."""
        child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys, time; print('one', flush=True); sys.stdout.write('tw');"
                " sys.stdout.flush(); time.sleep(float(sys.stdin.readline()))",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.addCleanup(child.wait)
        self.addCleanup(child.kill)
        assert child.stdout is not None and child.stdin is not None
        reader = LineReader(child.stdout)
        self.assertEqual(reader.readline(60), b"one\n")
        with self.assertRaises(TimeoutError) as caught:
            reader.readline(0.5)
        self.assertIn("b'tw'", str(caught.exception))
        child.stdin.write(b"0\n")
        child.stdin.close()
        self.assertEqual(reader.readline(60), b"tw")
        self.assertEqual(reader.readline(60), b"")
