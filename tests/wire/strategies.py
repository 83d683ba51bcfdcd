"""Hypothesis strategies for every frame the codec carries, derived from the message classes."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from hypothesis import strategies as st

from graft.raft.messages import MESSAGE_TYPES
from graft.raft.types import Entry, EntryKind, MemberAddress, Membership, SnapshotMeta
from graft.wire import Answer, Ask, ErrorAnswer, Hello

node_ids = st.text(min_size=1, max_size=12)
counters = st.integers(min_value=0, max_value=2**64 - 1)

entries = st.builds(
    Entry,
    index=counters,
    term=counters,
    kind=st.sampled_from(EntryKind),
    data=st.binary(max_size=64),
)
ports = st.integers(min_value=1, max_value=65535)
addresses = st.builds(MemberAddress, host=st.text(max_size=20), p2p_port=ports, api_port=ports)
memberships = st.builds(
    Membership,
    voters=st.frozensets(node_ids, max_size=5),
    learners=st.frozensets(node_ids, max_size=3),
    addresses=st.dictionaries(node_ids, addresses, max_size=3).map(
        lambda d: tuple(sorted(d.items(), key=lambda pair: pair[0]))
    ),
)
snapshot_metas = st.builds(SnapshotMeta, index=counters, term=counters, membership=memberships)

_BY_TYPE: dict[Any, st.SearchStrategy[Any]] = {
    int: counters,
    bool: st.booleans(),
    str: node_ids,
    bytes: st.binary(max_size=64),
    Membership: memberships,
    SnapshotMeta: snapshot_metas,
    tuple[Entry, ...]: st.lists(entries, max_size=20).map(tuple),
}


def _for(annotation: Any) -> st.SearchStrategy[Any]:
    if annotation in _BY_TYPE:
        return _BY_TYPE[annotation]
    inner = [a for a in typing.get_args(annotation) if a is not type(None)]
    return st.none() | _BY_TYPE[inner[0]]


def _message_strategy(cls: type) -> st.SearchStrategy[Any]:
    hints = typing.get_type_hints(cls)
    return st.builds(cls, **{f.name: _for(hints[f.name]) for f in dataclasses.fields(cls)})


messages = st.one_of([_message_strategy(cls) for cls in MESSAGE_TYPES])

plain_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
request_ids = st.integers(min_value=0, max_value=2**63 - 1)

hellos = st.builds(
    Hello,
    version=st.integers(0, 5),
    cluster=st.text(max_size=10),
    node_id=node_ids,
    settings=st.none() | st.dictionaries(st.text(max_size=12), st.text(max_size=20), max_size=5),
)
forward_queries = st.builds(
    Ask,
    id=request_ids,
    command=st.just("forward_query"),
    args=st.fixed_dictionaries(
        {
            "query": st.binary(max_size=30),
            "consistency": st.sampled_from(["default", "strong", "weak"]),
            "min_index": st.none() | st.integers(0, 2**40),
        }
    ),
)
forward_submits = st.builds(
    Ask,
    id=request_ids,
    command=st.just("forward_submit"),
    args=st.fixed_dictionaries({"commands": st.lists(st.binary(max_size=20), max_size=5)}),
)
answers = st.builds(
    Answer, id=request_ids, result=st.dictionaries(st.text(max_size=6), plain_values, max_size=4)
)
errors = st.builds(
    ErrorAnswer, id=request_ids, code=st.text(max_size=12), message=st.text(max_size=30)
)

after_hello_frames = messages | forward_queries | forward_submits | answers | errors
