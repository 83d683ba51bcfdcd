"""graft.fsm.kv: the JSON contract of DESIGN.md section 6, strict validation, snapshots."""

from __future__ import annotations

import io
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from graft.fsm import CommandRejected, CorruptSnapshot, QueryRejected
from graft.fsm.kv import _COMMANDS, KeyValueStateMachine, _command, _Malformed, _parse
from graft.fsm.kv_map import ShardedMap


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


def utf8_size(fsm: KeyValueStateMachine) -> int:
    """The size the FSM reports, counted the slow way: every key and value in its snapshot."""
    sink = io.BytesIO()
    fsm.snapshot(sink)
    copy = KeyValueStateMachine()
    copy.restore(io.BytesIO(sink.getvalue()))
    return sum(len(k.encode()) + len(v.encode()) for k, v in copy._data.pairs())


class SizeTests(SynchronousTestCase):
    @settings(max_examples=60, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.sampled_from(["put", "delete", "cas", "snapshot"]),
                st.sampled_from(["a", "b", "é", "ключ"]),
                st.sampled_from(["1", "22", "ü", "∑∑"]),
            ),
            max_size=40,
        )
    )
    def test_size_follows_every_change(self, steps: list[tuple[str, str, str]]) -> None:
        """size_bytes (kept as commands apply, not counted at each call) equals the UTF-8
        length of every key and value, across puts, deletes, cas and a snapshot's overlay;
        and after a restore."""
        fsm = KeyValueStateMachine(fork_min_keys=-1)
        writers = []
        for index, (op, key, value) in enumerate(steps, 1):
            if op == "snapshot":  # a thread writer pins the map; changes go to the overlay
                writers.append(fsm.begin_snapshot())
            elif op == "cas":
                fsm.apply(cmd(op="cas", key=key, expect=value, value=value + "x"), index)
            elif op == "delete":
                fsm.apply(cmd(op="delete", key=key), index)
            else:
                fsm.apply(cmd(op="put", key=key, value=value), index)
            self.assertEqual(fsm.size_bytes(), utf8_size(fsm))
        for write in writers:
            write(io.BytesIO())
        restored = KeyValueStateMachine()
        restored.apply(cmd(op="put", key="stale", value="x"), 1)
        restored.restore(io.BytesIO(image(fsm)))
        self.assertEqual(restored.size_bytes(), fsm.size_bytes())
        fsm.close()
        self.assertEqual(fsm.size_bytes(), 0)

    def test_new_keys_ascii_or_not_answer_and_count_alike(self) -> None:
        """A put of a new ASCII key (inlined on the hot path) answers and counts as any other
        put: prev null, the key's and value's UTF-8 bytes added; an overwrite swaps values."""
        fsm = KeyValueStateMachine()
        steps = [
            ("key", "value", b'{"prev":null}', 8),
            ("ключ", "v", b'{"prev":null}', 8 + 9),
            ("k", "é", b'{"prev":null}', 17 + 3),
            ("key", "x", b'{"prev":"value"}', 20 - 4),
            ("ключ", "∑", b'{"prev":"v"}', 16 + 2),
        ]
        for index, (key, value, answer, size) in enumerate(steps, 1):
            with self.subTest(key=key, value=value):
                self.assertEqual(fsm.apply(cmd(op="put", key=key, value=value), index), answer)
                self.assertEqual(fsm.size_bytes(), size)
                self.assertEqual(size, utf8_size(fsm))

    def test_size_is_not_counted_at_each_call(self) -> None:
        """GET /status and /metrics read the size every second: it must not walk the map
        (at a million keys a walk held the reactor long enough to lose elections)."""
        fsm = KeyValueStateMachine()
        fsm.apply(cmd(op="put", key="a", value="1"), 1)

        def walked(*args: Any) -> Any:
            raise AssertionError("size_bytes walked the map")

        self.patch(ShardedMap, "pairs", walked)
        self.patch(ShardedMap, "__iter__", walked)
        self.patch(ShardedMap, "items", walked)
        self.assertEqual(fsm.size_bytes(), 2)


def decoded(data: bytes) -> tuple[str, str, str | None, str | None] | str:
    """What the JSON decoder's path makes of a command: its fields, or the refusal message."""
    try:
        op, request = _parse(data, _COMMANDS, "command")
    except _Malformed as e:
        return str(e)
    return op, request["key"], request.get("expect"), request.get("value")


def fast(data: bytes) -> tuple[str, str, str | None, str | None] | str:
    try:
        return _command(data)
    except CommandRejected as e:
        return str(e)


_TEXT = st.text(
    st.one_of(st.sampled_from('"\\/\x00\x1f\x7f \t\n\u00e9\u2603\U0001f600'), st.characters()),
    max_size=6,
)
_SPACE = st.sampled_from(["", " ", "\t", "\r\n ", "\x0b", "\u00a0"])
_FIELDS = st.one_of(
    st.builds(lambda k, v: [("op", "put"), ("key", k), ("value", v)], _TEXT, _TEXT),
    st.builds(lambda k: [("op", "delete"), ("key", k)], _TEXT),
    st.builds(
        lambda k, e, v: [("op", "cas"), ("key", k), ("expect", e), ("value", v)],
        _TEXT,
        st.one_of(st.none(), _TEXT),
        _TEXT,
    ),
)


@st.composite
def _commands(draw: st.DrawFn) -> bytes:
    """Commands as clients might write them: any whitespace, escapes or not, fields reordered,
    duplicated, dropped or of the wrong type now and then."""
    fields: list[tuple[str, Any]] = draw(_FIELDS)
    mutation = draw(st.sampled_from(["none"] * 6 + ["swap", "twice", "drop", "extra", "type"]))
    if mutation == "swap" and len(fields) > 2:
        fields[1], fields[2] = fields[2], fields[1]
    elif mutation == "twice":
        fields.append(draw(st.sampled_from(fields)))
    elif mutation == "drop":
        fields.pop(draw(st.integers(0, len(fields) - 1)))
    elif mutation == "extra":
        fields.append(("ttl", "3"))
    elif mutation == "type":
        fields[-1] = (fields[-1][0], draw(st.sampled_from([1, None, ["x"], True])))
    ascii_only = draw(st.booleans())
    around = [draw(_SPACE) for _ in range(4)]
    members = [
        f"{json.dumps(name, ensure_ascii=ascii_only)}{around[0]}:{around[1]}"
        f"{json.dumps(value, ensure_ascii=ascii_only)}"
        for name, value in fields
    ]
    text = around[2] + "{" + f"{around[3]},{around[1]}".join(members) + "}" + around[0]
    return text.encode("utf-8", errors="surrogatepass")


class FastPathTests(SynchronousTestCase):
    """Commands matched by the kv FSM's regexes must mean exactly what the decoder says."""

    @settings(max_examples=2000, deadline=None)
    @given(_commands())
    def test_same_as_decoder(self, data: bytes) -> None:
        """For any command, the fast path gives the decoder's fields or the decoder's error."""
        self.assertEqual(fast(data), decoded(data))

    def test_edge_cases(self) -> None:
        """Escapes, control characters, lone surrogates, bad UTF-8, NaN and trailing bytes
        are taken the decoder's way (accepted with their decoded value, or refused alike)."""
        cases = [
            b'{"op":"put","key":"a","value":"b"}',
            b' {"op" : "put" , "key":"a","value":"b"}\n',
            b'{"op":"put","key":"a\\"b","value":"c"}',
            b'{"op":"put","key":"\\u00e9","value":"\\ud83d\\ude00"}',
            b'{"op":"put","key":"\\ud800","value":"x"}',
            b'{"op":"put","key":"a\tb","value":"c"}',
            b'{"op":"put","key":"a","value":"b\x7f"}',
            b'{"op":"put","key":"\xc3\xa9","value":"b"}',
            b'{"op":"put","key":"\xff","value":"b"}',
            b'{"op":"put","key":"a","value":"b"}x',
            b'{"op":"put","key":"a","value":"b"}{}',
            b'{"op":"put","key":"a","value":"b","key":"c"}',
            b'{"op":"put","key":"a","value":"b","value":"b"}',
            b'{"op":"put","value":"b","key":"a"}',
            b'{"op":"cas","key":"a","expect":null,"value":"b"}',
            b'{"op":"cas","key":"a","expect":"null","value":"b"}',
            b'{"op":"cas","key":"a","expect":NaN,"value":"b"}',
            b'{"op":"delete","key":"a"}',
            b'{"op":"delete","key":"a","value":"b"}',
            b'{"op":"Put","key":"a","value":"b"}',
            b'{"op":"put","key":"a","value":"b"\x0b}',
        ]
        for data in cases:
            with self.subTest(data=data):
                self.assertEqual(fast(data), decoded(data))


class PlainPutTests(SynchronousTestCase):
    """The plain put's regex (compact or json.dumps's separators, strings up to the next
    quote) is used only when the command holds no escape and no control character."""

    def test_plain_forms_give_the_decoders_fields(self) -> None:
        for data in (
            b'{"op":"put","key":"k1","value":"v \xc3\xa9 \xe2\x98\x83"}',
            b'{"op": "put", "key": "k1", "value": ""}',
            b'{"op":"put","key":"","value":"[{]}"}',
        ):
            with self.subTest(data=data):
                self.assertEqual(fast(data), decoded(data))
                self.assertEqual(fast(data)[0], "put")

    def test_escapes_and_control_characters_take_the_decoders_way(self) -> None:
        """Each of these matches the plain regex; read as plain text, each would store what
        the decoder does not (a doubled backslash, a raw control character)."""
        for separator in (b"", b" "):
            for value, meant in (
                (b"a\\\\b", "a\\b"),
                (b"\\u0041", "A"),
                (b"a\\/b", "a/b"),
                (b"tab\tkept", None),
                (b"nul\x00", None),
                (b"\x1f", None),
            ):
                data = b'{"op":%b"put",%b"key":%b"k",%b"value":%b"%b"}' % (
                    separator,
                    separator,
                    separator,
                    separator,
                    separator,
                    value,
                )
                with self.subTest(data=data):
                    self.assertEqual(fast(data), decoded(data))
                    if meant is None:
                        self.assertIsInstance(fast(data), str)  # refused
                    else:
                        self.assertEqual(fast(data), ("put", "k", None, meant))

    def test_state_after_plain_and_escaped_puts(self) -> None:
        fsm = KeyValueStateMachine()
        fsm.apply(b'{"op":"put","key":"a","value":"x\\\\y"}', 1)
        fsm.apply(b'{"op": "put", "key": "b", "value": "plain"}', 2)
        with self.assertRaises(CommandRejected):
            fsm.apply(b'{"op":"put","key":"c","value":"bad\x01"}', 3)
        self.assertEqual(json.loads(fsm.query(cmd(op="get", key="a"))), {"value": "x\\y"})
        self.assertEqual(json.loads(fsm.query(cmd(op="get", key="b"))), {"value": "plain"})
        self.assertEqual(json.loads(fsm.query(cmd(op="get", key="c"))), {"value": None})
        self.assertEqual(fsm.size_bytes(), len("ax\\y") + len("bplain"))


class TotalityTests(SynchronousTestCase):
    """Inputs that used to stop every replica (issue #14) are refused deterministically, with
    the state unchanged."""

    def setUp(self) -> None:
        self.fsm = KeyValueStateMachine()
        self.fsm.apply(cmd(op="put", key="a", value="1"), 1)

    def test_lone_surrogate_refused(self) -> None:
        """A lone surrogate escape in a key, value or expect is refused: stored, it made the
        next command on that key raise UnicodeEncodeError on every replica."""
        before = image(self.fsm)
        for command in [
            b'{"op":"put","key":"a","value":"\\ud800"}',
            b'{"op":"put","key":"\\udfff","value":"x"}',
            b'{"op":"cas","key":"a","expect":"\\ud800","value":"x"}',
            b'{"op":"delete","key":"x\\udc00y"}',
            b'{"op":"put","key":"a","value":"x","\\ud800":"y"}',
        ]:
            with self.subTest(command=command):
                error = self.assertRaises(CommandRejected, self.fsm.apply, command, 2)
                self.assertIn("lone UTF-16 surrogate", str(error))
                str(error).encode("utf-8")  # the message itself can be sent
                self.assertEqual(image(self.fsm), before)
        # The next command on the key works on every replica.
        self.assertEqual(self.fsm.apply(cmd(op="put", key="a", value="x"), 3), b'{"prev":"1"}')
        error = self.assertRaises(QueryRejected, self.fsm.query, b'{"op":"get","key":"\\ud800"}')
        self.assertIn("lone UTF-16 surrogate", str(error))

    def test_huge_integer_refused_before_int_sees_it(self) -> None:
        """A JSON integer of thousands of digits anywhere in a request is refused by its length
        (found by the hostile fuzz): int() raised ValueError past its digit limit, an
        interpreter setting, and that stopped every replica."""
        before = image(self.fsm)
        for digits in ("9" * 21, "1" * 5000, "-" + "7" * 4400):
            for command in (
                f'{{"op":"put","key":"a","value":{digits}}}'.encode(),
                f'{{"op":"put","key":"a","value":"x","n":[{digits}]}}'.encode(),
                f"[{digits}]".encode(),
            ):
                with self.subTest(command=command[:40]):
                    error = self.assertRaises(CommandRejected, self.fsm.apply, command, 2)
                    self.assertIn("a number of", str(error))
                    self.assertEqual(image(self.fsm), before)
        query = b'{"op":"get","key":' + b"3" * 5000 + b"}"
        error = self.assertRaises(QueryRejected, self.fsm.query, query)
        self.assertIn("a number of 5000 characters", str(error))
        # Ordinary numbers still get the precise error.
        error = self.assertRaises(
            CommandRejected, self.fsm.apply, cmd(op="put", key="a", value=5), 3
        )
        self.assertIn("value is 5", str(error))

    def test_surrogate_pair_accepted(self) -> None:
        """A proper pair of escapes is one character and is stored."""
        self.fsm.apply(b'{"op":"put","key":"e","value":"\\ud83d\\ude00"}', 2)
        self.assertEqual(
            json.loads(self.fsm.query(cmd(op="get", key="e"))), {"value": "\U0001f600"}
        )

    def test_deep_nesting_refused_before_decoding(self) -> None:
        """`[` x 5000 (and other deep nesting) is refused by a count before the JSON decoder
        runs, so the outcome does not depend on the stack depth left (RecursionError)."""
        before = image(self.fsm)
        for data in [
            b"[" * 5000,
            b"{" * 5000,
            b'{"op":"put","key":"a","value":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            b"[" * 17 + b'"' + b'\\"' * 1000,  # an unclosed string full of escaped quotes
        ]:
            with self.subTest(data=data[:40]):
                error = self.assertRaises(CommandRejected, self.fsm.apply, data, 2)
                self.assertIn("more than 16 JSON arrays and objects", str(error))
                error = self.assertRaises(QueryRejected, self.fsm.query, data)
                self.assertIn("more than 16 JSON arrays and objects", str(error))
                self.assertEqual(image(self.fsm), before)

    def test_brackets_inside_strings_do_not_count(self) -> None:
        """Only containers outside strings count: values full of brackets, with escapes (the
        decoder's path), are stored as any other text."""
        value = '[{"x": [' * 50 + '\\" \\\\'
        command = json.dumps({"op": "put", "key": "b", "value": value}).encode()
        self.assertEqual(self.fsm.apply(command, 2), b'{"prev":null}')
        self.assertEqual(json.loads(self.fsm.query(cmd(op="get", key="b"))), {"value": value})
