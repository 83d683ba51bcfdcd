"""Checkers for values decoded from msgpack, compiled once from type annotations.

A checker takes a decoded value and the name of the place it came from, and returns the value
in its Python form or raises ProtocolError naming that place. Supported annotations: int, bool,
str, bytes, float, None, ``X | None``, ``list[X]``, ``dict[str, X]`` and ``Any`` (any value
msgpack can carry). bool is never accepted for int: msgpack keeps them apart and so do we.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from typing import Any

from graft.wire.errors import ProtocolError

Checker = Callable[[Any, str], Any]

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
    """Accept only the plain types msgpack decodes to (no extension types, no timestamps)."""
    tp = type(value)
    if value is None or tp in (int, bool, str, bytes, float):
        return value
    if tp is list:
        for i, item in enumerate(value):
            check_any(item, f"{where}[{i}]")
        return value
    if tp is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise ProtocolError(f"{where}: map keys must be strings")
            check_any(item, f"{where}.{key}")
        return value
    raise ProtocolError(f"{where}: unsupported value of type {tp.__name__}")


def compile_checker(annotation: Any) -> Checker:
    """Build the checker for one annotation; raises TypeError for an unsupported one."""
    if annotation is Any:
        return check_any
    if annotation is None or annotation is type(None):
        return _none
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
