"""Example FSM script (a config's `fsm.eval`): a counter and a list, driven by text commands.

Commands (the POST /command body):
    add N        add the integer N to the counter   -> {"counter": new value}
    push TEXT    append TEXT to the list            -> {"length": new length}
Queries (the GET /query body):
    counter                                         -> {"counter": value}
    items                                           -> {"items": [...]}

apply() returns a new state rather than changing the old one, so a refused command leaves the
state untouched; it uses nothing but its arguments, so every replica computes the same thing.

It is total: every input either applies or raises CommandRejected, the same way on every node.
So it checks its input explicitly, before using it: the size of the command, N as at most 18
ASCII digits (int() alone would depend on the node's int_max_str_digits setting) and the
counter within 64 bits, TEXT's length and the number of items. Undecodable bytes become U+FFFD.
"""

import json
import re
from typing import Any

from graft.fsm import CommandRejected, QueryRejected

CONTENT_TYPE = "application/json"

MAX_COMMAND_BYTES = 4096
MAX_TEXT = 1024  # characters of one pushed item
MAX_ITEMS = 10_000
MAX_COUNTER = 2**63 - 1
_AMOUNT = re.compile(r"[+-]?[0-9]{1,18}")


def _answer(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def apply(state: dict[str, Any], command: bytes) -> tuple[dict[str, Any], bytes]:
    if len(command) > MAX_COMMAND_BYTES:
        raise CommandRejected(
            f"the command is {len(command)} bytes; expected at most {MAX_COMMAND_BYTES}"
        )
    verb, _, argument = command.decode("utf-8", errors="replace").strip().partition(" ")
    if verb == "add":
        if _AMOUNT.fullmatch(argument) is None:
            raise CommandRejected(
                f"add: {argument[:40]!r} is not an integer of at most 18 digits; expected 'add N'"
            )
        counter = state["counter"] + int(argument)
        if not -MAX_COUNTER <= counter <= MAX_COUNTER:
            raise CommandRejected(
                f"add: the counter would leave the 64-bit range (|counter| <= {MAX_COUNTER})"
            )
        return {**state, "counter": counter}, _answer({"counter": counter})
    if verb == "push":
        if not argument:
            raise CommandRejected("push: nothing to push; expected 'push TEXT'")
        if len(argument) > MAX_TEXT:
            raise CommandRejected(
                f"push: TEXT is {len(argument)} characters; expected at most {MAX_TEXT}"
            )
        if len(state["items"]) >= MAX_ITEMS:
            raise CommandRejected(f"push: the list is full ({MAX_ITEMS} items)")
        items = [*state["items"], argument]
        return {**state, "items": items}, _answer({"length": len(items)})
    raise CommandRejected(f"unknown command {verb[:40]!r}; expected 'add N' or 'push TEXT'")


def query(state: dict[str, Any], query: bytes) -> bytes:
    name = query.decode("utf-8", errors="replace").strip()
    if name in ("counter", "items"):
        return _answer({name: state[name]})
    raise QueryRejected(f"unknown query {name[:40]!r}; expected 'counter' or 'items'")
