"""The guards of a running command: the work budget (a progress handler counting SQLite VM
steps, the same count on every replica) and the SQLite functions replaced by Python ones that,
inside commands, take the time and randomness from the leader's stamp on the command's entry
(graft.stamp) and refuse what would still make replicas differ (the SQLite build, libm, the
time zone, printf's unbounded %c repeat; time and randomness in an entry without a stamp)."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from graft.fsm.limits import (
    SQLITE_FUNCTION_CALL_STEPS,
    SQLITE_PROGRESS_INTERVAL,
    SQLITE_VM_STEP_BUDGET,
)
from graft.fsm.sqlite.rules import (
    BUILD_DEPENDENT,
    LIBM_DEPENDENT,
    MAX_LENGTH,
    ZONE_MODIFIERS,
    function_refusal,
    printf_refusal,
)
from graft.fsm.sqlite.sql import set_limits
from graft.fsm.sqlite.stamped import STAMP_FUNCTIONS, randomblob_size, stamp_text
from graft.stamp import Stamp

_BUDGET_UNITS = SQLITE_VM_STEP_BUDGET // SQLITE_PROGRESS_INTERVAL
_CALLS_PER_UNIT = SQLITE_PROGRESS_INTERVAL // SQLITE_FUNCTION_CALL_STEPS


class CommandGuards:
    """Part of SQLiteStateMachine: the replaced functions and the budget of a command."""

    # The machine's state these methods use (what each means: SQLiteStateMachine.__init__).
    _mode: str
    _refusal: str | None
    _dates: sqlite3.Connection
    _steps: int
    _calls: int
    _probing: bool
    _written: set[str]
    _removed: bool
    _rowid_names: dict[str, str | None]
    # The leader's stamp of the running command's entry (None: an entry without one), and the
    # random generator seeded from it, made at the first random() of the command.
    _stamp: Stamp | None = None
    _rng: random.Random | None = None

    if TYPE_CHECKING:

        def apply(self, command: bytes, index: int) -> bytes: ...

    def apply_stamped(self, command: bytes, index: int, stamp: Stamp | None) -> bytes:
        """``apply`` with the command's stamp: 'now', CURRENT_TIMESTAMP and friends read its
        time, random() and randomblob() a generator seeded with its seed. Without a stamp
        (an entry written before stamps) they are refused, as they were when it was written."""
        self._stamp = stamp
        try:
            return self.apply(command, index)
        finally:
            self._stamp = None

    def _builtin_unless_command(self, name: str, why: str = "deterministic") -> Callable[..., Any]:
        def function(*args: Any) -> Any:
            if self._mode == "command":
                if self._stamp is not None and name in STAMP_FUNCTIONS:
                    return self._from_stamp(name, args)
                self._refusal = function_refusal(name, why)
                raise ValueError(self._refusal)
            return self._builtin(name, args)

        return function

    def _from_stamp(self, name: str, args: Sequence[Any]) -> Any:
        """random(), randomblob(N) and CURRENT_DATE/TIME/TIMESTAMP in a stamped command."""
        stamp = self._stamp
        assert stamp is not None
        if name in ("random", "randomblob"):
            if self._rng is None:
                # Restarted by _start_command: a statement run again gets the same values.
                self._rng = random.Random(stamp.seed)
            if name == "random":
                self._charge_call()
                return self._rng.getrandbits(64) - (1 << 63)  # a signed 64-bit integer
            size = randomblob_size(args[0] if args else None)
            if size > MAX_LENGTH:
                self._refusal = (
                    f"randomblob({size}) is longer than the longest value, {MAX_LENGTH} bytes "
                    "(SQLITE_LIMIT_LENGTH)"
                )
                raise ValueError(self._refusal)
            for _ in range(1 + size // 1024):  # its cost grows with its size
                self._charge_call()
            return self._rng.randbytes(size)
        self._charge_call()
        function = {"current_date": "date", "current_time": "time"}.get(name, "datetime")
        return self._builtin(function, (stamp_text(stamp),))

    def _date_function(self, name: str, time_arg: int) -> Callable[..., Any]:
        def function(*args: Any) -> Any:
            if self._mode == "command":
                value = args[time_arg] if len(args) > time_arg else "now"
                if self._stamp is not None and isinstance(value, str) and value.lower() == "now":
                    # SQLite's own test: 'now' in any case, nothing around it.
                    now = stamp_text(self._stamp)
                    args = (*args[:time_arg], now, *args[time_arg + 1 :])
                elif isinstance(value, str) and value.strip().lower() == "now":
                    self._refusal = (
                        f"{name}() with 'now' is not deterministic and not allowed in a "
                        "command written without the leader's time stamp; put the time in the "
                        "SQL as a literal"
                    )
                    raise ValueError(self._refusal)
                for modifier in args[time_arg + 1 :]:
                    if isinstance(modifier, str) and modifier.strip().lower() in ZONE_MODIFIERS:
                        self._refusal = (
                            f"{name}() with the {modifier.strip().lower()!r} modifier depends on "
                            "the machine's time zone and is not allowed in a command"
                        )
                        raise ValueError(self._refusal)
            self._charge_call()
            return self._builtin(name, args)

        return function

    def _builtin(self, name: str, args: Sequence[Any]) -> Any:
        """SQLite's own function, evaluated on a side connection where it is not replaced."""
        # current_date and friends are keywords, called without parentheses.
        call = name if name.startswith("current_") else f"{name}({', '.join('?' * len(args))})"
        sql = f"SELECT {call}"
        return self._dates.execute(sql, tuple(args)).fetchone()[0]

    # --- the limits of a command --------------------------------------------------------------

    def _guard_command(self, conn: sqlite3.Connection) -> None:
        """Set up on a new connection what bounds and checks commands: the size limits, the work
        budget and the replaced build- and machine-dependent functions."""
        set_limits(conn)
        conn.set_progress_handler(self._progress, SQLITE_PROGRESS_INTERVAL)
        for name, counts in (BUILD_DEPENDENT | LIBM_DEPENDENT).items():
            # The math functions stay deterministic for SQLite, so that schemas using them in
            # indexes or generated columns still load (writes to those tables are refused).
            deterministic = name in LIBM_DEPENDENT
            function = self._builtin_unless_command(name, "machine")
            for count in counts:
                conn.create_function(name, count, function, deterministic=deterministic)
        for name in ("printf", "format"):  # format() is SQLite 3.38 and later
            if self._has_builtin(name, 1):
                conn.create_function(name, -1, self._printf(name), deterministic=True)
        if self._has_builtin("timediff", 2):  # SQLite 3.43 and later
            conn.create_function("timediff", 2, self._timediff, deterministic=True)
        self._rowid_names = {}

    def _printf(self, name: str) -> Callable[..., Any]:
        """SQLite's printf()/format(), refusing a %c repeat count over SQLITE_LIMIT_LENGTH
        (SQLite would loop that many times before giving up)."""

        def function(*args: Any) -> Any:
            refusal = printf_refusal(name, args, MAX_LENGTH, "string (SQLITE_LIMIT_LENGTH)")
            if refusal is not None:
                self._refusal = refusal
                raise ValueError(refusal)
            self._charge_call()
            return self._builtin(name, args)

        return function

    def _has_builtin(self, name: str, count: int) -> bool:
        try:
            self._dates.execute(f"SELECT {name}({', '.join(['NULL'] * count)})").fetchone()
        except sqlite3.OperationalError:
            return False
        return True

    def _timediff(self, *args: Any) -> Any:
        """timediff(A, B): either time may be 'now', the stamp's time in a command."""
        if self._mode == "command" and self._stamp is not None:
            now = stamp_text(self._stamp)
            args = tuple(now if isinstance(v, str) and v.lower() == "now" else v for v in args)
        elif self._mode == "command" and any(
            isinstance(value, str) and value.strip().lower() == "now" for value in args
        ):
            self._refusal = (
                "timediff() with 'now' is not deterministic and not allowed in a command "
                "written without the leader's time stamp; put the time in the SQL as a literal"
            )
            raise ValueError(self._refusal)
        self._charge_call()
        return self._builtin("timediff", args)

    def _start_command(self) -> None:
        self._rng = None
        self._steps = 0
        self._calls = 0
        self._written = set()
        self._removed = False
        self._mode = "command"

    def _progress(self) -> int:
        """SQLite's progress handler: every SQLITE_PROGRESS_INTERVAL VM steps of a statement.
        Stops a command at its work budget; the count is the same on every replica."""
        if self._mode != "command" or self._probing:
            return 0
        self._steps += 1
        if self._within_budget():
            return 0
        return 1

    def _within_budget(self) -> bool:
        """False (with the refusal set) once the command's VM steps, plus what its calls of
        our Python functions count for, pass the budget."""
        if self._steps + self._calls // _CALLS_PER_UNIT <= _BUDGET_UNITS:
            return True
        self._refusal = (
            f"the command ran more than {SQLITE_VM_STEP_BUDGET} SQLite VM steps (the work "
            "budget of one command, SQLITE_VM_STEP_BUDGET); split the work into smaller "
            "commands, or bound its loops (e.g. a WITH RECURSIVE without LIMIT)"
        )
        return False

    def _charge_call(self) -> None:
        """A call of a function we replaced by Python costs a hundred VM steps' time: it counts
        SQLITE_FUNCTION_CALL_STEPS steps against a command's budget."""
        if self._mode == "command" and not self._probing:
            self._calls += 1
            if not self._within_budget():
                raise ValueError(self._refusal)
