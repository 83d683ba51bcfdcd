"""The leader's commit-only AppendEntries wait briefly for entries that carry the commit.

When the commit index advances, the core sends each follower that has nothing new an
AppendEntries without entries that only tells it the new commit index. Under load the next
batch's entries follow within a few milliseconds (the clients answered by this commit send
their next writes) and carry the commit index too, so the commit-only message doubled the
AppendEntries per batch, and their answers, on both sides.

So the pipeline holds a Ready's commit-only AppendEntries, one per follower (a newer one
replaces an older one: its commit index is at least as high). An AppendEntries with entries to
that follower, whose commit index is at least the held one's, supersedes it and the held one is
dropped; otherwise it leaves after ``COMMIT_HOLD_SECONDS``. A follower therefore learns a
commit index at most that much later than before (its applies, weak reads and ``min_index``
reads wait at most that long more), far below one heartbeat (the tick). Dropping an
AppendEntries is safe in Raft (the network may lose any message); the core counted an empty
one as no entries in flight, and a probe held here still leaves within the bound.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from graft.driver.clock import DelayedCall, ReactorTime
from graft.raft.messages import AppendEntries, Message

# Longest a commit-only AppendEntries waits for entries to carry its commit index: above the
# usual gap between a commit and the next batch under load, well below a tick (35 ms default).
COMMIT_HOLD_SECONDS = 0.005


class CommitHold:
    """Holds commit-only AppendEntries per follower until superseded or due."""

    def __init__(
        self,
        clock: ReactorTime,
        send: Callable[[Sequence[Message]], None],
        delay: float = COMMIT_HOLD_SECONDS,
    ) -> None:
        self._clock = clock
        self._send = send
        self._delay = delay
        self._held: dict[str, AppendEntries] = {}
        self._due: DelayedCall | None = None

    def carried(self, sent: Sequence[Message]) -> list[Message]:
        """``sent`` (AppendEntries with entries) is about to leave: drop the held messages they
        carry the commit of, and return the held ones they do not (to send first, in order)."""
        held = self._held
        if not held:
            return []
        first: list[Message] = []
        for message in sent:
            old = held.get(message.to)
            if old is not None and isinstance(message, AppendEntries):
                del held[message.to]
                if message.term != old.term or message.commit < old.commit:
                    first.append(old)  # not carried: it leaves now, before the newer message
        if not held:
            self._cancel()
        return first

    def hold(self, messages: Sequence[Message]) -> list[Message]:
        """Hold the commit-only AppendEntries among ``messages``; return the others, in order."""
        rest: list[Message] = []
        for message in messages:
            if isinstance(message, AppendEntries) and not message.entries:
                self._held[message.to] = message
            else:
                rest.append(message)
        if self._held and self._due is None:
            self._due = self._clock.callLater(self._delay, self._flush)
        return rest

    def _flush(self) -> None:
        self._due = None
        held, self._held = list(self._held.values()), {}
        self._send(held)

    def _cancel(self) -> None:
        if self._due is not None:
            if self._due.active():
                self._due.cancel()
            self._due = None

    def stop(self) -> None:
        self._cancel()
        self._held = {}
