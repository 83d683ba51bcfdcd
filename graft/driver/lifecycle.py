"""Whether the driver is stopping, and the one way it stops the process on a fatal error."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger(namespace="graft.node")

RESTART_ADVICE = "Fix the cause (disk, FSM bug) and restart the node; it will replay its log."


class Lifecycle:
    """Shared by the driver's parts: once ``stopping``, none of them starts anything new."""

    def __init__(self, stop_process: Callable[[], None]) -> None:
        # Stops the process (the reactor) when it runs; a no-op in tests on a fake clock.
        self._stop_process = stop_process
        self.stopping = False

    def fatal(self, failure: Failure, doing: str, advice: str = RESTART_ADVICE) -> None:
        """A failure the node cannot survive without risking divergence: stop the process."""
        log.failure(
            "graft stopped: fatal error while {doing}; replicas would diverge if it went on. "
            "{advice}",
            failure=failure,
            doing=doing,
            advice=advice,
        )
        self.stopping = True
        self._stop_process()

    def stop_process(self) -> None:
        """Stop the process gracefully (the API's shutdown)."""
        self._stop_process()


class Scheduler(Protocol):
    """The Ready pipeline as the other parts see it (graft.driver.pipeline.ReadyPipeline)."""

    def schedule(self) -> None:
        """Take the core's next Ready on the next reactor turn, if it has one."""
        ...

    def want_early(self) -> None:
        """The core may hold messages that leave between Readies (heartbeats, reads)."""
        ...
