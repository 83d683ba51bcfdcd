"""docs/operations.md's "Error codes" table lists every code graft.errors defines, with its
HTTP status, so the table cannot fall behind the program."""

from __future__ import annotations

import re
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import graft.errors
from graft.errors import GraftError

DOC = Path(__file__).resolve().parent.parent / "docs" / "operations.md"


def documented() -> dict[str, str]:
    """code -> status cell of the table under "## Error codes"."""
    text = DOC.read_text()
    section = text.split("\n## Error codes\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z_]+)` \| ([^|]+) \|", section, flags=re.MULTILINE)
    return {code: status.strip() for code, status in rows}


class ErrorCodeTableTests(SynchronousTestCase):
    def test_every_code_with_its_status(self) -> None:
        """Each GraftError subclass in graft.errors has a row whose status cell starts with
        its HTTP status."""
        table = documented()
        classes = [
            cls
            for cls in vars(graft.errors).values()
            if isinstance(cls, type) and issubclass(cls, GraftError)
        ]
        self.assertGreater(len(classes), 10)
        for cls in classes:
            self.assertIn(cls.code, table, f"{cls.__name__} ({cls.code}) is not documented")
            self.assertTrue(
                table[cls.code].startswith(str(cls.status)),
                f"{cls.code}: documented {table[cls.code]}, is {cls.status}",
            )
