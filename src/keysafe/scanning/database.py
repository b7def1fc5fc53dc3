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
import re
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from keysafe.errors import InvalidValue

__all__ = ["Cell", "DatabaseScan", "open_database"]

#: PostgreSQL column types read as text (``pg_type.typname``).
_PG_TEXT = frozenset({"text", "varchar", "bpchar", "json", "jsonb", "citext"})
#: PostgreSQL key types that may name a row (numbers and UUIDs, never text).
_PG_KEYS = frozenset({"int2", "int4", "int8", "uuid"})
#: Names that SQLite's rowid goes by; a user column of one of them hides it.
_ROWID = ("rowid", "_rowid_", "oid")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_CTID = re.compile(r"\(\d+,\d+\)")
#: How long one statement may run (a full scan of a large table) before it is stopped.
STATEMENT_TIMEOUT_S = 300
#: How long a read may wait for a table lock (DDL in progress) before that table is
#: skipped, so a scan never queues the application's traffic behind it.
LOCK_TIMEOUT_S = 5


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
    #: When there is no such key: the row's physical locator (ctid, an SQLite rowid
    #: alias), or None for its position in the scan.
    locator: str | None = None


class DatabaseScan:
    """The text columns of one database, read table by table."""

    def __init__(self, kind: str, conn: Any, shown: str) -> None:
        self.kind = kind      # "postgresql" or "sqlite"
        self.conn = conn
        self.shown = shown    # the database as messages name it (no password)
        self.truncated: list[str] = []
        self.unreadable: list[str] = []   # "table: why" for tables the scan could not read
        self.notes: list[str] = []
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
                out.append(Table(t.name, t.ident, cols, t.key, t.locator))
        return out

    def cells(self, table: Table, max_rows: int) -> Iterator[Cell]:
        if self.kind == "postgresql":
            yield from self._pg_cells(table, max_rows)
            return
        yield from self._cells(table, self._sqlite_rows(table, max_rows + 1), max_rows)

    def _cells(self, table: Table, rows: Iterator[tuple[Any, ...]], max_rows: int
               ) -> Iterator[Cell]:
        names = table.key or ([table.locator] if table.locator else [])
        n = len(names)
        for i, row in enumerate(rows, 1):
            if i > max_rows:
                self.truncated.append(table.name)
                return
            keys = row[:n]
            # A key is shown only as a number or a UUID: SQLite lets an INTEGER column
            # hold text, and a text key could be the secret itself.
            shown = (_locator(names, keys) if n and all(_safe_key(k) for k in keys)
                     else f"row {i}")
            for column, value in zip(table.columns, row[n:], strict=True):
                if isinstance(value, str) and len(value) >= 8:
                    yield Cell(table.name, column, shown, value)

    def close(self) -> None:
        self.conn.close()

    # -- PostgreSQL -------------------------------------------------------------------
    def _pg_tables(self) -> list[Table]:
        # Ordinary tables and partitions (a partitioned parent's rows are its
        # partitions'); only columns this role may SELECT.
        rows = self.conn.execute(
            "SELECT n.nspname, c.relname, a.attname, t.typname, "
            "has_table_privilege(c.oid, 'SELECT') "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 "
            "AND NOT a.attisdropped JOIN pg_type t ON t.oid = a.atttypid "
            "WHERE c.relkind = 'r' AND n.nspname <> 'information_schema' "
            "AND n.nspname NOT LIKE 'pg\\_%' "
            "AND has_column_privilege(c.oid, a.attnum, 'SELECT') "
            "ORDER BY n.nspname, c.relname, a.attnum").fetchall()
        tables: dict[tuple[str, str], tuple[list[str], set[str], bool]] = {}
        for schema, name, column, typ, whole in rows:
            cols, readable, _ = tables.setdefault((schema, name), ([], set(), whole))
            readable.add(column)
            if typ in _PG_TEXT:
                cols.append(column)
        out = []
        for (schema, name), (cols, readable, whole) in tables.items():
            if not cols:
                continue
            key = self.conn.execute(
                "SELECT a.attname, t.typname FROM pg_index i "
                "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
                "JOIN pg_type t ON t.oid = a.atttypid "
                "WHERE i.indisprimary AND i.indrelid = (quote_ident(%s) || '.' || "
                "quote_ident(%s))::regclass ORDER BY a.attnum", (schema, name)).fetchall()
            ints = [k for k, t in key if t in _PG_KEYS and k in readable]
            use = ints if key and len(ints) == len(key) else []
            # ctid needs the table's SELECT, not a column grant.
            out.append(Table(f"{schema}.{name}", (schema, name), cols, use,
                             None if use or not whole else "ctid"))
        return out

    def _pg_cells(self, table: Table, max_rows: int) -> Iterator[Cell]:
        """One table in its own read-only transaction (its locks released when it is
        done); a table that cannot be read is named and skipped."""
        from psycopg import sql

        from keysafe.backends._sdk import require_sdk
        from keysafe.backends.postgres import first_line

        psycopg = require_sdk("psycopg", "postgres")
        names = table.key or ([table.locator] if table.locator else [])
        as_text = [sql.SQL("{}::text").format(sql.Identifier(c))
                   for c in (*names, *table.columns)]
        query = sql.SQL("SELECT {} FROM {} LIMIT {}").format(
            sql.SQL(", ").join(as_text), sql.Identifier(*table.ident),
            sql.Literal(max_rows + 1))
        self._cursors += 1
        try:
            with self.conn.transaction(), \
                    self.conn.cursor(name=f"keysafe_scan_{self._cursors}") as cur:
                # A server-side cursor: a large table streams in batches.
                cur.itersize = 1000
                cur.execute(query)
                yield from self._cells(table, iter(cur), max_rows)
        except psycopg.Error as exc:
            self.unreadable.append(f"{table.name}: {first_line(exc)}")

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
            taken = {r[1].lower() for r in info}
            alias = next((a for a in _ROWID if a not in taken), None)
            if alias is not None:
                try:
                    self.conn.execute(f"SELECT {alias} FROM {_qi(name)} LIMIT 0")  # noqa: S608
                except sqlite3.OperationalError:
                    alias = None  # a WITHOUT ROWID table: rows by their position
            if cols:
                use = ints if key and len(ints) == len(key) else []
                out.append(Table(f"main.{name}", (name,), cols, use,
                                 None if use else alias))
        return out

    def _sqlite_rows(self, table: Table, limit: int) -> Iterator[tuple[Any, ...]]:
        keys = [_qi(k) for k in table.key] or ([table.locator] if table.locator else [])
        # Identifiers quoted by _qi (read from the schema) or a rowid alias; the limit bound.
        sel = ", ".join([*keys, *(_qi(c) for c in table.columns)])
        yield from self.conn.execute(
            f"SELECT {sel} FROM {_qi(table.ident[0])} LIMIT ?", (limit,))  # noqa: S608


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


def _safe_key(value: Any) -> bool:
    """A key value that may name a row in a report: an integer, a UUID, a ctid."""
    if isinstance(value, int) and not isinstance(value, bool):
        return True
    return isinstance(value, str) and (_UUID.fullmatch(value) is not None
                                       or _CTID.fullmatch(value) is not None
                                       or value.lstrip("-").isdigit())


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
        rest = url[len("sqlite:"):].split("?", 1)[0]
        return _open_sqlite(Path(unquote(rest[3:] if rest.startswith("///")
                                         else rest.lstrip("/"))))
    if "://" in url:
        scheme = url.split("://", 1)[0]
        raise InvalidValue(f"keysafe scan --database reads PostgreSQL (postgresql://...) "
                           f"and SQLite (sqlite:///path, or a file path), not {scheme}://")
    if not Path(url).is_file() and any(c in url for c in "=@ "):
        # A key=value DSN, or a URL without its scheme: it may hold a password.
        raise InvalidValue("--database takes a postgresql:// URL, an sqlite:/// URL or an "
                           "SQLite file; this is none of them (not shown: it may hold a "
                           "password)")
    return _open_sqlite(Path(url))


def _open_pg(url: str) -> DatabaseScan:
    from keysafe.backends._sdk import require_sdk
    from keysafe.backends.postgres import check_userinfo, first_line, hide_password, redact_url

    psycopg = require_sdk("psycopg", "postgres")
    check_userinfo(url, InvalidValue)
    shown = redact_url(url)
    try:
        conn = psycopg.connect(url, connect_timeout=10, autocommit=True)
    except psycopg.Error as exc:
        raise InvalidValue(f"cannot connect to {shown}: "
                           f"{hide_password(first_line(exc), url)}") from None
    # Every transaction of this session read-only (each table is read in its own); a
    # statement or a lock that waits too long is stopped, never left to queue others.
    conn.execute("SET default_transaction_read_only = on")
    conn.execute(f"SET statement_timeout = '{STATEMENT_TIMEOUT_S}s'")
    conn.execute(f"SET lock_timeout = '{LOCK_TIMEOUT_S}s'")
    return DatabaseScan("postgresql", conn, shown)


def _open_sqlite(path: Path) -> DatabaseScan:
    if not path.is_file():
        raise InvalidValue(f"{path}: no such database file")
    base = f"file:{quote(str(path.absolute()))}?mode=ro"
    wal = Path(f"{path}-wal")
    notes = []
    # In WAL mode a reader needs the -shm file, which SQLite creates (and leaves) beside
    # the database. With no -wal file there is nothing beyond the main file to read: it
    # is opened immutable, creating nothing.
    uri = base + ("&immutable=1" if _is_wal(path) and not wal.exists() else "")
    try:
        conn = _check_sqlite(uri)
    except sqlite3.OperationalError:
        if not _is_wal(path):
            raise InvalidValue(f"{path} cannot be opened read-only") from None
        # A -wal file whose -shm cannot be made (a read-only directory): the main file
        # alone, without the changes not yet checkpointed into it.
        conn = _check_sqlite(base + "&immutable=1")
        notes.append(f"{path}: read without its -wal file (the directory is read-only); "
                     "changes not yet checkpointed into the database were not scanned")
    except sqlite3.DatabaseError as exc:
        raise InvalidValue(f"{path} is not a readable SQLite database: {exc}") from None
    db = DatabaseScan("sqlite", conn, str(path))
    db.notes += notes
    return db


def _check_sqlite(uri: str) -> sqlite3.Connection:
    conn = sqlite3.connect(uri, uri=True)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error:
        conn.close()
        raise
    return conn


def _is_wal(path: Path) -> bool:
    """Whether the database's header says WAL mode (file format version bytes 18-19)."""
    try:
        with path.open("rb") as f:
            head = f.read(20)
    except OSError:
        return False
    return head[:16] == b"SQLite format 3\x00" and head[18:20] == b"\x02\x02"


def database_cells(db: DatabaseScan, *, max_rows: int, exclude: Sequence[str] = (),
                   on_table: Callable[[int, int], None] | None = None) -> Iterator[Cell]:
    """Every text value of every table, table by table (``on_table(done, total)``)."""
    tables = db.tables(exclude)
    for i, table in enumerate(tables):
        yield from db.cells(table, max_rows)
        if on_table is not None:
            on_table(i + 1, len(tables))
