"""Example FSM script (the seed's `fsm.eval`): a counter and a list, driven by text commands.

Commands (the POST /command body):
    add N        add the integer N to the counter   -> {"counter": new value}
    push TEXT    append TEXT to the list            -> {"length": new length}
Queries (the GET /query body):
    counter                                         -> {"counter": value}
    items                                           -> {"items": [...]}

apply() returns a new state rather than changing the old one, so a refused command leaves the
state untouched; it uses nothing but its arguments, so every replica computes the same thing.
"""

import json
from typing import Any

from graft.fsm import CommandRejected, QueryRejected

CONTENT_TYPE = "application/json"


def _answer(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def apply(state: dict[str, Any], command: bytes) -> tuple[dict[str, Any], bytes]:
    verb, _, argument = command.decode("utf-8", errors="replace").strip().partition(" ")
    if verb == "add":
        try:
            amount = int(argument)
        except ValueError:
            raise CommandRejected(
                f"add: {argument!r} is not an integer; expected 'add N'"
            ) from None
        counter = state["counter"] + amount
        return {**state, "counter": counter}, _answer({"counter": counter})
    if verb == "push":
        if not argument:
            raise CommandRejected("push: nothing to push; expected 'push TEXT'")
        items = [*state["items"], argument]
        return {**state, "items": items}, _answer({"length": len(items)})
    raise CommandRejected(f"unknown command {verb!r}; expected 'add N' or 'push TEXT'")


def query(state: dict[str, Any], query: bytes) -> bytes:
    name = query.decode("utf-8", errors="replace").strip()
    if name in ("counter", "items"):
        return _answer({name: state[name]})
    raise QueryRejected(f"unknown query {name!r}; expected 'counter' or 'items'")
