"""Client sessions in the simulation: clients that number their commands and resend them, and
every replica's session table, run by the product's own code (graft.sessions).

``SessionModel`` is the replicas' side: each node applies the session operations it commits
through ``graft.sessions.machine.apply_operation`` over its own ``SessionTable``, with the
entry's stamp for time (the simulation stamps with its tick count), and keeps the table with
its snapshots and restarts. It checks, on every replica:

- exactly once: no (session, sequence) reaches the state machine twice, and no client command
  (its payload) is applied twice under any session;
- the same tables: two nodes that snapshot the same index hold the same session table;
- the same answers: a duplicate is answered with the first result of its command.

``SessionClients`` is the clients' side: a few clients register sessions and number their
commands; answers reach them only sometimes (as after a timeout or a dropped connection), so
they resend, under the same (session, sequence), what they saw no answer to. A session
refused as expired (410) makes a client register again and send again, under the new
session, only the commands that refusal proves were not applied; a forgotten sequence (409)
is an unknown outcome and is never resent.

Session traffic replaces the content of the schedule's client writes, never adds to them or
draws from another part's stream: a seed's schedule (what is proposed when, and every fault)
is the one it had without sessions, only the entries' data differ (docs/testing.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from graft.raft.rng import Rng
from graft.raft.types import Entry, EntryKind, NodeId
from graft.sessions import envelope
from graft.sessions.machine import Applied, apply_operation
from graft.sessions.table import SessionSettings, SessionTable
from graft.stamp import SESSION_VERSION, Stamp, decode_any, encode_stamped
from graft.testing.simulation.checker import Violation

# Small bounds, so that expiry, eviction and forgotten results happen within a schedule.
SIM_SETTINGS = SessionSettings(idle_ns=400 * 10**6, max_sessions=3, max_results=6)
TICK_NS = 10**6  # a tick of the schedule in stamp time
CLIENTS = 4
# A client that saw no answer to its registration for this many ticks registers again.
REGISTER_AGAIN_TICKS = 60


@dataclass(slots=True)
class _Replica:
    table: SessionTable = field(default_factory=lambda: SessionTable(SIM_SETTINGS))
    pairs: set[tuple[str, int]] = field(default_factory=set)
    payloads: set[bytes] = field(default_factory=set)


def is_session_entry(entry: Entry) -> bool:
    return entry.kind is EntryKind.NORMAL and entry.data[:1] == bytes([SESSION_VERSION])


class SessionModel:
    """Every replica's session table and what it applied (see the module's text)."""

    def __init__(self) -> None:
        self._replicas: dict[NodeId, _Replica] = {}
        # Snapshot index -> the table's bytes and what was applied up to it.
        self._snapshots: dict[int, tuple[bytes, frozenset[tuple[str, int]], frozenset[bytes]]] = {}
        self._first_answer: dict[int, Applied] = {}  # index -> the first replica's answer
        self.clients: SessionClients | None = None
        self.applied_commands = 0
        self.duplicates = 0
        self.refusals = 0

    def _replica(self, nid: NodeId) -> _Replica:
        return self._replicas.setdefault(nid, _Replica())

    def apply(self, nid: NodeId, entry: Entry) -> None:
        """A committed entry applied on ``nid`` (the caller applies in log order)."""
        if not is_session_entry(entry):
            return
        replica = self._replica(nid)
        stamp, body, _ = decode_any(entry.data)
        operation = envelope.decode(body)

        def state_machine(command: bytes, index: int, _stamp: Stamp | None) -> bytes:
            assert isinstance(operation, envelope.NumberedCommand)
            pair = (operation.session, operation.sequence)
            if pair in replica.pairs:
                raise Violation(
                    f"exactly once: {nid} applied session {pair[0]} sequence {pair[1]} a "
                    f"second time (entry {index})"
                )
            if command in replica.payloads:
                raise Violation(
                    f"exactly once: {nid} applied client command {command!r} a second time "
                    f"(entry {index}, as session {pair[0]} sequence {pair[1]})"
                )
            replica.pairs.add(pair)
            replica.payloads.add(command)
            return b"ok " + command

        answer = apply_operation(replica.table, body, entry.index, entry.term, stamp, state_machine)
        first = self._first_answer.setdefault(entry.index, answer)
        if first != answer:
            raise Violation(
                f"session answers differ at entry {entry.index}: {nid} answered {answer}, "
                f"another replica {first}"
            )
        if first is answer:  # the first replica to apply it: count, and tell the client
            if answer.duplicate:
                self.duplicates += 1
            elif answer.refusal is not None:
                self.refusals += 1
            elif isinstance(operation, envelope.NumberedCommand):
                self.applied_commands += 1
            if self.clients is not None:
                self.clients.answered(entry.data, answer)

    def snapshot_taken(self, nid: NodeId, index: int) -> None:
        replica = self._replica(nid)
        saved = (replica.table.encode(), frozenset(replica.pairs), frozenset(replica.payloads))
        earlier = self._snapshots.setdefault(index, saved)
        if earlier[0] != saved[0]:
            raise Violation(f"session tables differ: {nid}'s at {index} is not another node's")

    def restored(self, nid: NodeId, index: int) -> None:
        """``nid``'s state machine starts again from its snapshot at ``index`` (0: none)."""
        saved = self._snapshots.get(index) if index > 0 else None
        if saved is None:
            self._replicas[nid] = _Replica()
            return
        table, pairs, payloads = saved
        self._replicas[nid] = _Replica(SessionTable.decode(table), set(pairs), set(payloads))


@dataclass(slots=True)
class _Sent:
    """One operation a client proposed: registration (sequence 0) or a numbered command."""

    client: int
    session: str | None
    sequence: int
    payload: bytes
    first: bool  # the first time this (session, sequence) was sent


@dataclass(slots=True)
class _Client:
    session: str | None = None
    registering_since: int | None = None
    next_sequence: int = 1
    unanswered: dict[int, bytes] = field(default_factory=dict)  # sequence -> payload
    answers: dict[int, Applied] = field(default_factory=dict)  # sequence -> first answer
    waiting: list[bytes] = field(default_factory=list)  # payloads to send under a session


class SessionClients:
    """Clients that register, number and resend (see the module's text)."""

    def __init__(self, seed: int, rng: Rng) -> None:
        self.seed = seed
        self.rng = rng
        self.clients = [_Client() for _ in range(CLIENTS)]
        self._sent: dict[bytes, _Sent] = {}
        self._commands = 0
        self.resent = 0

    def wrap(self, datas: list[bytes], now: int) -> list[bytes]:
        """The schedule's writes, as many, as session operations (or left as they are)."""
        return [self._operation(data, now) for data in datas]

    def _operation(self, data: bytes, now: int) -> bytes:
        rng = self.rng
        if rng.random() < 0.2:
            return data  # a client without a session
        k = rng.randrange(0, len(self.clients))
        client = self.clients[k]
        stamp = Stamp(now * TICK_NS, rng.randrange(0, 2**64))
        if client.session is None:
            if client.registering_since is not None and (
                now - client.registering_since < REGISTER_AGAIN_TICKS
            ):
                return data
            client.registering_since = now
            return self._send(stamp, envelope.encode_register(), _Sent(k, None, 0, b"", True))
        if client.unanswered and rng.random() < 0.4:
            # No answer seen: send it again, the same (session, sequence).
            sequence = sorted(client.unanswered)[rng.randrange(0, len(client.unanswered))]
            payload = client.unanswered[sequence]
            self.resent += 1
            first = False
        else:
            if client.waiting:
                payload = client.waiting.pop(0)
            else:
                self._commands += 1
                payload = f"{self.seed}:c{self._commands}".encode()
            sequence = client.next_sequence
            client.next_sequence += 1
            client.unanswered[sequence] = payload
            first = True
        acked = min(client.unanswered) if client.unanswered else client.next_sequence
        body = envelope.encode_command(client.session, sequence, acked, payload)
        return self._send(stamp, body, _Sent(k, client.session, sequence, payload, first))

    def _send(self, stamp: Stamp, body: bytes, sent: _Sent) -> bytes:
        data = encode_stamped(stamp, body, SESSION_VERSION)
        self._sent[data] = sent
        return data

    def answered(self, data: bytes, answer: Applied) -> None:
        """An operation was applied; its client sees the answer only sometimes."""
        sent = self._sent.get(data)
        if sent is None or self.rng.random() < 0.3:
            return  # not a client's, or the answer was lost (a timeout, a dropped connection)
        client = self.clients[sent.client]
        if sent.sequence == 0:
            if client.session is None and answer.refusal is None:
                client.session = str(json.loads(answer.output)["session"])
                client.registering_since = None
                client.next_sequence = 1
                client.unanswered.clear()
                client.answers.clear()
            return
        if sent.session != client.session or sent.sequence not in client.unanswered:
            return  # an old session's, or answered already
        if answer.refusal is None:
            first = client.answers.setdefault(sent.sequence, answer)
            if (first.output, first.error, first.index) != (
                answer.output,
                answer.error,
                answer.index,
            ):
                raise Violation(
                    f"a resent command was answered {answer}, its first answer was {first}"
                )
            del client.unanswered[sent.sequence]
            return
        payload = client.unanswered.pop(sent.sequence)
        if answer.refusal == "session_expired":
            if sent.first:
                # Its only send was refused: never applied, so it may go under a new session.
                client.waiting.append(payload)
            client.session = None
        # sequence_forgotten, or expired after an unanswered send: an unknown outcome.
