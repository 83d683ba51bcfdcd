# mypy: disable-error-code="no-untyped-call"
"""The errors a client sees when a command's or a forwarded call's outcome is not a result."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from twisted.internet.defer import Deferred, fail
from twisted.python.failure import Failure

from graft.errors import (
    AnswerTooLarge,
    BadRequest,
    GraftError,
    Internal,
    NoLeader,
    NoSpace,
    NotFound,
    Overloaded,
    QueryTimeout,
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
    return Failure(
        Internal(f"forwarding to the leader {leader} failed: {failure.getErrorMessage()}")
    )
