"""The audit log: hash-chained records of who did what to which path, never the value.

Each record's hash covers its fields and the previous record's hash, so an edited,
removed or reordered record breaks the chain at a place ``verify`` names. Writes are
recorded durably in the same transaction as the change when the store allows it (the
embedded store does); reads are buffered and committed in groups.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import itertools
import json
import operator
import os
import sqlite3
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from time import monotonic, sleep
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from keysafe.errors import AuditError, BackendUnavailable, Conflict, KeysafeError
from keysafe.models import AuditEvent

if TYPE_CHECKING:
    from keysafe.manager.archive import CompactResult


def _warn(msg: str, *args: object) -> None:
    # logging is imported only when there is something to say (CLI start-up time).
    import logging

    logging.getLogger("keysafe.audit").warning(msg, *args)
GENESIS = "0" * 64
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)

#: A record before it joins the chain: (ts_us, actor, action, path, version, outcome,
#: org, client, request_id, detail_json). Tuples keep the read path cheap.
Draft = tuple[int, str, str, str | None, int | None, str, str | None, str | None,
              str | None, str | None]
#: A chained record: (seq, *draft, prev_hash, hash).
Row = tuple[Any, ...]


def now_us() -> int:
    return time.time_ns() // 1000


def to_datetime(ts_us: int) -> datetime:
    return _EPOCH + ts_us * _US


def to_us(d: datetime) -> int:
    """Microseconds since the epoch; a time without an offset is taken as UTC."""
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return (d - _EPOCH) // _US


_sha256 = hashlib.sha256
_NUL = "\x00"


def row_hash(prev_hash: str, seq: int, draft: Sequence[Any]) -> str:
    # Fields joined with a unit separator; None is spelled NUL so it differs from "None".
    if len(draft) == 10:
        # The same bytes as the general form below, built in one f-string (the flusher
        # hashes every read record under the GIL).
        ts, actor, action, path, version, outcome, org, client, rid, detail = draft
        return _sha256(
            f"{prev_hash}\n{seq}\x1f{ts}\x1f{actor}\x1f{action}\x1f"
            f"{_NUL if path is None else path}\x1f{_NUL if version is None else version}\x1f"
            f"{outcome}\x1f{_NUL if org is None else org}\x1f"
            f"{_NUL if client is None else client}\x1f{_NUL if rid is None else rid}\x1f"
            f"{_NUL if detail is None else detail}".encode()).hexdigest()
    parts = [prev_hash, "\n", str(seq)]
    for f in draft:
        parts.append("\x1f")
        parts.append(f if f.__class__ is str else "\x00" if f is None else str(f))
    return hashlib.sha256("".join(parts).encode()).hexdigest()


def chain(drafts: Sequence[Draft], last_seq: int, last_hash: str) -> list[Row]:
    """Give drafts their sequence numbers and hashes, continuing a chain."""
    out = []
    for d in drafts:
        last_seq += 1
        h = row_hash(last_hash, last_seq, d)
        out.append((last_seq, *d, last_hash, h))
        last_hash = h
    return out


def row_event(r: Row) -> AuditEvent:
    return AuditEvent(seq=r[0], ts=to_datetime(r[1]), actor=r[2], action=r[3], path=r[4],
                      version=r[5], outcome=r[6], org=r[7], client=r[8], request_id=r[9],
                      detail=json.loads(r[10]) if r[10] else {}, prev_hash=r[11], hash=r[12])


class AuditFilter(NamedTuple):
    org: str | None = None
    path: str | None = None          # exact path, or a prefix ending in '/'
    action: str | None = None
    actor: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int | None = None
    newest_first: bool = False
    #: Only records older than this one (a page's cursor: the last seq it showed).
    before_seq: int | None = None

    def matches(self, e: AuditEvent) -> bool:
        if self.org is not None and e.org != self.org:
            return False
        if self.path is not None:
            p = e.path or ""
            if not (p == self.path or (self.path.endswith("/") and p.startswith(self.path))):
                return False
        return ((self.action is None or e.action == self.action)
                and (self.actor is None or e.actor == self.actor)
                and (self.outcome is None or e.outcome == self.outcome)
                and (self.since is None or to_us(e.ts) >= to_us(self.since))
                and (self.until is None or to_us(e.ts) <= to_us(self.until))
                and (self.before_seq is None or e.seq < self.before_seq))


class VerifyResult(NamedTuple):
    ok: bool
    checked: int
    problems: list[tuple[int, str]]
    #: What was not checked, and why (records in files not given): never a failure.
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checked": self.checked,
                "problems": [{"seq": s, "problem": p} for s, p in self.problems],
                "notes": list(self.notes)}


def verify_rows(rows: Iterable[Row], head: tuple[int, str] | None = None,
                base: tuple[int, str] | None = None) -> VerifyResult:
    """Walk a chain in storage order and name every record that breaks it. ``base``:
    the (seq, hash) the chain continues from once older records were archived
    (``keysafe audit archive``); without one it starts at the genesis."""
    problems: list[tuple[int, str]] = []
    prev_seq, prev_hash = base or (0, GENESIS)
    n = 0
    for r in rows:
        n += 1
        e = _RowView(r)
        if e.seq <= prev_seq:
            problems.append((e.seq, f"out of order: record {e.seq} comes after {prev_seq}"))
        elif e.seq != prev_seq + 1:
            missing = (f"record {prev_seq + 1}" if e.seq == prev_seq + 2
                       else f"records {prev_seq + 1}..{e.seq - 1}")
            problems.append((prev_seq + 1, f"{missing} removed"))
        elif e.prev_hash != prev_hash:
            problems.append((e.seq, f"record {e.seq} does not follow record {prev_seq} "
                                    "(removed, reordered or replaced record)"))
        if row_hash(e.prev_hash, e.seq, r[1:11]) != e.hash:
            problems.append((e.seq, f"record {e.seq} was edited (its hash does not match)"))
        prev_hash, prev_seq = e.hash, max(prev_seq, e.seq)
    if head is not None and (prev_seq, prev_hash) != head:
        if prev_seq < head[0]:
            what = (f"record {head[0]}" if prev_seq + 1 == head[0]
                    else f"records {prev_seq + 1}..{head[0]}")
            problems.append((prev_seq + 1, f"{what} removed from the end of the log"))
        else:
            problems.append((head[0], f"the log ends at record {prev_seq}, but its recorded "
                                      f"head is record {head[0]} (records replaced or added)"))
    return VerifyResult(not problems, n, problems)


class _RowView:
    __slots__ = ("hash", "prev_hash", "seq")

    def __init__(self, r: Row) -> None:
        self.seq, self.prev_hash, self.hash = r[0], r[11], r[12]


class AuditStore(Protocol):
    def append(self, drafts: Sequence[Draft]) -> list[Row]:
        """Chain and store the drafts atomically; return the chained rows."""
        ...

    def query(self, flt: AuditFilter) -> list[AuditEvent]: ...

    def activity(self, flt: AuditFilter, by: Sequence[str], *,
                 actions: Sequence[str] | None = None, outcomes: Sequence[str] | None = None,
                 paths: bool = True) -> list[tuple[Any, ...]]:
        """Records counted by the ``by`` columns (GROUP_COLUMNS), only ``actions`` and
        ``outcomes`` if given: rows of the group's values, then its count, distinct
        paths (0 unless ``paths``), first and last timestamp (epoch us)."""
        ...

    def scan(self) -> Iterator[Row]:
        """Every record in storage order (for verify)."""
        ...

    def head(self) -> tuple[int, str] | None:
        """(seq, hash) of the newest record, as recorded apart from the records."""
        ...


class MemoryAuditStore:
    def __init__(self) -> None:
        self.rows: list[Row] = []
        self._base: tuple[int, str] | None = None
        self._lock = threading.Lock()

    def append(self, drafts: Sequence[Draft]) -> list[Row]:
        with self._lock:
            seq, prev = ((self.rows[-1][0], self.rows[-1][12]) if self.rows
                         else self._base or (0, GENESIS))
            done = chain(drafts, seq, prev)
            self.rows.extend(done)
            return done

    def query(self, flt: AuditFilter) -> list[AuditEvent]:
        out = [e for e in map(row_event, self.rows) if flt.matches(e)]
        if flt.newest_first:
            out.reverse()
        return out[: flt.limit] if flt.limit else out

    def activity(self, flt: AuditFilter, by: Sequence[str], **kw: Any
                 ) -> list[tuple[Any, ...]]:
        return activity_of(map(row_event, list(self.rows)), flt, by, **kw)

    def scan(self) -> Iterator[Row]:
        return iter(list(self.rows))

    def head(self) -> tuple[int, str] | None:
        if self.rows:
            return (self.rows[-1][0], self.rows[-1][12])
        return self._base

    # -- archiving (see keysafe.manager.archive) --
    def base(self) -> tuple[int, str] | None:
        return self._base

    def first_at(self, ts_us: int) -> int | None:
        return next((r[0] for r in self.rows if r[1] >= ts_us), None)

    def rows_after(self, after: int, through: int, limit: int) -> list[Row]:
        return [r for r in self.rows if after < r[0] <= through][:limit]

    def trim(self, base: tuple[int, str] | None, through: int, last_hash: str) -> None:
        with self._lock:
            if self._base != base:
                raise archived_meanwhile()
            self.rows = [r for r in self.rows if r[0] > through]
            self._base = (through, last_hash)


def filter_sql(flt: AuditFilter, ph: str) -> tuple[str, list[Any]]:
    """The WHERE / ORDER BY / LIMIT clauses (and arguments) selecting ``flt`` from an
    ``audit`` table; ``ph`` is the driver's placeholder (``?`` or ``%s``)."""
    where, args = _where(flt, ph)
    sql = " WHERE " + " AND ".join(where) if where else ""
    sql += " ORDER BY seq DESC" if flt.newest_first else " ORDER BY seq"
    if flt.limit:
        sql += f" LIMIT {int(flt.limit)}"
    return sql, args


#: Columns records may be grouped by (AuditStore.activity).
GROUP_COLUMNS = ("actor", "action", "outcome", "org", "path")


def activity_sql(flt: AuditFilter, by: Sequence[str], ph: str, *,
                 actions: Sequence[str] | None = None, outcomes: Sequence[str] | None = None,
                 paths: bool = True) -> tuple[str, list[Any]]:
    """``SELECT <by>, count, distinct paths, first ts, last ts ... GROUP BY <by>`` over
    the records ``flt`` selects (its order and limit aside), narrowed to ``actions``
    and ``outcomes`` if given; ``paths`` False counts no distinct paths (0)."""
    cols = _group_columns(by)
    where, args = _where(flt, ph)
    for col, values in (("action", actions), ("outcome", outcomes)):
        if values is not None:
            where.append(f"{col} IN ({', '.join([ph] * len(values))})" if values else "1 = 0")
            args += list(values)
    distinct = "count(DISTINCT path)" if paths else "0"
    sql = (f"SELECT {', '.join(cols)}, count(*), {distinct}, min(ts), max(ts) "  # noqa: S608
           f"FROM audit{' WHERE ' + ' AND '.join(where) if where else ''} "
           f"GROUP BY {', '.join(cols)}")
    return sql, args


def _group_columns(by: Sequence[str]) -> list[str]:
    cols = list(by)
    bad = [c for c in cols if c not in GROUP_COLUMNS]
    if bad or not cols:
        raise ValueError(f"cannot group audit records by {bad or cols}")
    return cols


def activity_of(events: Iterable[AuditEvent], flt: AuditFilter, by: Sequence[str], *,
                actions: Sequence[str] | None = None, outcomes: Sequence[str] | None = None,
                paths: bool = True) -> list[tuple[Any, ...]]:
    """activity_sql's rows, computed in Python (the memory store)."""
    cols = _group_columns(by)
    groups: dict[tuple[Any, ...], list[Any]] = {}
    for e in events:
        if not flt.matches(e) or (actions is not None and e.action not in actions) \
                or (outcomes is not None and e.outcome not in outcomes):
            continue
        key = tuple(getattr(e, c) for c in cols)
        ts = to_us(e.ts)
        g = groups.setdefault(key, [0, set(), ts, ts])
        g[0] += 1
        if e.path is not None and paths:
            g[1].add(e.path)
        g[2], g[3] = min(g[2], ts), max(g[3], ts)
    return [(*k, n, len(p), lo, hi) for k, (n, p, lo, hi) in groups.items()]


def _where(flt: AuditFilter, ph: str) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    args: list[Any] = []
    for col in ("org", "action", "actor", "outcome"):
        v = getattr(flt, col)
        if v is not None:
            where.append(f"{col} = {ph}")
            args.append(v)
    if flt.path is not None:
        if flt.path.endswith("/"):
            where.append(f"path >= {ph} AND path < {ph}")
            args += [flt.path, flt.path + "\U0010ffff"]
        else:
            where.append(f"path = {ph}")
            args.append(flt.path)
    if flt.since is not None:
        where.append(f"ts >= {ph}")
        args.append(to_us(flt.since))
    if flt.until is not None:
        where.append(f"ts <= {ph}")
        args.append(to_us(flt.until))
    if flt.before_seq is not None:
        where.append(f"seq < {ph}")
        args.append(flt.before_seq)
    return where, args


class _SQLiteHost(Protocol):
    """What SQLiteAuditStore needs from the store whose file it shares."""

    path: Path

    @property
    def connection(self) -> sqlite3.Connection: ...
    @property
    def lock(self) -> threading.RLock: ...
    def transaction(self) -> Any: ...


_HEAD_SCHEMA = ("CREATE TABLE IF NOT EXISTS audit_head (id INTEGER PRIMARY KEY CHECK (id = 1), "
                "seq INTEGER NOT NULL, hash TEXT NOT NULL)")
#: Where the chain continues from once older records are archived (made by the first
#: archive, so stores that never archive are unchanged).
_BASE_SCHEMA = ("CREATE TABLE IF NOT EXISTS audit_base (id INTEGER PRIMARY KEY CHECK (id = 1), "
                "seq INTEGER NOT NULL, hash TEXT NOT NULL)")


#: The least time an SQLite archive leaves the write lock free between two batches (s).
TRIM_PAUSE = 0.02


def file_bytes(path: Path) -> int:
    """An SQLite file's size on disk, with its write-ahead log."""
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def archived_meanwhile() -> Conflict:
    """An archive's removal found the base moved since it read it (another archive)."""
    return Conflict("the audit log was archived by someone else meanwhile")


def _sqlite_base(c: sqlite3.Connection) -> tuple[int, str] | None:
    try:
        row = c.execute("SELECT seq, hash FROM audit_base WHERE id = 1").fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return None
        raise
    return (row[0], row[1]) if row else None


_COLS = ("seq, ts, actor, action, path, version, outcome, org, client, request_id, detail, "
         "prev_hash, hash")


#: Rows per INSERT statement: 13 parameters each stays under SQLite's oldest default
#: limit of 999 bound parameters.
_MAX_ROWS = 64
#: The columns a record may leave empty (path, version, org, client, request_id, detail).
_NULLABLE = (4, 5, 7, 8, 9, 10)
_INSERTS: dict[tuple[tuple[bool, ...], int], tuple[str, Any]] = {}


def _nulls(r: Row) -> tuple[bool, ...]:
    # _NULLABLE's columns, spelled out: this runs once per record of every commit.
    return (r[4] is None, r[5] is None, r[7] is None, r[8] is None, r[9] is None,
            r[10] is None)


def _insert_for(nulls: tuple[bool, ...], k: int) -> tuple[str, Any]:
    """The INSERT of ``k`` rows whose empty columns are ``nulls``, and the getter of the
    values it binds: an empty column is the literal NULL, because the sqlite3 module
    binds a None parameter on a slow path (it looks for an adapter), which made up a
    third of an audit record's insert."""
    hit = _INSERTS.get((nulls, k))
    if hit is None:
        empty = {i for i, n in zip(_NULLABLE, nulls, strict=True) if n}
        one = "(" + ",".join("NULL" if i in empty else "?" for i in range(13)) + ")"
        hit = _INSERTS[(nulls, k)] = (
            f"INSERT INTO audit ({_COLS}) VALUES " + ",".join([one] * k),  # noqa: S608
            operator.itemgetter(*(i for i in range(13) if i not in empty)))
    return hit


def insert_rows(c: sqlite3.Connection, rows: Sequence[Row]) -> None:
    """Insert chained rows with multi-row INSERTs: SQLite does a whole statement's work
    without the GIL, where ``executemany`` takes it back for every row (a reader thread
    pays for each hand-over). Rows go in runs that leave the same columns empty (a
    read's records all do); statement sizes are powers of two, so each run needs at
    most seven distinct statements, prepared once and cached."""
    chain_ = itertools.chain.from_iterable
    for nulls, run in itertools.groupby(rows, _nulls):
        batch = list(run)
        i, n = 0, len(batch)
        while i < n:
            k = _MAX_ROWS
            while k > n - i:
                k >>= 1
            sql, values = _insert_for(nulls, k)
            c.execute(sql, list(chain_(map(values, batch[i:i + k]))))
            i += k


class SQLiteAuditStore:
    """The chain in the ``audit`` table of an SQLite store, joining its transactions."""

    def __init__(self, host: _SQLiteHost) -> None:
        self._host = host
        self._held = 0.0  # how long the last archive batch held the write lock (s)

    def append(self, drafts: Sequence[Draft]) -> list[Row]:
        with self._host.transaction():
            c = self._host.connection
            last = c.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
            if last is None:  # none yet, or every record archived: go on from the head
                last = c.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
            done = chain(drafts, last[0] if last else 0, last[1] if last else GENESIS)
            insert_rows(c, done)
            # The head anchors the chain's end, so removing the newest records shows.
            c.execute("INSERT INTO audit_head VALUES (1, ?, ?) ON CONFLICT(id) DO UPDATE "
                      "SET seq = excluded.seq, hash = excluded.hash",
                      (done[-1][0], done[-1][12]))
            return done

    def in_transaction(self) -> bool:
        """Whether this thread has a write transaction open on the shared file."""
        return _asks(self._host, "in_transaction")

    def on_rollback(self, fn: Callable[[], object]) -> None:
        hook = getattr(self._host, "on_rollback", None)
        if hook is not None:
            hook(fn)

    def on_commit(self, fn: Callable[[], object]) -> None:
        hook = getattr(self._host, "on_commit", None)
        if hook is not None:
            hook(fn)
        else:
            fn()

    def relaxed(self) -> contextlib.AbstractContextManager[None]:
        host_relaxed = getattr(self._host, "relaxed", None)
        return host_relaxed() if host_relaxed is not None else contextlib.nullcontext()

    def head(self) -> tuple[int, str] | None:
        with self._host.lock:
            row = self._host.connection.execute(
                "SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
        return (row[0], row[1]) if row else None

    # -- archiving (see keysafe.manager.archive) --
    def base(self) -> tuple[int, str] | None:
        with self._host.lock:
            return _sqlite_base(self._host.connection)

    def first_at(self, ts_us: int) -> int | None:
        # In sequence order from the oldest: archiving asks for an old time, so this
        # stops early without an index on ts.
        with self._host.lock:
            row = self._host.connection.execute(
                "SELECT seq FROM audit WHERE ts >= ? ORDER BY seq LIMIT 1", (ts_us,)).fetchone()
        return row[0] if row else None

    def rows_after(self, after: int, through: int, limit: int) -> list[Row]:
        with self._host.lock:
            return self._host.connection.execute(
                f"SELECT {_COLS} FROM audit WHERE seq > ? AND seq <= ? "  # noqa: S608
                "ORDER BY seq LIMIT ?", (after, through, limit)).fetchall()

    def trim(self, base: tuple[int, str] | None, through: int, last_hash: str) -> None:
        """Remove records up to ``through`` (archived) and remember where the chain now
        starts; Conflict if another archive moved the base since ``base`` was read."""
        with self._host.transaction():
            t0 = monotonic()  # the write lock is held from here
            c = self._host.connection
            c.execute(_BASE_SCHEMA)
            if _sqlite_base(c) != base:
                raise archived_meanwhile()
            c.execute("DELETE FROM audit WHERE seq <= ?", (through,))
            c.execute("INSERT INTO audit_base VALUES (1, ?, ?) ON CONFLICT(id) DO UPDATE "
                      "SET seq = excluded.seq, hash = excluded.hash", (through, last_hash))
        self._held = monotonic() - t0

    def settle(self) -> None:
        """Between two batches of an archive's removal (not inside a caller's
        transaction): copy the last batch's WAL frames back, and leave the write lock
        free for as long as that batch held it (at least TRIM_PAUSE).

        A batch deletes (and, with secure_delete, zeroes) hundreds of pages: left to the
        background checkpoints, the WAL outgrows them until some writer's commit runs
        the backstop checkpoint. And SQLite's busy handler backs off to sleeps of up to
        100 ms, so a writer of another process waiting beside back-to-back batches could
        miss every gap between them (measured: writes held up to 0.89 s)."""
        with self._host.lock:
            c = self._host.connection
            if c.in_transaction:
                return
            with contextlib.suppress(sqlite3.Error):  # busy: left for later
                c.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        sleep(max(TRIM_PAUSE, self._held))

    def compact(self) -> CompactResult:
        """VACUUM the file: the pages an archive (or a purge) freed go back to the
        filesystem instead of waiting for new records. Writers wait while it runs, up
        to their busy timeout (readers do not). It needs free space about the size of
        what the file holds twice: in SQLite's temporary directory, and in the WAL
        until the copy is checkpointed back. That checkpoint waits for nobody: a reader
        still on an older snapshot leaves it unfinished (``settled`` false), and the
        file shrinks at a later checkpoint."""
        from keysafe.manager.archive import CompactResult

        path = self._host.path
        before = file_bytes(path)
        t0 = monotonic()
        with self._host.lock:
            c = self._host.connection
            if c.in_transaction:
                raise Conflict("cannot compact the store inside a transaction")
            try:
                c.execute("VACUUM")
                busy, log, done = c.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.Error as exc:
                raise BackendUnavailable(f"cannot compact {path}: {exc}") from exc
            settled = busy == 0 and log == done
            if settled:  # every frame is back in the file: cut the WAL, or leave it
                wait = c.execute("PRAGMA busy_timeout").fetchone()[0]
                c.execute("PRAGMA busy_timeout=0")
                try:
                    with contextlib.suppress(sqlite3.Error):
                        c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                finally:
                    c.execute(f"PRAGMA busy_timeout={int(wait)}")
        return CompactResult("sqlite", str(path), before, file_bytes(path),
                             round(monotonic() - t0, 3), settled)

    def query(self, flt: AuditFilter) -> list[AuditEvent]:
        where, args = filter_sql(flt, "?")
        sql = f"SELECT {_COLS} FROM audit{where}"  # noqa: S608
        with self._host.lock:
            rows = self._host.connection.execute(sql, args).fetchall()
        return [row_event(r) for r in rows]

    def activity(self, flt: AuditFilter, by: Sequence[str], **kw: Any
                 ) -> list[tuple[Any, ...]]:
        """On a read-only connection of its own (WAL: readers never wait for the writer,
        nor make it wait), not the store's write connection: a report's scan must not
        hold up writes and their audit records."""
        sql, args = activity_sql(flt, by, "?", **kw)
        conn = sqlite3.connect(Path(self._host.path).resolve().as_uri() + "?mode=ro",
                               uri=True, check_same_thread=False)
        try:
            return [tuple(r) for r in conn.execute(sql, args).fetchall()]
        finally:
            conn.close()

    def scan(self) -> Iterator[Row]:
        with self._host.lock:
            rows = self._host.connection.execute(
                f"SELECT {_COLS} FROM audit ORDER BY rowid").fetchall()  # noqa: S608
        return iter(rows)

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[tuple[tuple[int, str] | None, tuple[int, str] | None,
                                         Iterator[Row]]]:
        """(base, head, records in storage order) as of one moment, for verify: one
        read transaction on a connection of its own, so the records stream (a few in
        memory at a time), nobody waits, and records appended meanwhile are not seen."""
        c = sqlite3.connect(self._host.path, isolation_level=None, check_same_thread=False)
        try:
            c.execute("PRAGMA busy_timeout=30000")
            c.execute("BEGIN")
            base = _sqlite_base(c)
            head = c.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
            rows = c.execute(f"SELECT {_COLS} FROM audit ORDER BY rowid")  # noqa: S608
            yield base, (head[0], head[1]) if head else None, iter(rows)
        finally:
            c.close()


class AuditDB:
    """A stand-alone SQLite file holding only the audit chain, for stores that cannot
    hold it themselves (cloud stores, env files). Durable commits, mode 0600."""

    _SCHEMA = ("CREATE TABLE IF NOT EXISTS audit (seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, "
               "actor TEXT NOT NULL, action TEXT NOT NULL, path TEXT, version INTEGER, "
               "outcome TEXT NOT NULL, org TEXT, client TEXT, request_id TEXT, detail TEXT, "
               "prev_hash TEXT NOT NULL, hash TEXT NOT NULL)")

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        from keysafe.backends.sqlite import switch_to_wal

        switch_to_wal(self._conn, 30.0)
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA busy_timeout=30000")
        self._conn.execute(self._SCHEMA)
        self._conn.execute(_HEAD_SCHEMA)
        self._lock = threading.RLock()
        self._depth = 0

    @property
    def connection(self) -> sqlite3.Connection:
        return self._conn

    @property
    def lock(self) -> threading.RLock:
        return self._lock

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            if self._depth:
                yield
                return
            self._conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            finally:
                self._depth = 0
            self._conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class Sink(Protocol):
    """Told of every committed record (after the commit): a file for log shippers, the
    change events. ``write`` must not block for long; an OSError is logged."""

    def write(self, rows: Sequence[Row]) -> None: ...


class JsonlSink:
    """Also appends every committed record to a JSON-lines file (for log shippers)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def write(self, rows: Sequence[Row]) -> None:
        lines = "".join(json.dumps(row_event(r).to_dict(), sort_keys=True) + "\n"
                        for r in rows)
        with self._lock, self.path.open("a", encoding="utf-8") as fh:
            fh.write(lines)


class AuditLog:
    """Records events; ``durable`` ones are stored before the call returns.

    With ``required`` (the default) a failed durable write raises AuditError, so the
    operation it belongs to fails too; otherwise the failure is logged and skipped.
    """

    def __init__(self, store: AuditStore, *, required: bool = True,
                 sinks: Sequence[Sink] = (), flush_interval: float = 0.05,
                 max_buffer: int = 1024) -> None:
        self.store = store
        self.required = required
        self.sinks = list(sinks)
        self.flush_interval = flush_interval
        self.max_buffer = max_buffer
        # Appended without a lock (deque.append is atomic); the flusher drains from the
        # left, so a record added while it drains waits for the next flush.
        self._buf: deque[Draft] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._since = 0.0  # when the buffer last went from empty to one record
        self._closed = False
        self.failures = 0
        atexit.register(_close_at_exit, weakref.ref(self))

    def record(self, event: Draft, *, durable: bool) -> None:
        """Durable: stored before returning (joining the caller's transaction if the
        store shares it). Otherwise buffered and committed within ``flush_interval``."""
        if durable:
            self.commit([event], required=self.required)
            return
        buf = self._buf
        buf.append(event)
        n = len(buf)
        if n == 1:
            self._since = monotonic()  # the oldest buffered record's age counts from here
        if self._thread is None:
            self._start()
        if n >= self.max_buffer:
            if n >= 8 * self.max_buffer or not (_on_event_loop() or self._in_transaction()):
                # A full buffer is committed by the thread that filled it: handing it to
                # the flusher made the two threads trade the GIL at every statement of
                # both, which cost a third more than the commit's own work. (Also the
                # backpressure when the flusher is not keeping up.)
                self.flush()
            else:
                # Never hold up an event loop, and never put reads' records into the
                # caller's own write transaction (they would go if it rolled back):
                # the flusher commits.
                self._wake.set()

    def _in_transaction(self) -> bool:
        """Whether this thread has a write transaction open in the audit's store."""
        return _asks(self.store, "in_transaction")

    def commit(self, events: list[Draft], *, relaxed: bool = False,
               required: bool = True) -> list[Row]:
        """Store ``events`` now (with anything buffered), and return the chained rows
        (``events``' last); with ``required``, raise AuditError on failure, else log it
        (and return []). ``relaxed``: OS-level durability only (see
        SQLiteBackend.relaxed), for reads."""
        pending = self._take()
        with self._relaxed() if relaxed else contextlib.nullcontext():
            return self._commit([*pending, *events], requeue=len(pending),
                                required=required)

    def flush(self) -> None:
        """Commit buffered read records. They may be lost within ``flush_interval`` by
        design, so they reach the OS without an fsync (the next durable commit syncs
        them); a failure is logged, not raised."""
        pending = self._take()
        if pending:
            with self._relaxed():
                self._commit(pending, requeue=len(pending), required=False)

    def _take(self) -> list[Draft]:
        buf = self._buf
        if not buf:
            # Nothing buffered (records a flush has already taken are its to commit).
            return []
        pop = buf.popleft
        with self._lock:  # one drainer at a time keeps the records in order
            return [pop() for _ in range(len(buf))]

    def _relaxed(self) -> contextlib.AbstractContextManager[None]:
        relax = getattr(self.store, "relaxed", None)
        return relax() if relax is not None else contextlib.nullcontext()

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or self._closed:
                return
            ref = weakref.ref(self)
            t = threading.Thread(target=_flusher, args=(ref, self._wake, self.flush_interval),
                                 name="keysafe-audit", daemon=True)
            self._thread = t
        t.start()

    def _commit(self, events: list[Draft], *, requeue: int, required: bool) -> list[Row]:
        try:
            done = self.store.append(events)
        except (KeysafeError, sqlite3.Error, OSError) as exc:
            self.failures += 1
            if required:
                # Keep buffered records (bounded) for the next attempt; the durable
                # event's own operation is failing and is rolled back by the caller.
                self._requeue(events[:requeue])
                raise AuditError(f"audit log write failed: {exc}") from exc
            _warn("audit log write failed (%s); %d records dropped",
                  type(exc).__name__, len(events))
            return []
        if requeue:
            # Buffered records that went into the caller's open transaction (ahead of
            # its write's record) return to the buffer if that transaction rolls back.
            undo = getattr(self.store, "on_rollback", None)
            if undo is not None:
                taken = events[:requeue]
                undo(lambda: self._requeue(taken))
        if self.sinks:
            # Sinks hear of records once they are committed: inside the caller's open
            # transaction, when it commits (and never, if it rolls back).
            later = getattr(self.store, "on_commit", None) if self._in_transaction() \
                else None
            if later is not None:
                later(lambda: self._to_sinks(done))
            else:
                self._to_sinks(done)
        return done

    def _to_sinks(self, rows: list[Row]) -> None:
        for sink in self.sinks:
            try:
                sink.write(rows)
            except OSError as exc:
                _warn("audit sink %s failed: %s", getattr(sink, "path", type(sink).__name__),
                      exc)

    def _requeue(self, events: list[Draft]) -> None:
        """Put records that were not stored back at the buffer's head (bounded)."""
        with self._lock:
            if len(self._buf) < 10 * self.max_buffer:
                if not self._buf:
                    self._since = monotonic()
                self._buf.extendleft(reversed(events))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        try:
            self.flush()
        except Exception as exc:
            _warn("audit flush at close failed: %s", exc)
        for sink in self.sinks:
            done = getattr(sink, "close", None)
            if done is not None:
                done()


def _close_at_exit(ref: weakref.ref[AuditLog]) -> None:
    log_ = ref()
    if log_ is not None:
        log_.close()


def _asks(obj: object, method: str) -> bool:
    """``obj.method()`` for a store that has the optional method, else False."""
    probe = getattr(obj, method, None)
    return bool(probe()) if probe is not None else False


def _on_event_loop() -> bool:
    """Whether this thread runs an event loop (never true while asyncio is not imported:
    a plain ``keysafe get`` does not pay for importing it)."""
    aio = sys.modules.get("asyncio")
    if aio is None:
        return False
    try:
        aio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _flusher(ref: weakref.ref[AuditLog], wake: threading.Event, interval: float) -> None:
    """Commits what a quiet process leaves buffered, ``interval`` after its oldest record
    (a busy one commits full buffers itself), and at once when woken."""
    timeout = interval
    while True:
        woken = wake.wait(timeout)
        wake.clear()
        log_ = ref()
        if log_ is None or log_._closed:
            return
        timeout = interval
        if log_._buf:
            age = monotonic() - log_._since
            if woken or age >= interval:
                try:
                    log_.flush()
                except Exception as exc:
                    _warn("background audit flush failed: %s", exc)
            else:
                timeout = interval - age
        del log_
