"""Property tests: any command sequence gives the same answers and snapshot bytes on every
replica, whether it replayed the whole log or restored a snapshot part-way, and a snapshot
pinned with begin_snapshot and written after more commands is the one taken at the pin."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from graft.fsm import CommandRejected, StateMachine, begin_snapshot
from graft.fsm.kv import KeyValueStateMachine
from graft.fsm.sqlite import SQLiteStateMachine

KEYS = st.sampled_from(["a", "b", "c", "\u00e9"])
VALUES = st.one_of(st.sampled_from(["1", "2", ""]), st.text(max_size=5))

KV_COMMANDS = st.one_of(
    st.builds(lambda k, v: {"op": "put", "key": k, "value": v}, KEYS, VALUES),
    st.builds(
        lambda k, e, v: {"op": "cas", "key": k, "expect": e, "value": v},
        KEYS,
        st.one_of(st.none(), VALUES),
        VALUES,
    ),
    st.builds(lambda k: {"op": "delete", "key": k}, KEYS),
    # Malformed ones, which must be rejected without effect.
    st.builds(lambda k: {"op": "put", "key": k}, KEYS),
    st.builds(lambda v: {"op": "put", "key": 1, "value": v}, VALUES),
).map(lambda c: json.dumps(c).encode())

SQL_COMMANDS = st.one_of(
    st.builds(
        lambda n, v: f"INSERT INTO t (name, v) VALUES ('n{n}', {v});".encode(),
        st.integers(0, 5),
        st.integers(-3, 3),
    ),
    st.builds(lambda v: f"UPDATE t SET v = v + {v} WHERE v > 0;".encode(), st.integers(-2, 2)),
    st.builds(lambda n: f"DELETE FROM t WHERE name = 'n{n}';".encode(), st.integers(0, 5)),
    st.builds(
        lambda a, b: (
            f"INSERT INTO t (name, v) VALUES ('n{a}', 1); "
            f"INSERT INTO t (name, v) VALUES ('n{b}', 2);".encode()
        ),
        st.integers(0, 5),
        st.integers(0, 5),
    ),
    st.builds(
        lambda n: f"CREATE TABLE IF NOT EXISTS u{n} (x INTEGER);".encode(), st.integers(0, 3)
    ),
    st.builds(
        lambda n: f"DROP TABLE IF EXISTS u{n}; PRAGMA user_version = {n};".encode(),
        st.integers(0, 3),
    ),
    st.just(b"INSERT INTO t (name, v) VALUES ('r', random());"),
    st.just(b"INSERT INTO t (name, v) VALUES ('bad', 'not a number');"),
)


def run(fsm: StateMachine, commands: Sequence[bytes], start: int) -> list[bytes]:
    answers = []
    for index, command in enumerate(commands, start=start):
        try:
            answers.append(fsm.apply(command, index))
        except CommandRejected as e:
            answers.append(b"rejected: " + str(e).encode())
    return answers


def image(fsm: StateMachine) -> bytes:
    sink = io.BytesIO()
    fsm.snapshot(sink)
    return sink.getvalue()


class ReplicaAgreementTestCase(SynchronousTestCase):
    """Replays ``commands`` on one replica; another restores a snapshot taken after ``cut``
    commands and applies the rest. Answers and final snapshots must match."""

    def check(
        self,
        make: Callable[[], StateMachine],
        setup: bytes | None,
        commands: list[bytes],
        cut: int,
        queries: Sequence[bytes],
    ) -> None:
        prefix = [setup] if setup is not None else []
        cut = min(cut, len(commands))
        replayed = make()
        answers = run(replayed, prefix + commands, 1)
        source = make()
        run(source, prefix + commands[:cut], 1)
        at_cut = image(source)
        # Pinned at the cut, written only after the source has applied everything.
        write = begin_snapshot(source)
        run(source, commands[cut:], len(prefix) + cut + 1)
        pinned = io.BytesIO()
        write(pinned)
        self.assertEqual(pinned.getvalue(), at_cut)
        self.assertEqual(image(source), image(replayed))
        restored = make()
        restored.restore(io.BytesIO(pinned.getvalue()))
        rest = run(restored, commands[cut:], len(prefix) + cut + 1)
        self.assertEqual(rest, answers[len(prefix) + cut :])
        self.assertEqual(image(restored), image(replayed))
        for query in queries:
            self.assertEqual(restored.query(query), replayed.query(query))
        for fsm in (replayed, source, restored):
            fsm.close()


class KeyValueProperties(ReplicaAgreementTestCase):
    @settings(max_examples=150, deadline=None)
    @given(st.lists(KV_COMMANDS, max_size=30), st.integers(0, 30))
    def test_replicas_agree(self, commands: list[bytes], cut: int) -> None:
        """kv: replay and snapshot+restore give identical answers and snapshot bytes; a
        snapshot pinned at the cut and written after the remaining commands equals the one
        taken at the cut."""
        gets = [json.dumps({"op": "get", "key": k}).encode() for k in ["a", "b", "c", "\u00e9"]]
        self.check(KeyValueStateMachine, None, commands, cut, gets)


class SQLiteProperties(ReplicaAgreementTestCase):
    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(st.lists(SQL_COMMANDS, max_size=12), st.integers(0, 12))
    def test_replicas_agree(self, commands: list[bytes], cut: int) -> None:
        """sqlite: replay and snapshot+restore give identical answers (changes, rowids,
        rejections) and identical database bytes; a snapshot pinned at the cut and written
        after the remaining commands equals the one taken at the cut."""

        def make() -> StateMachine:
            data_dir = Path(self.mktemp())
            return SQLiteStateMachine(data_dir=data_dir, base_dir=data_dir)

        setup = (
            b"CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE,"
            b" v INTEGER CHECK (typeof(v) = 'integer'));"
        )
        queries = [
            b"SELECT * FROM t ORDER BY id;",
            b"SELECT count(*), sum(v), max(id) FROM t;",
            b"SELECT name, sql FROM sqlite_master ORDER BY name;",
            b"PRAGMA schema_version;",
            b"PRAGMA page_count;",
            b"PRAGMA freelist_count;",
            b"PRAGMA user_version;",
        ]
        self.check(make, setup, commands, cut, queries)
