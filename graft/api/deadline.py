"""Racing a backend Deferred against a timer without cancelling the backend's work."""

# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from graft.errors import GraftError

T = TypeVar("T")


class Timer(Protocol):
    def active(self) -> bool: ...

    def cancel(self) -> None: ...


class TimeSource(Protocol):
    """The part of IReactorTime used here (a zope interface mypy cannot check against)."""

    def seconds(self) -> float: ...

    def callLater(self, delay: float, f: Callable[..., Any], /, *args: Any) -> Timer: ...


def within(
    work: Deferred[T], seconds: float, reactor: TimeSource, expired: Callable[[], GraftError]
) -> Deferred[T]:
    """A Deferred with ``work``'s outcome, or failing with ``expired()`` after ``seconds``.

    ``work`` is not cancelled when the time is up: a command already proposed may still commit,
    and the node, not the HTTP layer, owns its bookkeeping. Its late outcome is consumed so it
    is not logged as unhandled. Cancelling the returned Deferred (the client went away) only
    stops the timer.
    """
    if work.called:
        # Already settled (a lease read, an error raised at once): no race, no timer to arm.
        return work
    done = False

    def cancelled(_: Deferred[T]) -> None:
        nonlocal done
        done = True
        if timer.active():
            timer.cancel()

    answer: Deferred[T] = Deferred(cancelled)

    def settle(outcome: Any) -> None:
        nonlocal done
        if done:
            return
        done = True
        if timer.active():
            timer.cancel()
        if isinstance(outcome, Failure):
            answer.errback(outcome)
        else:
            answer.callback(outcome)

    def expire() -> None:
        settle(Failure(expired()))

    timer: Timer = reactor.callLater(seconds, expire)
    work.addBoth(settle)
    return answer
