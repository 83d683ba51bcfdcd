"""One write load for process tests: threads putting unique keys through the live nodes of a
LocalCluster, with every key classified.

A put of a unique key to its own value is idempotent, so an answer that leaves the outcome open
(503, 504, a dropped connection, a torn response, any exception from the request) is retried
through the next live node until ``deadline``. Each key ends in exactly one class:

- acked: a 200 on some attempt;
- failed: a definite refusal (any other status) with no open attempt before it, with the reason:
  the write is not in the state;
- unknown: no 200, and some attempt may have been applied (the reasons of its attempts).

A worker never dies silently: an exception outside the request is recorded in ``errors`` and
its key is unknown; ``__exit__`` raises if a worker is still running after the join.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field

from graft.testing.cluster import LocalCluster
from graft.testing.kv import put, refused_put

RETRY = frozenset({503, 504})


@dataclass(slots=True)
class _Attempts:
    open: list[str] = field(default_factory=list)  # reasons the outcome stayed open


class WriteLoad:
    def __init__(
        self,
        cluster: LocalCluster,
        *,
        workers: int = 3,
        deadline: float = 15.0,
        request_timeout: float = 5.0,
        refuse_every: int = 0,
        join_slack: float = 30.0,
    ) -> None:
        """``refuse_every`` > 0: every that many keys a worker sends a put the FSM refuses
        (graft.testing.kv.refused_put), so ``failed`` is never empty by accident."""
        self.cluster = cluster
        self.deadline = deadline
        self.request_timeout = request_timeout
        self.refuse_every = refuse_every
        self.join_slack = join_slack
        self.issued: list[str] = []
        self.acked: dict[str, str] = {}  # key -> node that answered 200
        self.failed: dict[str, str] = {}  # key -> reason
        self.unknown: dict[str, str] = {}  # key -> reasons
        self.refused_on_purpose: set[str] = set()
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._turn = itertools.count()
        self._threads = [
            threading.Thread(target=self._run, args=(w,), daemon=True, name=f"write-load-{w}")
            for w in range(workers)
        ]

    def __enter__(self) -> WriteLoad:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the workers and wait for them; raise if one is still running."""
        self._stop.set()
        give_up = time.monotonic() + self.deadline + self.request_timeout + self.join_slack
        for t in self._threads:
            t.join(max(0.0, give_up - time.monotonic()))
        running = [t.name for t in self._threads if t.is_alive()]
        if running:
            raise AssertionError(f"write load workers still running after stop: {running}")
        with self._lock:
            for key in self.issued:
                if not self._classified(key):
                    self.unknown[key] = "no outcome recorded"

    def wait_acked(self, count: int, timeout: float = 60) -> None:
        """Wait until ``count`` more keys than now are acked (the load makes progress)."""
        target = len(self.acked) + count
        deadline = time.monotonic() + timeout
        while len(self.acked) < target:
            if self.errors:
                raise AssertionError(f"write load worker error: {self.errors}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{len(self.acked)} of {target} writes acked within {timeout:g} s; "
                    f"{len(self.failed)} failed, {len(self.unknown)} unknown: "
                    f"{list(self.failed.items())[:3]} {list(self.unknown.items())[:3]}"
                )
            time.sleep(0.02)

    def unexpected_failures(self) -> dict[str, str]:
        """Failed keys that were not refused on purpose."""
        return {k: r for k, r in self.failed.items() if k not in self.refused_on_purpose}

    def _classified(self, key: str) -> bool:
        return key in self.acked or key in self.failed or key in self.unknown

    def _run(self, worker: int) -> None:
        for i in itertools.count():
            if self._stop.is_set():
                return
            key = f"w{worker}-{i}"
            refuse = self.refuse_every > 0 and i % self.refuse_every == self.refuse_every - 1
            with self._lock:
                self.issued.append(key)
                if refuse:
                    self.refused_on_purpose.add(key)
            try:
                kind, detail = self._write(key, refused_put(key) if refuse else put(key, key))
            except BaseException as e:  # a bug here must show, not end the thread quietly
                kind, detail = "unknown", f"write load error: {e!r}"
                self.errors.append(f"{key}: {e!r}")
            with self._lock:
                {"acked": self.acked, "failed": self.failed, "unknown": self.unknown}[kind][key] = (
                    detail
                )

    def _write(self, key: str, body: bytes) -> tuple[str, str]:
        attempts = _Attempts()
        give_up = time.monotonic() + self.deadline
        while time.monotonic() < give_up:
            alive = self.cluster.alive()
            if not alive:
                time.sleep(0.05)
                continue
            node = alive[next(self._turn) % len(alive)]
            try:
                resp = self.cluster.request(
                    node, "POST", "/command", body, timeout=self.request_timeout
                )
            except Exception as e:  # OSError, IncompleteRead, ...: it may have been applied
                attempts.open.append(f"{node}: {e!r}")
                time.sleep(0.02)
                continue
            if resp.status == 200:
                return "acked", node
            reason = f"{node}: {resp.status} {resp.body[:200]!r}"
            if resp.status in RETRY:
                attempts.open.append(reason)
                time.sleep(0.02)
                continue
            if attempts.open:
                return "unknown", "; ".join([*attempts.open, reason])
            return "failed", reason
        return "unknown", "; ".join(attempts.open[-5:]) or "no live node before the deadline"
