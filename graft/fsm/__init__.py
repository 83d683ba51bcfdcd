"""Replicated state machines: the interface and the factory that builds one from the config.

The built-in FSMs are ``graft.fsm.sqlite:SQLiteStateMachine`` (the default),
``graft.fsm.kv:KeyValueStateMachine`` and ``graft.fsm.script:ScriptStateMachine``. Any class
(or callable) named by ``fsm.factory`` works if it accepts the keyword arguments ``data_dir``
(this node's data directory, which it may use for files), ``base_dir`` (the config file's
directory, to resolve paths in its options) and the entries of ``fsm.options``.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

from graft.config import ConfigError, FSMConfig
from graft.fsm.base import (
    CommandRejected,
    CorruptSnapshot,
    FSMFailure,
    IncrementalSnapshot,
    QueryRejected,
    QueryTimedOut,
    StampedStateMachine,
    StateMachine,
    ThreadedQueries,
    begin_digest,
    begin_snapshot,
    digest,
    stamped_apply,
    threaded_query,
)
from graft.stamp import Stamp

__all__ = [
    "CommandRejected",
    "CorruptSnapshot",
    "FSMFailure",
    "IncrementalSnapshot",
    "QueryRejected",
    "QueryTimedOut",
    "Stamp",
    "StampedStateMachine",
    "StateMachine",
    "ThreadedQueries",
    "begin_digest",
    "begin_snapshot",
    "create_state_machine",
    "digest",
    "stamped_apply",
    "threaded_query",
]


def create_state_machine(fsm: FSMConfig, *, data_dir: Path, base_dir: Path) -> StateMachine:
    """Import ``fsm.factory`` ("module:Name") and call it with data_dir, base_dir and options.

    Raises ConfigError (one line, naming fsm.factory or fsm.options) when the factory cannot be
    imported or does not accept the options.
    """
    module_name, _, attribute = fsm.factory.partition(":")
    if not module_name or not attribute:
        raise ConfigError(
            f'fsm.factory: "{fsm.factory}" is not of the form "module:Name"; '
            'expected e.g. "graft.fsm.sqlite:SQLiteStateMachine"'
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(
            f"fsm.factory: cannot import module {module_name!r} ({e}); "
            "expected an importable module (is it installed, is the name right?)"
        ) from None
    factory = getattr(module, attribute, None)
    if factory is None or not callable(factory):
        raise ConfigError(
            f"fsm.factory: module {module_name!r} has no class or function {attribute!r}; "
            f"check the name after the colon"
        )
    for reserved in ("data_dir", "base_dir"):
        if reserved in fsm.options:
            raise ConfigError(
                f"fsm.options.{reserved}: set by graft itself; remove it from fsm.options"
            )
    kwargs = {"data_dir": Path(data_dir), "base_dir": Path(base_dir), **fsm.options}
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as e:
        raise ConfigError(
            f"fsm.options: {fsm.factory} does not accept these options ({e}); "
            "check the option names against its documentation"
        ) from None
    except ValueError:
        pass  # no signature to check (a builtin): let the call decide
    machine: StateMachine = factory(**kwargs)
    return machine
