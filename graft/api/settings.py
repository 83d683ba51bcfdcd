"""The part of the API configuration this package reads.

graft.config.ApiConfig satisfies it; tests pass a small dataclass. Declared as a Protocol of
read-only properties so a frozen dataclass fits and this package does not import the config
module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


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
