"""begin_snapshot: the state is pinned on the calling thread and written later, from another
thread, while commands go on being applied; the snapshot is exactly the state at the pin."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from graft.fsm import begin_snapshot
from graft.fsm.kv import KeyValueStateMachine
from graft.fsm.kv_snapshot import read_records
from graft.fsm.script import ScriptStateMachine
from graft.fsm.sqlite import SQLiteStateMachine
from graft.testing.kv import put

CONF = Path(__file__).resolve().parents[2] / "conf"
ROWS = b"SELECT id, name, v FROM t ORDER BY id;"


def write_in_thread(
    write: Callable[[BinaryIO], None], while_running: Callable[[int], None]
) -> tuple[bytes, int]:
    """Run ``write`` in a real thread while calling ``while_running(i)`` on this thread until it
    ends (and at least once). The bytes written and how many calls overlapped the thread."""
    sink = io.BytesIO()
    failures: list[BaseException] = []

    def run() -> None:
        try:
            write(sink)
        except BaseException as e:
            failures.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    calls = 0
    try:
        while True:
            alive = thread.is_alive()
            while_running(calls)
            calls += 1
            if not alive:
                break
    finally:
        thread.join()
    if failures:
        raise failures[0]
    return sink.getvalue(), calls


class HelperTests(SynchronousTestCase):
    def test_fsm_without_begin_snapshot_is_serialised_at_begin(self) -> None:
        """An FSM that only has snapshot() is serialised by the helper when it is called, so
        the writer gives the state at begin even after more commands."""

        class Legacy:
            content_type = "text/plain"

            def __init__(self) -> None:
                self.value = b"0"
                self.snapshots = 0

            def apply(self, command: bytes, index: int) -> bytes:
                self.value = command
                return b""

            def query(self, query: bytes) -> bytes:
                return self.value

            def snapshot(self, sink: BinaryIO) -> None:
                self.snapshots += 1
                sink.write(self.value)

            def restore(self, source: BinaryIO) -> None:
                self.value = source.read()

            def close(self) -> None:
                pass

        fsm = Legacy()
        fsm.apply(b"1", 1)
        write = begin_snapshot(fsm)  # type: ignore[arg-type]
        self.assertEqual(fsm.snapshots, 1)
        fsm.apply(b"2", 2)
        sink = io.BytesIO()
        write(sink)
        self.assertEqual(sink.getvalue(), b"1")

    def test_fsm_with_begin_snapshot_is_used(self) -> None:
        """The helper calls the FSM's own begin_snapshot (kv copies its dict)."""
        fsm = KeyValueStateMachine()
        fsm.apply(put("a", "1"), 1)
        write = begin_snapshot(fsm)
        fsm.apply(put("a", "2"), 2)
        sink = io.BytesIO()
        write(sink)
        self.assertEqual(read_records(io.BytesIO(sink.getvalue())), {"a": "1"})


class KeyValueTests(SynchronousTestCase):
    def test_pinned_state_written_while_applies_continue(self) -> None:
        """kv: after begin_snapshot, puts, deletes and new keys applied while the writer runs
        in a thread do not reach the snapshot, whose bytes equal a snapshot taken at begin."""
        fsm = KeyValueStateMachine()
        for i in range(3000):
            fsm.apply(put(f"k{i}", f"v{i}\u00e9"), i + 1)
        expected = io.BytesIO()
        fsm.snapshot(expected)
        write = fsm.begin_snapshot()
        fsm.apply(json.dumps({"op": "delete", "key": "k1"}).encode(), 3001)
        fsm.apply(put("k2", "changed"), 3002)

        def more(i: int) -> None:
            fsm.apply(put(f"new{i}", "x"), 4000 + i)

        image, _ = write_in_thread(write, more)
        self.assertEqual(image, expected.getvalue())
        restored = KeyValueStateMachine()
        restored.restore(io.BytesIO(image))
        self.assertEqual(
            restored.query(b'{"op": "get", "key": "k1"}'), '{"value":"v1\u00e9"}'.encode()
        )
        self.assertEqual(restored.query(b'{"op": "get", "key": "new0"}'), b'{"value":null}')

    def test_format_is_sorted_lines(self) -> None:
        """The piecewise thread writer gives a header line, one sorted ``"key":"value"`` line
        per key (ASCII JSON) and the count, the same bytes as the forked writer."""
        fsm = KeyValueStateMachine(fork_min_keys=-1)
        forked = KeyValueStateMachine(fork_min_keys=0)
        for i in range(4500):  # more than two pieces, keys inserted out of order
            command = put(f'{(i * 7919) % 4500}"\\\n\u2603', str(i))
            fsm.apply(command, i + 1)
            forked.apply(command, i + 1)
        sink = io.BytesIO()
        fsm.begin_snapshot()(sink)
        data = read_records(io.BytesIO(sink.getvalue()))
        lines = [
            json.dumps({"format": "graft.kv/2"}, separators=(",", ":")),
            *(f"{json.dumps(k)}:{json.dumps(data[k])}" for k in sorted(data)),
            '{"count":4500}',
        ]
        self.assertEqual(sink.getvalue(), "".join(line + "\n" for line in lines).encode())
        self.assertEqual(len(data), 4500)
        other = io.BytesIO()
        forked.begin_snapshot()(other)
        self.assertEqual(other.getvalue(), sink.getvalue())


KV_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.sampled_from("abcdef"), st.sampled_from(["1", "2", "3"])),
        st.tuples(st.just("delete"), st.sampled_from("abcdef"), st.just("")),
        st.tuples(st.just("begin"), st.just(""), st.just("")),
        st.tuples(st.just("write"), st.integers(0, 3).map(str), st.just("")),
    ),
    max_size=60,
)


class KeyValueCopyOnWriteTests(SynchronousTestCase):
    @settings(max_examples=200, deadline=None)
    @given(KV_STEPS)
    def test_overlapping_snapshots_match_a_model(self, steps: list[tuple[str, str, str]]) -> None:
        """Any mix of puts, deletes, snapshots begun and snapshots written (in any order,
        overlapping) gives each writer the map as it was at its begin, and queries always see
        the current map, while the overlay is in use and while it is merged back."""
        fsm = KeyValueStateMachine()
        model: dict[str, str] = {}
        pending: list[tuple[Callable[[BinaryIO], None], dict[str, Any]]] = []

        def written(write: Callable[[BinaryIO], None]) -> dict[str, Any]:
            sink = io.BytesIO()
            write(sink)
            data: dict[str, Any] = read_records(io.BytesIO(sink.getvalue()))
            return data

        for index, (op, key, value) in enumerate([*steps, ("write", "all", "")], start=1):
            if op == "put":
                fsm.apply(put(key, value), index)
                model[key] = value
            elif op == "delete":
                fsm.apply(json.dumps({"op": "delete", "key": key}).encode(), index)
                model.pop(key, None)
            elif op == "begin":
                pending.append((fsm.begin_snapshot(), dict(model)))
            elif key == "all":
                for write, expected in pending:
                    self.assertEqual(written(write), expected)
                pending = []
            elif pending:
                write, expected = pending.pop(int(key) % len(pending))
                self.assertEqual(written(write), expected)
            for k in "abcdef":
                got = json.loads(fsm.query(json.dumps({"op": "get", "key": k}).encode()))
                self.assertEqual(got["value"], model.get(k))
        # Once no writer is left, commands merge the overlay back into the map.
        for i in range(10):
            fsm.apply(put("z", str(i)), 1000 + i)
        self.assertIsNone(fsm._overlay)
        self.assertEqual(written(fsm.begin_snapshot()), {**model, "z": "9"})


class ScriptTests(SynchronousTestCase):
    def test_pinned_state_written_while_applies_continue(self) -> None:
        """script: the state at begin_snapshot is what the writer writes, though apply() goes
        on replacing the state while the writer runs in a thread."""
        fsm = ScriptStateMachine(init="fsm_init.py", eval="fsm_eval.py", base_dir=CONF)
        self.addCleanup(fsm.close)
        fsm.apply(b"add 5", 1)
        fsm.apply(b"push a", 2)
        expected = io.BytesIO()
        fsm.snapshot(expected)
        write = fsm.begin_snapshot()
        fsm.apply(b"add 1", 3)

        def more(i: int) -> None:
            fsm.apply(f"push p{i}".encode(), 4 + i)

        image, _ = write_in_thread(write, more)
        self.assertEqual(image, expected.getvalue())
        restored = ScriptStateMachine(init="fsm_init.py", eval="fsm_eval.py", base_dir=CONF)
        self.addCleanup(restored.close)
        restored.restore(io.BytesIO(image))
        self.assertEqual(json.loads(restored.query(b"counter")), {"counter": 5})
        self.assertEqual(json.loads(restored.query(b"items")), {"items": ["a"]})


class SQLiteTests(SynchronousTestCase):
    def make(self, data_dir: Path | None = None) -> SQLiteStateMachine:
        data_dir = data_dir or Path(self.mktemp())
        fsm = SQLiteStateMachine(data_dir=data_dir, base_dir=data_dir)
        self.addCleanup(fsm.close)
        return fsm

    def filled(self, rows: int) -> SQLiteStateMachine:
        fsm = self.make()
        fsm.apply(b"CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, v BLOB);", 1)
        per_command = 500
        for start in range(0, rows, per_command):
            fsm.apply(
                b"WITH RECURSIVE n(i) AS (SELECT %d UNION ALL SELECT i + 1 FROM n WHERE i < %d) "
                b"INSERT INTO t (name, v) SELECT 'row' || i, zeroblob(100) FROM n;"
                % (start, min(start + per_command, rows) - 1),
                2 + start // per_command,
            )
        return fsm

    def change(self, fsm: SQLiteStateMachine, i: int) -> None:
        fsm.apply(
            b"INSERT INTO t (name, v) VALUES ('late%d', x'00'); "
            b"UPDATE t SET name = 'changed' WHERE id = %d; DELETE FROM t WHERE id = %d;"
            % (i, i + 1, i + 1000),
            10_000 + i,
        )

    def restored(self, image: bytes) -> SQLiteStateMachine:
        fsm = self.make()
        fsm.restore(io.BytesIO(image))
        return fsm

    def snapshot(self, fsm: SQLiteStateMachine) -> bytes:
        sink = io.BytesIO()
        fsm.snapshot(sink)
        return sink.getvalue()

    def test_writes_during_the_copy_are_not_in_the_snapshot(self) -> None:
        """A writer thread copies a 20,000-row database while this thread goes on inserting,
        updating and deleting: the snapshot has the rows and bytes of the state at begin."""
        fsm = self.filled(20_000)
        expected_rows = fsm.query(ROWS)
        expected_image = self.snapshot(fsm)
        write = fsm.begin_snapshot()
        self.change(fsm, 0)  # between begin and the writer's start
        image, overlapping = write_in_thread(write, lambda i: self.change(fsm, i + 1))
        self.assertEqual(image, expected_image)
        self.assertEqual(self.restored(image).query(ROWS), expected_rows)
        self.assertNotEqual(fsm.query(ROWS), expected_rows)
        self.assertGreater(overlapping, 0)

    def test_backup_in_steps_neither_restarts_nor_sees_commits(self) -> None:
        """With the backup cut into 8-page steps and a command committed on the main connection
        between every two steps, the copy still finishes in one pass (the step count never
        goes back up, as it would on a restart) and holds the state at begin."""
        fsm = self.filled(3000)
        expected_rows = fsm.query(ROWS)
        calls: list[tuple[int, int]] = []

        def between_steps(status: int, remaining: int, total: int) -> None:
            calls.append((remaining, total))
            if len(calls) > 500:  # restarting over and over: stop rather than hang
                raise RuntimeError("the backup keeps restarting")
            self.change(fsm, len(calls))

        fsm._backup_pages = 8
        fsm._backup_progress = between_steps
        write = fsm.begin_snapshot()
        sink = io.BytesIO()
        write(sink)
        total = calls[0][1]
        self.assertGreater(total, 40)
        self.assertEqual(len(calls), -(-total // 8))
        remaining = [r for r, _ in calls]
        self.assertEqual(remaining, sorted(remaining, reverse=True))
        self.assertEqual(self.restored(sink.getvalue()).query(ROWS), expected_rows)

    def test_wal_grows_while_pinned_and_is_reset_after(self) -> None:
        """While a snapshot is pinned, commits append to the WAL (it cannot be reset); after
        the writer ends it is checkpointed, the next commits reuse it from the start, and it is
        truncated to journal_size_limit."""
        fsm = self.filled(2000)
        limit = 1024 * 1024
        fsm._conn.execute(f"PRAGMA journal_size_limit={limit}")
        wal = fsm._path.with_name(fsm._path.name + "-wal")
        write = fsm.begin_snapshot()
        sizes = []
        for i in range(300):
            self.change(fsm, i)
            sizes.append(wal.stat().st_size)
        self.assertGreater(sizes[-1], sizes[0])
        self.assertGreater(sizes[-1], 4 * 1024 * 1024)  # past the 1000-page auto-checkpoint
        write(io.BytesIO())
        for i in range(300, 320):
            self.change(fsm, i)
        self.assertLessEqual(wal.stat().st_size, limit)

    def test_snapshot_file_is_a_plain_database(self) -> None:
        """The snapshot is in rollback-journal format (header bytes 18-19 are 1), and no temp
        file is left in the data dir after a snapshot and a restore."""
        fsm = self.filled(10)
        image = self.snapshot(fsm)
        self.assertEqual(image[18:20], b"\x01\x01")
        fsm.restore(io.BytesIO(image))
        names = sorted(p.name for p in fsm._path.parent.iterdir())
        self.assertEqual(names, ["fsm.sqlite3", "fsm.sqlite3-shm", "fsm.sqlite3-wal"])

    def test_restore_while_a_snapshot_is_pending(self) -> None:
        """A restore between begin_snapshot and its writer replaces the live database; the
        writer still writes the state it pinned."""
        fsm = self.filled(100)
        expected_rows = fsm.query(ROWS)
        write = fsm.begin_snapshot()
        fsm.restore(io.BytesIO(b""))
        sink = io.BytesIO()
        write(sink)
        self.assertEqual(self.restored(sink.getvalue()).query(ROWS), expected_rows)
        self.assertEqual(
            json.loads(fsm.query(b"SELECT count(*) FROM sqlite_master"))["rows"], [[0]]
        )

    def test_failed_writer_releases_everything(self) -> None:
        """A writer that fails, in the copy or in the sink, raises, leaves no temp file and
        releases its read transaction: a checkpoint then backfills every frame of the WAL."""

        class Broken(io.RawIOBase):
            def writable(self) -> bool:
                return True

            def write(self, data: Any) -> int:
                raise OSError("no space left (test)")

        def stop(status: int, remaining: int, total: int) -> None:
            raise OSError("interrupted (test)")

        for pages, progress, sink in [(-1, None, Broken()), (4, stop, io.BytesIO())]:
            fsm = self.filled(500)
            fsm._backup_pages, fsm._backup_progress = pages, progress
            write = fsm.begin_snapshot()
            for i in range(20):
                self.change(fsm, i)
            self.assertRaises(OSError, write, sink)
            names = sorted(p.name for p in fsm._path.parent.iterdir())
            self.assertEqual(names, ["fsm.sqlite3", "fsm.sqlite3-shm", "fsm.sqlite3-wal"])
            self.change(fsm, 20)
            busy, frames, backfilled = fsm._conn.execute(
                "PRAGMA wal_checkpoint(PASSIVE)"
            ).fetchone()
            self.assertGreater(frames, 0)
            self.assertEqual((busy, backfilled), (0, frames))

    def test_failing_script_rolls_back_in_wal_mode(self) -> None:
        """In WAL mode a script whose last statement fails leaves no trace, also in a
        snapshot pinned right after."""
        fsm = self.filled(5)
        before = fsm.query(ROWS)
        result: Any = None
        try:
            fsm.apply(b"INSERT INTO t (name) VALUES ('x'); INSERT INTO nowhere VALUES (1);", 99)
        except Exception as e:
            result = e
        self.assertIsNotNone(result)
        self.assertEqual(fsm.query(ROWS), before)
        sink = io.BytesIO()
        fsm.begin_snapshot()(sink)
        self.assertEqual(self.restored(sink.getvalue()).query(ROWS), before)
        self.assertEqual(fsm._conn.execute("PRAGMA journal_mode").fetchone()[0], "wal")
