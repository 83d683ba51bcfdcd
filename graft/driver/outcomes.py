# mypy: disable-error-code="no-untyped-call"
"""The errors a client sees when a command's or a forwarded call's outcome is not a result."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.logger import Logger
from twisted.python.failure import Failure

from graft.errors import (
    AnswerTooLarge,
    BadRequest,
    ForwardingFailed,
    GraftError,
    Internal,
    MemberUnreachable,
    MinIndexBeyondLog,
    NoLeader,
    NoQuorum,
    NoSpace,
    NotFound,
    Overloaded,
    QueryTimeout,
    Stale,
    Timeout,
)
from graft.transport import PeerUnavailable, RemoteError

# Error codes that cross the peer channel in a forwarded call, back to their classes.
_ERRORS_BY_CODE: dict[str, type[GraftError]] = {
    cls.code: cls
    for cls in (BadRequest, NotFound, NoLeader, Timeout, QueryTimeout, Internal, Overloaded)
}
_ERRORS_BY_CODE[NoSpace.code] = NoSpace  # the leader's data dir is over its quota
_ERRORS_BY_CODE[AnswerTooLarge.code] = AnswerTooLarge  # done, but the answer cannot travel
# The refusals that say why (issue 22's distinct causes) keep their code across the channel.
for _cls in (NoQuorum, Stale, MinIndexBeyondLog, MemberUnreachable):
    _ERRORS_BY_CODE[_cls.code] = _cls

log = Logger()


def failed(error: Exception) -> Deferred[Any]:
    """A Deferred that has already failed with ``error``."""
    return fail(error)


def partly_applied() -> GraftError:
    return Timeout(
        "leadership changed while the batch was committing: its first commands were applied and "
        "the rest were not; check with a query which ones took effect before retrying"
    )


def timed_out() -> GraftError:
    return Timeout(
        "the command was not applied in time; its outcome is unknown: it may still commit. "
        "Check with a query before retrying a non-idempotent command"
    )


def overwritten() -> GraftError:
    return NoLeader(
        "leadership changed and the command was dropped before it committed; it was not applied, "
        "retry it"
    )


def not_leader_any_more(node_id: str) -> NoLeader:
    return NoLeader(f"{node_id} is not the leader any more; retry")


def applied_but_too_large(failure: Failure, leader: str, count: int) -> Failure:
    """A forwarded batch whose results the leader could not send back: say it was applied, so
    that the client does not resend it (which would apply it twice)."""
    if failure.check(RemoteError) and cast(RemoteError, failure.value).code == AnswerTooLarge.code:
        return Failure(
            AnswerTooLarge(
                f"the leader {leader} applied the batch of {count} commands, but their results "
                f"are too large to forward ({cast(RemoteError, failure.value).message}); do not "
                "resend it: read the outcome back, and send smaller batches, or send them to "
                "the leader directly"
            )
        )
    return failure


def remote_failure(failure: Failure, leader: str, *, lost: Callable[[], GraftError]) -> Failure:
    """Turn a forwarded call's failure into the error the client should see; ``lost()`` is the
    error when the call got no answer."""
    if failure.check(RemoteError):
        err = cast(RemoteError, failure.value)
        cls = _ERRORS_BY_CODE.get(err.code, Internal)
        return Failure(cls(err.message))
    if failure.check(PeerUnavailable):
        return Failure(lost())
    if failure.check(GraftError):
        return failure
    if failure.check(CancelledError):
        return failure  # the client went away: nothing to report, nobody to report it to
    return Failure(forwarding_failed(leader, cast(BaseException, failure.value)))


def forwarding_failed(leader: str, error: BaseException) -> ForwardingFailed:
    """An unforeseen failure of a forwarded call: logged here as a warning with its cause (the
    API does not log a GraftError), and the client hears the cause too."""
    reason = describe_exception(error)
    log.warn(
        "forwarding a request to the leader {leader} failed: {reason}", leader=leader, reason=reason
    )
    return ForwardingFailed(
        f"forwarding the request to the leader {leader} failed ({reason}); retry, and if it "
        "persists, check both nodes' logs"
    )


def describe_exception(error: BaseException) -> str:
    """An exception's type and text, never empty (CancelledError and others have no text)."""
    text = " ".join(str(error).split())
    name = type(error).__name__
    return f"{name}: {text}" if text else name
