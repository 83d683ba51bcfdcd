"""Checkers for values decoded from msgpack, compiled once from type annotations.

A checker takes a decoded value and the name of the place it came from, and returns the value
in its Python form or raises ProtocolError naming that place. Supported annotations: int, bool,
str, bytes, float, None, ``X | None``, ``list[X]``, ``dict[str, X]`` and ``Any`` (any value
msgpack can carry, nested at most MAX_DEPTH deep). bool is never accepted for int: msgpack keeps
them apart and so do we. ``int`` is a count, index, term, offset or size, so it is never
negative: a command that needs a signed integer declares it as ``Any`` and checks it itself.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from typing import Any

from graft.wire.errors import ProtocolError

Checker = Callable[[Any, str], Any]

# How deep lists and maps may nest in a value of type Any (a forwarded command's results, an
# admin request's arguments). Frames are checked against it before decoding
# (graft.wire.scan); values this side sends are checked against it too, so that it never sends
# what its peer would refuse.
MAX_DEPTH = 32

_SCALARS: dict[Any, str] = {
    int: "an integer",
    bool: "a boolean",
    str: "a string",
    bytes: "bytes",
    float: "a float",
}


def _scalar(tp: type, what: str) -> Checker:
    def check(value: Any, where: str) -> Any:
        if type(value) is not tp:
            raise ProtocolError(f"{where}: expected {what}, got {type(value).__name__}")
        return value

    return check


def _count(value: Any, where: str) -> Any:
    if type(value) is not int:
        raise ProtocolError(f"{where}: expected an integer, got {type(value).__name__}")
    if value < 0:
        raise ProtocolError(f"{where}: expected a non-negative integer, got {value}")
    return value


def _none(value: Any, where: str) -> Any:
    if value is not None:
        raise ProtocolError(f"{where}: expected nil, got {type(value).__name__}")
    return None


def _optional(inner: Checker) -> Checker:
    def check(value: Any, where: str) -> Any:
        return None if value is None else inner(value, where)

    return check


def _list_of(inner: Checker) -> Checker:
    def check(value: Any, where: str) -> Any:
        if type(value) is not list:
            raise ProtocolError(f"{where}: expected a list, got {type(value).__name__}")
        return [inner(item, f"{where}[{i}]") for i, item in enumerate(value)]

    return check


def _dict_of(inner: Checker) -> Checker:
    def check(value: Any, where: str) -> Any:
        if type(value) is not dict:
            raise ProtocolError(f"{where}: expected a map, got {type(value).__name__}")
        out = {}
        for key, item in value.items():
            if type(key) is not str:
                raise ProtocolError(f"{where}: map keys must be strings")
            out[key] = inner(item, f"{where}.{key}")
        return out

    return check


def check_any(value: Any, where: str) -> Any:
    """Accept only the plain types msgpack decodes to (no extension types, no timestamps),
    nested at most MAX_DEPTH deep. Iterative: the depth limit is checked, not a RecursionError
    caught."""
    scalars = (int, bool, str, bytes, float)
    pending: list[tuple[Any, str, int]] = [(value, where, 1)]
    while pending:
        item, place, depth = pending.pop()
        tp = type(item)
        if item is None or tp in scalars:
            continue
        if tp is not list and tp is not dict:
            raise ProtocolError(f"{place}: unsupported value of type {tp.__name__}")
        if depth > MAX_DEPTH:
            raise ProtocolError(f"{place}: nested deeper than {MAX_DEPTH} levels")
        if tp is list:
            pending.extend((x, f"{place}[{i}]", depth + 1) for i, x in enumerate(item))
            continue
        for key, x in item.items():
            if type(key) is not str:
                raise ProtocolError(f"{place}: map keys must be strings")
            pending.append((x, f"{place}.{key}", depth + 1))
    return value


def describe(value: Any) -> str:
    """A short account of a received value for an error message: small scalars as they are,
    anything else by type and size (repr of a large or deeply nested value is costly)."""
    tp = type(value)
    if value is None or tp in (int, bool, float):
        text = repr(value)
        return text if len(text) <= 40 else f"an integer of {len(text)} digits"
    if tp in (str, bytes) and len(value) <= 40:
        return repr(value)
    if tp in (str, bytes, list, dict):
        return f"{tp.__name__} of length {len(value)}"
    return tp.__name__


def compile_checker(annotation: Any) -> Checker:
    """Build the checker for one annotation; raises TypeError for an unsupported one."""
    if annotation is Any:
        return check_any
    if annotation is None or annotation is type(None):
        return _none
    if annotation is int:
        return _count
    if annotation in _SCALARS:
        return _scalar(annotation, _SCALARS[annotation])
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (types.UnionType, typing.Union):
        others = [a for a in args if a is not type(None)]
        if len(others) == 1 and len(args) == 2:
            return _optional(compile_checker(others[0]))
    elif origin is list and len(args) == 1:
        return _list_of(compile_checker(args[0]))
    elif origin is dict and len(args) == 2 and args[0] is str:
        return _dict_of(compile_checker(args[1]))
    raise TypeError(
        f"the wire schema cannot carry {annotation!r}; use the types in graft.wire.schema"
    )


def compile_fields(fields: typing.Mapping[str, Any]) -> Callable[[Any, str], dict[str, Any]]:
    """A checker for a map with exactly these keys (missing or extra keys are an error)."""
    checkers = {name: compile_checker(annotation) for name, annotation in fields.items()}
    names = frozenset(checkers)

    def check(value: Any, where: str) -> dict[str, Any]:
        if type(value) is not dict:
            raise ProtocolError(f"{where}: expected a map, got {type(value).__name__}")
        if value.keys() != names:
            missing = sorted(names - value.keys())
            extra = sorted(str(k) for k in value.keys() - names)
            raise ProtocolError(f"{where}: missing keys {missing}, unexpected keys {extra}")
        return {name: checkers[name](value[name], f"{where}.{name}") for name in checkers}

    return check
