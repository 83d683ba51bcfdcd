"""``graft status``'s view of a cluster through a GraftClient: the membership as the cluster
knows it, and every member's ``GET /status`` (or why there is none)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from graft.client import GraftClient
from graft.client_errors import ClientError
from graft.origin import url_host


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberStatus:
    """One member's ``GET /status`` answer, or why there is none."""

    node: str
    url: str
    status: Mapping[str, Any] | None = None
    error: str | None = None

    @property
    def reachable(self) -> bool:
        return self.status is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterStatus:
    """``cluster_status``: the membership document and the member it came from
    (None when no member gave one), and each member's status row, voters first."""

    membership: Mapping[str, Any] | None
    asked: str | None
    members: list[MemberStatus]


def status_all(client: GraftClient) -> list[MemberStatus]:
    """GET /status from every member at once; an unreachable member is a row, not an error."""
    return _statuses(client, [(client.name_of(url), url) for url in client.urls])


def cluster_status(client: GraftClient) -> ClusterStatus:
    """The members as the cluster knows them (GET /cluster/members of the first member
    that answers, learners and members added at run time included), then GET /status of
    each at the address the cluster knows. When no member gives the membership, the
    members are the URLs the client was given (``membership`` is then None)."""
    for url in client.urls:
        try:
            document = client.request("GET", url + "/cluster/members").json()
        except (ClientError, ValueError):
            continue
        members = _member_urls(document, url)
        if members is not None:
            # Name the members' URLs in messages by their ids.
            client.names = {**client.names, **{u: n for n, u in members if u is not None}}
            return ClusterStatus(membership=document, asked=url, members=_statuses(client, members))
    return ClusterStatus(
        membership=None,
        asked=None,
        members=_statuses(client, [(client.name_of(url), url) for url in client.urls]),
    )


def _statuses(client: GraftClient, members: Sequence[tuple[str, str | None]]) -> list[MemberStatus]:
    """GET /status of each (node, url) at once; a member without a URL, or unreachable, is
    a row with its error."""

    def one(member: tuple[str, str | None]) -> MemberStatus:
        node, url = member
        if url is None:
            return MemberStatus(
                node=node, url="", error=f"the cluster knows no API address for {node}"
            )
        try:
            answer = client.request("GET", url + "/status").json()
        except ClientError as err:
            return MemberStatus(node=node, url=url, error=err.message)
        except ValueError:
            return MemberStatus(node=node, url=url, error="answered /status with non-JSON")
        if not isinstance(answer, dict):
            return MemberStatus(node=node, url=url, error="answered /status with non-object")
        return MemberStatus(node=node, url=url, status=answer)

    with ThreadPoolExecutor(max_workers=max(1, min(len(members), 16))) as pool:
        return list(pool.map(one, members))


def _member_urls(document: Any, asked: str) -> list[tuple[str, str | None]] | None:
    """(id, API base URL) of each member of a GET /cluster/members answer, voters then
    learners, with the scheme of the URL that answered; None if it is not such an answer."""
    if not isinstance(document, dict):
        return None
    voters, learners = document.get("voters"), document.get("learners", [])
    addresses = document.get("addresses")
    if not isinstance(voters, list) or not voters or not isinstance(learners, list):
        return None
    if not isinstance(addresses, dict):
        return None
    scheme = urllib.parse.urlsplit(asked).scheme or "http"
    members: list[tuple[str, str | None]] = []
    for node in [*voters, *learners]:
        address = addresses.get(node)
        url = None
        if isinstance(address, dict) and isinstance(address.get("api"), int):
            url = f"{scheme}://{url_host(str(address.get('host')))}:{address['api']}"
        members.append((str(node), url))
    return members
