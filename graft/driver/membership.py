# mypy: disable-error-code="no-untyped-call"
"""Membership: the address book, adding and removing members, handing leadership over.

The operations run on the leader (forwarded there from a follower) as coroutines that wait
one tick at a time for the core: for a new member to catch up, for a change to commit, for
leadership to move.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from graft.driver.clock import DelayedCall, ReactorTime
from graft.driver.forwarding import Forwarder, as_is, members_from_wire
from graft.driver.lifecycle import Lifecycle, Scheduler
from graft.driver.outcomes import timed_out
from graft.driver.peers import PeerPort
from graft.driver.port import MemberList
from graft.driver.settings import DriverSettings
from graft.errors import BadRequest, MemberUnreachable, NoLeader, NotFound, Timeout
from graft.origin import url_host
from graft.raft.errors import MembershipChangeRefused, NotLeader, ProposalDropped
from graft.raft.node import RaftNode
from graft.raft.ready import Role
from graft.raft.types import MemberAddress, Membership
from graft.waiters import ProposalWaiters
from graft.wire.commands import ADMIN_ADD_MEMBER, ADMIN_REMOVE_MEMBER, ADMIN_TRANSFER_LEADERSHIP

log = Logger(namespace="graft.node")


class MembershipManager:
    def __init__(
        self,
        *,
        raft: RaftNode,
        clock: ReactorTime,
        peers: PeerPort,
        proposals: ProposalWaiters,
        forwarder: Forwarder,
        pipeline: Scheduler,
        lifecycle: Lifecycle,
        settings: DriverSettings,
    ) -> None:
        self._raft = raft
        self._clock = clock
        self._peers = peers
        self._proposals = proposals
        self._forwarder = forwarder
        self._pipeline = pipeline
        self._lifecycle = lifecycle
        self._settings = settings
        self._static_addresses = dict(settings.static_addresses)
        self.membership = raft.membership  # as this driver last adopted it from the core
        self._api_urls = dict(settings.api_urls)
        self._forget_timer: DelayedCall | None = None
        self._promoting: set[str] = set()  # new members promoted in the background

    def stop(self) -> None:
        if self._forget_timer is not None and self._forget_timer.active():
            self._forget_timer.cancel()

    # -- the address book ------------------------------------------------------------------

    def api_url(self, node_id: str) -> str | None:
        return self._api_urls.get(node_id)

    def api_members(self) -> list[str]:
        """The members whose API URL this node knows."""
        return list(self._api_urls)

    def address_of(self, node_id: str) -> MemberAddress | None:
        return self.membership.address_of(node_id) or self._static_addresses.get(node_id)

    def follow_core(self) -> None:
        """After a Ready: adopt the core's membership if it changed."""
        if self._raft.membership != self.membership:
            self.on_membership(self._raft.membership)

    def on_membership(self, membership: Membership) -> None:
        """The core adopted a new membership (on append, as the thesis says): dial new members,
        drop removed ones, and learn their API addresses for redirects."""
        old = self.membership
        departed = {
            m: a
            for m in old.members - membership.members
            if (a := old.address_of(m) or self._static_addresses.get(m)) is not None
        }
        self.membership = membership
        addresses = {m: a for m in membership.members if (a := self.address_of(m)) is not None}
        scheme = self._settings.api_scheme
        self._api_urls = {m: _api_url(scheme, a) for m, a in addresses.items()}
        if (me := self.address_of(self._raft.id)) is not None:
            addresses[self._raft.id] = me
        log.info(
            "membership is now voters {voters}, learners {learners}, non-voters {non_voters}",
            voters=",".join(sorted(membership.voters)),
            learners=",".join(sorted(membership.learners - membership.non_voters)) or "-",
            non_voters=",".join(sorted(membership.non_voters)) or "-",
        )
        # Keep talking to departed members for a while: the answer to the request that removed
        # one may still have to travel over its connection.
        self._peers.update_peers({**departed, **addresses})
        self.admit_while_joining()
        if departed:
            self._forget_timer = self._clock.callLater(
                2 * self._settings.election, self._forget_departed
            )

    def peer_addresses(self) -> dict[str, MemberAddress]:
        """The peer address book: this node and the members of the membership the core
        recovered from the log and snapshot (or, in a fresh data dir, the bootstrap one), never
        the config file's other peers. An address comes from the membership, else from the
        file for a member the cluster was created with (those are in the file by definition)."""
        book = {m: a for m in self.membership.members if (a := self.address_of(m)) is not None}
        me = self._static_addresses.get(self._raft.id) or self.address_of(self._raft.id)
        if me is not None:  # where this node listens: its own file says
            book[self._raft.id] = me
        return book

    def admit_while_joining(self) -> None:
        """A node that knows no membership yet (joining with a fresh data dir) lets the
        cluster's members connect, so the leader can send it the log that names them; once the
        core has a membership, only its members may connect (those whose address it does not
        know, from a log written before addresses were recorded, on their own connections)."""
        members = self.membership.members
        unknown = members - self.peer_addresses().keys()
        self._peers.admit_unlisted(not members, unknown)

    def _forget_departed(self) -> None:
        if self._lifecycle.stopping:
            return
        members = self.membership.members | {self._raft.id}
        self._peers.update_peers({m: a for m in members if (a := self.address_of(m)) is not None})

    def members(self) -> MemberList:
        m = self.membership
        return MemberList(
            leader=self._raft.leader,
            voters=tuple(sorted(m.voters)),
            learners=tuple(sorted(m.learners)),
            non_voters=tuple(sorted(m.non_voters)),
            addresses={
                node: a for node in sorted(m.members) if (a := self.address_of(node)) is not None
            },
        )

    # -- operations (on the leader) ----------------------------------------------------------

    def add_member(
        self, node_id: str, host: str, p2p_port: int, api_port: int
    ) -> Deferred[MemberList]:
        args = {"id": node_id, "host": host, "p2p": p2p_port, "api": api_port}
        return self._forwarder.on_leader(
            ADMIN_ADD_MEMBER, args, lambda: self.add_here(args), members_from_wire
        )

    def remove_member(self, node_id: str) -> Deferred[MemberList]:
        args = {"id": node_id}
        d = self._forwarder.on_leader(
            ADMIN_REMOVE_MEMBER, args, lambda: self.remove_here(args), members_from_wire
        )
        return d.addErrback(self._removed_after_all, node_id)

    def _removed_after_all(self, failure: Failure, node_id: str) -> Deferred[MemberList]:
        """A removal that timed out may be done all the same: the usual case is a leader
        removing itself, which hands over and then loses the answer with its connections. A
        member that stays learns the removal from the log, so it waits for it to commit, up to
        the command timeout, and answers as the leader would have. The removed member cannot
        tell (it is sent no more entries) and keeps the timeout."""
        if not failure.check(Timeout) or node_id == self._raft.id:
            return fail(failure)
        return Deferred.fromCoroutine(self._await_removal(node_id, failure))

    async def _await_removal(self, node_id: str, failure: Failure) -> MemberList:
        deadline = self._clock.seconds() + self._settings.command_timeout
        while not self._lifecycle.stopping and self._clock.seconds() <= deadline:
            if node_id not in self._raft.membership.members and self._raft.membership_committed:
                log.info(
                    "the answer to removing {id} was lost, but the removal is committed",
                    id=node_id,
                )
                return self.members()
            await self._tick()
        failure.raiseException()

    def transfer_leadership(self, target: str | None) -> Deferred[dict[str, Any]]:
        args = {"id": target}
        return self._forwarder.on_leader(
            ADMIN_TRANSFER_LEADERSHIP, args, lambda: self.transfer_here(args), as_is
        )

    def add_here(self, args: dict[str, Any]) -> Deferred[MemberList]:
        return Deferred.fromCoroutine(
            self._add(str(args["id"]), str(args["host"]), int(args["p2p"]), int(args["api"]))
        )

    def remove_here(self, args: dict[str, Any]) -> Deferred[MemberList]:
        return Deferred.fromCoroutine(self._remove(str(args["id"])))

    def transfer_here(self, args: dict[str, Any]) -> Deferred[dict[str, Any]]:
        target = args.get("id")
        return Deferred.fromCoroutine(self._transfer(None if target is None else str(target)))

    async def _add(self, node_id: str, host: str, p2p_port: int, api_port: int) -> MemberList:
        m = self.membership
        if node_id in m.voters:
            raise BadRequest(f"{node_id} is already a voting member; nothing to do")
        if node_id in m.non_voters:
            raise BadRequest(
                f"{node_id} is a non-voter; make it a voter with `graft members promote {node_id}`"
            )
        address = MemberAddress(host=host, p2p_port=p2p_port, api_port=api_port)
        for other in m.members:
            a = self.address_of(other)
            if other != node_id and a is not None and (a.host, a.p2p_port) == (host, p2p_port):
                raise BadRequest(
                    f"{host}:{p2p_port} is already the peer address of {other}; "
                    "give the new member its own address"
                )
        if node_id not in m.learners:
            log.info(
                "adding {id} at {host}:{port} as a learner", id=node_id, host=host, port=p2p_port
            )
            await self._change(
                replace(
                    m,
                    learners=m.learners | {node_id},
                    addresses=_with_address(m.addresses, node_id, address),
                )
            )
        target = self._raft.status().commit
        log.info("waiting for {id} to catch up to index {target}", id=node_id, target=target)
        catch_up = self._settings.catch_up_timeout
        started = self._clock.seconds()
        deadline = started + catch_up
        while True:
            st = self._raft.status()
            if st.role is not Role.LEADER:
                raise NoLeader(
                    f"leadership moved while {node_id} was catching up; it stays a learner: "
                    "retry the add to promote it"
                )
            progress = st.progress.get(node_id)
            if progress is not None and progress.match >= target:
                break
            if self._out_of_reach(node_id, started):
                self._promote_later(node_id, address, target)
                raise self._unreachable(node_id, address)
            if self._clock.seconds() > deadline:
                match = progress.match if progress is not None else 0
                raise Timeout(
                    f"{node_id} did not catch up within {catch_up:.0f} s (it has "
                    f"{match} of {target}); check it runs and reaches {host}:{p2p_port}. It "
                    "stays a learner: retry the add to promote it, or remove it"
                )
            await self._tick()
        await self._promote(node_id, address)
        return self.members()

    async def _promote(self, node_id: str, address: MemberAddress) -> None:
        m = self.membership
        if node_id not in m.learners or node_id in m.non_voters:
            # Promoted meanwhile (by the background promotion), removed, or made a non-voter,
            # which only an operator's promotion makes a voter.
            return
        log.info("{id} caught up; promoting it to voter", id=node_id)
        await self._change(
            replace(
                m,
                voters=m.voters | {node_id},
                learners=m.learners - {node_id},
                addresses=_with_address(m.addresses, node_id, address),
            )
        )

    def _out_of_reach(self, node_id: str, since: float) -> bool:
        """The new member has had no connection from this leader for the whole grace period
        (member_unreachable_after, 10 s) since ``since``."""
        grace = min(self._settings.member_unreachable_after, self._settings.catch_up_timeout)
        if node_id in self._peers.connected_peers():
            return False
        return self._clock.seconds() - since >= grace

    def _unreachable(self, node_id: str, address: MemberAddress) -> MemberUnreachable:
        reason = self._peers.dial_error(node_id) or "no connection to it yet"
        me = self._raft.id
        return MemberUnreachable(
            f"{node_id} was added as a learner; the leader {me} cannot reach it at "
            f"{url_host(address.host)}:{address.p2p_port} ({reason}); it is promoted once it "
            f"is running and caught up (while {me} leads; else run the add again). Start "
            f"{node_id} with its own config, or `graft members remove {node_id}`"
        )

    def _promote_later(self, node_id: str, address: MemberAddress, target: int) -> None:
        """Go on waiting for an unreachable new member in the background, and promote it once
        it caught up: while this node leads, the member is still a learner, and the node
        runs. At most one such wait per member."""
        if node_id in self._promoting:
            return
        self._promoting.add(node_id)

        async def wait() -> None:
            try:
                while self._raft.role is Role.LEADER and not self._lifecycle.stopping:
                    if node_id not in self.membership.learners - self.membership.non_voters:
                        return
                    progress = self._raft.status().progress.get(node_id)
                    if progress is not None and progress.match >= target:
                        await self._promote(node_id, address)
                        log.info("{id} is running and caught up: promoted", id=node_id)
                        return
                    await self._tick()
            finally:
                self._promoting.discard(node_id)

        d: Deferred[None] = Deferred.fromCoroutine(wait())
        d.addErrback(lambda f: log.warn("{id} not promoted: {e}", id=node_id, e=f.value))

    async def _remove(self, node_id: str) -> MemberList:
        m = self.membership
        if node_id not in m.members:
            raise NotFound(f"{node_id} is not a member (members: {', '.join(sorted(m.members))})")
        if node_id == self._raft.id:
            # The leader removes itself by handing over first; the new leader removes it.
            await self._transfer(None)
            result: MemberList = await self.remove_member(node_id)
            return result
        if m.voters == {node_id}:
            raise BadRequest("cannot remove the last voter; add another member first")
        address = self.address_of(node_id)
        kept = tuple((n, a) for n, a in m.addresses if n != node_id)
        await self._change(
            replace(
                m,
                voters=m.voters - {node_id},
                learners=m.learners - {node_id},
                non_voters=m.non_voters - {node_id},
                addresses=kept,
            )
        )
        log.info("removed {id} ({address})", id=node_id, address=address)
        return self.members()

    async def _change(self, membership: Membership) -> None:
        """Propose a membership and wait until it is committed and applied here."""
        membership = self.with_known_addresses(membership)
        deadline = self._clock.seconds() + self._settings.command_timeout
        while True:
            if self._raft.role is not Role.LEADER:
                raise NoLeader("leadership moved during the membership change; retry it")
            try:
                index = self._raft.propose_membership(membership)
                break
            except MembershipChangeRefused as e:
                # The previous change or the term's first commit is still on its way.
                if self._clock.seconds() > deadline:
                    raise BadRequest(f"the membership change was refused: {e}") from None
            except ProposalDropped:
                if self._clock.seconds() > deadline:
                    raise NoLeader("leadership is being transferred; retry shortly") from None
            await self._tick()
        waiter = self._proposals.add(
            index, self._raft.term, self._settings.command_timeout, timed_out
        )
        self._pipeline.schedule()
        await waiter

    def record_addresses(self) -> None:
        """A new leader whose membership lacks a member's address (a cluster's first leader:
        the membership it was created with comes from the config file) writes it into the log
        with every address it knows, so no node needs its file's peers again."""
        if self.with_known_addresses(self._raft.membership) == self._raft.membership:
            return
        d: Deferred[None] = Deferred.fromCoroutine(self._propose_addresses())
        d.addErrback(lambda f: log.info("membership addresses not recorded: {e}", e=f.value))

    async def _propose_addresses(self) -> None:
        deadline = self._clock.seconds() + self._settings.command_timeout
        while self._raft.role is Role.LEADER and not self._lifecycle.stopping:
            # Built from the core's membership in the turn it is proposed, so that it can never
            # undo a change committed meanwhile.
            current = self._raft.membership
            target = self.with_known_addresses(current)
            if target == current:
                return
            try:
                self._raft.propose_membership(target)
            except NotLeader:
                return
            except (MembershipChangeRefused, ProposalDropped):
                if self._clock.seconds() > deadline:
                    raise
                await self._tick()
                continue
            log.info("recording the members' addresses in the log")
            self._pipeline.schedule()
            return

    def with_known_addresses(self, membership: Membership) -> Membership:
        """The membership with every member's address this node knows, so that the log alone
        tells each node where its peers are (a joining node's file lists only itself, and a
        restarted node never takes members from its file)."""
        addresses = dict(membership.addresses)
        for member in membership.members - addresses.keys():
            if (a := self.address_of(member)) is not None:
                addresses[member] = a
        return replace(
            membership, addresses=tuple(sorted(addresses.items(), key=lambda pair: pair[0]))
        )

    async def _transfer(self, target: str | None, *, patient: bool = True) -> dict[str, Any]:
        """Hand leadership to ``target`` (the most caught-up voter if None) and answer who
        leads then. ``patient``: once stepped down, wait up to the command timeout more to hear
        who leads (an operator's request); else give up at two election timeouts (a stopping
        node's hand-over, which must not hold its stop)."""
        st = self._raft.status()
        me = self._raft.id
        voters = sorted(v for v in self.membership.voters if v != me)
        if target is None:
            if not voters:
                raise BadRequest("there is no other voter to hand leadership to; add one first")
            # The most caught-up voter needs the least catching up before TimeoutNow.
            target = max(voters, key=lambda v: st.progress[v].match if v in st.progress else -1)
        if target == me:
            return {"leader": me, "term": self._raft.term}
        if target not in voters:
            raise BadRequest(f"{target} is not a voting member; choose one of {', '.join(voters)}")
        log.info("transferring leadership to {target}", target=target)
        try:
            self._raft.transfer_leadership(target)
        except NotLeader:
            raise NoLeader("this node is no longer the leader; retry") from None
        self._pipeline.schedule()
        election = self._settings.election
        deadline = self._clock.seconds() + 2 * election
        # Once this node has stepped down the move happened, or an election is on: it waits
        # longer to hear who leads (a loaded new leader may be slow to say so) than to step down.
        heard_by = deadline + (self._settings.command_timeout if patient else 0.0)
        while (now := self._clock.seconds()) <= deadline or (
            now <= heard_by and self._raft.role is not Role.LEADER
        ):
            await self._tick()
            if self._raft.role is not Role.LEADER and self._raft.leader is not None:
                if self._raft.leader != target:
                    log.info(
                        "leadership went to {leader}, not {target}",
                        leader=self._raft.leader,
                        target=target,
                    )
                return {"leader": self._raft.leader, "term": self._raft.term}
        raise Timeout(
            f"leadership did not move to {target} within {2 * election:.1f} s; "
            f"{self._raft.leader or 'no node'} leads. Check {target} is healthy and retry"
        )

    def hand_over(self) -> Deferred[None]:
        """Before stopping: a leader hands leadership to the most caught-up voter, so stopping
        it costs the cluster no election timeout. Best effort; never fails."""
        if self._raft.role is not Role.LEADER or len(self.membership.voters) < 2:
            return succeed(None)
        d: Deferred[Any] = Deferred.fromCoroutine(self._transfer(None, patient=False))

        def done(result: object) -> None:
            if isinstance(result, Failure):
                log.warn("could not hand over leadership before stopping: {e}", e=result.value)

        d.addBoth(done)
        return d

    def _tick(self) -> Deferred[None]:
        """Wait one tick: the coroutines poll the core once per tick."""
        d: Deferred[None] = Deferred()
        self._clock.callLater(self._settings.tick_seconds, d.callback, None)
        return d


def _api_url(scheme: str, address: MemberAddress) -> str:
    return f"{scheme}://{url_host(address.host)}:{address.api_port}"


def _with_address(
    addresses: tuple[tuple[str, MemberAddress], ...], node: str, address: MemberAddress
) -> tuple[tuple[str, MemberAddress], ...]:
    kept = [(n, a) for n, a in addresses if n != node]
    return tuple(sorted([*kept, (node, address)], key=lambda pair: pair[0]))
