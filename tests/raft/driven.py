"""One RaftNode driven by hand through its public surface (step, tick, ready, advance).

The peers exist only as the messages a test steps in, so a test decides exactly who answers
what and when: the mutation tests (tests/raft/test_mutants_*.py) use this to pin the commit,
vote and read rules down to the boundary cases. Only RaftNode's constructor, step, tick,
has_ready/ready/advance, propose, read_index, lease_read_index, status and the role/term/
leader properties are used, so a reorganisation of the core behind them does not touch it.
"""

from __future__ import annotations

from collections.abc import Iterable
from random import Random
from typing import TypeVar

from graft.raft.config import RaftConfig
from graft.raft.memory import MemoryStorage
from graft.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    Message,
    RequestVote,
    RequestVoteResponse,
)
from graft.raft.node import RaftNode
from graft.raft.ready import Role
from graft.raft.rng import Rng
from graft.raft.types import Entry, Membership

M = TypeVar("M")


class ShortestTimeout:
    """An Rng whose randomized election timeout is always the shortest, election_ticks."""

    def random(self) -> float:
        return 0.0

    def randrange(self, start: int, stop: int) -> int:
        return start


class LongestTimeout:
    """An Rng whose randomized election timeout is always the longest, 2 x election_ticks - 1:
    a follower then spends election_ticks - 1 ticks past its stickiness before campaigning."""

    def random(self) -> float:
        return 0.0

    def randrange(self, start: int, stop: int) -> int:
        return stop - 1


class Driven:
    """A RaftNode with a MemoryStorage "disk"; every Ready is persisted and advanced at once."""

    def __init__(
        self,
        nid: str,
        voters: Iterable[str],
        *,
        learners: Iterable[str] = (),
        storage: MemoryStorage | None = None,
        seed: int = 1,
        rng: Rng | None = None,
        **config: object,
    ) -> None:
        self.storage = storage if storage is not None else MemoryStorage()
        membership = Membership(voters=frozenset(voters), learners=frozenset(learners))
        cfg = RaftConfig(id=nid, bootstrap=membership, **config)  # type: ignore[arg-type]
        self.node = RaftNode(cfg, self.storage, rng if rng is not None else Random(seed))
        self.id = nid
        self.sent: list[Message] = []
        self.reads: dict[bytes, int | None] = {}
        self.applied: list[Entry] = []
        self.flush()

    # -- the driver loop --------------------------------------------------------------------

    def flush(self) -> None:
        while self.node.has_ready():
            rd = self.node.ready()
            if rd.hard_state is not None:
                self.storage.set_hard_state(rd.hard_state)
            if rd.entries:
                self.storage.append(rd.entries)
            self.sent.extend(rd.messages)
            self.applied.extend(rd.committed_entries)
            for rs in rd.read_states:
                self.reads[rs.context] = rs.index
            self.node.advance(rd)

    def step(self, msg: Message) -> None:
        self.node.step(msg)
        self.flush()

    def tick(self, n: int = 1) -> None:
        for _ in range(n):
            self.node.tick()
            self.flush()

    def take(self, kind: type[M], to: str | None = None) -> list[M]:
        """Remove and return the sent messages of ``kind`` (to ``to``)."""
        out: list[M] = []
        kept: list[Message] = []
        for m in self.sent:
            if isinstance(m, kind) and (to is None or m.to == to):
                out.append(m)
            else:
                kept.append(m)
        self.sent = kept
        return out

    # -- state, through status() ------------------------------------------------------------

    @property
    def commit(self) -> int:
        return self.node.status().commit

    @property
    def last_index(self) -> int:
        return self.node.status().last_index

    @property
    def role(self) -> Role:
        return self.node.role

    # -- scripted peers ---------------------------------------------------------------------

    def campaign(self) -> list[RequestVote]:
        """Tick until this node asks for (pre-)votes; returns the requests."""
        for _ in range(100):
            self.tick()
            asked = self.take(RequestVote)
            if asked:
                return asked
        raise AssertionError(f"{self.id} never campaigned")

    def grant(self, requests: Iterable[RequestVote], granted: bool = True) -> None:
        for rv in requests:
            # A pre-vote refusal carries the voter's own term (here: this node's), not the one
            # asked for.
            term = rv.term if granted or not rv.pre_vote else self.node.term
            self.step(
                RequestVoteResponse(
                    term=term, sender=rv.to, to=self.id, granted=granted, pre_vote=rv.pre_vote
                )
            )

    def elect(self, voters_answering: Iterable[str] | None = None) -> None:
        """Campaign and win with the grants of ``voters_answering`` (default: every peer),
        then have them acknowledge the leader's first entry, so it commits in its term."""
        asked = self.campaign()
        answering = set(voters_answering) if voters_answering is not None else None
        for _ in range(2):  # pre-vote, then the vote
            if self.role is Role.LEADER:
                break
            self.grant(rv for rv in asked if answering is None or rv.to in answering)
            asked = self.take(RequestVote)
        assert self.role is Role.LEADER, f"{self.id} did not win: {self.role}"
        self.ack_appends(answering)

    def ack_appends(self, peers: Iterable[str] | None = None) -> None:
        """Every peer in ``peers`` (default: all) accepts every AppendEntries sent to it."""
        allowed = set(peers) if peers is not None else None
        for ae in self.take(AppendEntries):
            if allowed is not None and ae.to not in allowed:
                continue
            self.step(self.accept(ae))

    def accept(self, ae: AppendEntries) -> AppendEntriesResponse:
        return AppendEntriesResponse(
            term=ae.term,
            sender=ae.to,
            to=self.id,
            success=True,
            match_index=ae.prev_index + len(ae.entries),
        )

    def answer_heartbeats(self, peers: Iterable[str]) -> None:
        """The named peers answer every heartbeat sent to them (the others stay silent)."""
        wanted = set(peers)
        for hb in self.take(Heartbeat):
            if hb.to in wanted:
                self.step(HeartbeatResponse(term=hb.term, sender=hb.to, to=self.id, seq=hb.seq))
