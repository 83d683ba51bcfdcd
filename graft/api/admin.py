"""Cluster administration for the API: the backend it needs, its deadline, and strict parsing of
the request bodies of /cluster/members and /cluster/leader."""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any, Protocol

from graft.api.jsonin import load_json
from graft.driver.port import ClusterAdmin, ClusterBackend
from graft.errors import BadRequest
from graft.ids import NODE_ID_RULE, is_node_id

# Adding a member waits for the learner to catch up (possibly a large snapshot), so the API's
# command timeout would cut it short. Administration gets this deadline instead; the operation
# is not cancelled when it passes, the client only stops waiting. It is longer than the node's
# own catch-up limit (120 s, plus forwarding from a follower), so that the node's more precise
# error ("did not catch up ...") reaches the client rather than a bare 504.
ADMIN_TIMEOUT_S = 150.0

_HOST_NAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
    r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*$"
)


class AdminBackend(ClusterBackend, ClusterAdmin, Protocol):
    """What the API is served over: a node that answers requests and administers the cluster."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NewMember:
    node_id: str
    host: str
    p2p_port: int
    api_port: int
    non_voter: bool = False  # a read replica: receives the log, never votes


@dataclass(frozen=True, slots=True, kw_only=True)
class NewAddress:
    """A member's new advertised addresses; a port that is None keeps the current one."""

    host: str
    p2p_port: int | None
    api_port: int | None


def node_id(value: Any, where: str) -> str:
    """A member id as the config allows it, or BadRequest."""
    if not is_node_id(value):
        raise BadRequest(f"{where} {_show(value)} is not a node id: expected {NODE_ID_RULE}")
    return value


def parse_new_member(body: bytes) -> NewMember:
    """``{"id", "host", "ports": {"p2p", "api"}}``, optionally ``"non_voter": true``, and
    nothing else."""
    document = _json_object(body, 'the member, e.g. {"id": "n4", "host": "10.0.0.4", ...}')
    _only_keys(document, {"id", "host", "ports", "non_voter"}, "the member")
    non_voter = document.get("non_voter", False)
    if not isinstance(non_voter, bool):
        raise BadRequest(f'"non_voter" {_show(non_voter)} is not true or false')
    for key in ("id", "host", "ports"):
        if key not in document:
            raise BadRequest(f'the member has no "{key}": send {{"id", "host", "ports"}}')
    host = document["host"]
    if not isinstance(host, str) or not _valid_host(host):
        raise BadRequest(f'"host" {_show(host)} is not a host name or IP address')
    ports = document["ports"]
    if not isinstance(ports, dict):
        raise BadRequest(f'"ports" {_show(ports)} is not an object: send {{"p2p": N, "api": N}}')
    _only_keys(ports, {"p2p", "api"}, '"ports"')
    p2p = _port(ports, "p2p")
    api = _port(ports, "api")
    if p2p == api:
        raise BadRequest(f"ports.p2p and ports.api are both {p2p}: a node needs two ports")
    return NewMember(
        node_id=node_id(document["id"], '"id"'),
        host=host,
        p2p_port=p2p,
        api_port=api,
        non_voter=non_voter,
    )


def parse_new_address(body: bytes) -> NewAddress:
    """``{"host", "ports": {"p2p", "api"}}``; "ports" and either port may be left out (the
    member keeps that port). Nothing else."""
    document = _json_object(body, 'the new address, e.g. {"host": "10.0.0.9"}')
    _only_keys(document, {"host", "ports"}, "the new address")
    if "host" not in document:
        raise BadRequest('the new address has no "host": send {"host", "ports": {"p2p", "api"}}')
    host = document["host"]
    if not isinstance(host, str) or not _valid_host(host):
        raise BadRequest(f'"host" {_show(host)} is not a host name or IP address')
    ports = document.get("ports", {})
    if not isinstance(ports, dict):
        raise BadRequest(f'"ports" {_show(ports)} is not an object: send {{"p2p": N, "api": N}}')
    _only_keys(ports, {"p2p", "api"}, '"ports"')
    p2p = _port(ports, "p2p") if "p2p" in ports else None
    api = _port(ports, "api") if "api" in ports else None
    if p2p is not None and p2p == api:
        raise BadRequest(f"ports.p2p and ports.api are both {p2p}: a node needs two ports")
    return NewAddress(host=host, p2p_port=p2p, api_port=api)


def parse_transfer_target(body: bytes) -> str | None:
    """An empty body, ``{}`` or ``{"id": null}``: any voter; ``{"id": "n2"}``: that one."""
    if not body.strip():
        return None
    document = _json_object(body, 'an optional target, e.g. {"id": "n2"}')
    _only_keys(document, {"id"}, "the transfer request")
    target = document.get("id")
    return None if target is None else node_id(target, '"id"')


def _json_object(body: bytes, expected: str) -> dict[str, Any]:
    try:
        document = load_json(body, "the body")
    except ValueError:  # includes UnicodeDecodeError
        raise BadRequest(f"the body is not JSON: send {expected}") from None
    if not isinstance(document, dict):
        raise BadRequest(f"the body is not a JSON object: send {expected}")
    return document


def _only_keys(document: dict[str, Any], allowed: set[str], what: str) -> None:
    unknown = sorted(set(document) - allowed)
    if unknown:
        raise BadRequest(
            f"{what} has unknown keys {', '.join(map(json.dumps, unknown))}: "
            f"it takes only {', '.join(sorted(allowed))}"
        )


def _port(ports: dict[str, Any], key: str) -> int:
    if key not in ports:
        raise BadRequest(f'"ports" has no "{key}": send {{"p2p": N, "api": N}}')
    value = ports[key]
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise BadRequest(f"ports.{key} {_show(value)} is not a port: expected 1 to 65535")
    return value


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return bool(_HOST_NAME.match(host))
    return True


def _show(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."
