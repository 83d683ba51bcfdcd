"""Commands and queries of the kv state machine (graft.fsm.kv), as the tests send them."""

from __future__ import annotations

import json


def put(key: str, value: str) -> bytes:
    return json.dumps({"op": "put", "key": key, "value": value}).encode()


def get(key: str) -> bytes:
    return json.dumps({"op": "get", "key": key}).encode()


def delete(key: str) -> bytes:
    return json.dumps({"op": "delete", "key": key}).encode()
