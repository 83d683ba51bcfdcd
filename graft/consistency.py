"""The replica consistency check (etcd's hashkv idea): do all replicas hold the same state?

The leader proposes a marker, a NOOP entry whose data is ``MARKER_PREFIX + check id``
(graft.raft.node.RaftNode.propose_marker). Every replica applies it at the same index, right
after the same commands, and at that point pins its FSM's state and digests it off the reactor
thread (graft.fsm.begin_digest). The leader then asks every member for its digest of that check
(the ``replica_digest`` peer command) and compares them. Replicas that applied the same log must
agree; a mismatch means the FSM is not deterministic (or a replica's disk lied) and the cluster
has diverged.

Each node keeps the digests of its last few markers (``DigestBook``); the result of the last
check it ran or was asked for is in its /status and /metrics.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from graft.errors import NotFound

log = Logger()

MARKER_PREFIX = b"graft-check:"
# The digests kept per node, newest last: a check asks for its digest right after its marker
# committed, so only the last few are ever asked for.
KEEP_DIGESTS = 16
# Digests pinned and not finished, at most: a node replaying a log with many markers (after a
# restart, or catching up) pins no more than this many states at once and skips the others.
MAX_RUNNING = 2


@dataclass(slots=True)
class _Digest:
    index: int
    digest: str | None = None
    error: str | None = None
    waiters: list[Deferred[str]] = field(default_factory=list)

    def settle(self, digest: str | None, error: str | None) -> None:
        self.digest, self.error = digest, error
        waiters, self.waiters = self.waiters, []
        for d in waiters:
            if d.called:  # cancelled by its caller's timeout
                continue
            if digest is not None:
                d.callback(digest)
            else:
                d.errback(NotFound(error or "no digest"))


def check_id_of(data: bytes) -> str | None:
    """The check id a marker's data carries, or None when it is not a check marker."""
    if not data.startswith(MARKER_PREFIX):
        return None
    return data[len(MARKER_PREFIX) :].decode("ascii", errors="replace")


class DigestBook:
    """This node's digests of the last KEEP_DIGESTS check markers it applied, by check id."""

    def __init__(
        self,
        *,
        node_id: str,
        begin: Callable[[], Callable[[], str]],
        run_in_thread: Callable[..., Deferred[Any]],
        keep: int = KEEP_DIGESTS,
        max_running: int = MAX_RUNNING,
    ) -> None:
        self._node_id = node_id
        self._begin = begin
        self._run_in_thread = run_in_thread
        self._keep = keep
        self._max_running = max_running
        self._running = 0
        self._digests: collections.OrderedDict[str, _Digest] = collections.OrderedDict()

    def marker_applied(self, index: int, data: bytes) -> None:
        """A marker was applied at ``index``; the FSM holds exactly the state up to it now.
        Called on the reactor thread from the apply loop: pins, and digests in a thread."""
        check = check_id_of(data)
        if check is None:
            return  # a marker of another kind (a newer version's): nothing to do here
        record = _Digest(index=index)
        self._digests[check] = record
        self._digests.move_to_end(check)
        while len(self._digests) > self._keep:
            _, old = self._digests.popitem(last=False)
            if old.digest is None and old.error is None:
                old.settle(None, "the digest was dropped for newer checks")
        if self._running >= self._max_running:
            record.settle(
                None,
                f"{self._node_id} skipped the digest at index {index}: the digests of "
                f"{self._running} earlier checks were still being computed",
            )
            return
        try:
            compute = self._begin()
        except Exception as e:
            log.failure("could not pin the FSM state for the digest at {index}", index=index)
            record.settle(None, f"{self._node_id} could not start the digest: {e}")
            return
        self._running += 1
        d = self._run_in_thread(compute)

        def done(result: object) -> None:
            self._running -= 1
            if isinstance(result, Failure):
                log.failure("the FSM digest at index {index} failed", failure=result, index=index)
                record.settle(None, f"{self._node_id} failed to digest: {result.getErrorMessage()}")
            else:
                record.settle(str(result), None)

        d.addBoth(done)

    def digest_of(self, check: str, index: int) -> Deferred[str]:
        """The digest of ``check`` (whose marker is at ``index``), once computed; NotFound when
        this node has none (it installed a snapshot past the marker, restarted, or the digest
        was dropped or skipped). Call once this node has applied ``index``."""
        record = self._digests.get(check)
        d: Deferred[str] = Deferred()
        if record is None or record.index != index:
            d.errback(
                NotFound(
                    f"{self._node_id} has no digest for the check at index {index}: it did not "
                    "apply that entry itself (it installed a snapshot past it, or restarted, "
                    "or more recent checks replaced it); run the check again"
                )
            )
        elif record.digest is not None:
            d.callback(record.digest)
        elif record.error is not None:
            d.errback(NotFound(record.error))
        else:
            record.waiters.append(d)
        return d


def summarize(check: str, index: int, answers: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """The answer of GET /cluster/check from each member's ``{"digest", "error"}``.

    ``ok``: the digests given all agree (members that gave none are not counted against it);
    ``complete``: every member gave one. ``mismatch`` lists the members whose digest differs from
    the one most members hold (all of them on a tie)."""
    members = {m: {"digest": a.get("digest"), "error": a.get("error")} for m, a in answers.items()}
    counts = collections.Counter(a["digest"] for a in members.values() if a["digest"] is not None)
    ok = len(counts) <= 1 and bool(counts)
    odd: list[str] = []
    if len(counts) > 1:
        (top, top_count), (_, second_count) = counts.most_common(2)
        odd = sorted(
            m
            for m, a in members.items()
            if a["digest"] is not None and (a["digest"] != top or top_count == second_count)
        )
    return {
        "check": check,
        "index": index,
        "ok": ok,
        "complete": all(a["digest"] is not None for a in members.values()),
        "mismatch": odd,
        "members": dict(sorted(members.items())),
    }
