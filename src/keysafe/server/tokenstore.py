"""API tokens: stored as SHA-256 digests, in a small SQLite file beside the embedded
store, or in the PostgreSQL store's ``tokens`` table so that every replica sees the
same tokens (and a revocation on one reaches the others through NOTIFY at once)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from keysafe.config import Settings, uses_state_database
from keysafe.errors import Conflict, InvalidValue, NotFound
from keysafe.server.auth import (
    Identity,
    check_cidrs,
    check_orgs,
    check_roles,
    networks_of,
    orgs_of,
)

_TABLE = ("CREATE TABLE IF NOT EXISTS tokens (id TEXT PRIMARY KEY, digest TEXT NOT NULL, "
          "name TEXT NOT NULL, roles TEXT NOT NULL, orgs TEXT, created_at REAL NOT NULL, "
          "created_by TEXT NOT NULL, expires_at REAL, revoked_at REAL, last_used_at REAL, "
          "env TEXT, cidrs TEXT)")
_INFO_COLS = ("id, name, roles, orgs, created_at, created_by, expires_at, revoked_at, "
              "last_used_at, env, cidrs")


#: Events counted against a limit by every process sharing the store (rate_events is
#: also PostgreSQL migration 2).
_RATE_TABLE = "CREATE TABLE IF NOT EXISTS rate_events (bucket TEXT NOT NULL, ts REAL NOT NULL)"
_RATE_INDEX = "CREATE INDEX IF NOT EXISTS rate_events_bucket ON rate_events (bucket, ts)"


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: str
    name: str
    roles: list[str]
    orgs: list[str] | None
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    #: The environment the token works in; None: made before tokens were bound (any).
    env: str | None = None
    #: The networks it works from (CIDR blocks); None: any address.
    cidrs: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k in self.__slots__:
            v = getattr(self, k)
            out[k] = v.isoformat() if isinstance(v, datetime) else v
        return out


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


class TokenDB(Protocol):
    """Where the rows live. SQL is written with ``?`` placeholders."""

    def one(self, sql: str, args: tuple[Any, ...]) -> tuple[Any, ...] | None: ...
    def all(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]: ...
    def write(self, sql: str, args: tuple[Any, ...], *, announce: str | None = None) -> int:
        """Run a change; ``announce``: tell other processes (a token id was revoked)."""
        ...
    def exclusive(self) -> AbstractContextManager[None]:
        """One transaction that no other process's writes interleave with."""
        ...
    def close(self) -> None: ...


class SQLiteTokenDB:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._lock = threading.RLock()
        c = self._conn
        from keysafe.backends.sqlite import switch_to_wal

        switch_to_wal(c, 10.0)
        c.execute("PRAGMA synchronous=FULL")
        c.execute("PRAGMA busy_timeout=10000")
        c.execute(_TABLE)
        have = {r[1] for r in c.execute("PRAGMA table_info(tokens)")}
        for column in ("env", "cidrs"):
            if column not in have:
                # A server.db from before tokens were bound to an environment, or to
                # networks (another process may add the column first).
                with contextlib.suppress(sqlite3.OperationalError):
                    c.execute(f"ALTER TABLE tokens ADD COLUMN {column} TEXT")
        c.execute(_RATE_TABLE)
        c.execute(_RATE_INDEX)
        path.chmod(0o600)

    def one(self, sql: str, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        with self._lock:
            row: tuple[Any, ...] | None = self._conn.execute(sql, args).fetchone()
            return row

    def all(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def write(self, sql: str, args: tuple[Any, ...], *, announce: str | None = None) -> int:
        with self._lock:
            return self._conn.execute(sql, args).rowcount

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def close(self) -> None:
        self._conn.close()


class PostgresTokenDB:
    """The ``tokens`` table of the PostgreSQL store (created by its migrations)."""

    def __init__(self, backend: Any) -> None:
        self._b = backend

    def one(self, sql: str, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self._b.sql(sql.replace("?", "%s"), args)
        return row

    def all(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self._b.sql(sql.replace("?", "%s"), args, many=True)
        return rows

    def write(self, sql: str, args: tuple[Any, ...], *, announce: str | None = None) -> int:
        with self._b.transaction():
            n: int = self._b.sql(sql.replace("?", "%s"), args, write=True)
            if announce:
                self._b.notify(announce)
        return n

    def exclusive(self) -> AbstractContextManager[None]:
        exclusive: AbstractContextManager[None] = self._b.transaction()
        return exclusive

    def close(self) -> None:
        """The backend is closed by its owner."""


class TokenStore:
    """Hashed API tokens; checked on every request, so known ids are cached (and
    dropped from the cache when revoked, here or, with PostgreSQL, on any replica)."""

    def __init__(self, db: TokenDB | Path, *, cache: bool = True,
                 env: str | None = None) -> None:
        self._db: TokenDB = SQLiteTokenDB(db) if isinstance(db, Path) else db
        # Tokens made here work in this environment only: a development and a
        # production server sharing one database do not take each other's tokens.
        self.env = env
        # Without a way to hear about revocations by other processes (several workers
        # on one embedded store), every check reads the row: revocation stays immediate.
        self._use_cache = cache
        self._lock = threading.Lock()
        # id -> (digest, Identity or None when revoked); checked on every request.
        self._cache: dict[str, tuple[str, Identity | None]] = {}
        if type(self._db) is PostgresTokenDB:
            self._db._b.watch(self._on_change)

    def _on_change(self, payload: str) -> None:
        # Under the lock that covers authenticate's read-and-cache: a notification that
        # arrives while a (now stale) row is being cached waits, then drops it.
        with self._lock:
            if payload == "*":
                self._cache.clear()
            elif payload.startswith("token:"):
                self._cache.pop(payload[6:], None)

    def create(self, *, name: str, roles: list[str], orgs: list[str] | None,
               created_by: str, ttl: timedelta | None = None,
               cidrs: list[str] | None = None) -> tuple[str, TokenInfo]:
        """A new token: returns (the token, shown once; its info). The audit log names
        a token's actor by its name (``token:<name>``), so a name is printable and used
        once among the tokens (revoked ones included) whose orgs meet this one's (an
        all-orgs token meets every token): InvalidValue or Conflict otherwise. Tokens of
        orgs that share none may share a name, so an org's admin learns nothing of
        another org's token names; their records differ by org."""
        with self._db.exclusive():  # the name check and the insert, as one
            return self._create(name=name, roles=roles, orgs=orgs, created_by=created_by,
                                ttl=ttl, cidrs=cidrs)

    def _create(self, *, name: str, roles: list[str], orgs: list[str] | None,
                created_by: str, ttl: timedelta | None = None,
                cidrs: list[str] | None = None) -> tuple[str, TokenInfo]:
        if not name or len(name) > 128 or not name.isprintable() or name != name.strip():
            raise InvalidValue("token name must be 1 to 128 printable characters, with no "
                               "space at either end")
        r, o, nets = check_roles(roles), check_orgs(orgs), check_cidrs(cidrs)
        for (theirs,) in self._db.all(f"SELECT orgs FROM tokens WHERE name = ?{self._here}",  # noqa: S608
                                      (name, *self._here_args)):
            if o is None or theirs is None or orgs_of(o) & orgs_of(json.loads(theirs)):
                raise Conflict(f"a token named {name!r} exists already for an org this one "
                               "would cover (revoked ones keep their names: the audit log "
                               "tells tokens apart by name)")
        tid = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        now = time.time()
        exp = now + ttl.total_seconds() if ttl else None
        self._db.write(
            "INSERT INTO tokens (id, digest, name, roles, orgs, created_at, created_by, "
            "expires_at, env, cidrs) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (tid, _digest(secret), name, json.dumps(sorted(r)),
             None if o is None else json.dumps(sorted(o)), now, created_by, exp, self.env,
             None if nets is None else json.dumps(nets)))
        return f"ks_{tid}_{secret}", self.get(tid)

    def get(self, tid: str) -> TokenInfo:
        row = self._db.one(f"SELECT {_INFO_COLS} FROM tokens WHERE id = ?", (tid,))  # noqa: S608
        if row is None:
            from keysafe.naming import token_not_found

            raise NotFound(token_not_found(tid))
        return self._info(row)

    @staticmethod
    def _info(row: tuple[Any, ...]) -> TokenInfo:
        created = _dt(row[4])
        assert created is not None
        return TokenInfo(row[0], row[1], json.loads(row[2]),
                         None if row[3] is None else json.loads(row[3]), created, row[5],
                         _dt(row[6]), _dt(row[7]), _dt(row[8]), row[9],
                         None if row[10] is None else json.loads(row[10]))

    def list(self) -> list[TokenInfo]:
        """This environment's tokens (and those from before the binding)."""
        rows = self._db.all(f"SELECT {_INFO_COLS} FROM tokens WHERE true{self._here} "  # noqa: S608
                            "ORDER BY created_at", self._here_args)
        return [self._info(r) for r in rows]

    def revoke(self, tid: str) -> TokenInfo:
        """NotFound for an unknown token or another environment's."""
        if not self.works_here(self.get(tid)):
            raise NotFound(f"token {tid} not found")
        with self._lock:
            self._db.write("UPDATE tokens SET revoked_at = ? WHERE id = ? AND "
                           "revoked_at IS NULL", (time.time(), tid), announce=f"token:{tid}")
            self._cache.pop(tid, None)
        return self.get(tid)  # NotFound if absent

    def create_first(self, **kw: Any) -> tuple[str, TokenInfo] | None:
        """``create`` only if there are no tokens at all, atomically: replicas starting
        together on an empty store print one bootstrap token between them."""
        with self._db.exclusive():
            if self.count():
                return None
            return self._create(**kw)

    def count(self) -> int:
        """Tokens that work in this environment (its own and those from before the
        binding): a server for another environment on a shared database gets its own
        first admin token."""
        row = self._db.one(f"SELECT count(*) FROM tokens WHERE true{self._here}",  # noqa: S608
                           self._here_args)
        return int(row[0]) if row else 0

    @property
    def _here(self) -> str:
        """SQL that keeps this environment's tokens (and unbound ones)."""
        return "" if self.env is None else " AND (env = ? OR env IS NULL)"

    @property
    def _here_args(self) -> tuple[Any, ...]:
        return () if self.env is None else (self.env,)

    def works_here(self, info: TokenInfo) -> bool:
        """Whether a token works in this store's environment (listing and revoking
        another environment's tokens is that environment's business)."""
        return info.env is None or self.env is None or info.env == self.env

    def authenticate(self, token: str) -> Identity | None:
        """The identity for a presented token, or None (unknown, wrong, revoked, expired)."""
        parts = token.split("_", 2)
        if len(parts) != 3 or parts[0] != "ks" or not parts[1] or not parts[2]:
            return None
        tid, secret = parts[1], parts[2]
        hit = self._cache.get(tid)
        if hit is None:
            # Read and cache under one lock: a revoke (which takes the lock) can then
            # never be overtaken by a stale "not revoked" entry.
            with self._lock:
                row = self._db.one("SELECT digest, name, roles, orgs, expires_at, revoked_at, "
                                   "env, cidrs FROM tokens WHERE id = ?", (tid,))
                if row is not None:
                    other_env = (row[6] is not None and self.env is not None
                                 and row[6] != self.env)
                    ident = None if row[5] is not None or other_env else Identity(
                        row[1], frozenset(json.loads(row[2])),
                        None if row[3] is None else frozenset(json.loads(row[3])),
                        kind="token", token_id=tid, expires_at=row[4],
                        networks=None if row[7] is None else networks_of(json.loads(row[7])))
                    hit = (row[0], ident)
                    if self._use_cache:
                        self._cache[tid] = hit
            if hit is None:
                # Still spend a comparison so unknown ids cost what known ones do.
                hmac.compare_digest(_digest(secret), "0" * 64)
                return None
        digest, ident = hit
        if not hmac.compare_digest(_digest(secret), digest) or ident is None:
            return None
        if ident.expires_at is not None and ident.expires_at < time.time():
            return None
        return ident

    def take(self, bucket: str, limit: int, window: float) -> float | None:
        """Count one event in ``bucket`` unless ``limit`` events were counted there in
        the last ``window`` seconds by any process sharing this store (every worker, or
        every replica on PostgreSQL): None when counted, else the seconds to wait.
        ``limit`` 0 is no limit."""
        if limit <= 0:
            return None
        now = time.time()
        with self._db.exclusive():
            # Old events of every bucket go too: the table holds the last window only.
            self._db.write("DELETE FROM rate_events WHERE ts <= ?", (now - window,))
            row = self._db.one("SELECT count(*), min(ts) FROM rate_events WHERE bucket = ?",
                               (bucket,))
            n, first = (row or (0, None))
            if n >= limit:
                return max(1.0, float(first) + window - now)
            self._db.write("INSERT INTO rate_events (bucket, ts) VALUES (?, ?)", (bucket, now))
        return None

    def close(self) -> None:
        self._db.close()


def record_event(mgr: Any, action: str, info: TokenInfo) -> None:
    """``token_create`` or ``token_revoke`` in the audit log (durably), filed under the
    token's org when it covers exactly one; never the token."""
    orgs = orgs_of(info.orgs or ())
    org = orgs.pop() if len(orgs) == 1 else None
    detail: dict[str, Any] = {"token_id": info.id}
    if action == "token_create":
        detail.update(roles=sorted(info.roles), orgs=info.orgs)
        if info.cidrs is not None:
            detail["cidrs"] = info.cidrs
    mgr.record(action, None, "ok", durable=True, org=org, detail=detail)


def open_token_store(settings: Settings, backend: Any = None, *,
                     cache: bool = True) -> TokenStore:
    """The token store for these settings: the PostgreSQL store's table when the store
    is PostgreSQL, or the state database's (KEYSAFE_STATE_DATABASE_URL) in front of a
    cloud store (``backend``, or one opened here), else ``server.db`` in KEYSAFE_HOME
    (``cache=False`` when other processes may revoke tokens unheard)."""
    env = settings.env
    if getattr(backend, "name", None) == "postgres":
        return TokenStore(PostgresTokenDB(backend), env=env)
    if settings.backend == "postgres" or uses_state_database(settings):
        from keysafe.backends.postgres import PostgresBackend

        url = (settings.database_url if settings.backend == "postgres"
               else settings.state_database_url)
        return TokenStore(_OwningPostgresTokenDB(PostgresBackend.from_settings(
            settings.with_overrides(database_url=url))), env=env)
    return TokenStore(settings.server_db_path, cache=cache, env=env)


class _OwningPostgresTokenDB(PostgresTokenDB):
    """For the CLI: a token store that opened the PostgreSQL store itself closes it."""

    def close(self) -> None:
        self._b.close()
