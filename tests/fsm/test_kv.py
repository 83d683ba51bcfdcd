"""graft.fsm.kv: the JSON contract of DESIGN.md section 6, strict validation, snapshots."""

from __future__ import annotations

import io
import json
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from graft.fsm import CommandRejected, CorruptSnapshot, QueryRejected
from graft.fsm.kv import KeyValueStateMachine


def cmd(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def image(fsm: KeyValueStateMachine) -> bytes:
    sink = io.BytesIO()
    fsm.snapshot(sink)
    return sink.getvalue()


class ContractTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.fsm = KeyValueStateMachine()

    def apply(self, **fields: Any) -> Any:
        return json.loads(self.fsm.apply(cmd(**fields), 1))

    def get(self, key: str) -> Any:
        return json.loads(self.fsm.query(cmd(op="get", key=key)))

    def test_put_get_delete(self) -> None:
        """put answers the previous value, get reads it, delete removes it and answers it."""
        self.assertEqual(self.get("a"), {"value": None})
        self.assertEqual(self.apply(op="put", key="a", value="1"), {"prev": None})
        self.assertEqual(self.apply(op="put", key="a", value="2"), {"prev": "1"})
        self.assertEqual(self.get("a"), {"value": "2"})
        self.assertEqual(self.apply(op="delete", key="a"), {"prev": "2"})
        self.assertEqual(self.apply(op="delete", key="a"), {"prev": None})
        self.assertEqual(self.get("a"), {"value": None})

    def test_cas(self) -> None:
        """cas stores only when the current value equals expect (null: absent) and answers the
        value after the command."""
        self.assertEqual(
            self.apply(op="cas", key="k", expect="x", value="1"), {"ok": False, "value": None}
        )
        self.assertEqual(
            self.apply(op="cas", key="k", expect=None, value="1"), {"ok": True, "value": "1"}
        )
        self.assertEqual(
            self.apply(op="cas", key="k", expect=None, value="2"), {"ok": False, "value": "1"}
        )
        self.assertEqual(
            self.apply(op="cas", key="k", expect="1", value="2"), {"ok": True, "value": "2"}
        )
        self.assertEqual(self.get("k"), {"value": "2"})

    def test_exact_bytes(self) -> None:
        """Answers are compact JSON, so clients and benchmarks can compare bytes."""
        self.assertEqual(self.fsm.apply(cmd(op="put", key="a", value="b"), 1), b'{"prev":null}')
        self.assertEqual(self.fsm.query(cmd(op="get", key="a")), b'{"value":"b"}')
        self.assertEqual(self.fsm.content_type, "application/json")

    def test_unicode(self) -> None:
        """Keys and values may be any Unicode text."""
        self.apply(op="put", key="cl\u00e9", value="\u2603")
        self.assertEqual(self.get("cl\u00e9"), {"value": "\u2603"})


class ValidationTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.fsm = KeyValueStateMachine()
        self.fsm.apply(cmd(op="put", key="a", value="1"), 1)

    def test_bad_commands_rejected_and_change_nothing(self) -> None:
        """Malformed JSON, wrong op, missing/extra fields, non-string values, duplicate fields
        are each refused with a message naming the problem; the state is unchanged."""
        cases = [
            (b"{not json", "not valid JSON"),
            (b"\xff", "not UTF-8"),
            (b"[1, 2]", "is a JSON list; expected an object"),
            (cmd(key="a", value="b"), "\"op\" is null; expected 'put' or 'cas' or 'delete'"),
            (cmd(op="get", key="a"), '"op" is "get"'),
            (cmd(op=["put"], key="a"), '"op" is ["put"]'),
            (cmd(op="put", key="a"), "put: missing field(s) value"),
            (cmd(op="cas", key="a", value="b"), "cas: missing field(s) expect"),
            (cmd(op="put", key="a", value="b", ttl=3), "put: unknown field(s) ttl"),
            (cmd(op="put", key=1, value="b"), "put: key is 1; expected a string"),
            (cmd(op="put", key="a", value=None), "put: value is null; expected a string"),
            (cmd(op="put", key="a", value={"x": 1}), "put: value is {"),
            (cmd(op="cas", key="a", expect=1, value="b"), "expected a string or null"),
            (cmd(op="delete", key=None), "delete: key is null"),
            (b'{"op": "put", "key": "a", "value": "b", "value": "c"}', "'value' appears twice"),
            (b'{"op": "put", "key": "a", "value": NaN}', "NaN is not valid JSON"),
        ]
        before = image(self.fsm)
        for command, message in cases:
            with self.subTest(command=command):
                error = self.assertRaises(CommandRejected, self.fsm.apply, command, 2)
                self.assertIn(message, str(error))
                self.assertEqual(image(self.fsm), before)

    def test_bad_queries_rejected(self) -> None:
        """Queries are validated the same way and raise QueryRejected."""
        for query, message in [
            (b"", "not valid JSON"),
            (cmd(op="put", key="a", value="b"), '"op" is "put"; expected \'get\''),
            (cmd(op="get"), "get: missing field(s) key"),
            (cmd(op="get", key="a", extra=1), "get: unknown field(s) extra"),
            (cmd(op="get", key=5), "get: key is 5"),
        ]:
            with self.subTest(query=query):
                error = self.assertRaises(QueryRejected, self.fsm.query, query)
                self.assertIn(message, str(error))


class SnapshotTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        """restore(snapshot()) reproduces the map; a restored FSM snapshots to the same bytes."""
        source = KeyValueStateMachine()
        for i in range(20):
            source.apply(cmd(op="put", key=f"k{i}", value=str(i * i)), i + 1)
        target = KeyValueStateMachine()
        target.apply(cmd(op="put", key="stale", value="x"), 1)
        target.restore(io.BytesIO(image(source)))
        self.assertEqual(image(target), image(source))
        self.assertEqual(target.query(cmd(op="get", key="k7")), b'{"value":"49"}')
        self.assertEqual(target.query(cmd(op="get", key="stale")), b'{"value":null}')

    def test_determinism(self) -> None:
        """Two instances fed the same commands give the same answers and snapshot bytes, even
        when keys arrive in a different order of insertion history."""
        commands = [
            cmd(op="put", key="b", value="1"),
            cmd(op="put", key="a", value="2"),
            cmd(op="cas", key="a", expect="2", value="3"),
            cmd(op="delete", key="b"),
            cmd(op="put", key="b", value="4"),
        ]
        first, second = KeyValueStateMachine(), KeyValueStateMachine()
        answers = [[fsm.apply(c, i) for i, c in enumerate(commands, 1)] for fsm in (first, second)]
        self.assertEqual(answers[0], answers[1])
        self.assertEqual(image(first), image(second))
        other = KeyValueStateMachine()
        other.apply(cmd(op="put", key="a", value="3"), 1)
        other.apply(cmd(op="put", key="b", value="4"), 2)
        self.assertEqual(image(other), image(first))

    def test_corrupt_snapshot(self) -> None:
        """Bytes that are not a kv snapshot raise CorruptSnapshot and keep the old state."""
        fsm = KeyValueStateMachine()
        fsm.apply(cmd(op="put", key="a", value="1"), 1)
        for data in [
            b"nope",
            b"[]",
            b'{"format": "other", "data": {}}',
            b'{"format": "graft.kv/1", "data": {"a": 1}}',
        ]:
            with self.subTest(data=data):
                self.assertRaises(CorruptSnapshot, fsm.restore, io.BytesIO(data))
        self.assertEqual(fsm.query(cmd(op="get", key="a")), b'{"value":"1"}')
