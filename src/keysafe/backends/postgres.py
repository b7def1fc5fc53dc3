"""The PostgreSQL store: the embedded store's semantics for many server replicas.

Same rows and the same envelope encryption as the SQLite store (a fresh AES-256-GCM key
per version, wrapped by the master key; the AAD binds path, version and key id), through
psycopg 3 and a connection pool. What one SQLite file gives for free is explicit here:

- Writes are serialised by a transaction-scoped advisory lock (the equivalent of
  SQLite's BEGIN IMMEDIATE), so check-and-set holds across replicas and the audit chain
  stays one chain: every write and its record commit in one transaction.
- Every committed change is announced with NOTIFY on ``keysafe_changes``; ``watch``
  runs a listener so each replica drops what it cached for that path at once.
- A key check in ``meta`` makes a replica started with a different master key refuse
  to start, instead of sealing values the other replicas cannot open.
- ``run_exclusive`` runs a scheduled job on one replica at a time, once per period
  (a session advisory lock, released by PostgreSQL if the replica dies).

The hot paths (a value read, an audit record of reads) cost one round trip each and
little Python: every thread that reads keeps a connection of its own (no pool checkout),
and runs statements prepared once on it through libpq directly, with binary results.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import json
import select
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import TYPE_CHECKING, Any, TypeVar

from keysafe.backends._rows import (
    SQLStore,
    current_row_write,
    meta_values,
)
from keysafe.backends._sdk import require_sdk
from keysafe.backends.base import Progress, UndoHooks, WriteContext, check_cas, not_found
from keysafe.backends.pg_schema import CHANNEL, GENESIS, WRITE_LOCK, require_current
from keysafe.crypto.envelope import Envelope, Sealed
from keysafe.crypto.keys import KeyRing
from keysafe.errors import (
    BackendUnavailable,
    ConfigError,
    IntegrityError,
    InvalidValue,
    KeysafeError,
)
from keysafe.manager.audit import (
    AuditFilter,
    Draft,
    Row,
    activity_sql,
    archived_meanwhile,
    chain,
    filter_sql,
    row_event,
)
from keysafe.models import AuditEvent, MetadataUpdate, SecretMetadata, VersionInfo

if TYPE_CHECKING:
    from keysafe.manager.archive import CompactResult

#: The hot statements, prepared once per connection (name, SQL) and run through libpq.
_GET = (b"ks_get", b"SELECT current_version, key_id, wrapped_key, ciphertext FROM secrets "
                   b"WHERE path = $1 AND deleted_at IS NULL")
_GET_VERSION = (b"ks_get_version",
                b"SELECT v.version, v.key_id, v.wrapped_key, v.ciphertext FROM secrets s "
                b"JOIN versions v ON v.path = s.path AND v.version = $2::integer "
                b"WHERE s.path = $1 AND s.deleted_at IS NULL")
#: Current values of many paths in one statement: the misses that wait together on an
#: event loop (see _LoopReads). $1 is a text[] literal; the rows carry their path.
_GET_MANY = (b"ks_get_many",
             b"SELECT path, current_version, key_id, wrapped_key, ciphertext FROM secrets "
             b"WHERE path = ANY($1::text[]) AND deleted_at IS NULL")
#: Append chained audit rows and move the head in one statement, only if the head is
#: still ($3, $4): a compare-and-set, so records from any number of replicas form one
#: chain without holding a lock across round trips. $5 holds the rows as one JSON array
#: (one C-speed dump, whatever the batch size, so one statement shape). $6, when not
#: NULL, is the transaction's synchronous_commit ('off' for records of reads); it is set
#: in the UPDATE's condition, so it is in force exactly when the statement writes.
_APPEND = (b"ks_audit_append",
           b"WITH h AS (UPDATE audit_head SET seq = $1::bigint, hash = $2::text "
           b"WHERE id = 1 AND seq = $3::bigint AND hash = $4::text AND "
           b"($6::text IS NULL OR set_config('synchronous_commit', $6::text, true) "
           b"IS NOT NULL) RETURNING id) "
           b"INSERT INTO audit (seq, ts, actor, action, path, version, outcome, org, client, "
           b"request_id, detail, prev_hash, hash) "
           b"SELECT (r->>0)::bigint, (r->>1)::bigint, r->>2, r->>3, r->>4, "
           b"(r->>5)::integer, r->>6, r->>7, r->>8, r->>9, r->>10, r->>11, r->>12 "
           b"FROM jsonb_array_elements($5::jsonb) r WHERE EXISTS (SELECT FROM h)")
_HEAD_FOR_UPDATE = b"SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE"
#: SQLSTATEs after which a statement is prepared again and run once more: it is gone
#: (DEALLOCATE ALL, a pooler's DISCARD ALL) or stale (a migration changed a table).
#: After a connection error or an operator intervention (but not a cancelled
#: statement, 57014) a read runs once more on a fresh connection.
_REPREPARE = frozenset({b"26000", b"0A000"})

T = TypeVar("T")

_KEY_CHECK_PATH = "keysafe:key-check"
_KEY_CHECK_TEXT = b"keysafe master key check"


def _psycopg() -> Any:
    return require_sdk("psycopg", "postgres")


def _userinfo(rest: str) -> str | None:
    """The user info of a URL's part after ``scheme://``, as written (None: none). The
    authority ends at the first '/': an '@' before it ends the user info, even one
    holding an unencoded '?' or '#'. With no '@' there, a later '@' followed by a host
    (not by a query's ``key=value``) ends user info that holds a '/'; an '@' in the
    query (``?user=app@server``) is not user info."""
    authority = rest.split("/", 1)[0]
    if "@" in authority:
        return authority.rpartition("@")[0]
    if "@" not in rest:
        return None
    after = rest.rpartition("@")[2].split("/", 1)[0]
    if "=" in after or "&" in after:
        return None  # a query's value
    return rest.rpartition("@")[0]


def redact_url(url: str) -> str:
    """The connection string without its password (in the user info, in a
    ``?password=`` parameter, or in a ``key=value`` DSN), for messages."""
    import re

    scheme, sep, rest = url.partition("://")
    if not sep:  # a key=value DSN
        return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", url)
    userinfo = _userinfo(rest)
    if userinfo is not None:
        user, colon, _ = userinfo.partition(":")
        rest = f"{user}{':***' if colon else ''}@{rest[len(userinfo) + 1:]}"
    return f"{scheme}://" + re.sub(r"([?&]password=)[^&#]*", r"\1***", rest)


def hide_password(text: str, url: str) -> str:
    """``text`` (a driver's message) without the URL's password, as Python and as libpq
    read it, raw and percent-decoded: libpq quotes a token it cannot decode."""
    from urllib.parse import quote, unquote, urlsplit

    try:
        raw = urlsplit(url).password or ""
    except ValueError:
        raw = ""
    secrets = {raw, unquote(raw)}
    with contextlib.suppress(Exception):  # unparseable: the readings above stand
        from psycopg.conninfo import conninfo_to_dict

        secrets.add(str(conninfo_to_dict(url).get("password") or ""))
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, "***").replace(quote(secret, safe=""), "***")
    return text


def check_userinfo(url: str, error: type[KeysafeError] = ConfigError) -> None:
    """``error`` for a URL whose user info holds an '@', '/', '?' or '#' that is not
    percent-encoded: libpq and Python split it differently, so part of the password
    would be taken for the host and shown in libpq's messages (``_userinfo``)."""
    _, sep, rest = url.partition("://")
    userinfo = _userinfo(rest) if sep else None
    if userinfo is not None and any(c in userinfo for c in "@/?#"):
        raise error("the database URL has a character in its user info that is not "
                    "percent-encoded ('@', '/', '?' or '#': write them as %40, %2F, %3F "
                    "and %23); the URL is not shown")


#: Taken with BEGIN in one round trip (the simple query protocol runs both; the result
#: is the SELECT's): the write lock, and the active key id as of the lock.
_LOCK_AND_KEY = (b"SELECT pg_advisory_xact_lock(%d), "
                 b"(SELECT value FROM meta WHERE key = 'active_key_id')" % WRITE_LOCK)


class PostgresBackend(SQLStore):
    """Envelope-encrypted secrets in PostgreSQL, shared by any number of replicas."""

    name = "postgres"
    PH = "%s"
    remote = True  # calls cross a network: servers run them off the event loop

    def __init__(self, url: str, keyring: KeyRing, *, max_versions: int = 10,
                 pool_min: int = 1, pool_max: int = 10, auto_upgrade: bool = True,
                 connect_timeout: float = 10.0) -> None:
        psycopg = _psycopg()
        pool_mod = require_sdk("psycopg_pool", "postgres")
        self._psycopg = psycopg
        check_userinfo(url)
        self._url = url
        self.where = redact_url(url)
        self.envelope = Envelope(keyring)
        self._ring = keyring  # as configured; the envelope may follow the database's key
        self.max_versions = max_versions
        self._local = threading.local()
        self._watchers: list[Callable[[str], None]] = []
        self._listener: threading.Thread | None = None
        self._listening = threading.Event()
        self._closed = threading.Event()
        self._connect_timeout = connect_timeout
        # Each reading thread's own connection (see _own); at most pool_max of them.
        self._owned: dict[threading.Thread, Any] = {}
        self._owned_lock = threading.Lock()
        self._own_max = max(1, pool_max)
        # Idle connections for get_async (any event loop may take one: it is only a
        # socket until a read registers it with its loop), and how many exist in all.
        self._loop_free: builtins.list[Any] = []
        self._loop_count = 0
        # Each event loop's coalesced reads (see _LoopReads), and the last one used.
        self._reads: weakref.WeakKeyDictionary[Any, _LoopReads] = weakref.WeakKeyDictionary()
        self._reads_last: tuple[Any, Any] = (None, None)
        pq = psycopg.pq
        self._tuples_ok = int(pq.ExecStatus.TUPLES_OK)
        self._command_ok = int(pq.ExecStatus.COMMAND_OK)
        self._conn_ok = int(pq.ConnStatus.OK)
        self._pool = pool_mod.ConnectionPool(
            url, min_size=max(1, pool_min), max_size=max(pool_min, pool_max, 1),
            kwargs={"autocommit": True}, open=False, timeout=connect_timeout,
            name="keysafe")
        try:
            # One direct connection first: an unreachable or misconfigured database fails
            # at once (the pool would retry until its timeout).
            with psycopg.connect(url, autocommit=True,
                                 connect_timeout=max(1, int(connect_timeout))) as c:
                require_current(c, auto_upgrade=auto_upgrade)
                self._check_master_key(c)
            self._pool.open(wait=True, timeout=connect_timeout)
        except KeysafeError:
            self._pool.close()
            raise
        except (psycopg.Error, pool_mod.PoolTimeout) as exc:
            self._pool.close()
            raise BackendUnavailable(f"cannot open PostgreSQL store {self.where}: "
                                     f"{hide_password(first_line(exc), url)}") from exc

    @classmethod
    def from_settings(cls, settings: Any) -> PostgresBackend:
        from keysafe.crypto.keys import load_keyring
        from keysafe.crypto.kms import kms_from_settings

        if not settings.database_url:
            raise ConfigError("the postgres backend needs KEYSAFE_DATABASE_URL "
                              "(postgresql://user:password@host:5432/dbname)")
        # Replicas must share one master key: it is never created here, except for
        # local work and tests (a key file in KEYSAFE_HOME).
        create = settings.profile in ("local", "test")
        ring = load_keyring(settings.master_key, settings.key_file, create=create,
                            kms=kms_from_settings(settings))
        opts = settings.backend_options
        return cls(settings.database_url, ring, max_versions=settings.max_versions,
                   pool_max=int(opts.get("pool_max", settings.db_pool_max)),
                   auto_upgrade=settings.db_auto_upgrade)

    def __repr__(self) -> str:
        return f"PostgresBackend({self.where!r})"

    # -- connections and transactions ------------------------------------------
    @contextmanager
    def _errors(self) -> Iterator[None]:
        """psycopg's connection errors as BackendUnavailable (retryable)."""
        psycopg = self._psycopg
        try:
            yield
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise BackendUnavailable(f"PostgreSQL store {self.where}: "
                                     f"{hide_password(first_line(exc), self._url)}") from exc
        except Exception as exc:
            if exc.__class__.__name__ == "PoolTimeout":
                raise BackendUnavailable(f"PostgreSQL store {self.where}: no connection "
                                         "free in the pool") from exc
            raise

    @contextmanager
    def _checkout(self) -> Iterator[Any]:
        """A pooled connection, for as long as the block runs. One the server has
        closed while it sat in the pool (a restart, a failover) is swapped for a fresh
        one first, and the pool tests its other idle ones, instead of failing a write."""
        pool = self._pool
        conn = pool.getconn()
        if not self._usable(conn):
            _close_quietly(conn)
            pool.putconn(conn)  # closed: the pool replaces it
            with suppress(Exception):  # still down: the pool keeps trying by itself
                pool.check()
            conn = pool.getconn()
        try:
            yield conn
        finally:
            pool.putconn(conn)

    def _usable(self, conn: Any) -> bool:
        """Whether an idle connection is still open: the server sends nothing on an
        idle connection unasked except before closing it, so a readable socket (or a
        connection already known bad) gets a real round trip."""
        pg = conn.pgconn
        if pg.status != self._conn_ok:
            return False
        poll = select.poll()
        poll.register(pg.socket, select.POLLIN)
        if not poll.poll(0):
            return True
        try:
            conn.execute("")
        except self._psycopg.Error:
            return False
        return True

    @contextmanager
    def transaction(self, *, lock: bool = True, join: bool = False) -> Iterator[None]:
        """One write transaction, holding the write lock until it commits. A nested call
        is a savepoint that undoes only its own changes on error. ``lock=False`` (audit
        records of reads, which serialise on the chain's head row alone) skips the write
        lock, so reads never queue behind writes.

        ``join`` (outermost call only): nested calls join this transaction without
        savepoints, for a caller that lets any error end the whole transaction (the
        manager's write and its audit record); it saves two round trips per nested call.
        BEGIN, the lock and the store's active key id go in one round trip, as does the
        COMMIT."""
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is not None:
            if getattr(local, "join", False):
                yield
                return
            outer = local.depth
            local.depth = outer + 1
            try:
                with conn.transaction():
                    yield
            except BaseException:
                local.undo.undone(above=outer)
                raise
            finally:
                local.depth = outer
            local.undo.released(outer)
            return
        with self._errors(), self._checkout() as conn:
            pg = conn.pgconn
            begin = [b"BEGIN"]
            if getattr(self._local, "relaxed", False):
                begin.append(b"SET LOCAL synchronous_commit = off")
            if lock:
                begin.append(_LOCK_AND_KEY)
            self._local.conn = conn
            self._local.join = join
            local.depth = 1
            local.undo = UndoHooks()
            try:
                res = self._simple(conn, b"; ".join(begin),
                                   self._tuples_ok if lock else self._command_ok)
                kid = res.get_value(0, 1) if lock else None
                self._local.active_kid = None if kid is None else kid.decode(
                    self._encoding(conn))
                yield
                done = self._simple(conn, b"COMMIT", self._command_ok)
                if done.command_status != b"COMMIT":
                    # The server rolled back instead: a statement failed and its error
                    # was swallowed somewhere above. Nothing was written.
                    raise BackendUnavailable(f"PostgreSQL store {self.where}: the "
                                             "transaction was rolled back, not committed")
                local.undo.committed()
            except BaseException:
                if pg.status == self._conn_ok and pg.transaction_status != 0:  # not idle
                    _rollback_quietly(pg)
                local.undo.undone()
                raise
            finally:
                self._local.conn = None
                self._local.join = False
                local.undo = None

    @contextmanager
    def relaxed(self) -> Iterator[None]:
        """Commits inside skip waiting for the WAL flush (synchronous_commit=off): for
        audit records of reads, as in the embedded store."""
        prev = getattr(self._local, "relaxed", False)
        self._local.relaxed = True
        try:
            yield
        finally:
            self._local.relaxed = prev

    def _tx_conn(self) -> Any:
        return self._local.conn

    def _exec(self, sql: str, args: Sequence[Any]) -> Any:
        return self._local.conn.execute(sql, args)

    def _read(self, sql: str, args: Sequence[Any] = (), *, many: bool = False) -> Any:
        """A read on this thread's transaction (to see its own changes), else on its own
        connection (once more on a fresh one if that one broke)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            cur = conn.execute(sql, args)
            return cur.fetchall() if many else cur.fetchone()

        def run(c: Any) -> Any:
            cur = c.execute(sql, args)
            return cur.fetchall() if many else cur.fetchone()
        return self._on_own(run)

    # -- each thread's own connection, and statements run through libpq ---------
    def _own(self) -> Any:
        """This thread's own autocommit connection (None: every one allowed is taken,
        use the pool). A value read then costs no pool checkout, and its statements stay
        prepared on it."""
        conn = getattr(self._local, "own", None)
        if conn is not None and conn.pgconn.status == self._conn_ok:
            return conn
        if conn is not None:
            self._drop_own(conn)
        if self._closed.is_set():
            return None
        me = threading.current_thread()
        with self._owned_lock:
            # A thread that ended leaves its connection here: take it over (a process
            # that starts threads as it goes then does not connect once per thread).
            for t, c in self._owned.items():
                if c is not None and not t.is_alive():
                    del self._owned[t]
                    self._owned[me] = c
                    self._local.own = c
                    return c
            if len(self._owned) >= self._own_max:
                return None
            self._owned[me] = None  # the slot, while connecting without the lock
        try:
            with self._errors():
                conn = self._psycopg.connect(self._url, autocommit=True, connect_timeout=max(
                    1, int(self._connect_timeout)))
        except BaseException:
            with self._owned_lock:
                self._owned.pop(me, None)
            raise
        with self._owned_lock:
            self._owned[me] = conn
        self._local.own = conn
        if self._closed.is_set():  # closed while connecting
            self._drop_own(conn)
            return None
        return conn

    def _drop_own(self, conn: Any) -> None:
        """Forget (and close) this thread's own connection, after it broke."""
        if getattr(self._local, "own", None) is conn:
            self._local.own = None
        with self._owned_lock:
            for t, c in builtins.list(self._owned.items()):
                if c is conn:
                    del self._owned[t]
        _close_quietly(conn)

    def _on_own(self, fn: Callable[[Any], Any]) -> Any:
        """``fn(conn)`` on this thread's own connection (else a pooled one). If the
        connection turns out to be broken (a restart, a failover, a killed backend) or
        its prepared statement is gone, ``fn`` runs once more on a fresh connection:
        only for calls that may run twice (reads; appends that check their own head)."""
        psycopg = self._psycopg
        for attempt in (1, 2):
            conn = self._own()
            try:
                if conn is None:
                    with self._errors(), self._checkout() as pooled:
                        return fn(pooled)
                return fn(conn)
            except _Retry as exc:
                if conn is not None and exc.reconnect:
                    self._lost(conn)
                if attempt == 2:
                    with self._errors():
                        raise exc.error from None
            except (psycopg.OperationalError, psycopg.InterfaceError):
                # Raised by psycopg itself on this thread's connection (a pooled one's
                # errors are BackendUnavailable by now, and not tried again).
                self._lost(conn)
                if attempt == 2:
                    with self._errors():
                        raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _lost(self, conn: Any) -> None:
        """This thread's own connection broke: the server may have dropped every one
        (a restart, a failover), so have the pool test its idle connections too, rather
        than hand a dead one to the next write."""
        self._drop_own(conn)
        with suppress(Exception):  # still down: the pool keeps trying by itself
            self._pool.check()

    def _prepared(self, conn: Any, stmt: tuple[bytes, bytes]) -> bytes:
        """The statement's name, prepared on ``conn`` if it was not yet."""
        names: set[bytes] | None = getattr(conn, "_keysafe_prepared", None)
        if names is None:
            names = conn._keysafe_prepared = set()
        if stmt[0] not in names:
            self._check(conn, conn.pgconn.prepare(*stmt), self._command_ok)
            names.add(stmt[0])
        return stmt[0]

    @staticmethod
    def _encoding(conn: Any) -> str:
        """The connection's client encoding (Python's name), looked up once."""
        enc: str | None = getattr(conn, "_keysafe_encoding", None)
        if enc is None:
            enc = conn._keysafe_encoding = conn.info.encoding
        return enc

    def _simple(self, conn: Any, sql: bytes, want: int) -> Any:
        """``sql`` (one or more statements, no parameters) in one round trip; the last
        result, if its status is ``want``, else its error raised as psycopg raises it."""
        try:
            return self._check(conn, conn.pgconn.exec_(sql), want)
        except _Retry as exc:
            raise exc.error from None

    def _check(self, conn: Any, res: Any, want: int) -> Any:
        """``res`` if its status is ``want``; otherwise its error, raised as _Retry when
        a fresh connection would do (lost, or a prepared statement gone)."""
        if res.status == want:
            return res
        error = self._psycopg.errors.error_from_result(res, encoding=conn.info.encoding)
        state = res.error_field(self._psycopg.pq.DiagnosticField.SQLSTATE) or b""
        if conn.pgconn.status != self._conn_ok or (isinstance(
                error, self._psycopg.OperationalError) and state != b"57014"):
            raise _Retry(error)
        if state in _REPREPARE:
            # e.g. psycopg runs DEALLOCATE ALL after a rollback on a connection where
            # it prepared statements itself: prepare ours again, on the same connection.
            conn._keysafe_prepared = set()
            raise _Retry(error, reconnect=False)
        raise error

    def _fetch_row(self, stmt: tuple[bytes, bytes], args: Sequence[str]
                   ) -> tuple[int, str, bytes | None, bytes | None] | None:
        """(version, key id, wrapped key, ciphertext) of the one row ``stmt`` selects,
        with binary results (no text decoding of bytea), or None."""
        row: tuple[int, str, bytes | None, bytes | None] | None = self._run_prepared(
            stmt, args, self._row_of)
        return row

    def _run_prepared(self, stmt: tuple[bytes, bytes], args: Sequence[str],
                      parse: Callable[[Any, Any], Any]) -> Any:
        """``parse(conn, result)`` of the prepared ``stmt`` with binary results, on this
        thread's own connection (once more on a fresh one if that one broke)."""
        def run(conn: Any) -> Any:
            enc = self._encoding(conn)
            try:
                res = conn.pgconn.exec_prepared(self._prepared(conn, stmt),
                                                [a.encode(enc) for a in args], None, 1)
            except self._psycopg.OperationalError as exc:  # no result at all: lost
                raise _Retry(exc) from exc
            return parse(conn, res)
        return self._on_own(run)

    def _row_of(self, conn: Any, res: Any) -> tuple[int, str, bytes | None, bytes | None] | None:
        """The first row of a binary result of _GET or _GET_VERSION."""
        self._check(conn, res, self._tuples_ok)
        if not res.ntuples:
            return None
        get = res.get_value
        kid = get(0, 1)
        return (int.from_bytes(get(0, 0), "big", signed=True),
                kid.decode() if kid is not None else "", get(0, 2), get(0, 3))

    def _changed(self, path: str) -> None:
        """Announce a change; delivered to every listener when the transaction commits."""
        self._tx_conn().execute("SELECT pg_notify(%s, %s)", (CHANNEL, path))

    # -- master key ------------------------------------------------------------
    def _check_master_key(self, conn: Any) -> None:
        """Refuse a master key ring that cannot open this database's key check."""
        ring = self.envelope.keyring
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            row = conn.execute("SELECT value FROM meta WHERE key = 'active_key_id'").fetchone()
            if row is None:
                conn.execute("INSERT INTO meta VALUES ('active_key_id', %s)", (ring.active,))
                self._store_key_check(conn, ring.active)
                return
            active = row[0]
        if active not in ring.ids:
            raise ConfigError(
                f"this database's master key is {active!r}, which is not in this process's "
                f"key ring ({', '.join(ring.ids)}); every replica needs the same "
                "KEYSAFE_MASTER_KEY")
        check = conn.execute("SELECT value FROM meta WHERE key = %s",
                             (f"key_check:{active}",)).fetchone()
        if check is None:
            raise IntegrityError(f"the key check for master key {active!r} is missing")
        try:
            self.envelope.open(_KEY_CHECK_PATH, 0, _decode_sealed(check[0]))
        except IntegrityError:
            raise ConfigError(
                f"master key {active!r} in this process is not the key this database was "
                "written with; every replica needs the same KEYSAFE_MASTER_KEY") from None

    def _store_key_check(self, conn: Any, kid: str) -> None:
        sealed = self.envelope.seal(_KEY_CHECK_PATH, 0, _KEY_CHECK_TEXT)
        conn.execute("INSERT INTO meta VALUES (%s, %s) ON CONFLICT (key) DO UPDATE "
                     "SET value = excluded.value", (f"key_check:{kid}", _encode_sealed(sealed)))

    def _check_active_key(self) -> None:
        """Inside a write: after a rekey by another process, seal with the new active key
        if this ring has it; refuse to seal with an old key otherwise (restart the replica
        with the new ring)."""
        active = getattr(self._local, "active_kid", None)
        ring = self.envelope.keyring
        if active is not None and active != ring.active and active in ring.ids:
            # Another process ran `keysafe rekey` with a key this ring also holds: seal
            # with the database's active key from now on, as every replica must.
            self.envelope = Envelope(KeyRing({k: ring.key(k) for k in ring.ids}, active))
        if active is not None and active != self.envelope.keyring.active:
            raise ConfigError(
                f"this store's master key is now {active} (rotated by keysafe rekey) but "
                f"this process seals with {self.envelope.keyring.active}; restart it with "
                "the current key ring")

    def in_transaction(self) -> bool:
        """Whether this thread has a write transaction open."""
        return getattr(self._local, "conn", None) is not None

    def on_rollback(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` if the work this thread's open transaction has done so far is
        rolled back (nothing happens outside a transaction: that work is committed)."""
        local = self._local
        if getattr(local, "conn", None) is not None:
            local.undo.add(local.depth, fn)

    def on_commit(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` once this thread's open transaction commits (dropped if the work
        so far is rolled back); at once outside a transaction."""
        local = self._local
        if getattr(local, "conn", None) is not None:
            local.undo.after(local.depth, fn)
        else:
            fn()

    # -- protocol ---------------------------------------------------------------
    def get(self, path: str, version: int | None = None) -> tuple[str, int]:
        row: Any
        if self.in_transaction():
            # Inside a transaction: on its connection, to see its own changes.
            if version is None:
                row = self._read(
                    "SELECT current_version, key_id, wrapped_key, ciphertext FROM secrets "
                    "WHERE path = %s AND deleted_at IS NULL", (path,))
            else:
                row = self._read(
                    "SELECT v.version, v.key_id, v.wrapped_key, v.ciphertext FROM secrets s "
                    "JOIN versions v ON v.path = s.path AND v.version = %s "
                    "WHERE s.path = %s AND s.deleted_at IS NULL", (version, path))
        elif version is None:
            row = self._fetch_row(_GET, (path,))
        else:
            row = self._fetch_row(_GET_VERSION, (path, str(int(version))))
        return self._open_row(path, version, row)

    def _open_row(self, path: str, version: int | None, row: Any) -> tuple[str, int]:
        if row is None or row[3] is None or row[2] is None:
            raise not_found(path, version)
        v, kid = row[0], row[1]
        envelope = self.envelope
        if kid not in envelope.keyring:
            raise ConfigError(f"{path} version {v} is sealed with master key {kid}, "
                              "which this process does not have; restart it with the "
                              "current key ring")
        plain = envelope.open_parts(path, v, kid, bytes(row[2]), bytes(row[3]))
        try:
            return plain.decode(), v
        except UnicodeDecodeError:
            raise IntegrityError(f"{path} version {v} is not valid text", path=path) from None

    async def get_async(self, path: str, version: int | None = None) -> tuple[str, int]:
        """``get`` on the running event loop, without a worker thread: the statement is
        sent through libpq in non-blocking mode and the loop wakes when the answer
        arrives, so a cache miss costs neither a thread hop nor a blocked loop.

        Reads of current values that wait at the same time are one statement: those
        that arrive while an earlier batch is in flight (or in the same turn of the
        loop) go together when it returns (see _LoopReads), so N concurrent misses cost
        one round trip and one execution instead of N. Each loop keeps up to pool_max
        connections of its own for this; beyond that, reads run in the loop's default
        executor. Raises as ``get`` does, for each path on its own."""
        if self.in_transaction():
            return self.get(path, version)  # in this thread's transaction: its own view
        loop = _running_loop()
        if version is not None:
            args = [path, str(int(version))]
            row = await self._on_loop(loop, _GET_VERSION, args, self._row_of,
                                      lambda: self._fetch_row(_GET_VERSION, args))
            return self._open_row(path, version, row)
        last = self._reads_last
        reads = last[1] if last[0] is loop else self._reads_on(loop)
        batch, fut = reads.join(loop, path)
        try:
            row = await fut
        except BaseException:
            if fut.cancelled():
                reads.abandoned(loop, batch)
            raise
        return self._open_row(path, None, row)

    def _reads_on(self, loop: Any) -> _LoopReads:
        """The coalescer of ``loop``'s reads (made on its first read)."""
        with self._owned_lock:
            reads = self._reads.get(loop)
            if reads is None:
                reads = self._reads[loop] = _LoopReads(self)
        self._reads_last = (loop, reads)
        return reads

    async def _rows_async(self, loop: Any, paths: builtins.list[str], attempt: int = 1
                          ) -> dict[str, tuple[int, str, bytes | None, bytes | None]]:
        """The current rows of ``paths`` that exist (not deleted), by path: one
        statement on one of the loop's connections (``attempt`` 2: the last try)."""
        args = [_text_array(paths)]
        rows: dict[str, tuple[int, str, bytes | None, bytes | None]] = await self._on_loop(
            loop, _GET_MANY, args, self._rows_of, lambda: self._fetch_rows(args), attempt)
        return rows

    def _fetch_rows(self, args: Sequence[str]
                    ) -> dict[str, tuple[int, str, bytes | None, bytes | None]]:
        """``_rows_async`` on this thread's own connection (blocking)."""
        rows: dict[str, tuple[int, str, bytes | None, bytes | None]] = self._run_prepared(
            _GET_MANY, args, self._rows_of)
        return rows

    def _rows_of(self, conn: Any, res: Any
                 ) -> dict[str, tuple[int, str, bytes | None, bytes | None]]:
        """The rows of a binary result of _GET_MANY, by path."""
        self._check(conn, res, self._tuples_ok)
        get = res.get_value
        enc = self._encoding(conn)
        out = {}
        for i in range(res.ntuples):
            kid = get(i, 2)
            out[get(i, 0).decode(enc)] = (int.from_bytes(get(i, 1), "big", signed=True),
                                          kid.decode() if kid is not None else "",
                                          get(i, 3), get(i, 4))
        return out

    async def _on_loop(self, loop: Any, stmt: tuple[bytes, bytes], args: Sequence[str],
                       parse: Callable[[Any, Any], T], blocking: Callable[[], T],
                       first: int = 1) -> T:
        """``parse(conn, result)`` of ``stmt`` run on one of the loop's connections;
        once more on a fresh one if that one was lost (unless ``first`` is 2: this is
        that second try); ``blocking()`` in the default executor when every connection
        allowed is in use."""
        for attempt in range(first, 3):
            conn = self._loop_conn()
            if conn is None:
                done: T = await loop.run_in_executor(None, blocking)
                return done
            if conn is _NEW:
                conn = await self._connect_async(loop)
            try:
                out = parse(conn, await self._exec_async(loop, conn, stmt, args))
            except _Retry as exc:
                self._loop_conn_gone(conn)
                if attempt == 2:
                    with self._errors():
                        raise exc.error from None
                continue
            except BaseException:
                # Lost, cancelled mid-statement (an answer may still be on its way) or
                # failed: this connection is not used again.
                self._loop_conn_gone(conn)
                raise
            self._loop_conn_back(conn)
            return out
        raise AssertionError("unreachable")  # pragma: no cover

    def _loop_conn(self) -> Any:
        """An idle connection for get_async, else _NEW (a slot reserved: connect one),
        else None (every one allowed is in use)."""
        with self._owned_lock:
            if self._loop_free:
                return self._loop_free.pop()
            if self._closed.is_set() or self._loop_count >= self._own_max:
                return None
            self._loop_count += 1
            return _NEW

    async def _connect_async(self, loop: Any) -> Any:
        """A new connection for get_async, opened in the default executor; closed
        there if the read waiting for it is cancelled meanwhile."""
        lock = threading.Lock()
        state: dict[str, Any] = {"abandoned": False, "conn": None}

        def connect() -> Any:
            conn = self._connect_loop_conn()
            with lock:
                if not state["abandoned"]:
                    state["conn"] = conn
                    return conn
            _close_quietly(conn)
            return None
        try:
            return await loop.run_in_executor(None, connect)
        except BaseException:
            with lock:
                state["abandoned"] = True
                conn = state["conn"]
            self._loop_conn_gone(conn)
            raise

    def _connect_loop_conn(self) -> Any:
        """A new connection for an event loop, its statements prepared (in a worker
        thread: connecting blocks)."""
        with self._errors():
            conn = self._psycopg.connect(self._url, autocommit=True, connect_timeout=max(
                1, int(self._connect_timeout)))
            try:
                self._prepared(conn, _GET)
                self._prepared(conn, _GET_VERSION)
                self._prepared(conn, _GET_MANY)
            except _Retry as exc:
                _close_quietly(conn)
                raise exc.error from None
            except BaseException:
                _close_quietly(conn)
                raise
        return conn

    def _loop_conn_idle(self) -> Any:
        """An idle connection for get_async, or None (none open and idle)."""
        with self._owned_lock:
            return self._loop_free.pop() if self._loop_free else None

    def _loop_conn_back(self, conn: Any) -> None:
        with self._owned_lock:
            if not self._closed.is_set():
                self._loop_free.append(conn)
                return
            self._loop_count -= 1
        _close_quietly(conn)

    def _loop_conn_gone(self, conn: Any) -> None:
        with self._owned_lock:
            self._loop_count -= 1
        _close_quietly(conn)

    async def _exec_async(self, loop: Any, conn: Any, stmt: tuple[bytes, bytes],
                          args: Sequence[str]) -> Any:
        """The (first) result of the prepared ``stmt``, binary, sent without blocking."""
        pg = conn.pgconn
        enc = self._encoding(conn)
        try:
            pg.send_query_prepared(stmt[0], [a.encode(enc) for a in args], None, 1)
            while pg.flush():  # not all sent yet (a full socket buffer)
                await _io(loop, pg.socket, write=True)
            res = None
            while True:
                pg.consume_input()
                if pg.is_busy():
                    await _io(loop, pg.socket)
                    continue
                r = pg.get_result()
                if r is None:  # the statement's results are complete
                    break
                if res is None:
                    res = r
        except self._psycopg.OperationalError as exc:  # lost
            raise _Retry(exc) from exc
        return res

    def put(self, path: str, value: str, *, ctx: WriteContext,
            expected_version: int | None = None,
            meta: MetadataUpdate | None = None) -> VersionInfo:
        now = ctx.now.timestamp()
        with self.transaction():
            c = self._tx_conn()
            self._check_active_key()
            row = c.execute("SELECT current_version FROM secrets WHERE path = %s",
                            (path,)).fetchone()
            current = row[0] if row else 0
            check_cas(path, expected_version, current)
            new = current + 1
            sealed = self.envelope.seal(path, new, value.encode())
            # The writes need no answers: one round trip for all of them.
            with c.pipeline():
                self._put_rows(c, path, new, now, ctx, sealed, row is not None, meta)
        return VersionInfo(new, ctx.now, ctx.actor, key_id=sealed.key_id)

    def _put_rows(self, c: Any, path: str, new: int, now: float, ctx: WriteContext,
                  sealed: Sealed, exists: bool, meta: MetadataUpdate | None) -> None:
        """The put's rows and its notification (in a pipeline: no answers needed)."""
        c.execute("INSERT INTO versions VALUES (%s,%s,%s,%s,%s,%s,%s,false) "
                  "ON CONFLICT (path, version) DO UPDATE SET created_at = excluded.created_at, "
                  "created_by = excluded.created_by, key_id = excluded.key_id, "
                  "wrapped_key = excluded.wrapped_key, ciphertext = excluded.ciphertext, "
                  "destroyed = false",
                  (path, new, now, ctx.actor, sealed.key_id, sealed.wrapped_key,
                   sealed.ciphertext))
        extra = meta_values(meta) if meta else {}
        c.execute(*current_row_write(exists, path, new, now, ctx.actor, sealed,
                                     extra, "%s"))
        if self.max_versions > 0 and new > self.max_versions:
            c.execute("DELETE FROM versions WHERE path = %s AND version <= %s",
                      (path, new - self.max_versions))
        self._changed(path)

    def put_many(self, items: Iterator[tuple[str, str]] | builtins.list[tuple[str, str]], *,
                 ctx: WriteContext, batch: int = 1000) -> int:
        """Version 1 of many new secrets in one transaction (Conflict if any exists)."""
        now = ctx.now.timestamp()
        n = 0
        with self.transaction():
            c = self._tx_conn()
            self._check_active_key()
            rows_s: builtins.list[tuple[Any, ...]] = []
            rows_v: builtins.list[tuple[Any, ...]] = []

            def flush() -> None:
                if not rows_s:
                    return
                paths = [r[0] for r in rows_s]
                taken = c.execute("SELECT path, current_version FROM secrets "
                                  "WHERE path = ANY(%s) LIMIT 1", (paths,)).fetchone()
                if taken is not None:
                    check_cas(taken[0], 0, taken[1])
                with c.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO secrets (path, current_version, created_at, updated_at, "
                        "created_by, updated_by, key_id, wrapped_key, ciphertext) "
                        "VALUES (%s,1,%s,%s,%s,%s,%s,%s,%s)", rows_s)
                    cur.executemany("INSERT INTO versions VALUES (%s,1,%s,%s,%s,%s,%s,false)",
                                    rows_v)
                rows_s.clear()
                rows_v.clear()

            seen: set[str] = set()
            for path, value in items:
                if path in seen:
                    check_cas(path, 0, 1)
                seen.add(path)
                sealed = self.envelope.seal(path, 1, value.encode())
                rows_s.append((path, now, now, ctx.actor, ctx.actor, sealed.key_id,
                               sealed.wrapped_key, sealed.ciphertext))
                rows_v.append((path, now, ctx.actor, sealed.key_id, sealed.wrapped_key,
                               sealed.ciphertext))
                n += 1
                if len(rows_s) >= batch:
                    flush()
            flush()
            self._changed("*")
        return n

    def delete(self, path: str, *, ctx: WriteContext) -> SecretMetadata:
        with self.transaction():
            self.describe(path)
            self._tx_conn().execute("UPDATE secrets SET deleted_at = %s WHERE path = %s",
                                    (ctx.now.timestamp(), path))
            self._changed(path)
            return self.describe(path, include_deleted=True)

    def ping(self) -> None:
        self._read("SELECT 1")

    def close(self) -> None:
        self._closed.set()
        t = self._listener
        if t is not None and t is not threading.current_thread():
            t.join(timeout=5)
        with self._owned_lock:
            owned = [c for c in self._owned.values() if c is not None]
            self._owned.clear()
            owned += self._loop_free
            self._loop_count -= len(self._loop_free)
            self._loop_free.clear()
        for c in owned:
            _close_quietly(c)
        self._pool.close()

    # -- capabilities -----------------------------------------------------------
    def rewrap_all(self, progress: Progress | None = None, batch: int = 500) -> int:
        """Re-wrap every data key with the active master key, a batch per transaction;
        then record the new active key (and its check) for the other replicas."""
        # To this process's configured active key, whatever the database says now.
        envelope = Envelope(self._ring)
        active = self._ring.active
        total = self._read("SELECT count(*) FROM versions WHERE key_id IS NOT NULL "
                           "AND key_id != %s", (active,))[0]
        done = 0
        while True:
            with self.transaction():
                c = self._tx_conn()
                rows = c.execute(
                    "SELECT path, version, key_id, wrapped_key, ciphertext FROM versions "
                    "WHERE key_id IS NOT NULL AND key_id != %s LIMIT %s",
                    (active, batch)).fetchall()
                for path, version, kid, wrapped, ct in rows:
                    new = envelope.rewrap(path, version, Sealed(kid, bytes(wrapped),
                                                                bytes(ct)))
                    c.execute("UPDATE versions SET key_id = %s, wrapped_key = %s "
                              "WHERE path = %s AND version = %s",
                              (new.key_id, new.wrapped_key, path, version))
                    c.execute("UPDATE secrets SET key_id = %s, wrapped_key = %s "
                              "WHERE path = %s AND current_version = %s",
                              (new.key_id, new.wrapped_key, path, version))
            done += len(rows)
            if progress:
                progress(done, total)
            if len(rows) < batch:
                break
        with self.transaction():
            c = self._tx_conn()
            self.envelope = envelope
            self._store_key_check(c, active)
            c.execute("INSERT INTO meta VALUES ('active_key_id', %s) ON CONFLICT (key) "
                      "DO UPDATE SET value = excluded.value", (active,))
            self._changed("*")
        return done

    def key_ids_in_use(self) -> set[str]:
        rows = self._read("SELECT key_id FROM versions WHERE key_id IS NOT NULL UNION "
                          "SELECT key_id FROM secrets WHERE key_id IS NOT NULL", many=True)
        return {r[0] for r in rows}

    # -- change notifications ---------------------------------------------------
    def watch(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(path)`` for every change committed by any replica (``"*"``:
        anything may have changed, e.g. after the listener reconnected)."""
        self._watchers.append(callback)
        if self._listener is None:
            t = threading.Thread(target=self._listen, name="keysafe-pg-listen", daemon=True)
            self._listener = t
            t.start()

    @property
    def listening(self) -> threading.Event:
        """Set while the change listener is connected."""
        return self._listening

    def _emit(self, payload: str) -> None:
        for cb in builtins.list(self._watchers):
            try:
                cb(payload)
            except Exception:  # noqa: S112 - one bad watcher must not stop the others
                continue

    def _listen(self) -> None:
        psycopg = self._psycopg
        backoff = 0.1
        while not self._closed.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    # Anything committed while we were not listening is unknown: drop all.
                    self._emit("*")
                    self._listening.set()
                    backoff = 0.1
                    while not self._closed.is_set():
                        for n in conn.notifies(timeout=0.25):
                            self._emit(n.payload)
            except psycopg.Error:
                pass
            self._listening.clear()
            self._emit("*")
            self._closed.wait(backoff)
            backoff = min(backoff * 2, 5.0)

    # -- scheduled jobs -----------------------------------------------------------
    def run_exclusive(self, job: str, every: float, fn: Callable[[], object], *,
                      holder: str) -> bool:
        """Run ``fn`` if ``job`` is due (not run in the last ``every`` seconds) and no
        other replica is running it. Returns whether it ran. If this process dies
        mid-job, PostgreSQL releases the lock and the job stays due for the next one."""
        key = f"keysafe-job:{job}"
        # Its own connection, not a pooled one: the job itself needs the pool (a pool of
        # one must not deadlock), and the lock lives exactly as long as this session.
        with self._errors(), self._psycopg.connect(self._url, autocommit=True,
                                                   connect_timeout=10) as c:
            got = c.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))",
                            (key,)).fetchone()[0]
            if not got:
                return False
            try:
                row = c.execute("SELECT next_due, extract(epoch FROM clock_timestamp()) "
                                "FROM jobs RIGHT JOIN (SELECT 1) one ON name = %s",
                                (job,)).fetchone()
                now = float(row[1])
                if row[0] is not None and row[0] > now:
                    return False
                fn()
                done = time.time()
                c.execute("INSERT INTO jobs VALUES (%s, %s, %s, %s) ON CONFLICT (name) DO "
                          "UPDATE SET last_run = excluded.last_run, next_due = "
                          "excluded.next_due, holder = excluded.holder",
                          (job, done, now + every, holder))
                return True
            finally:
                c.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (key,))

    @contextmanager
    def hold(self, name: str) -> Iterator[bool]:
        """Try to hold ``name`` against every replica for the block (a session advisory
        lock on a connection of its own, released if this process dies); yields whether
        it is held."""
        key = f"keysafe-hold:{name}"
        with self._errors(), self._psycopg.connect(self._url, autocommit=True,
                                                   connect_timeout=10) as c:
            got = c.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))",
                            (key,)).fetchone()[0]
            try:
                yield bool(got)
            finally:
                if got:
                    # Closing the session releases it too: a connection lost meanwhile
                    # must not turn the finished work into an error.
                    with suppress(Exception):
                        c.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))",
                                  (key,))

    def job_state(self, job: str) -> tuple[float | None, float | None, str | None]:
        """(last run, next due, holder) of a scheduled job."""
        row = self._read("SELECT last_run, next_due, holder FROM jobs WHERE name = %s",
                         (job,))
        return (row[0], row[1], row[2]) if row else (None, None, None)

    # -- what other parts of keysafe share ----------------------------------------
    def sql(self, sql: str, args: Sequence[Any] = (), *, many: bool = False,
            write: bool = False) -> Any:
        """Run one statement for a part of keysafe that keeps its own table here (the
        token store). ``write``: inside a write transaction; returns the row count."""
        if not write:
            return self._read(sql, args, many=many)
        with self.transaction():
            return self._tx_conn().execute(sql, args).rowcount

    def notify(self, payload: str) -> None:
        """Announce a change that is not a secret's (e.g. ``token:<id>``)."""
        with self.transaction():
            self._changed(payload)


def _encode_sealed(s: Sealed) -> str:
    return json.dumps({"kid": s.key_id, "w": base64.b64encode(s.wrapped_key).decode(),
                       "c": base64.b64encode(s.ciphertext).decode()})


def _decode_sealed(text: str) -> Sealed:
    try:
        d = json.loads(text)
        return Sealed(d["kid"], base64.b64decode(d["w"]), base64.b64decode(d["c"]))
    except (ValueError, KeyError, TypeError):
        raise IntegrityError("the stored master key check is malformed") from None


def _rollback_quietly(pg: Any) -> None:
    # If this fails the connection is broken, and the caller drops it.
    with suppress(Exception):
        pg.exec_(b"ROLLBACK")


_NEW = object()  # _loop_conn: a connection may be opened
#: Batches of reads in flight at once per event loop: the misses that arrive meanwhile
#: wait for one to return and then go together, so a loaded loop sends few, large
#: batches (one send, one wake-up and one execution for many reads).
_IN_FLIGHT = 1
#: At most this many paths per batch; a full batch goes at once, in flight or not.
_MAX_PATHS = 256


_GET_LOOP: builtins.list[Callable[[], Any]] = []  # asyncio.get_running_loop, once imported


def _running_loop() -> Any:
    if not _GET_LOOP:
        import asyncio

        _GET_LOOP.append(asyncio.get_running_loop)
    return _GET_LOOP[0]()


def _text_array(items: Sequence[str]) -> str:
    """``items`` as a PostgreSQL text[] literal (every element quoted and escaped)."""
    return "{" + ",".join(['"' + p.replace("\\", "\\\\").replace('"', '\\"') + '"'
                           for p in items]) + "}"


class _Batch:
    """Reads of current values sent as one statement: each waiter's future, by path."""

    __slots__ = ("cancelled", "task", "waiters")

    def __init__(self) -> None:
        self.waiters: dict[str, builtins.list[Any]] = {}
        self.task: Any = None
        self.cancelled = False  # a waiter was cancelled: look which paths are wanted


class _LoopReads:
    """One event loop's reads of current values, coalesced. A read joins the batch
    that has not been sent yet (never one in flight: its statement must start after
    the read did, so a write the reader's cache generation predates is seen or the
    value is not cached). That batch goes at the end of the loop's turn if fewer than
    _IN_FLIGHT are in flight, else as soon as one returns. Every waiter gets its own
    path's row (None: not found) or the batch's error; a cancelled waiter leaves the
    others be, and a batch whose waiters are all cancelled is abandoned with its
    connection (an answer may still arrive on it).

    The common case runs on callbacks alone: the batch is sent on the loop's *hot*
    connection, whose socket stays registered with the loop while batches follow one
    another, and the answer is read in the socket's callback, which sends the next
    batch at once (no task, no coroutine and no registration per batch). Whatever is
    less common (no idle connection: connect one; a connection lost: a fresh one, once)
    runs as a task through ``PostgresBackend._on_loop``. Used on its loop's thread only."""

    __slots__ = ("__weakref__", "_b", "_busy", "_conn", "_fd", "_flushing", "_inflight",
                 "_next", "_queued", "_running")

    def __init__(self, backend: PostgresBackend) -> None:
        self._b = backend
        self._next: _Batch | None = None
        self._busy = 0
        self._queued = False
        self._running: set[_Batch] = set()  # strong references to the tasks in flight
        # The hot connection (its socket registered for reading while it is set), and
        # the batch in flight on it with its paths.
        self._conn: Any = None
        self._fd = -1
        self._flushing = False  # also registered for writing: the query is not all sent
        self._inflight: tuple[_Batch, builtins.list[str]] | None = None

    def join(self, loop: Any, path: str) -> tuple[_Batch, Any]:
        """The batch ``path``'s read waits in, and the future of its row."""
        batch = self._next
        if batch is not None and len(batch.waiters) >= _MAX_PATHS:
            self._send(loop)
            batch = None
        if batch is None:
            batch = self._next = _Batch()
            if not self._queued and self._busy < _IN_FLIGHT:
                self._queued = True
                loop.call_soon(self._flush, loop)
        fut = loop.create_future()
        w = batch.waiters.get(path)
        if w is None:
            batch.waiters[path] = [fut]
        else:
            w.append(fut)
        return batch, fut

    def abandoned(self, loop: Any, batch: _Batch) -> None:
        """A waiter of ``batch`` was cancelled: abandon the batch if it was the last."""
        batch.cancelled = True
        if not all(f.done() for fs in batch.waiters.values() for f in fs):
            return
        inflight = self._inflight
        if inflight is not None and inflight[0] is batch:
            self._inflight = None
            self._busy -= 1
            self._drop(loop)
            self._more(loop)
            return
        task = batch.task
        if task is not None and not task.done():
            task.cancel()

    def _flush(self, loop: Any) -> None:
        self._queued = False
        if self._busy < _IN_FLIGHT:
            self._send(loop)

    def _more(self, loop: Any) -> None:
        """After a batch: send the next one if it may go, else let the hot connection
        go back to the idle ones."""
        if self._next is not None and self._busy < _IN_FLIGHT:
            self._send(loop)
        if self._inflight is None and self._conn is not None:
            conn = self._conn
            self._unregister(loop)
            self._b._loop_conn_back(conn)

    def _send(self, loop: Any) -> None:
        batch, self._next = self._next, None
        if batch is None:
            return
        if batch.cancelled:
            paths = [p for p, fs in batch.waiters.items() if not all(f.done() for f in fs)]
        else:
            paths = builtins.list(batch.waiters)
        if not paths:
            return  # every waiter was cancelled before it went
        self._busy += 1
        if self._inflight is None:
            conn = self._conn
            if conn is None:
                conn = self._b._loop_conn_idle()
            if conn is not None and self._start(loop, conn, batch, paths):
                return
        self._task(loop, batch, paths, 1)

    def _task(self, loop: Any, batch: _Batch, paths: builtins.list[str], attempt: int) -> None:
        self._running.add(batch)
        batch.task = loop.create_task(self._run(loop, batch, paths, attempt))

    def _start(self, loop: Any, conn: Any, batch: _Batch, paths: builtins.list[str]) -> bool:
        """Send ``batch`` on ``conn`` (made the hot connection); False if ``conn`` turned
        out to be lost (dropped; the batch then goes as a task, on a fresh one)."""
        b = self._b
        pg = conn.pgconn
        if conn is not self._conn:
            self._conn = conn
            self._fd = pg.socket
            loop.add_reader(self._fd, self._readable, loop)
        try:
            pg.send_query_prepared(_GET_MANY[0], [_text_array(paths).encode(b._encoding(conn))],
                                   None, 1)
            if pg.flush():  # not all sent yet (a full socket buffer)
                self._flushing = True
                loop.add_writer(self._fd, self._writable, loop)
        except b._psycopg.OperationalError:
            self._drop(loop)
            return False
        self._inflight = (batch, paths)
        return True

    def _writable(self, loop: Any) -> None:
        try:
            if self._conn.pgconn.flush():
                return
        except self._b._psycopg.OperationalError:
            self._lost(loop)
            return
        self._flushing = False
        loop.remove_writer(self._fd)

    def _readable(self, loop: Any) -> None:
        conn, inflight = self._conn, self._inflight
        if conn is None:
            return
        if inflight is None:  # nothing asked: the server is closing the connection
            self._drop(loop)
            return
        b = self._b
        pg = conn.pgconn
        try:
            pg.consume_input()
            if self._flushing:
                self._writable(loop)
            if pg.is_busy():
                return
            res = None
            while True:
                r = pg.get_result()
                if r is None:  # the statement's results are complete
                    break
                if res is None:
                    res = r
            if res is None:
                raise b._psycopg.OperationalError("the server sent no result")
            rows = b._rows_of(conn, res)
        except (b._psycopg.OperationalError, _Retry):
            self._lost(loop)
            return
        except Exception as exc:
            self._inflight = None
            self._busy -= 1
            self._drop(loop)
            _fail(inflight[0], exc)
            self._more(loop)
            return
        self._inflight = None
        self._busy -= 1
        _deliver(inflight[0], rows)
        self._more(loop)

    def _lost(self, loop: Any) -> None:
        """The hot connection broke (or its statement is gone) with a batch in flight:
        drop it, and run the batch once more, as a task on a fresh connection."""
        inflight = self._inflight
        self._inflight = None
        self._drop(loop)
        if inflight is not None:
            self._task(loop, inflight[0], inflight[1], 2)  # still counted in _busy

    def _unregister(self, loop: Any) -> None:
        loop.remove_reader(self._fd)
        if self._flushing:
            self._flushing = False
            loop.remove_writer(self._fd)
        self._conn = None
        self._fd = -1

    def _drop(self, loop: Any) -> None:
        """Forget and close the hot connection."""
        conn = self._conn
        if conn is not None:
            self._unregister(loop)
            self._b._loop_conn_gone(conn)

    async def _run(self, loop: Any, batch: _Batch, paths: builtins.list[str],
                   attempt: int) -> None:
        import asyncio

        try:
            rows = await self._b._rows_async(loop, paths, attempt)
        except asyncio.CancelledError:
            for fs in batch.waiters.values():
                for f in fs:
                    f.cancel()
            raise
        except Exception as exc:
            _fail(batch, exc)
        else:
            _deliver(batch, rows)
        finally:
            self._busy -= 1
            self._running.discard(batch)
            if self._next is not None and not self._queued and self._busy < _IN_FLIGHT:
                self._send(loop)


def _deliver(batch: _Batch, rows: dict[str, Any]) -> None:
    get = rows.get
    for path, fs in batch.waiters.items():
        row = get(path)
        for f in fs:
            if not f.done():
                f.set_result(row)


def _fail(batch: _Batch, exc: BaseException) -> None:
    for fs in batch.waiters.values():
        for f in fs:
            if not f.done():
                f.set_exception(exc)


async def _io(loop: Any, fd: int, *, write: bool = False) -> None:
    """Until ``fd`` is readable (or writable), on ``loop``."""
    fut = loop.create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)
    if write:
        loop.add_writer(fd, ready)
    else:
        loop.add_reader(fd, ready)
    try:
        await fut
    finally:
        if write:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


class _Retry(Exception):
    """A statement failed in a way a fresh connection may not (see _on_own)."""

    def __init__(self, error: BaseException, *, reconnect: bool = True) -> None:
        super().__init__(str(error))
        self.error = error
        self.reconnect = reconnect


def _close_quietly(conn: Any) -> None:
    if conn is not None:
        with suppress(Exception):  # already broken: closing is best effort
            conn.close()


def first_line(exc: BaseException) -> str:
    """An error's first line (psycopg's connection errors carry no URL or password
    there), or its type's name."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class PostgresAuditStore:
    """The audit chain in PostgreSQL, one chain for any number of replicas.

    A write's record commits in the write's own transaction, after locking the head row.
    Records of reads are appended alone, in one statement that moves the head only if
    it is still where this process last left it (a compare-and-set: one round trip, no
    lock held between round trips); if another replica moved it, the append takes the
    head row's lock and chains onto the head it finds."""

    #: After this many compare-and-set misses in a row (another replica appending as
    #: often), appends lock the head first for a while, instead of guessing.
    _MAX_SKIP = 64

    def __init__(self, backend: PostgresBackend) -> None:
        self._b = backend
        self._lock = threading.Lock()  # one append at a time from this process
        self._head: tuple[int, str] | None = None  # where this process's last append left it
        self._skip = 0
        self._misses = 0

    def in_transaction(self) -> bool:
        return self._b.in_transaction()

    def on_rollback(self, fn: Callable[[], object]) -> None:
        self._b.on_rollback(fn)

    def on_commit(self, fn: Callable[[], object]) -> None:
        self._b.on_commit(fn)

    def append(self, drafts: Sequence[Draft]) -> builtins.list[Row]:
        b = self._b
        tx = getattr(b._local, "conn", None)
        if tx is not None:
            # Inside a write: join its transaction (and write lock), in a savepoint so
            # that a failed append undoes only itself, unless the write was joined (any
            # error ends it all: no savepoint needed).
            self._head = None
            try:
                if getattr(b._local, "join", False):
                    return self._locked(tx, drafts, None, None, named=False)
                with tx.transaction():
                    return self._locked(tx, drafts, None, None, named=False)
            except _Retry as exc:
                raise exc.error from None
        sync = "off" if getattr(b._local, "relaxed", False) else None
        tried: builtins.list[Row] = []

        def run(conn: Any) -> builtins.list[Row]:
            # A second run (the connection broke) first checks whether the first one
            # committed after all, so a record is never stored twice.
            return self._alone(conn, drafts, sync, tried)
        with self._lock:
            done: builtins.list[Row] = b._on_own(run)
            self._head = (done[-1][0], done[-1][12])
            return done

    def _alone(self, conn: Any, drafts: Sequence[Draft], sync: str | None,
               tried: builtins.list[Row]) -> builtins.list[Row]:
        head = self._head
        if head is not None and not tried:
            if self._skip:
                self._skip -= 1
            else:
                done = chain(drafts, head[0], head[1])
                tried[:] = done
                if self._put(conn, done, head, sync):
                    self._misses = 0
                    return done
                # Another replica appended since: lock the head, as below.
                self._misses = min(self._misses + 1, 6)
                self._skip = min(1 << self._misses, self._MAX_SKIP) - 1
        b = self._b
        pg = conn.pgconn
        try:
            done = self._locked(conn, drafts, sync, tried, begin=True)
            b._check(conn, pg.exec_(b"COMMIT"), b._command_ok)
        except BaseException:
            if pg.status == b._conn_ok and pg.transaction_status != 0:  # not idle
                _rollback_quietly(pg)
            raise
        return done

    def _locked(self, conn: Any, drafts: Sequence[Draft], sync: str | None,
                tried: builtins.list[Row] | None, *, named: bool = True,
                begin: bool = False) -> builtins.list[Row]:
        """Inside a transaction (``begin``: one begun here, in the same round trip):
        lock the head row, chain onto it and append."""
        b = self._b
        sql = b"BEGIN; " + _HEAD_FOR_UPDATE if begin else _HEAD_FOR_UPDATE
        try:
            res = b._check(conn, conn.pgconn.exec_(sql), b._tuples_ok)
        except b._psycopg.OperationalError as exc:
            raise _Retry(exc) from exc
        head = (int(res.get_value(0, 0)), res.get_value(0, 1).decode(b._encoding(conn)))
        if tried and head == (tried[-1][0], tried[-1][12]):
            return tried  # an earlier try committed before its connection broke
        done = chain(drafts, head[0], head[1])
        if tried is not None:
            tried[:] = done
        if not self._put(conn, done, head, sync, named=named):
            raise IntegrityError("the audit head moved while locked")
        return done

    def _put(self, conn: Any, done: builtins.list[Row], head: tuple[int, str],
             sync: str | None, *, named: bool = True) -> bool:
        """Append ``done`` if the head is still ``head``; whether it was. ``named``:
        with the statement prepared on the connection (else parsed for this call)."""
        b = self._b
        enc = b._encoding(conn)
        rows = json.dumps([_clean(r) for r in done], ensure_ascii=False,
                          separators=(",", ":"))
        args = [str(done[-1][0]).encode(), done[-1][12].encode(enc), str(head[0]).encode(),
                head[1].encode(enc), rows.encode(enc), None if sync is None else sync.encode()]
        pg = conn.pgconn
        try:
            res = (pg.exec_prepared(b._prepared(conn, _APPEND), args) if named
                   else pg.exec_params(_APPEND[1], args))
        except b._psycopg.OperationalError as exc:
            raise _Retry(exc) from exc
        b._check(conn, res, b._command_ok)
        n = int(res.command_tuples or 0)
        if n not in (0, len(done)):
            raise IntegrityError(f"the audit append stored {n} of {len(done)} records")
        return n == len(done)

    def relaxed(self) -> AbstractContextManager[None]:
        return self._b.relaxed()

    def head(self) -> tuple[int, str] | None:
        return _head_of(self._b._read(_HEAD))

    def query(self, flt: AuditFilter) -> builtins.list[AuditEvent]:
        where, args = filter_sql(flt, "%s")
        rows = self._b._read(f"SELECT {_COLS} FROM audit{where}", args, many=True)  # noqa: S608
        return [row_event(r) for r in rows]

    def activity(self, flt: AuditFilter, by: Sequence[str], **kw: Any
                 ) -> builtins.list[tuple[Any, ...]]:
        sql, args = activity_sql(flt, by, "%s", **kw)
        return [tuple(r) for r in self._b._read(sql, args, many=True)]

    # -- archiving (see keysafe.manager.archive) --
    def base(self) -> tuple[int, str] | None:
        row = self._b._read(_BASE)
        return _parse_base(row[0]) if row else None

    def first_at(self, ts_us: int) -> int | None:
        # Along the primary key from the oldest: archiving asks for an old time.
        row = self._b._read("SELECT seq FROM audit WHERE ts >= %s ORDER BY seq LIMIT 1",
                            (ts_us,))
        return row[0] if row else None

    def rows_after(self, after: int, through: int, limit: int) -> builtins.list[Row]:
        rows: builtins.list[Row] = self._b._read(
            f"SELECT {_COLS} FROM audit WHERE seq > %s AND seq <= %s "  # noqa: S608
            "ORDER BY seq LIMIT %s", (after, through, limit), many=True)
        return rows

    def trim(self, base: tuple[int, str] | None, through: int, last_hash: str) -> None:
        """Remove records up to ``through`` (archived) and remember where the chain now
        starts, one archive at a time across replicas; Conflict if another archive
        moved the base since ``base`` was read. Appends go on meanwhile."""
        b = self._b
        with b.transaction(lock=False):
            b._exec("SELECT pg_advisory_xact_lock(hashtext('keysafe.audit_archive'))", ())
            row = b._read(_BASE)
            if (_parse_base(row[0]) if row else None) != base:
                raise archived_meanwhile()
            b._exec("DELETE FROM audit WHERE seq <= %s", (through,))
            b._exec("INSERT INTO meta VALUES ('audit_base', %s) ON CONFLICT (key) "
                    "DO UPDATE SET value = excluded.value", (f"{through}:{last_hash}",))

    def compact(self) -> CompactResult:
        """``VACUUM (ANALYZE)`` of the audit table after an archive: the space of the
        removed records is reusable at once (autovacuum would get there too) and the
        planner sees the smaller table. Appends and reads go on meanwhile; the files do
        not shrink (that takes ``VACUUM FULL``, which locks the table). The pool's
        connections are in autocommit mode (transactions are explicit), as VACUUM
        needs. PostgreSQL skips, with only a warning, a table the role does not own."""
        from keysafe.manager.archive import CompactResult

        b = self._b
        t0 = time.monotonic()
        size = "SELECT pg_total_relation_size('audit')"
        with b._errors(), b._checkout() as c:
            before = c.execute(size).fetchone()[0]
            c.execute("VACUUM (ANALYZE) audit")
            after = c.execute(size).fetchone()[0]
        return CompactResult("postgres", f"{b.where} table audit", before, after,
                             round(time.monotonic() - t0, 3))

    @contextmanager
    def snapshot(self) -> Iterator[tuple[tuple[int, str] | None, tuple[int, str] | None,
                                         Iterator[Row]]]:
        """(base, head, records in sequence order) as of one moment (a REPEATABLE READ
        transaction), streamed with a server-side cursor, for verify: records other
        replicas append meanwhile are not seen."""
        b = self._b
        with b._errors(), b._checkout() as c, c.transaction():
            c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            base = c.execute(_BASE).fetchone()
            head = c.execute(_HEAD).fetchone()
            cur = c.cursor(name="keysafe_audit_verify")
            cur.itersize = 5000
            cur.execute(f"SELECT {_COLS} FROM audit ORDER BY seq")  # noqa: S608
            yield _parse_base(base[0]) if base else None, _head_of(head), iter(cur)

    def scan(self) -> Iterator[Row]:
        """Every record in sequence order, streamed with a server-side cursor."""
        b = self._b
        with b._errors(), b._checkout() as c, c.transaction():
            cur = c.cursor(name="keysafe_audit_scan")
            cur.itersize = 5000
            cur.execute(f"SELECT {_COLS} FROM audit ORDER BY seq")  # noqa: S608
            yield from cur


_COLS = ("seq, ts, actor, action, path, version, outcome, org, client, request_id, detail, "
         "prev_hash, hash")


_HEAD = "SELECT seq, hash FROM audit_head WHERE id = 1"
_BASE = "SELECT value FROM meta WHERE key = 'audit_base'"


def _head_of(row: Row | None) -> tuple[int, str] | None:
    """The chain's head from its row (the schema's genesis row means no record yet)."""
    if row is None or (row[0] == 0 and row[1] == GENESIS):
        return None
    return (row[0], row[1])


def _parse_base(value: str) -> tuple[int, str]:
    seq, _, digest = value.partition(":")
    return int(seq), digest


def _clean(row: Row) -> Row:
    """PostgreSQL text cannot hold NUL (names and paths are validated long before; this
    guards the free-form fields, such as a client's user agent)."""
    if any(f.__class__ is str and "\x00" in f for f in row):
        raise InvalidValue("an audit record field contains a NUL character")
    return row
