"""The one error the codec raises: the peer sent bytes that are not a valid frame."""

from __future__ import annotations


class ProtocolError(Exception):
    """A malformed, oversized or unknown frame; the connection that carried it must be dropped.

    ``reason`` is one line for the log saying what was wrong with the frame.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SchemaError(ValueError):
    """This side tried to send a value that its own schema does not allow (a programming error)."""
