"""The seed's FSM bindings: a state machine written as two small Python files.

The config names them, relative to the config file's directory::

    fsm:
      init: conf/fsm_init.py
      eval: conf/fsm_eval.py

Both are loaded in-process as Python modules when the node starts (no process per command).

The ``init`` file defines::

    def init() -> State                       # the initial state

The ``eval`` file defines::

    def apply(state: State, command: bytes) -> tuple[State, bytes | str]   # required
    def query(state: State, query: bytes) -> bytes | str                   # optional
    CONTENT_TYPE = "application/json"         # optional; default application/octet-stream

``apply`` returns the new state and the command's answer (a str is sent as UTF-8). It must be
deterministic (no clock, no randomness, no I/O) and must not change ``state`` in place: it
returns a new value, so a refused command leaves the old state as it was, and a snapshot being
written in a worker thread (``begin_snapshot`` keeps a reference to the state, not a copy)
still sees the state as it was when the snapshot began. To refuse a command
deterministically, raise ``graft.fsm.CommandRejected(message)``; to refuse a query, raise
``graft.fsm.QueryRejected(message)``. Any other exception is a bug in the script and stops the
node. Without ``query`` every query is refused.

The scripts are trusted code: they run in the node's process, with no bound on their time or
memory. They must be total: check each command (encoding, size, nesting depth, the range of
numbers) before using it, and refuse a bad one with CommandRejected, the same way on every
node; never rely on catching RecursionError or on settings that may differ between nodes
(such as the int() digit limit). ``conf/fsm_eval.py`` is an example.

The state must be JSON data (dicts with string keys, lists, strings, numbers, booleans, None):
snapshots store it as JSON, and a restored replica must behave like one that replayed the log.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO

from graft.config import ConfigError
from graft.fsm.base import CorruptSnapshot, QueryRejected

__all__ = ["ScriptStateMachine"]

_SNAPSHOT_FORMAT = "graft.script/1"
_instances = itertools.count(1)


def _load(option: str, path: Path, base_dir: Path, instance: int) -> ModuleType:
    if not path.is_file():
        raise ConfigError(
            f"fsm.{option}: file {path} not found; expected a Python file "
            f"(paths are relative to the config file's directory {base_dir})"
        )
    # A name of its own per instance, so two FSMs never share the module's globals.
    name = f"graft_fsm_script_{instance}_{option}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"fsm.{option}: {path} cannot be loaded as Python; expected a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(name, None)
        raise ConfigError(
            f"fsm.{option}: {path} failed to load ({type(e).__name__}: {e}); fix the script"
        ) from None
    return module


def _function(module: ModuleType, option: str, name: str, signature: str) -> Callable[..., Any]:
    function: Callable[..., Any] | None = getattr(module, name, None)
    if function is None or not callable(function):
        raise ConfigError(
            f"fsm.{option}: {module.__file__} defines no {name}(); expected {signature}"
        )
    return function


def _as_bytes(value: Any, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError(
        f"the FSM script's {what} returned {type(value).__name__}; expected bytes or str"
    )


class ScriptStateMachine:
    """Runs the seed's ``init``/``eval`` Python files (see the module docstring)."""

    def __init__(
        self, *, init: str, eval: str, data_dir: Path | None = None, base_dir: Path
    ) -> None:
        del data_dir  # the state lives in memory; snapshots and the log persist it
        instance = next(_instances)
        base_dir = Path(base_dir)
        init_path = (base_dir / init).resolve()
        eval_path = (base_dir / eval).resolve()
        self._modules = [
            _load("init", init_path, base_dir, instance),
            _load("eval", eval_path, base_dir, instance),
        ]
        init_module, eval_module = self._modules
        self._init = _function(init_module, "init", "init", "init() -> state")
        self._apply = _function(
            eval_module, "eval", "apply", "apply(state, command: bytes) -> (new_state, result)"
        )
        query = getattr(eval_module, "query", None)
        self._query: Callable[[Any, bytes], Any] | None = query if callable(query) else None
        self.content_type: str = str(
            getattr(eval_module, "CONTENT_TYPE", "application/octet-stream")
        )
        state = self._init()
        try:
            json.dumps(state)
        except (TypeError, ValueError) as e:
            raise ConfigError(
                f"fsm.init: init() in {init_path} returned a state that is not JSON data ({e}); "
                "expected dicts with string keys, lists, strings, numbers, booleans, None"
            ) from None
        self._state: Any = state

    def apply(self, command: bytes, index: int) -> bytes:
        del index
        result = self._apply(self._state, command)
        if not isinstance(result, tuple) or len(result) != 2:
            raise TypeError(
                f"the FSM script's apply() returned {type(result).__name__}; "
                "expected a tuple (new_state, result)"
            )
        state, answer = result
        output = _as_bytes(answer, "apply()")
        self._state = state
        return output

    def query(self, query: bytes) -> bytes:
        if self._query is None:
            raise QueryRejected("this FSM script defines no query(); queries are not supported")
        return _as_bytes(self._query(self._state, query), "query()")

    def snapshot(self, sink: BinaryIO) -> None:
        self.begin_snapshot()(sink)

    def begin_snapshot(self) -> Callable[[BinaryIO], None]:
        # No copy: apply() replaces the state rather than changing it (module docstring).
        document = {"format": _SNAPSHOT_FORMAT, "state": self._state}

        def write(sink: BinaryIO) -> None:
            # One C call that holds the GIL throughout: fine for the small states scripts keep.
            encoded = json.dumps(document, sort_keys=True, separators=(",", ":"))
            sink.write(encoded.encode("utf-8"))

        return write

    def restore(self, source: BinaryIO) -> None:
        try:
            document = json.loads(source.read().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CorruptSnapshot(f"the script FSM snapshot is not valid JSON ({e})") from None
        if not isinstance(document, dict) or document.get("format") != _SNAPSHOT_FORMAT:
            raise CorruptSnapshot(
                f"the snapshot is not a {_SNAPSHOT_FORMAT} snapshot; "
                "restore one taken by graft.fsm.script"
            )
        self._state = document.get("state")

    def close(self) -> None:
        for module in self._modules:
            sys.modules.pop(module.__name__, None)
