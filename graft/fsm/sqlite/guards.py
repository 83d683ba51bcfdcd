"""The guards of a running command: the work budget (a progress handler counting SQLite VM
steps, the same count on every replica) and the SQLite functions replaced by Python ones that
refuse, inside commands, what would make replicas differ (time, randomness, the SQLite build,
libm, printf's unbounded %c repeat)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

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

    def _builtin_unless_command(self, name: str, why: str = "deterministic") -> Callable[..., Any]:
        def function(*args: Any) -> Any:
            if self._mode == "command":
                self._refusal = function_refusal(name, why)
                raise ValueError(self._refusal)
            return self._builtin(name, args)

        return function

    def _date_function(self, name: str, time_arg: int) -> Callable[..., Any]:
        def function(*args: Any) -> Any:
            if self._mode == "command":
                value = args[time_arg] if len(args) > time_arg else "now"
                if isinstance(value, str) and value.strip().lower() == "now":
                    self._refusal = (
                        f"{name}() with 'now' is not deterministic and not allowed in a "
                        "command; put the time in the SQL as a literal"
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
        """timediff(A, B): either time may be 'now', which a command may not use."""
        if self._mode == "command" and any(
            isinstance(value, str) and value.strip().lower() == "now" for value in args
        ):
            self._refusal = (
                "timediff() with 'now' is not deterministic and not allowed in a command; "
                "put the time in the SQL as a literal"
            )
            raise ValueError(self._refusal)
        self._charge_call()
        return self._builtin("timediff", args)

    def _start_command(self) -> None:
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
