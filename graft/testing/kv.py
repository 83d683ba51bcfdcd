"""Request bodies for the kv state machine (graft.fsm.kv), shared by the unit tests, process
tests and benchmarks."""

from __future__ import annotations

import json


def put(key: str, value: str) -> bytes:
    return json.dumps({"op": "put", "key": key, "value": value}).encode()


def get(key: str) -> bytes:
    return json.dumps({"op": "get", "key": key}).encode()


def delete(key: str) -> bytes:
    return json.dumps({"op": "delete", "key": key}).encode()


def refused_put(key: str) -> bytes:
    """A put the kv FSM refuses (it has no value): committed as rejected, 422 fsm_error, and
    ``key`` is never stored."""
    return json.dumps({"op": "put", "key": key}).encode()
