"""What the SQLite FSM makes of the leader's stamp (graft.stamp): the time as SQLite reads it,
and the functions that take their value from the stamp in a command."""

from __future__ import annotations

import datetime
import math
import re
from typing import Any

from graft.stamp import Stamp

# Functions that are refused in a command without a stamp and read the stamp in one with it
# (the date functions with 'now' are handled where they are replaced: guards._date_function).
STAMP_FUNCTIONS = frozenset(
    {"random", "randomblob", "current_date", "current_time", "current_timestamp"}
)

_EPOCH = datetime.date(1970, 1, 1)
_DAY_MS = 86_400_000


def stamp_text(stamp: Stamp) -> str:
    """The stamp's time as 'YYYY-MM-DD HH:MM:SS.SSS' (UTC, milliseconds, the precision of
    SQLite's 'now'), by integer arithmetic: SQLite parses it back to the exact millisecond."""
    ms = stamp.time_ns // 1_000_000
    days, in_day = divmod(ms, _DAY_MS)
    hours, in_day = divmod(in_day, 3_600_000)
    minutes, in_day = divmod(in_day, 60_000)
    seconds, millis = divmod(in_day, 1000)
    date = _EPOCH + datetime.timedelta(days=days)
    return f"{date.isoformat()} {hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}"


def randomblob_size(value: Any) -> int:
    """The size randomblob(N) makes of its argument as SQLite reads it as an integer (1 for
    anything below 1, as SQLite does)."""
    size = 0
    if isinstance(value, bool | int):
        size = int(value)
    elif isinstance(value, float):
        size = int(value) if math.isfinite(value) else 0
    elif isinstance(value, str):
        match = re.match(r"\s*[-+]?\d{1,19}", value)
        size = int(match[0]) if match else 0
    return max(size, 1)
