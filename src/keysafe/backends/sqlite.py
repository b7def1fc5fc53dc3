"""The embedded store: SQLite in WAL mode, durable commits, envelope-encrypted values.

The ``secrets`` row also carries the current version's sealed value, so the common
read is one primary-key lookup; ``versions`` keeps every retained version.
One file holds secrets, versions and (through ``SQLiteAuditStore``) the audit chain, so
that a write and its audit record commit in one transaction: one fsync, and never one
without the other. Writes take SQLite's write lock (BEGIN IMMEDIATE), so check-and-set
holds across threads and processes.
"""

from __future__ import annotations

import builtins
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from pathlib import Path
from typing import Any

from keysafe.backends._rows import SQLStore, current_row_write
from keysafe.backends._rows import meta_values as _meta_values
from keysafe.backends.base import Progress, UndoHooks, WriteContext, check_cas, not_found
from keysafe.backends.checkpoint import Checkpointer, tune_writer
from keysafe.crypto.envelope import Envelope, Sealed
from keysafe.crypto.keys import KeyRing
from keysafe.errors import BackendUnavailable, ConfigError, IntegrityError
from keysafe.models import MetadataUpdate, SecretMetadata, VersionInfo

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS secrets (
  path TEXT PRIMARY KEY,
  current_version INTEGER NOT NULL,
  created_at REAL NOT NULL, updated_at REAL NOT NULL,
  created_by TEXT, updated_by TEXT,
  description TEXT, secret_type TEXT, tags TEXT,
  deleted_at REAL, last_rotated REAL, rotation_days INTEGER, expires_at REAL,
  key_id TEXT, wrapped_key BLOB, ciphertext BLOB
);
CREATE TABLE IF NOT EXISTS versions (
  path TEXT NOT NULL, version INTEGER NOT NULL,
  created_at REAL NOT NULL, created_by TEXT,
  key_id TEXT, wrapped_key BLOB, ciphertext BLOB,
  destroyed INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (path, version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit (
  seq INTEGER PRIMARY KEY,
  ts INTEGER NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
  path TEXT, version INTEGER, outcome TEXT NOT NULL,
  org TEXT, client TEXT, request_id TEXT, detail TEXT,
  prev_hash TEXT NOT NULL, hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_head (
  id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_GET_CURRENT = ("SELECT current_version, key_id, wrapped_key, ciphertext FROM secrets "
                "WHERE path = ? AND deleted_at IS NULL")

#: The master key ids that wrap some data key (a backup's manifest lists them too).
KEY_IDS_IN_USE = ("SELECT key_id FROM versions WHERE key_id IS NOT NULL UNION "
                  "SELECT key_id FROM secrets WHERE key_id IS NOT NULL")

_JOINED: AbstractContextManager[None] = nullcontext()


def switch_to_wal(conn: sqlite3.Connection, timeout: float) -> None:
    """``journal_mode=WAL``, retried: the switch needs a lock SQLite's busy handler does
    not wait for, so two processes opening a new store together can see "database is
    locked" (bounded by ``timeout``)."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)


class SQLiteBackend(SQLStore):
    """Envelope-encrypted secrets in one SQLite file (WAL, synchronous=FULL by default)."""

    name = "sqlite"

    def __init__(self, path: str | os.PathLike[str], keyring: KeyRing, *,
                 max_versions: int = 10, synchronous: str = "FULL",
                 busy_timeout_ms: int = 30_000) -> None:
        self.path = Path(path)
        self.envelope = Envelope(keyring)
        self.max_versions = max_versions
        self._lock = threading.RLock()
        self._depth = 0
        self._join = False
        self._tx_thread: int | None = None
        self._undo = UndoHooks()
        self._needs_shred = False
        self._sync = synchronous
        # Readers get their own connection: in WAL mode they never wait for a writer's
        # fsync (the audit flusher commits from another thread).
        self._rlock = threading.Lock()
        # Started after the schema's commit: a store opened only to read starts no thread.
        self._checkpointer: Checkpointer | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.path.exists():
            # Create the file owner-only before SQLite opens it.
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        try:
            self._conn = sqlite3.connect(self.path, isolation_level=None,
                                         check_same_thread=False,
                                         timeout=busy_timeout_ms / 1000)
            c = self._conn
            c.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            switch_to_wal(c, busy_timeout_ms / 1000)
            c.execute(f"PRAGMA synchronous={synchronous}")
            tune_writer(c)
            # Freed pages are zeroed, so destroyed versions do not linger in the file.
            c.execute("PRAGMA secure_delete=ON")
            with self.transaction():
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        c.execute(stmt)
                c.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                          (str(SCHEMA_VERSION),))
            self._rconn = sqlite3.connect(self.path, isolation_level=None,
                                          check_same_thread=False,
                                          timeout=busy_timeout_ms / 1000)
            self._rconn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            self._checkpointer = Checkpointer(self.path)
        except sqlite3.Error as exc:
            raise BackendUnavailable(f"cannot open SQLite store {self.path}: {exc}") from exc

    def __repr__(self) -> str:
        return f"SQLiteBackend({str(self.path)!r})"

    # -- transactions -----------------------------------------------------------
    def transaction(self, *, join: bool = False) -> AbstractContextManager[None]:
        """One write transaction. A nested call is a savepoint: it undoes only its own
        changes on error, and its changes become durable with the outer commit.

        ``join`` (outermost call only): nested calls join this transaction without
        savepoints, for a caller that lets any error end the whole transaction (the
        manager's write and its audit record); it saves two statements per nested call."""
        if self._join and self._tx_thread == threading.get_ident():
            return _JOINED  # this thread's joined transaction: nothing to set up
        return self._transaction(join)

    @contextmanager
    def _transaction(self, join: bool) -> Iterator[None]:
        with self._lock:
            if self._depth:
                if self._join:
                    yield
                    return
                outer = self._depth
                sp = f"sp{outer}"
                self._conn.execute(f"SAVEPOINT {sp}")
                self._depth += 1
                try:
                    yield
                except BaseException:
                    self._conn.execute(f"ROLLBACK TO {sp}")
                    self._conn.execute(f"RELEASE {sp}")
                    self._undo.undone(above=outer)
                    raise
                finally:
                    self._depth -= 1
                self._conn.execute(f"RELEASE {sp}")
                self._undo.released(outer)
                return
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise BackendUnavailable(f"SQLite store {self.path} is busy: {exc}") from exc
            self._depth = 1
            self._join = join
            self._tx_thread = threading.get_ident()
            try:
                yield
            except BaseException:
                self._depth = 0
                self._join = False
                self._tx_thread = None
                self._conn.execute("ROLLBACK")
                self._undo.undone()
                raise
            self._depth = 0
            self._join = False
            self._tx_thread = None
            try:
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._conn.execute("ROLLBACK")
                self._undo.undone()
                raise BackendUnavailable(f"commit to {self.path} failed: {exc}") from exc
            self._undo.committed()
            if self._checkpointer is not None:
                self._checkpointer.committed()
            if self._needs_shred:
                self._needs_shred = False
                self._checkpoint()

    def in_transaction(self) -> bool:
        """Whether this thread has a write transaction open."""
        return self._tx_thread == threading.get_ident()

    def on_rollback(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` if the work this thread's open transaction has done so far is
        rolled back (nothing happens outside a transaction: that work is committed)."""
        if self._tx_thread == threading.get_ident():
            self._undo.add(self._depth, fn)

    def on_commit(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` once this thread's open transaction commits (dropped if the work
        so far is rolled back); at once outside a transaction."""
        if self._tx_thread == threading.get_ident():
            self._undo.after(self._depth, fn)
        else:
            fn()

    @contextmanager
    def relaxed(self) -> Iterator[None]:
        """Commits inside are written to the OS but not fsynced (synchronous=NORMAL):
        they survive a crash of this process, not of the machine. For audit records of
        reads, as durable as Vault's file audit device; the next FULL commit fsyncs them."""
        with self._lock:
            if self._depth or self._sync == "NORMAL":
                yield
                return
            self._conn.execute("PRAGMA synchronous=NORMAL")
            try:
                yield
            finally:
                self._conn.execute(f"PRAGMA synchronous={self._sync}")

    @property
    def connection(self) -> sqlite3.Connection:
        """For stores that share this file (the audit chain); hold ``lock`` to use it."""
        return self._conn

    @property
    def lock(self) -> threading.RLock:
        return self._lock

    def _exec(self, sql: str, args: Sequence[Any]) -> Any:
        return self._conn.execute(sql, args)

    def _read(self, sql: str, args: Sequence[Any], *, many: bool = False) -> Any:
        """Run a read: on the write connection inside this thread's transaction (to see
        its own changes), else on the reader connection."""
        if self.in_transaction():
            cur = self._conn.execute(sql, args)
            return cur.fetchall() if many else cur.fetchone()
        with self._rlock:
            cur = self._rconn.execute(sql, args)
            return cur.fetchall() if many else cur.fetchone()

    # -- protocol ---------------------------------------------------------------
    def get(self, path: str, version: int | None = None) -> tuple[str, int]:
        if version is None:
            if self._tx_thread is None:
                # The common read, _read spelled out: no write transaction is open, so
                # the reader connection sees everything committed.
                with self._rlock:
                    row = self._rconn.execute(_GET_CURRENT, (path,)).fetchone()
            else:
                row = self._read(_GET_CURRENT, (path,))
        else:
            row = self._read(
                "SELECT v.version, v.key_id, v.wrapped_key, v.ciphertext FROM secrets s "
                "JOIN versions v ON v.path = s.path AND v.version = ? "
                "WHERE s.path = ? AND s.deleted_at IS NULL", (version, path))
        if row is None or row[3] is None:
            raise not_found(path, version)
        v, kid, wrapped, ct = row
        if kid not in self.envelope.keyring:
            self._reload_keyring(kid)  # another process ran `keysafe rekey`
        plain = self.envelope.open_parts(path, v, kid, wrapped, ct)
        try:
            return plain.decode(), v
        except UnicodeDecodeError:
            raise IntegrityError(f"{path} version {v} is not valid text", path=path) from None

    def put(self, path: str, value: str, *, ctx: WriteContext,
            expected_version: int | None = None,
            meta: MetadataUpdate | None = None) -> VersionInfo:
        now = ctx.now.timestamp()
        with self.transaction():
            c = self._conn
            # One statement for the store's active key id and this secret's version.
            active, current = c.execute(
                "SELECT (SELECT value FROM meta WHERE key = 'active_key_id'), "
                "(SELECT current_version FROM secrets WHERE path = ?)", (path,)).fetchone()
            self._check_active_key(active)
            exists = current is not None
            current = current or 0
            check_cas(path, expected_version, current)
            new = current + 1
            sealed = self.envelope.seal(path, new, value.encode())
            c.execute("INSERT OR REPLACE INTO versions VALUES (?,?,?,?,?,?,?,0)",
                      (path, new, now, ctx.actor, sealed.key_id, sealed.wrapped_key,
                       sealed.ciphertext))
            extra = _meta_values(meta) if meta else {}
            c.execute(*current_row_write(exists, path, new, now, ctx.actor, sealed, extra, "?"))
            if self.max_versions > 0 and new > self.max_versions:
                c.execute("DELETE FROM versions WHERE path = ? AND version <= ?",
                          (path, new - self.max_versions))
        return VersionInfo(new, ctx.now, ctx.actor, key_id=sealed.key_id)

    def put_many(self, items: Iterator[tuple[str, str]] | builtins.list[tuple[str, str]], *,
                 ctx: WriteContext) -> int:
        """Write version 1 of many new secrets in one transaction (Conflict if any exists)."""
        now = ctx.now.timestamp()
        n = 0
        with self.transaction():
            c = self._conn
            self._check_active_key()
            for path, value in items:
                sealed = self.envelope.seal(path, 1, value.encode())
                try:
                    c.execute("INSERT INTO secrets (path, current_version, created_at, "
                              "updated_at, created_by, updated_by, key_id, wrapped_key, "
                              "ciphertext) VALUES (?,1,?,?,?,?,?,?,?)",
                              (path, now, now, ctx.actor, ctx.actor, sealed.key_id,
                               sealed.wrapped_key, sealed.ciphertext))
                except sqlite3.IntegrityError:
                    cur = c.execute("SELECT current_version FROM secrets WHERE path = ?",
                                    (path,)).fetchone()
                    check_cas(path, 0, cur[0] if cur else 1)
                c.execute("INSERT INTO versions VALUES (?,1,?,?,?,?,?,0)",
                          (path, now, ctx.actor, sealed.key_id, sealed.wrapped_key,
                           sealed.ciphertext))
                n += 1
        return n

    def delete(self, path: str, *, ctx: WriteContext) -> SecretMetadata:
        with self.transaction():
            self.describe(path)
            self._conn.execute("UPDATE secrets SET deleted_at = ? WHERE path = ?",
                               (ctx.now.timestamp(), path))
            return self.describe(path, include_deleted=True)

    def ping(self) -> None:
        try:
            with self._lock:
                self._conn.execute("SELECT 1").fetchone()
        except sqlite3.Error as exc:
            raise BackendUnavailable(f"SQLite store {self.path}: {exc}") from exc

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
        with self._lock:
            self._conn.close()
        with self._rlock:
            self._rconn.close()

    # -- capabilities -----------------------------------------------------------
    def rewrap_all(self, progress: Progress | None = None, batch: int = 500) -> int:
        """Re-wrap every data key with the active master key, a batch per transaction."""
        active = self.envelope.keyring.active
        with self._lock:
            total = self._conn.execute(
                "SELECT count(*) FROM versions WHERE key_id IS NOT NULL AND key_id != ?",
                (active,)).fetchone()[0]
        done = 0
        while True:
            with self.transaction():
                rows = self._conn.execute(
                    "SELECT path, version, key_id, wrapped_key, ciphertext FROM versions "
                    "WHERE key_id IS NOT NULL AND key_id != ? LIMIT ?",
                    (active, batch)).fetchall()
                for path, version, kid, wrapped, ct in rows:
                    new = self.envelope.rewrap(path, version, Sealed(kid, wrapped, ct))
                    self._conn.execute(
                        "UPDATE versions SET key_id = ?, wrapped_key = ? "
                        "WHERE path = ? AND version = ?",
                        (new.key_id, new.wrapped_key, path, version))
                    self._conn.execute(
                        "UPDATE secrets SET key_id = ?, wrapped_key = ? "
                        "WHERE path = ? AND current_version = ?",
                        (new.key_id, new.wrapped_key, path, version))
            done += len(rows)
            if progress:
                progress(done, total)
            if len(rows) < batch:
                break
        with self.transaction():
            # Writers in other processes compare this with their ring before sealing.
            self._conn.execute("INSERT INTO meta VALUES ('active_key_id', ?) ON CONFLICT(key) "
                               "DO UPDATE SET value = excluded.value", (active,))
        self._shred()
        return done

    def key_ids_in_use(self) -> set[str]:
        with self._lock:
            rows = self._conn.execute(KEY_IDS_IN_USE).fetchall()
        return {r[0] for r in rows}

    _NO_ROW = object()

    def _check_active_key(self, stored: object = _NO_ROW) -> None:
        """Inside a write: after a rekey elsewhere, seal with the new key, never the old.
        ``stored``: the meta table's active_key_id (None if unset) when already read."""
        if stored is SQLiteBackend._NO_ROW:
            row = self._conn.execute(
                "SELECT value FROM meta WHERE key = 'active_key_id'").fetchone()
            stored = row[0] if row is not None else None
        if stored is not None and stored != self.envelope.keyring.active:
            kid = str(stored)
            self._reload_keyring(kid)
            if self.envelope.keyring.active != kid:
                raise ConfigError(
                    f"this store's master key is now {kid} (rotated by keysafe rekey) but "
                    f"this process seals with {self.envelope.keyring.active}; restart it with "
                    "the current key")

    def _reload_keyring(self, kid: str) -> None:
        """Pick up a key file rewritten by ``keysafe rekey`` (if the ring came from one)."""
        ring = self.envelope.keyring
        if ring.path is None or not ring.path.is_file():
            return
        fresh = KeyRing.from_file(ring.path, ring.kms)  # a wrapped ring: one more unwrap
        if kid in fresh.ids:
            self.envelope = Envelope(fresh)

    def _shred(self) -> None:
        """Old page images of destroyed data may remain in the WAL until a checkpoint;
        truncate it so crypto-shredding reaches the disk, once the change commits."""
        with self._lock:
            if self._depth:
                self._needs_shred = True
                return
        self._checkpoint()

    def _checkpoint(self) -> None:
        # The reader connection's snapshot could hold the checkpoint back; take its lock.
        # A checkpoint the background thread (or another process) is running makes this
        # one wait on the busy handler; should it still report busy, try again shortly.
        with self._lock, self._rlock, suppress(sqlite3.Error):
            for attempt in range(5):
                busy = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
                if not busy:
                    return
                time.sleep(0.02 * (attempt + 1))
