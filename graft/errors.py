"""Errors that reach clients. Each carries the API error code and HTTP status (DESIGN.md s. 5)."""

from __future__ import annotations


class GraftError(Exception):
    """An error with a stable code for the API's JSON error body."""

    code = "internal"
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(GraftError):
    code = "bad_request"
    status = 400


class Unauthorized(GraftError):
    code = "unauthorized"
    status = 401


class Forbidden(GraftError):
    code = "forbidden"
    status = 403


class NotFound(GraftError):
    code = "not_found"
    status = 404


class PayloadTooLarge(GraftError):
    code = "payload_too_large"
    status = 413


class FSMRejected(GraftError):
    """The command was committed at ``index`` and the FSM rejected it deterministically."""

    code = "fsm_error"
    status = 422

    def __init__(self, message: str, *, index: int, term: int) -> None:
        super().__init__(message)
        self.index = index
        self.term = term


# What a client hears from a node that is stopping: the driver's refusals and an FSM's queries
# cut short by the shutdown say it in these words.
SHUTTING_DOWN = "this node is shutting down; retry on another node"


class NoLeader(GraftError):
    """No leader is known, or the leader cannot be reached; the client should retry shortly."""

    code = "no_leader"
    status = 503

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NoQuorum(NoLeader):
    """This node cannot reach a majority of the voters, so no leader can be elected (or kept)
    until enough of them are back: the message names the ones it cannot reach. A NoLeader, so
    that everything that treats "no leader" as retryable later does the same with it."""

    code = "no_quorum"
    status = 503


class Stale(GraftError):
    """A weak read with ``max_lag_ms``: this node has not heard from a leader within that time.
    409, not 503: asking the same node again soon does not help; ask another node (the leader
    is never stale) or allow more lag. Clients do not retry it."""

    code = "stale"
    status = 409


class MinIndexBeyondLog(BadRequest):
    """A read's ``min_index`` is beyond every index the cluster has: no write acknowledged so
    far has it, so waiting cannot help."""

    code = "min_index_beyond_log"
    status = 400


class MemberUnreachable(GraftError):
    """A member was added as a learner, but the leader cannot reach it: the change is made and
    the rest (catch-up, promotion) happens once the node runs. 409: the request was carried
    out as far as the cluster's state allows; sending it again changes nothing."""

    code = "member_unreachable"
    status = 409


class SessionExpired(GraftError):
    """A numbered command's client session is unknown or expired (idle too long, or evicted
    from a full table): the command was not applied. 410: this session is gone for good; the
    client registers a new one and sends the command again under it."""

    code = "session_expired"
    status = 410


class SequenceForgotten(GraftError):
    """A numbered command's sequence is below what its session acknowledged (or its result
    was discarded): whether it was applied cannot be told. The client must not resend it
    blindly; it reports an unknown outcome."""

    code = "sequence_forgotten"
    status = 409


class ForwardingFailed(GraftError):
    """Forwarding a request to the leader failed in a way the peer channel did not foresee; the
    message names the cause. 502: this node acted as a gateway to the leader."""

    code = "forwarding_failed"
    status = 502


class AnswerTooLarge(GraftError):
    """The leader carried out a forwarded request, but its answer is too large to be sent back
    over the peer channel (the frame limit). For a command batch: it was applied."""

    code = "answer_too_large"
    status = 502


class Timeout(GraftError):
    """The operation did not finish in time; for a command the outcome is unknown."""

    code = "timeout"
    status = 504


class QueryTimeout(GraftError):
    """A query ran into its time limit and was stopped; it changed nothing."""

    code = "query_timeout"
    status = 504


class Internal(GraftError):
    code = "internal"
    status = 500


class Overloaded(GraftError):
    """Too many requests are waiting on this node (reads for an index, proposals to commit):
    nothing was done; the client should retry after ``retry_after`` seconds."""

    code = "overloaded"
    status = 503

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NoSpace(GraftError):
    """The data dir is over its space quota (``storage.quota_bytes``): writes are refused until
    it is below again; reads, snapshots and membership changes go on."""

    code = "no_space"
    status = 507


class ReloadFailed(GraftError):
    """A reload (SIGHUP, POST /reload) found a file missing or invalid: the node goes on with
    the certificates, keys and tokens it had; the message names the file."""

    code = "reload_failed"
    status = 409


def shutting_down() -> NoLeader:
    """The refusal of a node that is stopping (503, retry elsewhere)."""
    return NoLeader(SHUTTING_DOWN)


class SnapshotBusy(Overloaded):
    """The latest snapshot's file is being changed (a delta folded into it): nothing was read;
    retry after ``retry_after`` seconds (an Overloaded, so the answer says Retry-After)."""

    code = "snapshot_busy"
    status = 503
