"""The base of the process tests: clusters that are always cleaned up, and their nodes' logs
shown when a test fails.

``make_cluster`` registers the cluster's ``close()`` before anything starts, so a setUp or a
test that fails half-way leaves no process behind. When a test fails or errors, the end of
every node's log of every cluster it made is appended to the failure message (when it is an
assertion with a text message), written to the test's log (``test.log``) and to ``dump_to``
(stderr by default).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TextIO

from twisted.python import log
from twisted.python.failure import Failure
from twisted.trial import unittest

from graft.testing.cluster import LocalCluster

# Per node, in a failure message: enough for the last few dozen lines.
LOG_TAIL_CHARS = 3000


class ProcessTestCase(unittest.SynchronousTestCase):
    # Synchronous: the tests block on processes and never spin the reactor (so trial's timeout,
    # which needs the reactor, could not stop them anyway).

    dump_to: TextIO | None = None  # None: sys.stderr at the time of the failure

    def make_cluster(
        self, node_ids: Iterable[str] = ("n1", "n2", "n3"), *, start: bool = True, **kwargs: Any
    ) -> LocalCluster:
        cluster = LocalCluster(Path(self.mktemp()), node_ids, **kwargs)  # type: ignore[no-untyped-call]
        self.addCleanup(cluster.close)
        self.clusters().append(cluster)
        if start:
            cluster.start()
        return cluster

    def wait_for(
        self,
        condition: Callable[[], Any],
        what: str,
        timeout: float = 30,
        *,
        detail: Callable[[], str] | None = None,
    ) -> Any:
        """Poll ``condition`` until it gives a true value, and return that value; fail naming
        ``what`` (and ``detail()``, e.g. a log that is not a cluster node's) after ``timeout``
        seconds. The nodes' logs are added to the failure by the log dump."""
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                extra = f"\n{detail()}" if detail is not None else ""
                self.fail(f"{what}: not within {timeout:g} s{extra}")
            time.sleep(0.05)

    def clusters(self) -> list[LocalCluster]:
        """The clusters this test made, for the log dump."""
        made: list[LocalCluster] | None = getattr(self, "_graft_clusters", None)
        if made is None:
            made = []
            self._graft_clusters = made
        return made

    def node_logs(self) -> str:
        return "\n".join(c.log_tails(LOG_TAIL_CHARS) for c in self.clusters())

    def run(self, result: Any = None) -> Any:
        return super().run(_DumpLogsOnFailure(result, self))  # type: ignore[no-untyped-call]

    def dump_logs(self, fail: Failure) -> None:
        if not self.clusters():
            return
        dump = self.node_logs()
        log.msg(f"{self.id()} failed; node logs:\n{dump}")
        print(f"\n{self.id()} failed; node logs:\n{dump}", file=self.dump_to or sys.stderr)
        value = fail.value
        if isinstance(value, AssertionError) and value.args and isinstance(value.args[0], str):
            value.args = (f"{value.args[0]}\n\nnode logs:\n{dump}", *value.args[1:])


class _DumpLogsOnFailure:
    """A result that dumps the test's node logs before it records a failure or error."""

    def __init__(self, result: Any, test: ProcessTestCase) -> None:
        self._result = result
        self._test = test

    def addFailure(self, test: Any, fail: Any) -> None:
        self._dump(test, fail)
        self._result.addFailure(test, fail)

    def addError(self, test: Any, fail: Any) -> None:
        self._dump(test, fail)
        self._result.addError(test, fail)

    def _dump(self, test: Any, fail: Any) -> None:
        if test is self._test:
            if not isinstance(fail, Failure):  # pyunit results pass exc_info tuples
                fail = Failure(fail[1], fail[0], fail[2])  # type: ignore[no-untyped-call]
            try:
                self._test.dump_logs(fail)
            except Exception as e:  # the dump must not hide the failure
                print(f"could not dump node logs: {e!r}", file=sys.stderr)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._result, name)
