"""The randomness the core accepts: anything shaped like ``random.Random``.

The core never builds a random source itself (that would make runs unreproducible); the driver
passes ``random.Random()`` and tests pass ``random.Random(seed)``.
"""

from __future__ import annotations

from typing import Protocol


class Rng(Protocol):
    def random(self) -> float:
        """A float in [0, 1)."""
        ...

    def randrange(self, start: int, stop: int) -> int:
        """An int in [start, stop)."""
        ...
