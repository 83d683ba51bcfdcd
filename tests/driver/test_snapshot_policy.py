"""graft.driver.snapshot_policy: the snapshot trigger rule and the log bytes it counts."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from graft.driver.snapshot_policy import (
    WAL_BOUND_BYTES,
    SnapshotPolicy,
    log_bytes,
    snapshot_due,
)
from graft.raft.types import Entry, EntryKind
from graft.storage.records import encode_records

RATIO = SnapshotPolicy(min_entries=100, log_ratio=4.0)


def due(policy: SnapshotPolicy, entries: int, log: int, last: int) -> bool:
    return snapshot_due(
        policy, entries_since=entries, log_bytes_since=log, last_snapshot_bytes=last
    )


class SnapshotDueTests(SynchronousTestCase):
    def test_ratio_of_the_last_snapshot(self) -> None:
        """Past the entry floor, a snapshot is due once the log since the last one reaches
        log_ratio times that snapshot's size, not a byte before."""
        self.assertFalse(due(RATIO, 5000, 3_999_999, 1_000_000))
        self.assertTrue(due(RATIO, 5000, 4_000_000, 1_000_000))
        self.assertTrue(due(RATIO, 5000, 9_000_000, 1_000_000))

    def test_entry_floor(self) -> None:
        """Fewer than min_entries entries since the last snapshot: never due, however much
        log (a tiny state does not snapshot every few entries); the first snapshot (size 0)
        comes at the floor."""
        self.assertFalse(due(RATIO, 99, 10**9, 10))
        self.assertTrue(due(RATIO, 100, 1, 0))
        self.assertFalse(due(RATIO, 99, 1, 0))

    def test_cost_per_byte_does_not_grow_with_the_state(self) -> None:
        """Writes that each add a key to the state: with the ratio rule the bytes snapshotted
        per byte of log written stay below 1 as the state grows, where the entry count alone
        makes them grow with the state (twice the keys, twice the cost per write)."""
        ratio = _cost(SnapshotPolicy(min_entries=1000, log_ratio=4.0), [100_000, 200_000])
        self.assertLess(max(ratio), 1.0)
        count = _cost(SnapshotPolicy(min_entries=1000, log_ratio=0.0), [100_000, 200_000])
        self.assertGreater(count[0], 10)
        self.assertGreater(count[1], 1.8 * count[0])

    def test_log_cap(self) -> None:
        """max_log_bytes: due once that much log was written even if the ratio is not
        reached (a large state must not fill the disk with log); the entry floor still holds."""
        policy = SnapshotPolicy(min_entries=100, log_ratio=4.0, max_log_bytes=1000)
        self.assertFalse(due(policy, 5000, 999, 10**6))
        self.assertTrue(due(policy, 5000, 1000, 10**6))
        self.assertFalse(due(policy, 99, 10**6, 10**6))

    def test_zero_ratio_is_the_entry_count(self) -> None:
        """log_ratio 0: a snapshot every min_entries entries (the entry rule alone)."""
        policy = SnapshotPolicy(min_entries=100, log_ratio=0.0)
        self.assertTrue(due(policy, 100, 0, 10**9))
        self.assertFalse(due(policy, 99, 10**9, 0))

    def test_off(self) -> None:
        """min_entries 0 turns automatic snapshots off."""
        self.assertFalse(due(SnapshotPolicy(min_entries=0), 10**9, 10**12, 0))


class WalTriggerTests(SynchronousTestCase):
    """The FSM's WAL as a trigger: its growth since the last snapshot against wal_bound."""

    def wal_due(self, policy: SnapshotPolicy, entries: int, wal: int, last: int) -> bool:
        return snapshot_due(
            policy,
            entries_since=entries,
            log_bytes_since=0,
            last_snapshot_bytes=last,
            wal_bytes_since=wal,
        )

    def test_bound_is_fixed_whatever_the_state(self) -> None:
        """The WAL may grow by 32 MiB, not a byte more, whether the last snapshot was 1 MB or
        1 GB: the WAL's pages on disk do not grow with the database."""
        for last in (10**6, 10**9, 10**11):
            self.assertFalse(self.wal_due(RATIO, 5000, WAL_BOUND_BYTES - 1, last))
            self.assertTrue(self.wal_due(RATIO, 5000, WAL_BOUND_BYTES, last))
        self.assertEqual(WAL_BOUND_BYTES, 32 * 2**20)

    def test_not_held_back_by_the_entry_floor(self) -> None:
        """A few commands that rewrite large tables fill the WAL: due after fewer than
        min_entries entries, but not with none, nor with automatic snapshots off."""
        self.assertTrue(self.wal_due(RATIO, 1, WAL_BOUND_BYTES, 10**6))
        self.assertFalse(self.wal_due(RATIO, 0, 10**9, 10**6))
        self.assertFalse(self.wal_due(SnapshotPolicy(min_entries=0), 10**6, 10**12, 10**6))

    def test_the_log_cap_does_not_lower_it(self) -> None:
        """max_log_bytes caps the log between snapshots, not the WAL: a 1,000-byte cap does
        not make every command's WAL pages a snapshot."""
        small = SnapshotPolicy(min_entries=100, log_ratio=4.0, max_log_bytes=1000)
        self.assertFalse(self.wal_due(small, 50, WAL_BOUND_BYTES - 1, 10**9))

    def test_the_wal_stays_within_the_bound_as_the_state_grows(self) -> None:
        """Writes that each add 9 KB of WAL pages and 130 bytes of state (26 MB in all),
        snapshotted only by the log rule, then with the WAL trigger too: the WAL grows with
        everything written (far past the database's size) without it, and never past the
        bound with it."""
        for trigger in (False, True):
            state = last = wal = log = entries = peak = 0
            for _ in range(200_000):
                state += 130
                wal += 9000
                log += 200
                entries += 1
                peak = max(peak, wal)
                if snapshot_due(
                    RATIO,
                    entries_since=entries,
                    log_bytes_since=log,
                    last_snapshot_bytes=last,
                    wal_bytes_since=wal if trigger else 0,
                ):
                    last, wal, log, entries = state, 0, 0, 0
            if trigger:
                self.assertLessEqual(peak, WAL_BOUND_BYTES + 9000)
            else:
                self.assertGreater(peak, 10 * state)


class LogBytesTests(SynchronousTestCase):
    def test_what_the_segments_hold(self) -> None:
        """log_bytes is the size of the entries' records in a segment file."""
        entries = [
            Entry(index=i, term=2, kind=EntryKind.STAMPED, data=b"x" * (i * 37 % 300))
            for i in range(1, 60)
        ]
        self.assertEqual(log_bytes(entries), len(encode_records(entries)))
        self.assertEqual(log_bytes([]), 0)


def _cost(policy: SnapshotPolicy, checkpoints: list[int]) -> list[float]:
    """Snapshot bytes per log byte written so far, at each checkpoint (a count of unique-key
    puts: 200 bytes of log each, 130 bytes of snapshot each)."""
    entry_bytes, key_bytes = 200, 130
    state = last = log = entries = written = snapshotted = 0
    out = []
    for puts in range(1, checkpoints[-1] + 1):
        state += key_bytes
        log += entry_bytes
        entries += 1
        written += entry_bytes
        if due(policy, entries, log, last):
            snapshotted += state
            last, log, entries = state, 0, 0
        if puts in checkpoints:
            out.append(snapshotted / written)
    return out
