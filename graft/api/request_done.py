"""Calls for when a request's response is finished or its connection lost, without Deferreds.

Each request on the hot routes wants two such calls: its HTTP metrics (graft.api.serving) and
the stop of its deadline if the client goes away (graft.api.root). twisted.web's
``notifyFinish`` gives each a Deferred, fired through Deferred's callback machinery when the
response ends: about 3 % of the leader's CPU per write. The API's Site builds requests with
``DoneHooks``, which keeps plain callables and calls them at the same two points; any other
Request (tests', an embedding program's Site) gets ``notifyFinish`` as before.
"""

# twisted.web is untyped; its calls are checked by the tests.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request

_log = Logger()

# Called with None once the response is finished, or with the reason if the connection was
# lost before.
DoneHook = Callable[[Failure | None], None]


def when_done(request: Request, hook: DoneHook) -> None:
    """Call ``hook`` once, when ``request``'s response is finished (None) or its connection is
    lost first (the reason), as a callback on ``notifyFinish`` would be."""
    add = getattr(request, "add_done_hook", None)
    if add is not None:
        add(hook)
    else:
        request.notifyFinish().addBoth(hook)


class DoneHooks(Request):
    """A Request that calls its done hooks where it fires ``notifyFinish``'s Deferreds: after
    them, when the response is finished (``_cleanup``) or the connection is lost."""

    _done_hooks: list[DoneHook] | None = None

    def add_done_hook(self, hook: DoneHook) -> None:
        if self._done_hooks is None:
            self._done_hooks = [hook]
        else:
            self._done_hooks.append(hook)

    def _cleanup(self) -> None:
        super()._cleanup()
        self._run_done_hooks(None)

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        self._run_done_hooks(reason)

    def _run_done_hooks(self, outcome: Failure | None) -> None:
        hooks, self._done_hooks = self._done_hooks, None
        run_done_hooks(hooks, outcome)


def run_done_hooks(hooks: list[DoneHook] | None, outcome: Failure | None) -> None:
    """Call each hook with ``outcome``; one that raises is logged and the others still run."""
    for hook in hooks or ():
        try:
            hook(outcome)
        except Exception:
            _log.failure("a request's done hook failed")
