"""Replicated objects: a plain Python class as Graft's state machine (docs/library.md).

    class Counter:
        def __init__(self) -> None:
            self.value = 0

        @command
        def add(self, amount: int) -> int:
            if amount <= 0:
                raise Rejected("amount must be positive")
            self.value += amount
            return self.value

        @query
        def get(self) -> int:
            return self.value

``ReplicatedObject(Counter())`` is a StateMachine (graft.fsm): a command is the method's name
and arguments as canonical JSON, written to the log and applied on every replica; its answer is
the method's return value, as JSON. ``Replica`` is the caller's side: ``replica.add(5)`` returns
a Deferred that fires with the value ``add`` returned on the node that applied it (or fails with
Rejected, the same on every replica). Nothing is ever pickled: arguments, results and the state
are JSON values (dicts with string keys, lists, strings, integers, finite floats, booleans,
None), checked before anything is sent.

Rules for the class (checked where they can be):
- a command must be deterministic: the same state and arguments give the same new state and
  result on every node. It must not read clocks, random numbers, the environment or files;
  ``@command`` refuses a method whose code names the modules ``time``, ``random``,
  ``datetime``, ``uuid``, ``secrets`` or ``os`` (a best-effort check: it cannot follow calls);
- a command refuses by raising ``Rejected(message)`` before it changes anything; any other
  exception is a bug, and the node stops rather than let replicas diverge (as for any FSM);
- the state is what ``__getstate__`` returns when the class defines it (and ``__setstate__``
  restores it), else all the instance's attributes; it must be JSON data. Snapshots encode it
  on the reactor thread, so this fits states of up to a few megabytes.
"""

from __future__ import annotations

import dis
import inspect
import json
import math
import re
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO, Protocol, TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from graft.driver.port import CommandResult, Consistency, QueryResult
from graft.errors import BadRequest
from graft.fsm.base import CommandRejected, CorruptSnapshot, QueryRejected

__all__ = [
    "Rejected",
    "Replica",
    "ReplicatedObject",
    "command",
    "query",
]

F = TypeVar("F", bound=Callable[..., Any])

_KIND = "__graft_kind__"  # the attribute the decorators set on a method
_SNAPSHOT_FORMAT = "graft.object/1"
# Decoded input is refused past these, the same on every node: the JSON decoder recurses per
# nesting level (running out of stack depends on the node), and int() has a per-interpreter
# digit limit (PYTHONINTMAXSTRDIGITS).
MAX_DEPTH = 32
MAX_INT_DIGITS = 100
# Modules whose use inside a command would make replicas differ.
_INT_BOUND = 10**MAX_INT_DIGITS
_NONDETERMINISTIC = frozenset({"time", "random", "datetime", "uuid", "secrets", "os"})


class Rejected(Exception):
    """A command or query refuses, deterministically: raised inside the method, it reaches the
    caller with the same message on every replica, and the state must be unchanged."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _Malformed(ValueError):
    """Input that is not a call of a declared method: refused before anything runs."""


class NotJSON(TypeError):
    """A value that is not JSON data (an argument, a result, the state)."""


# --- declaring ---------------------------------------------------------------------------------


def command(method: F) -> F:
    """Mark a method as a command: it changes the state, so every call goes through the log and
    runs on every replica. Refuses (TypeError) a method that names a clock or random module."""
    _check_deterministic(method)
    setattr(method, _KIND, "command")
    return method


def query(method: F) -> F:
    """Mark a method as a query: it reads the state, at the consistency the caller asks
    (``replica.get(consistency="strong")``), and must not change it."""
    if "consistency" in inspect.signature(method).parameters:
        raise TypeError(f"{method.__qualname__}: 'consistency' is reserved for the caller")
    setattr(method, _KIND, "query")
    return method


def _check_deterministic(method: Callable[..., Any]) -> None:
    names = {
        i.argval
        for i in dis.get_instructions(method)
        if i.opname in ("LOAD_GLOBAL", "LOAD_NAME", "IMPORT_NAME")
    }
    used = sorted(str(n).split(".")[0] for n in names if str(n).split(".")[0] in _NONDETERMINISTIC)
    if used:
        raise TypeError(
            f"{method.__qualname__}: a @command must be deterministic but uses {', '.join(used)}; "
            "pass the time or random value in as an argument instead"
        )


def methods_of(cls: type) -> dict[str, tuple[str, inspect.Signature]]:
    """The class's declared methods: name -> (kind, signature without self)."""
    found: dict[str, tuple[str, inspect.Signature]] = {}
    for name in dir(cls):
        member = getattr(cls, name, None)
        kind = getattr(member, _KIND, None)
        if kind is not None and callable(member):
            signature = inspect.signature(member)
            params = list(signature.parameters.values())[1:]  # without self
            found[name] = (kind, signature.replace(parameters=params))
    return found


# --- JSON, strictly ----------------------------------------------------------------------------


def check_json(value: Any, what: str, depth: int = 0) -> None:
    """NotJSON unless ``value`` is JSON data within MAX_DEPTH: json.dumps alone would turn int
    keys into strings and tuples into lists without a word."""
    if depth > MAX_DEPTH:
        raise NotJSON(f"{what} is nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, (bool, str)):
        return
    if isinstance(value, int):
        if abs(value) >= _INT_BOUND:
            raise NotJSON(f"{what} holds an integer of more than {MAX_INT_DIGITS} digits")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NotJSON(f"{what} holds {value}, which JSON cannot carry")
        return
    if isinstance(value, list):
        for item in value:
            check_json(item, what, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise NotJSON(f"{what} holds a dict key {key!r}; keys must be strings")
            check_json(item, what, depth + 1)
        return
    raise NotJSON(
        f"{what} holds a {type(value).__name__}; expected JSON data "
        "(dict with str keys, list, str, int, float, bool, None)"
    )


def encode(value: Any) -> bytes:
    """Canonical JSON: the same value gives the same bytes on every node."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8")


def _bounded_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of more than {MAX_INT_DIGITS} digits")
    return int(digits)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_int=_bounded_int, parse_constant=_no_constant)
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def decode(data: bytes) -> Any:
    """Decode JSON from the log or a peer; ValueError for anything malformed or too deep."""
    text = data.decode("utf-8")
    if text.count("[") + text.count("{") > MAX_DEPTH:  # only then: measure the depth
        depth = 0
        for token in _TOKENS.finditer(text):
            mark = token.group()
            if mark in "[{":
                depth += 1
                if depth > MAX_DEPTH:
                    raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
            elif mark in "]}":
                depth -= 1
    return _DECODER.decode(text)


def encode_call(name: str, signature: inspect.Signature, args: Sequence[Any], kwargs: Any) -> bytes:
    """The call as a command: checked against the signature and for JSON data before sending."""
    try:
        signature.bind(*args, **kwargs)
    except TypeError as e:
        raise TypeError(f"{name}(): {e}") from None
    check_json(list(args), f"the arguments of {name}()")
    check_json(dict(kwargs), f"the arguments of {name}()")
    return encode({"method": name, "args": list(args), "kwargs": dict(kwargs)})


# --- the state machine -------------------------------------------------------------------------


class ReplicatedObject:
    """The StateMachine that applies commands to ``obj`` (an instance of a class with
    ``@command`` and ``@query`` methods)."""

    content_type = "application/json"

    def __init__(self, obj: object) -> None:
        self.obj: Any = obj
        self.cls = type(obj)
        self.methods = methods_of(self.cls)
        if not self.methods:
            raise TypeError(f"{self.cls.__qualname__} has no @command or @query method")
        self._custom_state = "__getstate__" in vars(self.cls) and "__setstate__" in vars(self.cls)
        check_json(self._state(), f"the state of {self.cls.__qualname__}")

    @property
    def name(self) -> str:
        """The FSM's name in snapshots: a data dir's snapshot is only restored into the same
        class."""
        return f"graft.replicated:{self.cls.__module__}.{self.cls.__qualname__}"

    def _call(self, data: bytes, kind: str) -> Any:
        """Decode and run one call; _Malformed for anything that is not a call of this kind."""
        try:
            request = decode(data)
        except ValueError as e:  # UnicodeDecodeError is one
            raise _Malformed(f"not a JSON call ({e})") from None
        if not isinstance(request, dict) or set(request) != {"method", "args", "kwargs"}:
            raise _Malformed('expected {"method": name, "args": [...], "kwargs": {...}}')
        name, args, kwargs = request["method"], request["args"], request["kwargs"]
        if not isinstance(name, str) or not isinstance(args, list) or not isinstance(kwargs, dict):
            raise _Malformed("method must be a string, args a list and kwargs an object")
        declared = self.methods.get(name)
        if declared is None or declared[0] != kind:
            raise _Malformed(f"{self.cls.__qualname__} has no @{kind} {name[:60]!r}")
        try:
            declared[1].bind(*args, **kwargs)
        except TypeError as e:
            raise _Malformed(f"{name}(): {e}") from None
        return getattr(self.obj, name)(*args, **kwargs)

    def apply(self, command: bytes, index: int) -> bytes:
        del index
        try:
            result = self._call(command, "command")
        except Rejected as e:
            raise CommandRejected(e.message) from None
        except _Malformed as e:  # hostile input (say, from the HTTP API), before any change
            raise CommandRejected(str(e)) from None
        # Not JSON: a bug in the method; the state has changed, so the node must stop.
        check_json(result, "the result")
        return encode(result)

    def query(self, query: bytes) -> bytes:
        try:
            result = self._call(query, "query")
        except Rejected as e:
            raise QueryRejected(e.message) from None
        except _Malformed as e:
            raise QueryRejected(str(e)) from None
        check_json(result, "the result")
        return encode(result)

    def _state(self) -> Any:
        if self._custom_state:
            return self.obj.__getstate__()
        return dict(vars(self.obj))

    def snapshot(self, sink: BinaryIO) -> None:
        self.begin_snapshot()(sink)

    def begin_snapshot(self) -> Callable[[BinaryIO], None]:
        # Encoded now, on the reactor thread: the object changes in place, so a reference
        # would not pin the state.
        state = self._state()
        check_json(state, f"the state of {self.cls.__qualname__}")
        image = encode({"format": _SNAPSHOT_FORMAT, "class": self.name, "state": state})

        def write(sink: BinaryIO) -> None:
            sink.write(image)

        return write

    def restore(self, source: BinaryIO) -> None:
        try:
            document = decode(source.read())
        except (UnicodeDecodeError, ValueError) as e:
            raise CorruptSnapshot(f"the object snapshot is not valid JSON ({e})") from None
        if not isinstance(document, dict) or document.get("format") != _SNAPSHOT_FORMAT:
            raise CorruptSnapshot(f"not a {_SNAPSHOT_FORMAT} snapshot")
        if document.get("class") != self.name:
            raise CorruptSnapshot(
                f"the snapshot holds a {document.get('class')}, not a {self.name}"
            )
        state = document["state"]
        if self._custom_state:
            self.obj.__setstate__(state)
            return
        if not isinstance(state, dict):
            raise CorruptSnapshot("the snapshot's state is not an object")
        vars(self.obj).clear()
        vars(self.obj).update(state)

    def close(self) -> None:
        pass


# --- the caller's side -------------------------------------------------------------------------


class Backend(Protocol):
    """What a Replica needs of a node (GraftNode and EmbeddedNode have it)."""

    def submit(self, commands: Sequence[bytes]) -> Deferred[list[CommandResult]]: ...

    def query(self, query: bytes, consistency: Consistency) -> Deferred[QueryResult]: ...


def as_consistency(value: Consistency | str) -> Consistency:
    if isinstance(value, Consistency):
        return value
    try:
        return Consistency(value)
    except ValueError:
        raise ValueError(f"consistency {value!r}: expected 'default', 'strong' or 'weak'") from None


class Replica:
    """Call a replicated object's methods through a node: each call returns a Deferred of the
    method's return value. A command fails with Rejected when the method refused, or with the
    node's GraftError (NoLeader, Timeout: the command may or may not have been applied)."""

    def __init__(self, backend: Backend, cls: type) -> None:
        self._backend = backend
        self._methods = methods_of(cls)

    def __getattr__(self, name: str) -> Callable[..., Deferred[Any]]:
        declared = self._methods.get(name)
        if declared is None:
            raise AttributeError(f"no @command or @query method {name!r}")
        kind, signature = declared
        if kind == "command":
            return lambda *args, **kwargs: self._command(name, signature, args, kwargs)
        return lambda *args, consistency=Consistency.DEFAULT, **kwargs: self._query(
            name, signature, args, kwargs, as_consistency(consistency)
        )

    def _command(
        self, name: str, signature: inspect.Signature, args: Sequence[Any], kwargs: Any
    ) -> Deferred[Any]:
        data = encode_call(name, signature, args, kwargs)

        def answer(results: list[CommandResult]) -> Any:
            result = results[0]
            if result.error is not None:
                raise Rejected(result.error)
            return decode(result.output)

        return self._backend.submit([data]).addCallback(answer)

    def _query(
        self,
        name: str,
        signature: inspect.Signature,
        args: Sequence[Any],
        kwargs: Any,
        consistency: Consistency,
    ) -> Deferred[Any]:
        data = encode_call(name, signature, args, kwargs)

        def refused(failure: Failure) -> Failure:
            error = failure.value
            if isinstance(error, BadRequest):
                return Failure(Rejected(error.message))  # type: ignore[no-untyped-call]
            return failure

        d = self._backend.query(data, consistency)
        return d.addCallbacks(lambda result: decode(result.output), refused)
