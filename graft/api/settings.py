"""The part of the API configuration this package reads.

graft.config.ApiConfig satisfies it; tests pass a small dataclass. Declared as a Protocol of
read-only properties so a frozen dataclass fits and this package does not import the config
module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class ApiLimitSettings(Protocol):
    """``api.limits``: what one client may hold of the node (graft.config.ApiLimits)."""

    @property
    def max_batch_commands(self) -> int:
        """Commands in one POST /commands; more is a 413."""
        ...

    @property
    def max_pending_commands(self) -> int:
        """Commands proposed and not yet applied on this node; more is a 503 overloaded."""
        ...

    @property
    def max_read_waiters(self) -> int:
        """Reads waiting for this node to apply an index; more is a 503 overloaded."""
        ...

    @property
    def max_connections(self) -> int:
        """Open HTTP connections; one more is answered 503 and closed."""
        ...

    @property
    def request_deadline_ms(self) -> int:
        """A request's line, headers and body must arrive within this; else 408 and closed."""
        ...


class ApiSettings(Protocol):
    @property
    def tokens(self) -> Mapping[str, frozenset[str]]:
        """Role ("read", "write", "admin") -> sha256 hex digests of its bearer tokens. Empty:
        authentication is off."""
        ...

    @property
    def max_body_bytes(self) -> int:
        """The largest request body accepted; a larger one gets 413 before it is read whole."""
        ...

    @property
    def command_timeout_ms(self) -> int:
        """How long a command (or batch) may take to commit and apply before 504."""
        ...

    @property
    def query_timeout_ms(self) -> int:
        """How long a query may take before 504, unless it asks for another ``?timeout=``."""
        ...

    @property
    def max_query_timeout_ms(self) -> int:
        """The largest time limit a query may ask for with ``?timeout=``."""
        ...

    @property
    def limits(self) -> ApiLimitSettings:
        """Caps on batches, waiters, connections and slow requests."""
        ...

    @property
    def allowed_origins(self) -> frozenset[str]:
        """Normalized origins, besides the node's own, allowed to send state-changing requests
        from a browser (graft.api.origin)."""
        ...
