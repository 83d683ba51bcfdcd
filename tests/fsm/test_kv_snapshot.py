"""graft.fsm.kv_snapshot: the graft.kv/2 file, its forked and thread writers, and the streaming
reader's checks of hostile files."""

from __future__ import annotations

import io
import json
import os
import signal
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from graft.fsm import CorruptSnapshot, digest, kv_snapshot
from graft.fsm.kv import KeyValueStateMachine
from graft.fsm.kv_snapshot import ForkedWriter, SnapshotWriteFailed, read_records
from graft.testing.kv import put

KEYS = {f'k{(i * 7919) % 500}\u00e9"\\\n\U0001f600': f"v{i}\x00\u2603" for i in range(500)}


def filled(fork_min_keys: int, data: dict[str, str] = KEYS) -> KeyValueStateMachine:
    fsm = KeyValueStateMachine(fork_min_keys=fork_min_keys)
    for i, (key, value) in enumerate(data.items(), 1):
        fsm.apply(put(key, value), i)
    return fsm


def image(fsm: KeyValueStateMachine) -> bytes:
    sink = io.BytesIO()
    fsm.begin_snapshot()(sink)
    return sink.getvalue()


def delete(key: str) -> bytes:
    return json.dumps({"op": "delete", "key": key}).encode()


class _Reads(io.BytesIO):
    """A file that records the size of every read asked of it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.sizes: list[int | None] = []

    def read(self, size: int | None = -1, /) -> bytes:
        self.sizes.append(size)
        return super().read(size)


class WriterTests(SynchronousTestCase):
    def test_forked_and_thread_writers_agree(self) -> None:
        """The forked child and the thread write the same bytes; both read back to the map,
        and the digest after a restore is the digest of the replayed state."""
        forked, threaded = image(filled(0)), image(filled(-1))
        self.assertEqual(forked, threaded)
        self.assertEqual(read_records(io.BytesIO(forked)), KEYS)
        restored = KeyValueStateMachine()
        restored.restore(io.BytesIO(forked))
        self.assertEqual(digest(restored), digest(filled(-1)))

    def test_forked_writer_writes_the_state_at_begin(self) -> None:
        """Commands applied after begin_snapshot (and an overlay left by a thread writer
        still running) do not reach the forked child's snapshot."""
        fsm = filled(-1)
        slow = fsm.begin_snapshot()  # a thread writer, not run yet: commands go to an overlay
        fsm.apply(put("during", "1"), 1000)
        fsm.apply(delete(next(iter(KEYS))), 1001)
        expected = {k: v for k, v in KEYS.items() if k != next(iter(KEYS))} | {"during": "1"}
        fsm._fork_min_keys = 0
        write = fsm.begin_snapshot()
        self.assertIsInstance(write, ForkedWriter)
        fsm.apply(put("after", "2"), 1002)
        fsm.apply(delete("during"), 1003)
        sink = io.BytesIO()
        write(sink)
        self.assertEqual(read_records(io.BytesIO(sink.getvalue())), expected)
        first = io.BytesIO()
        slow(first)
        self.assertEqual(read_records(io.BytesIO(first.getvalue())), KEYS)

    def test_unused_forked_writer_is_closed(self) -> None:
        """close() on a writer never called ends and reaps its child (none is left behind)."""
        write = filled(0).begin_snapshot()
        assert isinstance(write, ForkedWriter)
        write.close()
        self.assertRaises(ChildProcessError, os.waitpid, write.pid, os.WNOHANG)
        self.assertRaises(SnapshotWriteFailed, write, io.BytesIO())

    def test_closed_thread_writer_releases_the_overlay(self) -> None:
        """close() on an unused thread writer lets commands merge the overlay back."""
        fsm = filled(-1)
        fsm.begin_snapshot().close()  # type: ignore[attr-defined]
        for i in range(20):
            fsm.apply(put("after", str(i)), 1000 + i)
        self.assertIsNone(fsm._overlay)

    def test_child_killed(self) -> None:
        """A child that dies before finishing gives SnapshotWriteFailed, not a short file
        taken for a snapshot."""
        # More than the pipe and the child's buffer hold: the child waits for the reader.
        write = filled(0, {f"key{i:05d}": "v" * 100 for i in range(20_000)}).begin_snapshot()
        assert isinstance(write, ForkedWriter)
        os.kill(write.pid, signal.SIGKILL)
        error = self.assertRaises(SnapshotWriteFailed, write, io.BytesIO())
        self.assertIn(f"process {write.pid} exited with status -9", str(error))

    def test_child_failure(self) -> None:
        """A child that raises (here on a value that is not a string) exits with status 1,
        which the writer reports; the child says why on stderr."""
        write = ForkedWriter(cast(dict[str, str], {"a": 1}))
        error = self.assertRaises(SnapshotWriteFailed, write, io.BytesIO())
        self.assertIn(f"process {write.pid} exited with status 1", str(error))

    def test_child_leaves_without_running_the_parent_code(self) -> None:
        """The child exits by os._exit: atexit handlers and buffered files of the parent do
        not run or flush in it (a pipe would otherwise get the parent's buffered text)."""
        read_fd, write_fd = os.pipe()
        buffered = open(write_fd, "w", buffering=1 << 16)  # noqa: SIM115
        buffered.write("parent's unflushed text")
        try:
            write = filled(0).begin_snapshot()
            write(io.BytesIO())
        finally:
            os.set_blocking(read_fd, False)
            buffered.close()  # the parent's flush: once
            data = os.read(read_fd, 1000)
            os.close(read_fd)
        self.assertEqual(data, b"parent's unflushed text")

    def test_child_runs_at_a_lower_priority(self) -> None:
        """The child writes at WRITER_NICE below the node (here: it writes its niceness)."""
        write_records = kv_snapshot.write_records

        def niceness(data: Any, keys: Any, sink: Any) -> None:
            write_records({"nice": str(os.nice(0))}, ["nice"], sink)

        self.patch(kv_snapshot, "write_records", niceness)
        sink = io.BytesIO()
        ForkedWriter({"a": "1"})(sink)
        sink.seek(0)
        expected = min(os.nice(0) + kv_snapshot.WRITER_NICE, 19)
        self.assertEqual(read_records(sink), {"nice": str(expected)})


def valid() -> bytes:
    return image(filled(-1, {"a": "1", "b": "2", "c": "3"}))


class ReaderTests(SynchronousTestCase):
    def assertCorrupt(self, data: bytes, words: str) -> None:
        fsm = filled(-1, {"kept": "yes"})
        error = self.assertRaises(CorruptSnapshot, fsm.restore, io.BytesIO(data))
        self.assertIn(words, str(error))
        self.assertEqual(fsm.query(b'{"op":"get","key":"kept"}'), b'{"value":"yes"}')

    def test_valid_file(self) -> None:
        self.assertEqual(
            valid(),
            b'{"format":"graft.kv/2"}\n"a":"1"\n"b":"2"\n"c":"3"\n{"count":3}\n',
        )
        self.assertEqual(read_records(io.BytesIO(valid())), {"a": "1", "b": "2", "c": "3"})

    def test_every_truncation_is_refused(self) -> None:
        """A file cut at any byte is refused, the state kept."""
        data = valid()
        for end in range(len(data)):
            with self.subTest(end=end):
                self.assertRaises(CorruptSnapshot, read_records, io.BytesIO(data[:end]))

    def test_hostile_files(self) -> None:
        """Each kind of damage gives CorruptSnapshot saying what is wrong; the state is kept."""
        head = b'{"format":"graft.kv/2"}\n'
        cases: list[tuple[bytes, str]] = [
            (b"", "does not start like"),
            (b'{"format":"graft.kv/3"}\n{"count":0}\n', "does not start like"),
            (head + b'"a":1\n{"count":1}\n', "of strings"),
            (head + b'"a":"1","b":"2"\n{"count":2}\n', "one"),
            (head + b'"a":"1"\n"a":"2"\n{"count":2}\n', "one"),
            (head + b'"b":"1"\n"a":"2"\n{"count":2}\n', "increasing order"),
            (head + b'"a":"1"\n{"count":2}\n', "counts 2 keys but 1"),
            (head + b'"a":"1"\n{"count":1}\n"b":"2"\n', "after its end record"),
            (head + b'"a":"1"\n', "end record is missing"),
            (head + b'"a":"1"\n{"count":1}\nmore', "ends inside a line"),
            (head + b'"a":"\xc3\xa9"\n{"count":1}\n', "not ASCII"),
            (head + b'"a":"\\ud800"\n{"count":1}\n', "surrogate"),
            (head + b'"a":' + b"[" * 100_000 + b'\n{"count":1}\n', "not valid JSON"),
            (head + b'"a":' + b"9" * 5000 + b'\n{"count":1}\n', "not valid JSON"),
            (head + b'"a":"1"\n{"count":true}\n', "end record is not"),
            (head + b'"a":"1"\n{"count":1,"x":2}\n', "end record is not"),
            (head + b'\n{"count":0}\n', "of strings"),
            (b'{"data":{"a":1},"format":"graft.kv/1"}', "graft.kv/1"),
            (b'{"data":{"a":"\\udfff"},"format":"graft.kv/1"}', "surrogate"),
        ]
        for data, words in cases:
            with self.subTest(data=data[:80]):
                self.assertCorrupt(data, words)

    def test_checks_span_blocks(self) -> None:
        """Order and count hold across blocks, not only within one: with a block of a few
        bytes, keys out of order (or a key twice) in two blocks are refused; a valid file
        still reads."""
        self.patch(kv_snapshot, "_READ_CHUNK", 9)
        head = b'{"format":"graft.kv/2"}\n'
        for data in [
            head + b'"b":"1"\n"a":"2"\n{"count":2}\n',
            head + b'"a":"1"\n"a":"2"\n{"count":2}\n',
        ]:
            with self.subTest(data=data):
                self.assertCorrupt(data, "increasing order")
        self.assertEqual(read_records(io.BytesIO(valid())), {"a": "1", "b": "2", "c": "3"})

    def test_line_longer_than_the_limit(self) -> None:
        """A line past MAX_RECORD_BYTES is refused before it is all in memory."""
        self.patch(kv_snapshot, "MAX_RECORD_BYTES", 1000)
        self.patch(kv_snapshot, "_READ_CHUNK", 100)
        source = _Reads(b'{"format":"graft.kv/2"}\n"a":"' + b"x" * 10_000)
        self.assertRaises(CorruptSnapshot, read_records, source)
        self.assertLess(sum(s or 0 for s in source.sizes), 1300)

    def test_reads_in_bounded_blocks(self) -> None:
        """The reader never asks for the whole file: every read is at most one block."""
        data = image(filled(-1, {f"key{i:05d}": "v" * 100 for i in range(20_000)}))
        source = _Reads(data)
        self.assertEqual(len(read_records(source)), 20_000)
        self.assertGreater(len(source.sizes), 4)
        for size in source.sizes:
            self.assertIsNotNone(size)
            assert size is not None
            self.assertTrue(0 < size <= kv_snapshot._READ_CHUNK, size)

    def test_legacy_file(self) -> None:
        """A graft.kv/1 file (one JSON object) is still restored."""
        legacy = json.dumps(
            {"data": {"a": "1", "b": "\u00e9"}, "format": "graft.kv/1"},
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
        self.assertEqual(read_records(io.BytesIO(legacy)), {"a": "1", "b": "\u00e9"})

    @settings(max_examples=300, deadline=None)
    @given(st.data())
    def test_damaged_files_never_crash(self, data: Any) -> None:
        """Any byte changed, cut, inserted or dropped: the reader returns a map of strings or
        raises CorruptSnapshot, nothing else."""
        raw = bytearray(valid())
        for _ in range(data.draw(st.integers(1, 4))):
            at = data.draw(st.integers(0, len(raw) - 1))
            how = data.draw(st.sampled_from(["set", "insert", "drop"]))
            byte = data.draw(st.sampled_from(b'"{}[]:,\\\n0a\x00\xff'))
            if how == "set":
                raw[at] = byte
            elif how == "insert":
                raw.insert(at, byte)
            else:
                del raw[at]
        try:
            result = read_records(io.BytesIO(bytes(raw)))
        except CorruptSnapshot:
            return
        self.assertTrue(all(type(k) is str and type(v) is str for k, v in result.items()))
