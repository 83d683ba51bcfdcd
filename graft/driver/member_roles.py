# mypy: disable-error-code="no-untyped-call"
"""Membership operations beyond add and remove: non-voters (read replicas), promotion,
demotion, and a member's new advertised addresses.

A non-voter is a learner the membership marks to stay one (graft.raft.types.Membership
``non_voters``): it receives the log and serves reads, and no leader promotes it on its own.
``promote`` makes a learner (non-voter or joining) a voter once it has caught up; ``demote``
makes a voter a non-voter. Each is one membership entry through the log, one change at a
time as the core requires. ``update`` changes a member's advertised addresses in the
replicated membership: every node re-dials the member at the new address once the entry
reaches it (graft.transport re-dials a moved peer), and API redirects follow.

The operations run on the leader (forwarded there from a follower) with the helpers of
graft.driver.membership's MembershipManager.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from graft.driver.forwarding import members_from_wire
from graft.driver.membership import MembershipManager, _with_address
from graft.driver.port import MemberList
from graft.errors import BadRequest, NoLeader, NotFound, Timeout
from graft.origin import url_host
from graft.raft.ready import Role
from graft.raft.types import MemberAddress
from graft.wire.commands import (
    ADMIN_ADD_NON_VOTER,
    ADMIN_DEMOTE_MEMBER,
    ADMIN_PROMOTE_MEMBER,
    ADMIN_UPDATE_MEMBER,
)

log = Logger(namespace="graft.node")


class MemberRoles:
    def __init__(self, manager: MembershipManager) -> None:
        self._m = manager

    # -- the operations (forwarded to the leader) ------------------------------------------

    def add_non_voter(
        self, node_id: str, host: str, p2p_port: int, api_port: int
    ) -> Deferred[MemberList]:
        args = {"id": node_id, "host": host, "p2p": p2p_port, "api": api_port}
        return self._m._forwarder.on_leader(
            ADMIN_ADD_NON_VOTER, args, lambda: self.add_non_voter_here(args), members_from_wire
        )

    def promote_member(self, node_id: str) -> Deferred[MemberList]:
        args = {"id": node_id}
        return self._m._forwarder.on_leader(
            ADMIN_PROMOTE_MEMBER, args, lambda: self.promote_here(args), members_from_wire
        )

    def demote_member(self, node_id: str) -> Deferred[MemberList]:
        args = {"id": node_id}
        return self._m._forwarder.on_leader(
            ADMIN_DEMOTE_MEMBER, args, lambda: self.demote_here(args), members_from_wire
        )

    def update_member(
        self, node_id: str, host: str, p2p_port: int | None, api_port: int | None
    ) -> Deferred[MemberList]:
        """``None`` for a port keeps the one the membership has."""
        args = {"id": node_id, "host": host, "p2p": p2p_port, "api": api_port}
        return self._m._forwarder.on_leader(
            ADMIN_UPDATE_MEMBER, args, lambda: self.update_here(args), members_from_wire
        )

    # -- on the leader -----------------------------------------------------------------------

    def add_non_voter_here(self, args: dict[str, Any]) -> Deferred[MemberList]:
        address = _address(args)
        return Deferred.fromCoroutine(self._add_non_voter(str(args["id"]), address))

    def promote_here(self, args: dict[str, Any]) -> Deferred[MemberList]:
        return Deferred.fromCoroutine(self._promote(str(args["id"])))

    def demote_here(self, args: dict[str, Any]) -> Deferred[MemberList]:
        return Deferred.fromCoroutine(self._demote(str(args["id"])))

    def update_here(self, args: dict[str, Any]) -> Deferred[MemberList]:
        return Deferred.fromCoroutine(
            self._update(str(args["id"]), str(args["host"]), args["p2p"], args["api"])
        )

    async def _add_non_voter(self, node_id: str, address: MemberAddress) -> MemberList:
        m = self._m.membership
        if node_id in m.voters:
            raise BadRequest(
                f"{node_id} is a voter; make it a non-voter with `graft members demote {node_id}`"
            )
        if node_id in m.non_voters:
            raise BadRequest(f"{node_id} is already a non-voter; nothing to do")
        self._check_address_free(node_id, address)
        # A learner still on its way to become a voter is marked to stay a learner (the
        # background promotion of graft.driver.membership checks the mark).
        log.info(
            "adding {id} at {host}:{port} as a non-voter",
            id=node_id,
            host=address.host,
            port=address.p2p_port,
        )
        await self._m._change(
            replace(
                m,
                learners=m.learners | {node_id},
                non_voters=m.non_voters | {node_id},
                addresses=_with_address(m.addresses, node_id, address),
            )
        )
        return self._m.members()

    async def _promote(self, node_id: str) -> MemberList:
        m = self._m.membership
        if node_id in m.voters:
            raise BadRequest(f"{node_id} is already a voter; nothing to do")
        if node_id not in m.learners:
            raise NotFound(f"{node_id} is not a member (members: {_names(m.members)})")
        await self._caught_up(node_id)
        m = self._m.membership  # as it is now, after the wait
        if node_id not in m.learners:
            raise BadRequest(f"{node_id} is no longer a learner; check `graft members list`")
        log.info("promoting {id} to voter", id=node_id)
        await self._m._change(
            replace(
                m,
                voters=m.voters | {node_id},
                learners=m.learners - {node_id},
                non_voters=m.non_voters - {node_id},
            )
        )
        return self._m.members()

    async def _caught_up(self, node_id: str) -> None:
        """Wait until the learner holds what is committed now: a voter that lags would
        weaken the quorum the moment it counts."""
        target = self._m._raft.status().commit
        timeout = self._m._settings.catch_up_timeout
        deadline = self._m._clock.seconds() + timeout
        while True:
            st = self._m._raft.status()
            if st.role is not Role.LEADER:
                raise NoLeader(f"leadership moved while {node_id} was catching up; retry")
            progress = st.progress.get(node_id)
            if progress is not None and progress.match >= target:
                return
            if self._m._clock.seconds() > deadline:
                match = progress.match if progress is not None else 0
                raise Timeout(
                    f"{node_id} did not catch up within {timeout:.0f} s (it has {match} of "
                    f"{target}); check it runs and is reachable, then retry the promotion"
                )
            await self._m._tick()

    async def _demote(self, node_id: str) -> MemberList:
        m = self._m.membership
        if node_id in m.non_voters:
            raise BadRequest(f"{node_id} is already a non-voter; nothing to do")
        if node_id not in m.voters:
            if node_id in m.learners:
                raise BadRequest(
                    f"{node_id} is a learner on its way to become a voter; make it a non-voter "
                    f"with `graft members add {node_id} --non-voter`"
                )
            raise NotFound(f"{node_id} is not a member (members: {_names(m.members)})")
        if m.voters == {node_id}:
            raise BadRequest("cannot demote the last voter; promote or add another first")
        if node_id == self._m._raft.id:
            # As for a removal: hand over first, and the new leader demotes this node.
            await self._m._transfer(None)
            result: MemberList = await self.demote_member(node_id)
            return result
        log.info("demoting {id} to non-voter", id=node_id)
        await self._m._change(
            replace(
                m,
                voters=m.voters - {node_id},
                learners=m.learners | {node_id},
                non_voters=m.non_voters | {node_id},
            )
        )
        return self._m.members()

    async def _update(
        self, node_id: str, host: str, p2p_port: int | None, api_port: int | None
    ) -> MemberList:
        m = self._m.membership
        if node_id not in m.members:
            raise NotFound(f"{node_id} is not a member (members: {_names(m.members)})")
        old = self._m.address_of(node_id)
        if old is None and (p2p_port is None or api_port is None):
            raise BadRequest(f"{node_id}'s ports are not known here: give both ports")
        p2p = p2p_port if p2p_port is not None else old.p2p_port if old else 0
        api = api_port if api_port is not None else old.api_port if old else 0
        if p2p == api:
            raise BadRequest(f"the p2p and api ports would both be {p2p}: a node needs two ports")
        address = MemberAddress(host=host, p2p_port=p2p, api_port=api)
        if old == address:
            raise BadRequest(
                f"{node_id} already advertises {url_host(address.host)}:{address.p2p_port} "
                f"(api {address.api_port}); nothing to do"
            )
        self._check_address_free(node_id, address)
        log.info(
            "{id} now advertised at {host}:{port} (api {api})",
            id=node_id,
            host=address.host,
            port=address.p2p_port,
            api=address.api_port,
        )
        # with_known_addresses (in _change) fills in only missing addresses: this one wins.
        await self._m._change(replace(m, addresses=_with_address(m.addresses, node_id, address)))
        return self._m.members()

    def _check_address_free(self, node_id: str, address: MemberAddress) -> None:
        wanted = (address.host, address.p2p_port)
        for other in self._m.membership.members:
            a = self._m.address_of(other)
            if other != node_id and a is not None and (a.host, a.p2p_port) == wanted:
                raise BadRequest(
                    f"{url_host(address.host)}:{address.p2p_port} is already the peer address "
                    f"of {other}; give {node_id} its own address"
                )


def _address(args: dict[str, Any]) -> MemberAddress:
    return MemberAddress(
        host=str(args["host"]), p2p_port=int(args["p2p"]), api_port=int(args["api"])
    )


def _names(ids: frozenset[str]) -> str:
    return ", ".join(sorted(ids))
