"""The codec: every frame round-trips, and each kind of bad input is a ProtocolError."""

from __future__ import annotations

import tracemalloc

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from graft.raft.messages import AppendEntries, Heartbeat, ReadIndexResponse
from graft.raft.types import Entry, EntryKind
from graft.wire import (
    COMMANDS,
    MAX_HELLO_BYTES,
    Answer,
    Ask,
    Command,
    CommandRegistry,
    Frame,
    FrameDecoder,
    Hello,
    ProtocolError,
    SchemaError,
    encode_frame,
    encode_message,
    encode_message_frame,
    frames,
)
from graft.wire.messages import CODECS_BY_CLASS
from graft.wire.schema import MAX_DEPTH
from tests.wire.strategies import after_hello_frames, hellos, messages


def _frame(body: object) -> bytes:
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    return len(packed).to_bytes(4, "big") + packed


def _decoder(**kwargs: object) -> FrameDecoder:
    return FrameDecoder(expect_hello=False, **kwargs)  # type: ignore[arg-type]


HEARTBEAT = Heartbeat(term=3, sender="a", to="b", commit=2, seq=1)


class RoundTripTests(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(messages)
    def test_every_message_round_trips(self, message: object) -> None:
        """Any instance of any class in MESSAGE_TYPES decodes to an equal message."""
        self.assertEqual(_decoder().feed(encode_frame(message)), [message])  # type: ignore[arg-type]

    @settings(max_examples=200, deadline=None)
    @given(hellos, st.lists(after_hello_frames, max_size=6), st.data())
    def test_streams_round_trip_in_any_chunking(
        self, hello: Hello, frames: list[Frame], data: st.DataObject
    ) -> None:
        """A hello then any frames, split at arbitrary points, come out whole and in order."""
        stream = b"".join(encode_frame(f) for f in [hello, *frames])
        cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
        decoder = FrameDecoder()
        out = []
        for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
            out += decoder.feed(stream[start:end])
        self.assertEqual(out, [hello, *frames])

    def test_entries_are_compact_lists(self) -> None:
        """An entry travels as [index, term, kind, data], not as a map with field names."""
        entry = Entry(index=5, term=2, kind=EntryKind.NOOP, data=b"")
        message = AppendEntries(
            term=2, sender="a", to="b", prev_index=4, prev_term=2, entries=(entry,), commit=0
        )
        body = encode_message(message)
        self.assertEqual(body[6], [[5, 2, 1, b""]])
        self.assertEqual(body[0], CODECS_BY_CLASS[AppendEntries].tag)

    def test_optional_field_carries_none(self) -> None:
        """An `int | None` field keeps None distinct from 0."""
        refused = ReadIndexResponse(term=1, sender="a", to="b", context=b"c", index=None)
        zero = ReadIndexResponse(term=1, sender="a", to="b", context=b"c", index=0)
        self.assertEqual(
            _decoder().feed(encode_frame(refused) + encode_frame(zero)), [refused, zero]
        )


class RejectionTests(SynchronousTestCase):
    def assert_rejected(self, data: bytes, fragment: str, **kwargs: object) -> None:
        decoder = _decoder(**kwargs)
        with self.assertRaises(ProtocolError) as raised:
            decoder.feed(data)
        self.assertIn(fragment, raised.exception.reason)
        # A failed decoder stays failed: the connection must be dropped, not resumed.
        self.assertRaises(ProtocolError, decoder.feed, encode_message_frame(HEARTBEAT))

    def test_oversized_frame_rejected_from_its_header(self) -> None:
        """A length over the limit is refused as soon as the 4-byte header arrives."""
        self.assert_rejected((1025).to_bytes(4, "big"), "exceeds the limit", max_frame_bytes=1024)

    def test_frame_at_the_limit_accepted(self) -> None:
        """A frame exactly max_frame_bytes long is accepted."""
        frame = encode_message_frame(HEARTBEAT)
        self.assertEqual(_decoder(max_frame_bytes=len(frame) - 4).feed(frame), [HEARTBEAT])

    def test_empty_body(self) -> None:
        """A zero-length frame is malformed."""
        self.assert_rejected(b"\x00\x00\x00\x00", "undecodable")

    def test_invalid_msgpack(self) -> None:
        """Bytes that are not msgpack are malformed."""
        self.assert_rejected(b"\x00\x00\x00\x01\xc1", "undecodable")

    def test_trailing_bytes_in_body(self) -> None:
        """A body with extra data after its msgpack value is malformed."""
        packed = msgpack.packb([0], use_bin_type=True) + b"\x00"
        self.assert_rejected(len(packed).to_bytes(4, "big") + packed, "undecodable")

    def test_body_not_a_list(self) -> None:
        """A body that is not a non-empty list is refused."""
        self.assert_rejected(_frame({"a": 1}), "not a non-empty list")

    def test_unknown_message_tag(self) -> None:
        """An integer tag no message class has is refused."""
        self.assert_rejected(_frame([99, 1]), "unknown message tag")

    def test_unknown_frame_kind(self) -> None:
        """A string kind other than the envelope's is refused."""
        self.assert_rejected(_frame(["_bogus", 1]), "unknown frame kind")

    def test_wrong_field_count(self) -> None:
        """A message with a missing field is refused."""
        body = encode_message(HEARTBEAT)[:-1]
        self.assert_rejected(_frame(body), "expected 5 fields, got 4")

    def test_bool_is_not_an_int(self) -> None:
        """True where an integer belongs is refused (msgpack keeps them apart)."""
        body = encode_message(HEARTBEAT)
        body[1] = True
        self.assert_rejected(_frame(body), "Heartbeat.term")

    def test_negative_term(self) -> None:
        """Terms, indexes and counters are never negative."""
        body = encode_message(HEARTBEAT)
        body[4] = -1
        self.assert_rejected(_frame(body), "Heartbeat.commit")

    def test_bad_entry_kind(self) -> None:
        """An entry kind outside EntryKind is refused."""
        message = AppendEntries(
            term=1,
            sender="a",
            to="b",
            prev_index=0,
            prev_term=0,
            entries=(Entry(index=1, term=1),),
            commit=0,
        )
        body = encode_message(message)
        body[6][0][2] = 7
        self.assert_rejected(_frame(body), "malformed entry")

    def test_extension_types_refused(self) -> None:
        """msgpack extension types are not part of the protocol."""
        body = encode_message(HEARTBEAT)
        body[2] = msgpack.ExtType(5, b"x")
        self.assert_rejected(_frame(body), "extension type")

    def test_invalid_utf8_string(self) -> None:
        """A str field with invalid UTF-8 is malformed, not a crash."""
        self.assert_rejected(b"\x00\x00\x00\x04\x92\x00\xa1\xff", "undecodable")

    def test_first_frame_must_be_hello(self) -> None:
        """With expect_hello, anything before the hello is refused."""
        decoder = FrameDecoder()
        with self.assertRaises(ProtocolError) as raised:
            decoder.feed(encode_message_frame(HEARTBEAT))
        self.assertIn("first frame must be a hello", raised.exception.reason)

    def test_second_hello_refused(self) -> None:
        """A hello after the first one is refused."""
        hello = encode_frame(Hello(version=1, cluster="c", node_id="a"))
        decoder = FrameDecoder()
        with self.assertRaises(ProtocolError) as raised:
            decoder.feed(hello + hello)
        self.assertIn("second hello", raised.exception.reason)

    def test_ask_arguments_checked_against_schema(self) -> None:
        """An ask whose arguments break its command's schema is refused."""
        self.assert_rejected(
            _frame(["_ask", 1, "forward_submit", {"commands": ["text"]}]), "commands[0]"
        )
        self.assert_rejected(_frame(["_ask", 1, "forward_submit", {}]), "missing keys ['commands']")

    def test_unknown_command_passes_through(self) -> None:
        """An ask for an unregistered command is decoded so the receiver can answer
        `unknown_command` instead of dropping the connection."""
        frames = _decoder().feed(_frame(["_ask", 3, "nope", {"x": 1}]))
        self.assertEqual(frames, [Ask(id=3, command="nope", args={"x": 1})])

    def test_negative_request_id(self) -> None:
        """Request ids are non-negative integers."""
        self.assert_rejected(_frame(["_answer", -4, {}]), "answer id")


class CommandTests(SynchronousTestCase):
    def test_outgoing_arguments_checked(self) -> None:
        """Sending arguments that break the schema is a local SchemaError, not a wire error."""
        with self.assertRaises(SchemaError):
            COMMANDS.outgoing_arguments(
                "forward_query", {"query": "not bytes", "consistency": "weak", "min_index": None}
            )

    def test_unknown_outgoing_command(self) -> None:
        """Asking an unregistered command is a SchemaError naming it."""
        with self.assertRaises(SchemaError) as raised:
            COMMANDS.outgoing_arguments("nope", {})
        self.assertIn("nope", str(raised.exception))

    def test_registering_twice_refused(self) -> None:
        """A registry refuses two commands with the same name."""
        registry = CommandRegistry()
        registry.register(Command(name="x", arguments={}, response={}))
        self.assertRaises(
            ValueError, registry.register, Command(name="x", arguments={}, response={})
        )

    def test_unsupported_annotation_refused_at_definition(self) -> None:
        """A schema the wire cannot carry fails when the command is defined."""
        self.assertRaises(TypeError, Command, name="x", arguments={"s": set[int]}, response={})

    def test_registered_command_is_checked_by_decoders_using_that_registry(self) -> None:
        """A command registered on a registry gets its schema enforced by decoders using it."""
        registry = COMMANDS.copy()
        registry.register(Command(name="ping", arguments={"n": int}, response={"n": int}))
        decoder = FrameDecoder(expect_hello=False, commands=registry)
        self.assertEqual(
            decoder.feed(_frame(["_ask", 1, "ping", {"n": 2}])),
            [Ask(id=1, command="ping", args={"n": 2})],
        )
        self.assertRaises(ProtocolError, decoder.feed, _frame(["_ask", 2, "ping", {"n": "2"}]))
        self.assertNotIn("ping", COMMANDS)


def _nested(depth: int) -> bytes:
    """msgpack for a list nested ``depth`` deep: [[[...[]...]]]."""
    return b"\x91" * (depth - 1) + b"\x90"


def _raw_frame(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


def _array(items: bytes, count: int) -> bytes:
    return b"\xdd" + count.to_bytes(4, "big") + items


# A body of one array of 1 MiB empty arrays: 1 MiB on the wire, 64 MiB once decoded.
EMPTY_ARRAYS_MIB = _array(b"\x90" * (1 << 20), 1 << 20)


class LimitTests(SynchronousTestCase):
    """Bodies are checked before msgpack decodes them; every failure is a ProtocolError."""

    def refuse_unpacking(self) -> None:
        def unpackb(*args: object, **kwargs: object) -> object:
            raise AssertionError("msgpack decoded a body that should have been refused first")

        self.patch(msgpack, "unpackb", unpackb)

    def test_pre_hello_bomb_refused_from_its_first_bytes(self) -> None:
        """Before the hello, a frame that does not start like a hello is refused as soon as its
        header and first bytes arrive: not buffered to its end, not decoded."""
        self.refuse_unpacking()
        frame = _raw_frame(EMPTY_ARRAYS_MIB)
        with self.assertRaises(ProtocolError) as raised:
            FrameDecoder().feed(frame[:64])
        self.assertIn("a first frame of 1048581 bytes", raised.exception.reason)
        small = _raw_frame(_array(b"\x90" * 4000, 4000))
        with self.assertRaises(ProtocolError) as raised:
            FrameDecoder().feed(small[:12])
        self.assertIn("the first frame must be a hello", raised.exception.reason)

    def test_hello_size_is_capped(self) -> None:
        """A hello longer than MAX_HELLO_BYTES is refused from its header."""
        hello = Hello(version=1, cluster="c", node_id="a", settings={"x": "y" * MAX_HELLO_BYTES})
        frame = encode_frame(hello)
        with self.assertRaises(ProtocolError) as raised:
            FrameDecoder().feed(frame[:4])
        self.assertIn(f"a hello takes at most {MAX_HELLO_BYTES}", raised.exception.reason)

    def test_hello_carries_settings_and_older_hello_still_accepted(self) -> None:
        """The hello's settings map round-trips; a four-element hello (an older node) decodes
        with settings None."""
        hello = Hello(version=1, cluster="c", node_id="a", settings={"fsm.factory": "m:F"})
        self.assertEqual(FrameDecoder().feed(encode_frame(hello)), [hello])
        old = _frame(["_hello", 1, "c", "a"])
        self.assertEqual(
            FrameDecoder().feed(old), [Hello(version=1, cluster="c", node_id="a", settings=None)]
        )
        with self.assertRaises(ProtocolError):
            FrameDecoder().feed(_frame(["_hello", 1, "c", "a", {"k": 1}]))

    def test_nesting_bomb_after_hello_is_a_protocol_error(self) -> None:
        """Lists nested 1000 deep in an answer, an ask's arguments or a Raft message are a
        ProtocolError (checked before decoding), never a RecursionError."""
        deep = _nested(1000)
        bodies = [
            b"\x93\xa7_answer\x01\x81\xa1a" + deep,
            b"\x94\xa4_ask\x01\xadforward_admin\x82\xa2op\xa1x\xa4args\x81\xa1a" + deep,
            b"\x94\xa4_ask\x01\xa4nope" + b"\x81\xa1a" + deep,
        ]
        for body in bodies:
            with self.assertRaises(ProtocolError) as raised:
                _decoder().feed(_raw_frame(body))
            self.assertIn("nesting deeper than", raised.exception.reason)

    def test_nesting_bomb_in_a_raft_message_is_a_protocol_error(self) -> None:
        """Raft messages are decoded with a budget instead of a header walk: lists nested 1000
        deep are refused by the budget, or, padded so that the budget allows them, by the
        message's field checks; never a RecursionError."""
        deep = _nested(1000)
        with self.assertRaises(ProtocolError) as raised:
            _decoder().feed(_raw_frame(b"\x93\x00\x01" + deep))
        self.assertIn("more lists than", raised.exception.reason)
        padded = b"\x94\x00\x01" + deep + b"\xc6" + (8192).to_bytes(4, "big") + bytes(8192)
        with self.assertRaises(ProtocolError) as raised:
            _decoder().feed(_raw_frame(padded))
        self.assertIn("expected", raised.exception.reason)

    def test_nesting_within_the_limit_is_accepted(self) -> None:
        """An answer nested as deep as Any allows (the result map and MAX_DEPTH - 1 lists in it)
        still decodes."""
        value: object = []
        for _ in range(MAX_DEPTH - 2):
            value = [value]
        frames = _decoder().feed(_frame(["_answer", 1, {"a": value}]))
        self.assertEqual(frames, [Answer(id=1, result={"a": value})])
        with self.assertRaises(ProtocolError):
            _decoder().feed(_frame(["_answer", 1, {"a": [value]}]))

    def test_empty_array_bomb_after_hello_is_refused_within_its_budget(self) -> None:
        """A frame whose objects would take far more memory than its size is refused, having
        built at most about 40 times its size: 1 MiB of empty arrays (64 MiB once decoded) or
        of one-pair maps (over 200 MiB) inside an AppendEntries, or in an answer (refused from
        its headers, before decoding)."""
        pair_maps = _array(b"\x81\xa0\x00" * (1 << 18), 1 << 18)
        for bomb, refusal in ((EMPTY_ARRAYS_MIB, "more lists than"), (pair_maps, "more maps than")):
            body = b"\x98\x00\x01\xa1a\xa1b\x00\x00" + bomb + b"\x00"
            frame = _raw_frame(body)
            tracemalloc.start()
            try:
                with self.assertRaises(ProtocolError) as raised:
                    _decoder().feed(frame)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            self.assertIn(refusal, raised.exception.reason)
            self.assertLess(peak, 40 * len(frame))
        self.refuse_unpacking()
        with self.assertRaises(ProtocolError) as raised:
            _decoder().feed(_raw_frame(b"\x93\xa7_answer\x01" + EMPTY_ARRAYS_MIB))
        self.assertIn("would take more than", raised.exception.reason)

    def test_container_count_beyond_the_body_refused(self) -> None:
        """An array header announcing more items than bytes left is refused from the header."""
        self.refuse_unpacking()
        with self.assertRaises(ProtocolError) as raised:
            _decoder().feed(_raw_frame(b"\xdd\xff\xff\xff\xff\x00"))
        self.assertIn("a container of 4294967295 items", raised.exception.reason)

    def test_negative_ints_refused_by_command_schemas(self) -> None:
        """Offsets, sizes, terms and indexes in command arguments and answers are never
        negative."""
        chunk = {
            "term": 1,
            "snapshot_index": 5,
            "snapshot_term": 1,
            "membership": {},
            "fsm": "f",
            "size": 10,
            "offset": -1,
            "data": b"",
            "done": False,
            "crc32": 0,
            "stamp_floor_ns": 0,
        }
        with self.assertRaises(ProtocolError) as raised:
            _decoder().feed(_frame(["_ask", 1, "install_snapshot_chunk", chunk]))
        self.assertIn("install_snapshot_chunk arguments.offset", raised.exception.reason)
        query = {"query": b"q", "consistency": "weak", "min_index": -5}
        with self.assertRaises(ProtocolError) as raised:
            _decoder().feed(_frame(["_ask", 1, "forward_query", query]))
        self.assertIn("min_index: expected a non-negative integer", raised.exception.reason)
        self.assertRaises(
            ProtocolError,
            COMMANDS.get("forward_query").check_response,  # type: ignore[union-attr]
            {"output": b"", "applied_index": -1},
            "answer",
        )

    def test_any_decoder_failure_is_a_protocol_error(self) -> None:
        """An unexpected exception while decoding (a bug) fails the connection, not the node."""

        def broken(body: list[object]) -> object:
            raise KeyError("bug")

        self.patch(frames, "decode_message", broken)
        decoder = _decoder()
        with self.assertRaises(ProtocolError) as raised:
            decoder.feed(encode_message_frame(HEARTBEAT))
        self.assertIn("KeyError", raised.exception.reason)
        self.assertRaises(ProtocolError, decoder.feed, b"")

    def test_errors_do_not_repr_large_values(self) -> None:
        """A refused value is described by type and size, not repr'd in full."""
        with self.assertRaises(ProtocolError) as raised:
            _decoder().feed(_frame(["_answer", b"x" * 100_000, {}]))
        self.assertIn("bytes of length 100000", raised.exception.reason)
        self.assertLess(len(raised.exception.reason), 200)
