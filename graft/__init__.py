"""Graft: a Raft consensus server on Twisted, and a library to replicate a Python object.

The library's names are imported on first use, so ``import graft`` stays light (the CLI and
the Raft core import submodules of this package): ``graft.start_node``, ``graft.EmbeddedNode``,
``graft.command``, ``graft.query``, ``graft.Rejected``, ``graft.Replica``, ``graft.Consistency``
(docs/library.md).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from graft.driver.port import Consistency
    from graft.embed import EmbeddedNode, start_node
    from graft.replicated import Rejected, Replica, ReplicatedObject, command, query

# public name -> the module that defines it
_LIBRARY = {
    "Consistency": "graft.driver.port",
    "EmbeddedNode": "graft.embed",
    "start_node": "graft.embed",
    "Rejected": "graft.replicated",
    "Replica": "graft.replicated",
    "ReplicatedObject": "graft.replicated",
    "command": "graft.replicated",
    "query": "graft.replicated",
}

__all__ = [
    "Consistency",
    "EmbeddedNode",
    "Rejected",
    "Replica",
    "ReplicatedObject",
    "__version__",
    "command",
    "query",
    "start_node",
]


def __getattr__(name: str) -> Any:
    module = _LIBRARY.get(name)
    if module is None:
        raise AttributeError(f"module 'graft' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
