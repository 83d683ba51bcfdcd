"""A logical digest of an SQLite database, for the replica consistency check.

The database file cannot be hashed: its page layout depends on history (a replica restored
from a snapshot and one that replayed the log hold the same rows in different pages, free
lists differ, a VACUUM moves everything). The digest covers what the database holds instead:

- ``user_version`` and ``application_id`` (the header fields a command may set);
- the schema: every row of ``sqlite_master`` but its root page, by type and name;
- every table's rows, tables by name: a rowid table's rows with their rowid, in rowid order
  (two replicas that gave the same row different rowids differ); a WITHOUT ROWID table's rows
  in primary-key order. Virtual tables are skipped: their data lives in shadow tables, which
  are ordinary tables and are digested.

Values are encoded with msgpack, which keeps their SQLite type apart (integer 1, real 1.0,
text '1' and blob x'31' encode differently); text is hashed as the bytes stored, valid UTF-8
or not. The result is the sha256 of that stream, in hex.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from pathlib import Path

import msgpack

from graft.fsm.base import FSMFailure

_FORMAT = ("graft-sqlite-digest", 1)
_BATCH = 1000


def begin_sqlite_digest(path: Path) -> Callable[[], str]:
    """Pin the database's committed state with a read transaction on a connection of its own
    (WAL mode lets the main connection go on committing) and return the function that digests
    it, to run once in a worker thread; it releases the pin. FSMFailure when SQLite cannot start
    the read."""
    reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        reader.execute("BEGIN")
        # BEGIN is deferred: the first read takes the WAL read mark that pins the state.
        reader.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as e:
        reader.close()
        raise FSMFailure(f"SQLite could not start the digest's read ({e})") from e

    def compute() -> str:
        try:
            return sqlite_digest(reader)
        finally:
            reader.close()

    return compute


def sqlite_digest(conn: sqlite3.Connection) -> str:
    """The logical digest of what ``conn`` sees (see the module docstring)."""
    # Text as the bytes stored: surrogateescape turns them into a str and back unchanged.
    conn.text_factory = lambda raw: raw.decode("utf-8", "surrogateescape")
    pack = msgpack.Packer(use_bin_type=True, unicode_errors="surrogateescape").pack
    h = hashlib.sha256()
    h.update(pack(_FORMAT))
    user_version = conn.execute("PRAGMA user_version").fetchone()[0]
    application_id = conn.execute("PRAGMA application_id").fetchone()[0]
    h.update(pack(["header", user_version, application_id]))
    schema = conn.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
    ).fetchall()
    h.update(pack(["schema", [list(row) for row in schema]]))
    for kind, name, _table, sql in schema:
        if kind != "table" or _is_virtual(sql):
            continue
        h.update(pack(["table", name]))
        cursor = conn.execute(_rows_in_order(conn, name))
        while True:
            rows = cursor.fetchmany(_BATCH)
            if not rows:
                break
            for row in rows:
                h.update(pack(row))
        h.update(pack(None))  # rows are arrays: nil ends the table unambiguously
    return h.hexdigest()


def _is_virtual(sql: str | None) -> bool:
    return sql is not None and sql.lstrip()[:20].upper().startswith("CREATE VIRTUAL")


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _rows_in_order(conn: sqlite3.Connection, table: str) -> str:
    """A SELECT of the table's rows in an order that depends only on its content."""
    quoted = _quote(table)
    columns = conn.execute(f"PRAGMA table_xinfo({quoted})").fetchall()
    names = {str(c[1]).lower() for c in columns}
    for alias in ("_rowid_", "rowid", "oid"):
        if alias in names:
            continue  # a column of that name hides the rowid under this alias
        try:
            conn.execute(f"SELECT {alias} FROM {quoted} LIMIT 0")
        except sqlite3.OperationalError:
            break  # WITHOUT ROWID
        return f"SELECT {alias}, * FROM {quoted} ORDER BY {alias}"
    key = [c for c in sorted(columns, key=lambda c: c[5]) if c[5] > 0]
    if key:
        return f"SELECT * FROM {quoted} ORDER BY {', '.join(_quote(str(c[1])) for c in key)}"
    # Every alias is a column name: the rowid cannot be named, but a full scan of a rowid
    # table visits rows in rowid order.
    return f"SELECT * FROM {quoted}"
