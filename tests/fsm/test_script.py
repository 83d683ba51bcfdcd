"""graft.fsm.script: the seed's init/eval files, and the example in conf/."""

from __future__ import annotations

import io
import json
import sys
import textwrap
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from graft.config import ConfigError
from graft.fsm import CommandRejected, CorruptSnapshot, QueryRejected
from graft.fsm.script import ScriptStateMachine

CONF = Path(__file__).resolve().parents[2] / "conf"


def example() -> ScriptStateMachine:
    return ScriptStateMachine(init="fsm_init.py", eval="fsm_eval.py", base_dir=CONF)


def image(fsm: ScriptStateMachine) -> bytes:
    sink = io.BytesIO()
    fsm.snapshot(sink)
    return sink.getvalue()


class ExampleTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.fsm = example()
        self.addCleanup(self.fsm.close)

    def test_commands_and_queries(self) -> None:
        """conf/fsm_eval.py counts and collects, and answers JSON."""
        self.assertEqual(self.fsm.content_type, "application/json")
        self.assertEqual(self.fsm.apply(b"add 5", 1), b'{"counter":5}')
        self.assertEqual(self.fsm.apply(b"add -2", 2), b'{"counter":3}')
        self.assertEqual(self.fsm.apply(b"push hello world", 3), b'{"length":1}')
        self.assertEqual(self.fsm.query(b"counter"), b'{"counter":3}')
        self.assertEqual(self.fsm.query(b"items"), b'{"items":["hello world"]}')

    def test_rejection_leaves_state_unchanged(self) -> None:
        """A refused command raises CommandRejected and the state stays as it was."""
        self.fsm.apply(b"add 1", 1)
        before = image(self.fsm)
        for command in (b"add x", b"push", b"drop table"):
            with self.subTest(command=command):
                self.assertRaises(CommandRejected, self.fsm.apply, command, 2)
                self.assertEqual(image(self.fsm), before)
        self.assertRaises(QueryRejected, self.fsm.query, b"everything")

    def test_snapshot_round_trip_and_determinism(self) -> None:
        """Same commands give the same answers and bytes; restore reproduces the state."""
        other = example()
        self.addCleanup(other.close)
        commands = [b"add 2", b"push a", b"add 40", b"push b"]
        answers = [[f.apply(c, i) for i, c in enumerate(commands, 1)] for f in (self.fsm, other)]
        self.assertEqual(answers[0], answers[1])
        self.assertEqual(image(self.fsm), image(other))
        restored = example()
        self.addCleanup(restored.close)
        restored.restore(io.BytesIO(image(self.fsm)))
        self.assertEqual(restored.query(b"items"), b'{"items":["a","b"]}')
        self.assertEqual(restored.apply(b"add 1", 5), self.fsm.apply(b"add 1", 5))

    def test_instances_do_not_share_module_state(self) -> None:
        """Each instance loads its own copy of the scripts."""
        other = example()
        self.addCleanup(other.close)
        self.fsm.apply(b"add 1", 1)
        self.assertEqual(other.query(b"counter"), b'{"counter":0}')

    def test_corrupt_snapshot(self) -> None:
        """Bytes that are not a script snapshot raise CorruptSnapshot."""
        self.assertRaises(CorruptSnapshot, self.fsm.restore, io.BytesIO(b"{}"))
        self.assertRaises(CorruptSnapshot, self.fsm.restore, io.BytesIO(b"\x00"))


class LoadingTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.dir.mkdir()
        (self.dir / "init.py").write_text("def init():\n    return []\n")

    def write(self, name: str, text: str) -> None:
        (self.dir / name).write_text(textwrap.dedent(text))

    def load(self) -> ScriptStateMachine:
        fsm = ScriptStateMachine(init="init.py", eval="eval.py", base_dir=self.dir)
        self.addCleanup(fsm.close)
        return fsm

    def test_missing_file(self) -> None:
        """A missing script file is a ConfigError naming fsm.eval and the path."""
        error = self.assertRaises(ConfigError, self.load)
        self.assertIn("fsm.eval: file ", str(error))
        self.assertIn("eval.py not found", str(error))

    def test_syntax_error(self) -> None:
        """A script that does not compile is a ConfigError naming the file and the error."""
        self.write("eval.py", "def apply(:\n")
        error = self.assertRaises(ConfigError, self.load)
        self.assertIn("failed to load (SyntaxError", str(error))

    def test_missing_apply(self) -> None:
        """An eval file without apply() is refused with the expected signature."""
        self.write("eval.py", "X = 1\n")
        error = self.assertRaises(ConfigError, self.load)
        self.assertIn("defines no apply(); expected apply(state, command: bytes)", str(error))

    def test_state_not_json(self) -> None:
        """init() must return JSON data (snapshots store it as JSON)."""
        self.write("init.py", "def init():\n    return {1, 2}\n")
        self.write("eval.py", "def apply(state, command):\n    return state, b''\n")
        error = self.assertRaises(ConfigError, self.load)
        self.assertIn("fsm.init: init() in ", str(error))
        self.assertIn("is not JSON data", str(error))

    def test_no_query_function(self) -> None:
        """Without query() every query is refused; str answers are sent as UTF-8."""
        self.write(
            "eval.py",
            """\
            def apply(state, command):
                return state + [command.decode()], "ok \\u2713"
            """,
        )
        fsm = self.load()
        self.assertEqual(fsm.apply(b"x", 1), "ok \u2713".encode())
        self.assertEqual(fsm.content_type, "application/octet-stream")
        self.assertRaises(QueryRejected, fsm.query, b"anything")
        self.assertEqual(json.loads(image(fsm))["state"], ["x"])

    def test_bad_apply_result_is_a_bug(self) -> None:
        """apply() returning something else than (state, bytes) raises TypeError, which is not
        a rejection: the node must stop rather than diverge."""
        self.write("eval.py", "def apply(state, command):\n    return b'no state'\n")
        fsm = self.load()
        error = self.assertRaises(TypeError, fsm.apply, b"x", 1)
        self.assertIn("expected a tuple (new_state, result)", str(error))


class ExampleTotalityTests(SynchronousTestCase):
    """conf/fsm_eval.py checks its input explicitly, so no command stops a node and the
    outcome does not depend on the node's settings (issue #14)."""

    def setUp(self) -> None:
        self.fsm = example()
        self.addCleanup(self.fsm.close)

    def assertRejected(self, command: bytes, message: str) -> None:
        before = image(self.fsm)
        error = self.assertRaises(CommandRejected, self.fsm.apply, command, 2)
        self.assertIn(message, str(error))
        self.assertEqual(image(self.fsm), before)

    def test_amount_digits_do_not_depend_on_the_node(self) -> None:
        """int() refuses over 4300 digits only under the default int_max_str_digits, which a
        node may change (PYTHONINTMAXSTRDIGITS): amounts are checked as at most 18 digits."""
        previous = sys.get_int_max_str_digits()
        self.addCleanup(sys.set_int_max_str_digits, previous)
        for limit in (640, 0):  # a node with a lower limit, one without
            sys.set_int_max_str_digits(limit)
            self.assertRejected(b"add 1" + b"0" * 1000, "not an integer of at most 18 digits")
        self.assertRejected(b"add 1_000", "not an integer")
        self.assertEqual(
            self.fsm.apply(b"add -999999999999999999", 3), b'{"counter":-999999999999999999}'
        )

    def test_counter_stays_in_64_bits(self) -> None:
        """Adding large amounts used to grow the counter until json.dumps raised ValueError
        (over 4300 digits) and stopped the node; it now stops at the 64-bit range."""
        for index in range(1, 10):
            self.fsm.apply(b"add 999999999999999999", index)
        self.assertRejected(b"add 999999999999999999", "64-bit range")

    def test_sizes_are_bounded(self) -> None:
        """Commands, items and the list have a size limit."""
        self.assertRejected(b"push " + b"x" * 5000, "expected at most 4096")
        self.assertRejected(b"push " + b"x" * 2000, "expected at most 1024")
        for index in range(10_000):
            self.fsm.apply(b"push x", index)
        self.assertRejected(b"push y", "the list is full")

    def test_any_bytes_are_total(self) -> None:
        """Undecodable bytes, surrogate-looking text and controls never raise anything but
        CommandRejected."""
        for command in [b"\xff\xfe", b"add \xed\xa0\x80", b"push \xed\xa0\x80", b"\x00", b""]:
            with self.subTest(command=command):
                try:
                    answer = self.fsm.apply(command, 2)
                except CommandRejected:
                    continue
                answer.decode("utf-8")
