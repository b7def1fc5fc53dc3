"""Plaintext secrets in an application's database (spec 000: "drop existing plaintext
secrets from database" before the integrations move to a secret store).

Every text column of every table the connection may read is scanned, one value at a
time, as ``column=value``, so a known key format is found anywhere and a random value
in a column named like a secret (``api_key``, ``webhook_secret``, ``password``) is found
as an assignment. Password hashes are not findings.

The database is only read: PostgreSQL in a read-only transaction with a statement
timeout, SQLite opened read-only. Each table is read up to ``max_rows`` rows; a table
cut short is said so. A finding is located as ``schema.table.column[row]``, where the
row is its integer primary key, else the row's physical locator (PostgreSQL's
``ctid``, SQLite's ``rowid``): never a text key, which could be the secret itself.
"""

from __future__ import annotations

import fnmatch
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from keysafe.errors import InvalidValue

__all__ = ["Cell", "DatabaseScan", "open_database"]

#: PostgreSQL column types read as text (``information_schema.columns.data_type``).
_PG_TEXT = frozenset({"text", "character varying", "character", "json", "jsonb", "citext"})
#: PostgreSQL key types that may name a row (numbers and UUIDs, never text).
_PG_KEYS = frozenset({"integer", "bigint", "smallint", "uuid"})
#: How long one statement may run (a full scan of a large table) before it is stopped.
STATEMENT_TIMEOUT_S = 300


@dataclass(frozen=True, slots=True)
class Cell:
    """One text value: where it is (``table`` is ``schema.table``) and what it holds."""

    table: str
    column: str
    row: str
    value: str

    @property
    def location(self) -> str:
        return f"{self.table}.{self.column}[{self.row}]"


@dataclass
class Table:
    name: str                 # schema.table (SQLite: main.table)
    ident: tuple[str, ...]    # the identifier parts to quote
    columns: list[str]
    key: list[str]            # integer/UUID primary key columns, else []


class DatabaseScan:
    """The text columns of one database, read table by table."""

    def __init__(self, kind: str, conn: Any, shown: str) -> None:
        self.kind = kind      # "postgresql" or "sqlite"
        self.conn = conn
        self.shown = shown    # the database as messages name it (no password)
        self.truncated: list[str] = []
        self._cursors = 0

    def tables(self, exclude: Sequence[str] = ()) -> list[Table]:
        found = self._pg_tables() if self.kind == "postgresql" else self._sqlite_tables()
        out = []
        for t in found:
            bare = t.name.split(".", 1)[1]
            cols = [c for c in t.columns
                    if not any(fnmatch.fnmatch(f"{t.name}.{c}", g)
                               or fnmatch.fnmatch(f"{bare}.{c}", g) for g in exclude)]
            if cols and not any(fnmatch.fnmatch(t.name, g) or fnmatch.fnmatch(bare, g)
                                for g in exclude):
                out.append(Table(t.name, t.ident, cols, t.key))
        return out

    def cells(self, table: Table, max_rows: int) -> Iterator[Cell]:
        for rows, (locator, values) in enumerate(self._rows(table, max_rows + 1), 1):
            if rows > max_rows:
                self.truncated.append(table.name)
                return
            for column, value in zip(table.columns, values, strict=True):
                if isinstance(value, str) and len(value) >= 8:
                    yield Cell(table.name, column, locator, value)

    def close(self) -> None:
        self.conn.close()

    # -- PostgreSQL -------------------------------------------------------------------
    def _pg_tables(self) -> list[Table]:
        rows = self.conn.execute(
            "SELECT c.table_schema, c.table_name, c.column_name, c.data_type "
            "FROM information_schema.columns c JOIN information_schema.tables t "
            "ON t.table_schema = c.table_schema AND t.table_name = c.table_name "
            "WHERE t.table_type = 'BASE TABLE' "
            "AND c.table_schema NOT IN ('pg_catalog', 'information_schema') "
            "ORDER BY c.table_schema, c.table_name, c.ordinal_position").fetchall()
        tables: dict[tuple[str, str], list[str]] = {}
        for schema, name, column, dtype in rows:
            cols = tables.setdefault((schema, name), [])
            if dtype in _PG_TEXT:
                cols.append(column)
        out = []
        for (schema, name), cols in tables.items():
            if not cols:
                continue
            key = self.conn.execute(
                "SELECT a.attname, format_type(a.atttypid, NULL) FROM pg_index i "
                "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
                "WHERE i.indisprimary AND i.indrelid = (quote_ident(%s) || '.' || "
                "quote_ident(%s))::regclass ORDER BY a.attnum", (schema, name)).fetchall()
            ints = [k for k, t in key if t in _PG_KEYS]
            out.append(Table(f"{schema}.{name}", (schema, name), cols,
                             ints if key and len(ints) == len(key) else []))
        return out

    def _pg_rows(self, table: Table, limit: int) -> Iterator[tuple[str, tuple[Any, ...]]]:
        from psycopg import sql

        names = table.key or ["ctid"]
        as_text = [sql.SQL("{}::text").format(sql.Identifier(c))
                   for c in (*names, *table.columns)]
        query = sql.SQL("SELECT {} FROM {} LIMIT {}").format(
            sql.SQL(", ").join(as_text), sql.Identifier(*table.ident), sql.Literal(limit))
        n = len(names)
        self._cursors += 1
        # A server-side cursor: a large table streams in batches, never held whole.
        with self.conn.cursor(name=f"keysafe_scan_{self._cursors}") as cur:
            cur.itersize = 1000
            cur.execute(query)
            for row in cur:
                yield _locator(names, row[:n]), tuple(row[n:])

    # -- SQLite -----------------------------------------------------------------------
    def _sqlite_tables(self) -> list[Table]:
        names = [r[0] for r in self.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name")]
        out = []
        for name in names:
            info = self.conn.execute(f"PRAGMA table_info({_qi(name)})").fetchall()
            # (cid, name, type, notnull, default, pk). SQLite stores any value in any
            # column, so every column but the numeric ones (integer and real affinity)
            # is read, JSON and untyped ones included, and only text values are scanned.
            key = sorted((r for r in info if r[5]), key=lambda r: r[5])
            ints = [r[1] for r in key if _affinity(r[2]) == "INTEGER"]
            cols = [r[1] for r in info if _affinity(r[2]) not in ("INTEGER", "REAL")]
            if cols:
                out.append(Table(f"main.{name}", (name,), cols,
                                 ints if key and len(ints) == len(key) else []))
        return out

    def _sqlite_rows(self, table: Table, limit: int) -> Iterator[tuple[str, tuple[Any, ...]]]:
        cols = ", ".join(_qi(c) for c in table.columns)
        name = _qi(table.ident[0])
        names = table.key or ["rowid"]
        keys = ", ".join(_qi(k) for k in table.key) if table.key else "rowid"
        try:
            # Identifiers quoted by _qi (read from the schema), the limit bound.
            cur = self.conn.execute(f"SELECT {keys}, {cols} FROM {name} LIMIT ?",  # noqa: S608
                                    (limit,))
        except sqlite3.OperationalError:
            # A WITHOUT ROWID table whose key is not an integer: rows by their position.
            cur = self.conn.execute(f"SELECT {cols} FROM {name} LIMIT ?",  # noqa: S608
                                    (limit,))
            for i, row in enumerate(cur, 1):
                yield f"row {i}", tuple(row)
            return
        n = len(names)
        for row in cur:
            yield _locator(names, row[:n]), tuple(row[n:])

    def _rows(self, table: Table, limit: int) -> Iterator[tuple[str, tuple[Any, ...]]]:
        if self.kind == "postgresql":
            return self._pg_rows(table, limit)
        return self._sqlite_rows(table, limit)


def _affinity(declared: str | None) -> str:
    """SQLite's column affinity from a declared type (its documented rules, in order)."""
    t = (declared or "").upper()
    if "INT" in t:
        return "INTEGER"
    if any(k in t for k in ("CHAR", "CLOB", "TEXT")):
        return "TEXT"
    if not t or "BLOB" in t:
        return "BLOB"
    if any(k in t for k in ("REAL", "FLOA", "DOUB")):
        return "REAL"
    return "NUMERIC"


def _qi(name: str) -> str:
    """An SQLite identifier, quoted."""
    return '"' + name.replace('"', '""') + '"'


def _locator(names: Sequence[str], values: Sequence[Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in zip(names, values, strict=True))


def open_database(url: str) -> DatabaseScan:
    """A read-only connection to a PostgreSQL URL, an ``sqlite:///`` URL or an SQLite
    file path; InvalidValue naming the problem (never the password) otherwise."""
    if url.startswith(("postgresql://", "postgres://")):
        return _open_pg(url)
    if url.startswith("sqlite:"):
        # SQLAlchemy's form, as DATABASE_URL has it: sqlite:///relative/path and
        # sqlite:////absolute/path (the path is what follows the third slash).
        rest = url[len("sqlite:"):]
        path = unquote(rest[3:] if rest.startswith("///") else rest.lstrip("/"))
        return _open_sqlite(Path(path.split("?", 1)[0]))
    if "://" in url:
        scheme = url.split("://", 1)[0]
        raise InvalidValue(f"keysafe scan --database reads PostgreSQL (postgresql://...) "
                           f"and SQLite (sqlite:///path, or a file path), not {scheme}://")
    return _open_sqlite(Path(url))


def _open_pg(url: str) -> DatabaseScan:
    from keysafe.backends._sdk import require_sdk
    from keysafe.backends.postgres import first_line, redact_url

    psycopg = require_sdk("psycopg", "postgres")
    shown = redact_url(url)
    try:
        conn = psycopg.connect(url, connect_timeout=10, autocommit=False)
    except psycopg.Error as exc:
        raise InvalidValue(f"cannot connect to {shown}: "
                           f"{_hide(first_line(exc), url)}") from None
    conn.read_only = True
    conn.execute(f"SET statement_timeout = '{STATEMENT_TIMEOUT_S}s'")
    return DatabaseScan("postgresql", conn, shown)


def _hide(text: str, url: str) -> str:
    password = urlsplit(url).password
    return text.replace(password, "***") if password else text


def _open_sqlite(path: Path) -> DatabaseScan:
    if not path.is_file():
        raise InvalidValue(f"{path}: no such database file")
    try:
        conn = sqlite3.connect(f"file:{quote(str(path.absolute()))}?mode=ro", uri=True)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        raise InvalidValue(f"{path} is not a readable SQLite database: {exc}") from None
    return DatabaseScan("sqlite", conn, str(path))


def database_cells(db: DatabaseScan, *, max_rows: int, exclude: Sequence[str] = (),
                   on_table: Callable[[int, int], None] | None = None) -> Iterator[Cell]:
    """Every text value of every table, table by table (``on_table(done, total)``)."""
    tables = db.tables(exclude)
    for i, table in enumerate(tables):
        yield from db.cells(table, max_rows)
        if on_table is not None:
            on_table(i + 1, len(tables))
