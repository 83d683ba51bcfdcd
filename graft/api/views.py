"""The JSON documents of GET /status and GET /cluster/members (and of the membership
changes, which answer the new membership), rendered from the driver's typed snapshots."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from graft.driver.port import MemberList, NodeStatus


def status_document(st: NodeStatus) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": st.id,
        "role": st.role,
        "term": st.term,
        "leader": st.leader,
        "leader_api": st.leader_api,
        "commit": st.commit,
        "applied": st.applied,
        "first_index": st.first_index,
        "last_index": st.last_index,
        "snapshot": {"index": st.snapshot_index, "term": st.snapshot_term},
        "members": {
            "voters": list(st.voters),
            "learners": list(st.learners),
            "non_voters": list(st.non_voters),
        },
        "peers_connected": list(st.peers_connected),
    }
    if st.last_check is not None:
        out["last_check"] = st.last_check
    if st.space is not None:
        out["space"] = st.space
    if st.progress is not None:
        out["progress"] = {
            peer: {
                "match": p.match,
                "next": p.next,
                "state": p.state.value,
                "lag": p.lag,
                "active": p.active,
            }
            for peer, p in st.progress.items()
        }
    out.update(_sizes_and_certificate(st))
    return out


def _sizes_and_certificate(st: NodeStatus) -> dict[str, Any]:
    """The keys added for operators (graft status): only those the node knows."""
    out: dict[str, Any] = {}
    if st.log_bytes is not None:
        out["log_bytes"] = st.log_bytes
    if st.fsm_bytes is not None:
        out["fsm_bytes"] = st.fsm_bytes
    if st.certificate_not_after is not None:
        when = datetime.fromtimestamp(st.certificate_not_after, tz=UTC)
        out["certificate"] = {
            "not_after": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "not_after_unix": int(st.certificate_not_after),
        }
    return out


def members_document(members: MemberList) -> dict[str, Any]:
    return {
        "leader": members.leader,
        "voters": list(members.voters),
        "learners": list(members.learners),
        "non_voters": list(members.non_voters),  # learners that stay learners (read replicas)
        "addresses": {
            node: {"host": a.host, "p2p": a.p2p_port, "api": a.api_port}
            for node, a in members.addresses.items()
        },
    }
