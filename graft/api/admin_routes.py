"""The administration routes of the API: membership, leadership, snapshots, shutdown, reload
and the replica consistency check (graft.api.admin parses their bodies). Every one but reading the
membership needs the admin role; each runs under ADMIN_TIMEOUT_S, not the command timeout."""

# twisted.web is untyped; its calls are checked by the tests.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.web.resource import IResource
from twisted.web.server import Request

from graft.api.admin import (
    ADMIN_TIMEOUT_S,
    node_id,
    parse_new_address,
    parse_new_member,
    parse_transfer_target,
)
from graft.api.auth import Role
from graft.api.deadline import within
from graft.api.responses import write_json
from graft.api.serving import ApiBase, routes, served
from graft.api.snapshot_download import SnapshotResource
from graft.api.views import members_document
from graft.errors import NotFound, Timeout


class AdminRoutes(ApiBase):
    """Part of GraftApi: the routes under /cluster and /shutdown."""

    app = routes

    # -- cluster administration ------------------------------------------------------------

    @routes.route("/cluster/members", methods=["GET"], endpoint="members")
    @served("members", Role.READ)
    async def members(self, request: Request) -> bytes:
        return write_json(request, 200, members_document(self._backend.members()))

    @routes.route("/cluster/members", methods=["POST"], endpoint="add_member")
    @served("add_member", Role.ADMIN)
    async def add_member(self, request: Request) -> bytes:
        member = parse_new_member(self._body(request))
        add = self._backend.add_non_voter if member.non_voter else self._backend.add_member
        document = await self._administer(
            lambda: add(member.node_id, member.host, member.p2p_port, member.api_port),
            f"adding {member.node_id}",
            "it may still be catching up and be promoted later: check `graft members list` "
            "before retrying",
        )
        return write_json(request, 200, members_document(document))

    @routes.route("/cluster/members/<string:member>", methods=["DELETE"], endpoint="remove_member")
    @served("remove_member", Role.ADMIN)
    async def remove_member(self, request: Request, member: str) -> bytes:
        target = node_id(member, "the member")
        document = await self._administer(
            lambda: self._backend.remove_member(target),
            f"removing {target}",
            "it may still be removed: check `graft members list` before retrying",
        )
        return write_json(request, 200, members_document(document))

    # -- non-voters, promotion, demotion, addresses (graft.driver.member_roles) -------------

    @routes.route(
        "/cluster/members/<string:member>/promote", methods=["POST"], endpoint="promote_member"
    )
    @served("promote_member", Role.ADMIN)
    async def promote_member(self, request: Request, member: str) -> bytes:
        target = node_id(member, "the member")
        document = await self._administer(
            lambda: self._backend.promote_member(target),
            f"promoting {target}",
            "it may still be catching up and be promoted: check `graft members list`",
        )
        return write_json(request, 200, members_document(document))

    @routes.route(
        "/cluster/members/<string:member>/demote", methods=["POST"], endpoint="demote_member"
    )
    @served("demote_member", Role.ADMIN)
    async def demote_member(self, request: Request, member: str) -> bytes:
        target = node_id(member, "the member")
        document = await self._administer(
            lambda: self._backend.demote_member(target),
            f"demoting {target}",
            "it may still be demoted: check `graft members list` before retrying",
        )
        return write_json(request, 200, members_document(document))

    @routes.route("/cluster/members/<string:member>", methods=["PUT"], endpoint="update_member")
    @served("update_member", Role.ADMIN)
    async def update_member(self, request: Request, member: str) -> bytes:
        target = node_id(member, "the member")
        address = parse_new_address(self._body(request))
        document = await self._administer(
            lambda: self._backend.update_member(
                target, address.host, address.p2p_port, address.api_port
            ),
            f"updating {target}'s addresses",
            "the change may still commit: check `graft members list` before retrying",
        )
        return write_json(request, 200, members_document(document))

    @routes.route("/cluster/leader", methods=["POST"], endpoint="transfer_leadership")
    @served("transfer_leadership", Role.ADMIN)
    async def transfer_leadership(self, request: Request) -> bytes:
        target = parse_transfer_target(self._body(request))
        document = await self._administer(
            lambda: self._backend.transfer_leadership(target),
            "the leadership transfer",
            "check `graft status` to see who leads now",
        )
        return write_json(request, 200, document)

    @routes.route("/cluster/snapshot", methods=["POST"], endpoint="take_snapshot")
    @served("take_snapshot", Role.ADMIN)
    async def take_snapshot(self, request: Request) -> bytes:
        document = await self._administer(
            self._backend.take_snapshot,
            "the snapshot",
            "it may still be written: GET /cluster/snapshot shows the latest",
        )
        return write_json(request, 200, document)

    @routes.route("/cluster/snapshot", methods=["GET"], endpoint="download_snapshot")
    @served("download_snapshot", Role.ADMIN)
    async def download_snapshot(self, request: Request) -> IResource:
        latest = self._backend.latest_snapshot()
        if latest is None:
            raise NotFound(
                f"node {self._backend.node_id} has no snapshot yet: take one with "
                "POST /cluster/snapshot (`graft snapshot take`) and retry"
            )
        manifest, data = latest
        try:
            return cast(IResource, SnapshotResource(manifest, data))
        except BaseException:
            data.close()
            raise

    @routes.route("/shutdown", methods=["POST"], endpoint="shutdown")
    @served("shutdown", Role.ADMIN)
    async def shutdown(self, request: Request) -> bytes:
        def stop(_: object) -> None:
            # On the next turn, so the 202 reaches the transport before the node stops.
            self._reactor.callLater(0, self._backend.shutdown)

        request.notifyFinish().addBoth(stop)
        return write_json(request, 202, {"stopping": self._backend.node_id})

    @routes.route("/reload", methods=["POST"], endpoint="reload")
    @served("reload", Role.ADMIN)
    async def reload(self, request: Request) -> bytes:
        """Re-read this node's certificate, key, CA bundle and API tokens (as SIGHUP does);
        new connections and requests use them. Raises ReloadFailed, changing nothing."""
        if self._reload is None:
            raise NotFound(
                f"node {self._backend.node_id} was built without reloading: restart it to "
                "use new certificates or tokens"
            )
        return write_json(request, 200, self._reload())

    # -- the replica consistency check -----------------------------------------------------

    # Admin, not read: each check appends an entry to the log and digests the whole state on
    # every member, so it costs what a snapshot costs.
    @routes.route("/cluster/check", methods=["GET"], endpoint="check")
    @served("check", Role.ADMIN)
    async def check(self, request: Request) -> bytes:
        document = await self._administer(
            self._backend.check_replicas,
            "the replica consistency check",
            "a member may be slow to digest a large state; run it again",
        )
        return write_json(request, 200, document)

    async def _administer(
        self, operation: Callable[[], Deferred[Any]], what: str, then: str
    ) -> Any:
        """Run an administrative operation under ADMIN_TIMEOUT_S instead of the command timeout."""
        seconds = ADMIN_TIMEOUT_S
        return await within(
            maybeDeferred(operation),
            seconds,
            self._reactor,
            lambda: Timeout(f"{what} did not finish within {seconds:g} s: {then}"),
        )
