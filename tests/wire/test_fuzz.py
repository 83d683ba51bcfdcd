"""Fuzzing the decoder: whatever arrives, it yields valid frames or raises ProtocolError."""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from graft.raft.messages import MESSAGE_TYPES
from graft.wire import Answer, Ask, ErrorAnswer, FrameDecoder, Hello, ProtocolError, encode_frame
from tests.wire.strategies import after_hello_frames, hellos, plain_values

FRAME_TYPES = (Hello, Ask, Answer, ErrorAnswer, *MESSAGE_TYPES)
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _feed_all(chunks: list[bytes], *, expect_hello: bool) -> list[Any]:
    """Feed the chunks; return the frames, stopping at a ProtocolError. Any other exception
    propagates and fails the test: that is the property under test."""
    decoder = FrameDecoder(expect_hello=expect_hello, max_frame_bytes=4096)
    out: list[Any] = []
    for chunk in chunks:
        try:
            out += decoder.feed(chunk)
        except ProtocolError:
            break
    return out


def _assert_valid(test: SynchronousTestCase, frames: list[Any]) -> None:
    """Every frame is a known frame class and survives a re-encode unchanged: a frame the codec
    accepted is one it could have produced."""
    for frame in frames:
        test.assertIsInstance(frame, FRAME_TYPES)
        again = FrameDecoder(expect_hello=isinstance(frame, Hello))
        test.assertEqual(again.feed(encode_frame(frame)), [frame])


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


mutations = st.lists(
    st.tuples(
        st.sampled_from(["flip", "insert", "delete", "truncate"]),
        st.integers(0, 10_000),
        st.integers(0, 255),
    ),
    min_size=1,
    max_size=6,
)


def _mutate(data: bytes, ops: list[tuple[str, int, int]]) -> bytes:
    buffer = bytearray(data)
    for op, position, value in ops:
        at = position % (len(buffer) + 1)
        if op == "flip" and buffer:
            buffer[at % len(buffer)] ^= value or 1
        elif op == "insert":
            buffer[at:at] = bytes([value])
        elif op == "delete" and buffer:
            del buffer[at % len(buffer)]
        elif op == "truncate":
            del buffer[at:]
    return bytes(buffer)


class FuzzTests(SynchronousTestCase):
    @FUZZ
    @given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=5), st.booleans())
    def test_random_bytes(self, data: bytes, cuts: list[int], expect_hello: bool) -> None:
        """Random bytes in random chunks yield only valid frames or a ProtocolError."""
        _assert_valid(self, _feed_all(_split(data, cuts), expect_hello=expect_hello))

    @FUZZ
    @given(
        hellos,
        st.lists(after_hello_frames, min_size=1, max_size=4),
        mutations,
        st.lists(st.integers(0, 2000), max_size=4),
    )
    def test_mutated_valid_streams(
        self, hello: Hello, frames: list[Any], ops: list[tuple[str, int, int]], cuts: list[int]
    ) -> None:
        """Valid streams with bytes flipped, inserted, deleted or cut off yield only valid frames
        or a ProtocolError."""
        stream = _mutate(b"".join(encode_frame(f) for f in [hello, *frames]), ops)
        _assert_valid(self, _feed_all(_split(stream, cuts), expect_hello=True))

    @FUZZ
    @given(
        st.one_of(
            st.integers(-3, len(MESSAGE_TYPES) + 2),
            st.sampled_from(["_hello", "_ask", "_answer", "_error", "forward_submit"]),
        ),
        st.lists(plain_values, max_size=9),
    )
    def test_well_formed_msgpack_with_wrong_shapes(self, kind: Any, fields: list[Any]) -> None:
        """Valid msgpack lists with a real frame kind but arbitrary fields yield only valid
        frames or a ProtocolError (this reaches the per-field checks random bytes rarely do)."""
        body = msgpack.packb([kind, *fields], use_bin_type=True)
        frame = len(body).to_bytes(4, "big") + body
        _assert_valid(self, _feed_all([frame], expect_hello=False))
        _assert_valid(self, _feed_all([frame], expect_hello=True))
