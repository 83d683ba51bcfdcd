"""The declared types of a statement's result columns (SQLite's ``sqlite3_column_decltype``),
which Python's sqlite3 module does not expose.

The statement is prepared once more, not run, on the same connection (so it sees the schema of
the running transaction), through the SQLite C library that Python's sqlite3 module is linked
to, reached with ctypes. The connection's ``sqlite3 *`` handle is the first field after the
object header of CPython's connection object, as in every CPython version with this module.
Before trusting that, a self-check at import prepares a known statement on a fresh connection;
if anything is off (another Python, another library, a check that does not come out right),
``declared_types`` answers ``""`` for every column rather than guess. The types depend only on
the schema, so every replica answers alike.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sqlite3
import sys

__all__ = ["available", "declared_types"]

_SQLITE_OK = 0


def _load() -> ctypes.CDLL | None:
    if sys.implementation.name != "cpython":
        return None
    candidates: list[str] = []
    try:
        import _sqlite3  # the extension module: dlsym on it finds its own library's symbols

        candidates.append(_sqlite3.__file__)
    except (ImportError, AttributeError):
        pass
    found = ctypes.util.find_library("sqlite3")
    if found:
        candidates.append(found)
    for name in candidates:
        try:
            lib = ctypes.CDLL(name)
            lib.sqlite3_libversion.restype = ctypes.c_char_p
            version = lib.sqlite3_libversion()
        except (OSError, AttributeError):
            continue
        # The very library the sqlite3 module uses (same version), or none.
        if version is not None and version.decode("ascii", "replace") == sqlite3.sqlite_version:
            _declare(lib)
            return lib
    return None


def _declare(lib: ctypes.CDLL) -> None:
    lib.sqlite3_prepare_v2.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.c_void_p,
    ]
    lib.sqlite3_prepare_v2.restype = ctypes.c_int
    lib.sqlite3_column_count.argtypes = [ctypes.c_void_p]
    lib.sqlite3_column_count.restype = ctypes.c_int
    lib.sqlite3_column_decltype.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.sqlite3_column_decltype.restype = ctypes.c_char_p
    lib.sqlite3_finalize.argtypes = [ctypes.c_void_p]
    lib.sqlite3_finalize.restype = ctypes.c_int
    lib.sqlite3_db_readonly.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.sqlite3_db_readonly.restype = ctypes.c_int


def _handle(conn: sqlite3.Connection) -> int | None:
    pointer = ctypes.c_void_p.from_address(id(conn) + object.__basicsize__).value
    return pointer or None


def _prepare_types(lib: ctypes.CDLL, conn: sqlite3.Connection, sql: str) -> list[str] | None:
    handle = _handle(conn)
    if handle is None:
        return None
    statement = ctypes.c_void_p()
    text = sql.encode("utf-8")
    if lib.sqlite3_prepare_v2(handle, text, len(text), ctypes.byref(statement), None):
        return None
    try:
        if not statement.value:
            return None
        count = lib.sqlite3_column_count(statement)
        types: list[str] = []
        for column in range(count):
            raw = lib.sqlite3_column_decltype(statement, column)
            types.append("" if raw is None else raw.decode("utf-8", "replace"))
        return types
    finally:
        lib.sqlite3_finalize(statement)


def _self_check(lib: ctypes.CDLL) -> bool:
    """Whether the handle is where we read it, on connections opened both ways we open them."""
    try:
        conn = sqlite3.connect(":memory:", isolation_level=None, cached_statements=0)
        try:
            handle = _handle(conn)
            # A wrong pointer would most likely be NULL or not a connection: db_readonly on a
            # real in-memory connection answers 0 for "main" and -1 for a name it lacks.
            if handle is None or lib.sqlite3_db_readonly(handle, b"no such schema") != -1:
                return False
            conn.execute("CREATE TABLE t(a DATETIME, b Decimal(10, 2), c)")
            got = _prepare_types(lib, conn, "SELECT a, b, c, a + 1 FROM t")
            return got == ["DATETIME", "Decimal(10, 2)", "", ""]
        finally:
            conn.close()
    except (sqlite3.Error, OSError, ValueError):
        return False


_LIB = _load()
if _LIB is not None and not _self_check(_LIB):
    _LIB = None


def available() -> bool:
    """Whether declared types are read (False: every type is "")."""
    return _LIB is not None


def declared_types(conn: sqlite3.Connection, sql: str, count: int) -> list[str]:
    """The declared type of each of the ``count`` result columns of ``sql`` on ``conn`` (""
    for an expression). The caller has already run ``sql`` on ``conn`` in this thread, and
    must keep its authorizer from refusing our prepare (nothing runs)."""
    if _LIB is None:
        return [""] * count
    types = _prepare_types(_LIB, conn, sql)
    if types is None or len(types) != count:
        return [""] * count
    return types
