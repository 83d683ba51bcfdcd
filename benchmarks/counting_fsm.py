"""A state machine that only counts what it applies: replication benchmarks use it to measure
Raft, storage and transport without an FSM's own cost (``fsm.factory:
"benchmarks.counting_fsm:CountingStateMachine"``)."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO


class CountingStateMachine:
    content_type = "text/plain"

    def __init__(self, *, data_dir: Path | None = None, base_dir: Path | None = None) -> None:
        del data_dir, base_dir
        self.applied = 0

    def apply(self, command: bytes, index: int) -> bytes:
        self.applied += 1
        return b""

    def query(self, query: bytes) -> bytes:
        return str(self.applied).encode()

    def snapshot(self, sink: BinaryIO) -> None:
        sink.write(str(self.applied).encode())

    def restore(self, source: BinaryIO) -> None:
        self.applied = int(source.read() or b"0")

    def close(self) -> None:
        pass
