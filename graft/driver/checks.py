# mypy: disable-error-code="no-untyped-call"
"""The replica consistency check (graft.consistency): the leader commits a marker, every member
digests its FSM at that index, and the leader compares the digests."""

from __future__ import annotations

import os
from typing import Any, cast

from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from graft.consistency import MARKER_PREFIX, DigestBook, summarize
from graft.driver.clock import ReactorTime
from graft.driver.forwarding import Forwarder, as_is
from graft.driver.lifecycle import Scheduler
from graft.driver.membership import MembershipManager
from graft.driver.outcomes import timed_out
from graft.driver.peers import PeerPort
from graft.errors import GraftError, NoLeader, Timeout
from graft.metrics import NodeMetrics
from graft.raft.errors import NotLeader, ProposalDropped
from graft.raft.node import RaftNode
from graft.transport import PeerUnavailable, RemoteError
from graft.waiters import IndexWaiters, ProposalWaiters
from graft.wire.commands import ADMIN_CHECK, REPLICA_DIGEST

log = Logger(namespace="graft.node")


class ReplicaChecks:
    def __init__(
        self,
        *,
        raft: RaftNode,
        clock: ReactorTime,
        peers: PeerPort,
        proposals: ProposalWaiters,
        applied: IndexWaiters,
        digests: DigestBook,
        forwarder: Forwarder,
        pipeline: Scheduler,
        metrics: NodeMetrics,
        members: MembershipManager,
        command_timeout: float,
        check_timeout: float,
    ) -> None:
        self._raft = raft
        self._clock = clock
        self._peers = peers
        self._proposals = proposals
        self._applied = applied
        self._digests = digests
        self._forwarder = forwarder
        self._pipeline = pipeline
        self._metrics = metrics
        self._members = members
        self._command_timeout = command_timeout
        self._timeout = check_timeout
        # Callers waiting for the check under way on this leader (None: no check runs).
        self._waiters: list[Deferred[dict[str, Any]]] | None = None
        self.last: dict[str, Any] | None = None  # the latest result this node saw

    def check_replicas(self) -> Deferred[dict[str, Any]]:
        """Run a replica consistency check (on the leader, forwarded from a follower) and answer
        its result (graft.consistency.summarize), which this node also keeps for its status."""
        d = self._forwarder.on_leader(ADMIN_CHECK, {}, lambda: self.check_here({}), as_is)
        return d.addCallback(self._record)

    def _record(self, result: dict[str, Any]) -> dict[str, Any]:
        index = int(result.get("index", 0))
        if self.last is None or index >= int(self.last.get("index", 0)):
            self.last = result
            self._metrics.replica_digest_mismatch.set(1 if result.get("mismatch") else 0)
            self._metrics.replica_check_index.set(index)
        return result

    def check_here(self, args: dict[str, Any]) -> Deferred[dict[str, Any]]:
        """One check at a time on a leader: a request that arrives while one runs gets its
        result (each check digests the whole state on every member)."""
        if self._waiters is not None:
            joined: Deferred[dict[str, Any]] = Deferred()
            self._waiters.append(joined)
            return joined
        self._waiters = []
        d: Deferred[dict[str, Any]] = Deferred.fromCoroutine(self._check())

        def share(result: object) -> object:
            waiters, self._waiters = self._waiters or [], None
            for waiter in waiters:
                if isinstance(result, Failure):
                    waiter.errback(result)
                else:
                    waiter.callback(cast(dict[str, Any], result))
            return result

        d.addBoth(share)
        return d.addCallback(self._record)

    async def _check(self) -> dict[str, Any]:
        check = os.urandom(8).hex()
        try:
            index = self._raft.propose_marker(MARKER_PREFIX + check.encode("ascii"))
        except NotLeader:
            raise NoLeader("this node lost leadership before the check started; retry") from None
        except ProposalDropped:
            raise NoLeader("leadership is being transferred; retry the check shortly") from None
        waiter = self._proposals.add(index, self._raft.term, self._command_timeout, timed_out)
        self._pipeline.schedule()
        await waiter  # committed, and applied here: this node's digest has started
        members = sorted(self._members.membership.members)
        asks = [self._ask_digest(member, check, index) for member in members]
        answers = await DeferredList(asks, consumeErrors=True)
        by_member = {m: answer for m, (_, answer) in zip(members, answers, strict=True)}
        result = summarize(check, index, by_member)
        if result["mismatch"]:
            log.error(
                "replica consistency check at index {index}: the FSM digests of {odd} differ "
                "from the others; the replicas have diverged",
                index=index,
                odd=", ".join(result["mismatch"]),
            )
        return result

    def _ask_digest(self, member: str, check: str, index: int) -> Deferred[dict[str, Any]]:
        if member == self._raft.id:
            d = self.digest_here(check, index)
        else:
            d = self._peers.call(
                member,
                REPLICA_DIGEST.name,
                {"check": check, "index": index},
                timeout=self._timeout + 1.0,
            )

        def failed(failure: Failure) -> dict[str, Any]:
            if failure.check(PeerUnavailable):
                error = f"{member} is unreachable: {failure.getErrorMessage()}"
            elif failure.check(RemoteError):
                error = cast(RemoteError, failure.value).message
            elif failure.check(GraftError):
                error = cast(GraftError, failure.value).message
            else:
                error = f"{member} did not answer: {failure.getErrorMessage()}"
            return {"digest": None, "error": error}

        d.addCallback(lambda answer: {"digest": str(answer["digest"]), "error": None})
        return d.addErrback(failed)

    def digest_asked(self, peer: str, args: dict[str, Any]) -> Deferred[dict[str, Any]]:
        """replica_digest: the leader asks for this node's digest for a check."""
        return self.digest_here(str(args["check"]), int(args["index"]))

    def digest_here(self, check: str, index: int) -> Deferred[dict[str, Any]]:
        """This node's digest for a check, once it has applied the marker and computed it."""
        timeout = self._timeout
        me = self._raft.id
        applied = self._applied.wait(
            index,
            timeout,
            lambda: Timeout(
                f"{me} did not apply up to the check's index {index} within "
                f"{timeout:g} s; it is behind"
            ),
        )
        d: Deferred[Any] = applied.addCallback(lambda _: self._digests.digest_of(check, index))

        def too_slow(failure: Failure) -> Failure:
            failure.trap(CancelledError, TimeoutError)
            return Failure(Timeout(f"{me} did not finish its digest within {timeout:g} s"))

        d.addTimeout(timeout, cast(IReactorTime, self._clock)).addErrback(too_slow)
        return d.addCallback(lambda digest: {"digest": digest})
