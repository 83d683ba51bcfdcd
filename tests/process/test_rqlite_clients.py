"""rqlite's own clients, unchanged, against a real 3-node Graft cluster running the SQLite FSM:
pyrqlite's DB-API and an SQLAlchemy ORM session through sqlalchemy-rqlite, every write sent
to a follower (which forwards it to the leader).

The rqlite API sends Graft's JSON SQL form (graft.fsm.sqlite.jsonform) to the FSM; until the
FSM understands it these tests are skipped.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import time
import urllib.parse
from importlib.util import find_spec
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import ForeignKey, String, create_engine, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship
from twisted.trial import unittest

from graft.testing.cluster import LocalCluster

_NO_FORM = (
    None
    if find_spec("graft.fsm.sqlite.jsonform") is not None
    else "the SQLite FSM does not take the JSON SQL form yet (graft.fsm.sqlite.jsonform)"
)


class Base(DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "authors"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)
    born: Mapped[datetime.date | None]
    books: Mapped[list[Book]] = relationship(back_populates="author", cascade="all, delete-orphan")


class Book(Base):
    __tablename__ = "books"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(100))
    year: Mapped[int]
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"))
    author: Mapped[Author] = relationship(back_populates="books")


class RqliteClusterCase(unittest.TestCase):
    """A 3-node SQLite cluster, its leader and a follower; helpers for rqlite clients."""

    skip = _NO_FORM

    tokens: ClassVar[dict[str, str] | None] = None  # role -> token: api.tokens, when set

    def setUp(self) -> None:
        extra = None
        if self.tokens:
            digests = {
                role: [hashlib.sha256(t.encode()).hexdigest()] for role, t in self.tokens.items()
            }
            extra = {"api": {"tokens": digests}}
        self.cluster = LocalCluster(
            Path(self.mktemp()),
            fsm="graft.fsm.sqlite:SQLiteStateMachine",
            extra=extra,
            status_token=self.tokens["read"] if self.tokens else None,
        )
        self.addCleanup(self.cluster.close)
        self.cluster.start()
        for node in self.cluster.node_ids:
            self.cluster.wait_until_serving(node)
        self.leader, _ = self.cluster.wait_for_leader(timeout=20)
        self.follower = next(n for n in self.cluster.node_ids if n != self.leader)

    def port(self, node: str) -> int:
        port = urllib.parse.urlsplit(self.cluster.api_url(node)).port
        assert port is not None
        return port

    def connect(self, **options: Any) -> Any:
        from pyrqlite import dbapi2

        connection = dbapi2.connect(host="127.0.0.1", port=self.port(self.follower), **options)
        self.addCleanup(connection.close)
        return connection

    def wait_on_every_node(self, sql: str, expected: list[list[Any]]) -> None:
        """Poll each node's own state (level=none) until the query answers ``expected``."""
        query = urllib.parse.urlencode({"q": sql, "level": "none"})
        deadline = time.monotonic() + 15
        seen: dict[str, Any] = {}
        while time.monotonic() < deadline:
            for node in self.cluster.node_ids:
                answer = self.cluster.request(node, "GET", f"/db/query?{query}")
                seen[node] = answer.json()["results"][0].get("values", [])
            if all(values == expected for values in seen.values()):
                return
            time.sleep(0.05)
        self.fail(f"the nodes did not all answer {expected} to {sql!r}: {seen}")


class RqliteClientTests(RqliteClusterCase):
    def test_pyrqlite_dbapi_session(self) -> None:
        """connect, cursor, execute with ? params, executemany, fetchone/fetchall, rowcount,
        lastrowid, the error for bad SQL and for a constraint violation, REAL, BLOB and
        dates with detect_types, all through a follower; every replica holds the rows."""
        from pyrqlite import dbapi2

        connection = self.connect(detect_types=dbapi2.PARSE_DECLTYPES)
        cursor = connection.cursor()
        cursor.execute(
            "CREATE TABLE parts (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, "
            "price REAL, photo BLOB, made DATE, checked TIMESTAMP, noted DATETIME)"
        )
        made = datetime.date(2024, 5, 1)
        checked = datetime.datetime(2024, 5, 1, 12, 30, 15, 250000)
        cursor.execute(
            "INSERT INTO parts (name, price, photo, made, checked, noted) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            ("bolt", 0.25, b"\x00\x01\xfe\xff", made, checked, "2024-05-02 08:00:00"),
        )
        self.assertEqual(cursor.lastrowid, 1)
        cursor.executemany(
            "INSERT INTO parts (name, price) VALUES (?, ?)",
            [("nut", 0.1), ("washer", 0.05), ("it's", 2.5)],
        )
        self.assertEqual(cursor.rowcount, 3)
        cursor.execute("UPDATE parts SET price = price * 2 WHERE price < ?", (0.2,))
        self.assertEqual(cursor.rowcount, 2)

        cursor.execute(
            "SELECT name, price, photo, made, checked, noted FROM parts WHERE id = ?", (1,)
        )
        self.assertEqual(
            tuple(cursor.fetchone()),
            (
                "bolt",
                0.25,
                b"\x00\x01\xfe\xff",
                made,
                checked,
                "2024-05-02 08:00:00",
            ),
        )
        self.assertIsNone(cursor.fetchone())
        cursor.execute("SELECT name, price FROM parts WHERE id > ? ORDER BY id", (1,))
        rows = [tuple(row) for row in cursor.fetchall()]
        self.assertEqual(rows, [("nut", 0.2), ("washer", 0.1), ("it's", 2.5)])
        self.assertIsInstance(rows[0][1], float)

        with self.assertRaises(dbapi2.Error) as bad_sql:
            cursor.execute("INSERT INTO nowhere VALUES (1)")
        self.assertIn("no such table", str(bad_sql.exception))
        with self.assertRaises(dbapi2.Error) as duplicate:
            cursor.execute("INSERT INTO parts (name) VALUES (?)", ("nut",))
        self.assertIn("UNIQUE", str(duplicate.exception))

        self.wait_on_every_node(
            "SELECT id, name, price FROM parts ORDER BY id",
            [[1, "bolt", 0.25], [2, "nut", 0.2], [3, "washer", 0.1], [4, "it's", 2.5]],
        )

    def test_redirect_is_followed_by_pyrqlite(self) -> None:
        """With ?redirect a follower answers 301 to the leader's same URL, which pyrqlite
        follows (resending the body); without it the follower forwards."""
        create = json.dumps(["CREATE TABLE moved (id INTEGER PRIMARY KEY)"]).encode()
        answer = self.cluster.request(self.follower, "POST", "/db/execute?redirect", body=create)
        self.assertEqual(answer.status, 301)
        self.assertEqual(
            answer.headers["Location"], self.cluster.api_url(self.leader) + "/db/execute?redirect"
        )
        forwarded = self.cluster.request(self.follower, "POST", "/db/execute", body=create)
        self.assertEqual((forwarded.status, forwarded.json()), (200, {"results": [{}]}))
        connection = self.connect()
        response = connection._fetch_response(
            "POST",
            "/db/execute?redirect",
            body=json.dumps([["INSERT INTO moved (id) VALUES (?)", 7]]),
            headers={"Content-Type": "application/json"},
        )
        self.assertEqual(response.status, 200)
        self.assertEqual(
            json.loads(response.read()), {"results": [{"last_insert_id": 7, "rows_affected": 1}]}
        )
        self.assertEqual(connection.port, self.port(self.leader))
        self.wait_on_every_node("SELECT id FROM moved", [[7]])
        ready = self.cluster.request(self.follower, "GET", "/readyz")
        self.assertEqual(
            (ready.status, ready.body), (200, b"[+]node ok\n[+]leader ok\n[+]store ok")
        )

    def test_sqlalchemy_orm_session(self) -> None:
        """create_all, add/commit, queries with filters, update, delete and a relationship,
        through sqlalchemy-rqlite on a follower."""
        # native_datetime: pyrqlite already turns DATE columns into dates (it does so against
        # rqlite as well), so SQLAlchemy must not parse them again.
        engine = create_engine(
            f"rqlite+pyrqlite://127.0.0.1:{self.port(self.follower)}/", native_datetime=True
        )
        self.addCleanup(engine.dispose)
        Base.metadata.create_all(engine)

        with Session(engine) as session:
            lovelace = Author(name="Ada Lovelace", born=datetime.date(1815, 12, 10))
            lovelace.books = [Book(title="Notes on the Analytical Engine", year=1843)]
            hopper = Author(name="Grace Hopper", born=datetime.date(1906, 12, 9))
            hopper.books = [
                Book(title="A Manual of Operation for the ASCC", year=1946),
                Book(title="The Education of a Computer", year=1952),
            ]
            session.add_all([lovelace, hopper])
            session.commit()
            self.assertIsNotNone(hopper.id)

        with Session(engine) as session:
            found = session.scalars(select(Author).where(Author.name.like("Grace%"))).one()
            self.assertEqual(found.born, datetime.date(1906, 12, 9))
            self.assertEqual(sorted(b.year for b in found.books), [1946, 1952])
            later = session.scalars(select(Book).where(Book.year > 1900).order_by(Book.year)).all()
            self.assertEqual([b.author.name for b in later], ["Grace Hopper", "Grace Hopper"])

            found.books[0].title = "Manual of the ASCC"
            session.commit()
            renamed = session.scalars(select(Book.title).where(Book.year == 1946)).one()
            self.assertEqual(renamed, "Manual of the ASCC")

            session.delete(session.scalars(select(Author).where(Author.id == found.id)).one())
            session.commit()
            self.assertEqual(session.scalar(select(func.count()).select_from(Book)), 1)
            self.assertEqual(session.scalars(select(Author.name)).all(), ["Ada Lovelace"])

        self.wait_on_every_node("SELECT name FROM authors", [["Ada Lovelace"]])


class RqliteBasicAuthTests(RqliteClusterCase):
    """With api.tokens set, pyrqlite's user and password (HTTP Basic) carry a Graft token."""

    tokens: ClassVar[dict[str, str] | None] = {"read": "reader-secret", "write": "writer-secret"}

    def test_basic_credentials_carry_tokens(self) -> None:
        """A write token as the password writes through the follower; a read token reads
        but cannot write; without credentials nothing is answered."""
        from pyrqlite import dbapi2

        writer = self.connect(user="app", password="writer-secret").cursor()
        writer.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        writer.execute("INSERT INTO notes (body) VALUES (?)", ("kept",))
        self.assertEqual(writer.lastrowid, 1)

        reader = self.connect(user="report", password="reader-secret").cursor()
        with self.assertRaises(dbapi2.Error) as refused:
            reader.execute("INSERT INTO notes (body) VALUES (?)", ("lost",))
        self.assertIn("403", str(refused.exception))
        reader.execute("SELECT body FROM notes")
        self.assertEqual([tuple(row) for row in reader.fetchall()], [("kept",)])

        with self.assertRaises(dbapi2.Error) as anonymous:
            self.connect().cursor().execute("SELECT body FROM notes")
        self.assertIn("401", str(anonymous.exception))
