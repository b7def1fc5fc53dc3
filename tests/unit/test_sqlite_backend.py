"""What is particular to the embedded SQLite store (keysafe.backends.sqlite).

The protocol itself is covered by tests/conformance/test_sqlite.py; here: the file on
disk, encryption at rest, tampering, crypto-shredding, reopening and re-keying.
"""

from __future__ import annotations

import sqlite3
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from keysafe.backends.base import WriteContext
from keysafe.backends.sqlite import SCHEMA_VERSION, SQLiteBackend
from keysafe.crypto.envelope import NONCE, Envelope
from keysafe.crypto.keys import KEY_BYTES, KeyRing
from keysafe.errors import BackendUnavailable, ConfigError, Conflict, IntegrityError, NotFound
from keysafe.models import MetadataUpdate

CTX = WriteContext.make("tester@test")


def canary() -> str:
    return f"canary-{uuid.uuid4().hex}"


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing.generate()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "store" / "keysafe.db"


@pytest.fixture
def backend(db: Path, ring: KeyRing) -> Iterator[SQLiteBackend]:
    b = SQLiteBackend(db, ring)
    yield b
    b.close()


def files(db: Path) -> list[Path]:
    return [p for p in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"))
            if p.exists()]


def raw_bytes(db: Path) -> bytes:
    """Everything SQLite has on disk for this store: the file, its WAL and shm."""
    return b"".join(p.read_bytes() for p in files(db))


def sql(db: Path, statement: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Run one statement on the file directly, as an attacker or a bad restore would."""
    conn = sqlite3.connect(db)
    try:
        with conn:
            rows = conn.execute(statement, params).fetchall()
    finally:
        conn.close()
    return rows


def crypto(db: Path, path: str, version: int) -> tuple[str, bytes, bytes]:
    [row] = sql(db, "SELECT key_id, wrapped_key, ciphertext FROM versions "
                    "WHERE path = ? AND version = ?", (path, version))
    kid, wrapped, ct = row
    assert isinstance(kid, str)
    assert isinstance(wrapped, bytes)
    assert isinstance(ct, bytes)
    return kid, wrapped, ct


def flip(data: bytes, i: int) -> bytes:
    return data[:i] + bytes([data[i] ^ 0x80]) + data[i + 1:]


# -- the file ----------------------------------------------------------------------
def test_files_are_owner_only(backend: SQLiteBackend, db: Path) -> None:
    backend.put("a/b", canary(), ctx=CTX)
    assert len(files(db)) >= 2  # the database and its WAL
    for p in files(db):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    assert stat.S_IMODE(db.parent.stat().st_mode) & 0o077 == 0


def test_wal_durable_commits_and_secure_delete(backend: SQLiteBackend) -> None:
    c = backend.connection
    assert c.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert c.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    assert c.execute("PRAGMA secure_delete").fetchone() == (1,)
    assert c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
        str(SCHEMA_VERSION),)


@pytest.mark.parametrize(("setting", "level"), [("NORMAL", 1), ("FULL", 2), ("EXTRA", 3)])
def test_synchronous_setting_is_applied(db: Path, ring: KeyRing, setting: str,
                                        level: int) -> None:
    b = SQLiteBackend(db, ring, synchronous=setting)
    try:
        assert b.connection.execute("PRAGMA synchronous").fetchone() == (level,)
    finally:
        b.close()
    assert sql(db, "PRAGMA journal_mode") == [("wal",)]


def test_unopenable_store_is_backend_unavailable(tmp_path: Path, ring: KeyRing) -> None:
    with pytest.raises(BackendUnavailable, match="cannot open SQLite store"):
        SQLiteBackend(tmp_path, ring)  # a directory
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(BackendUnavailable):
        SQLiteBackend(junk, ring)


def test_ping_after_close_is_backend_unavailable(backend: SQLiteBackend) -> None:
    backend.ping()
    backend.close()
    with pytest.raises(BackendUnavailable):
        backend.ping()


def test_no_plaintext_on_disk(backend: SQLiteBackend, db: Path) -> None:
    values = [canary() for _ in range(3)]
    for v in values:
        backend.put("acme/shared/stripe_secret_key", v, ctx=CTX,
                    meta=MetadataUpdate(description="billing key"))
    backend.put_many([(f"acme/bulk/{i}", values[0] + str(i)) for i in range(3)], ctx=CTX)
    backend.get("acme/shared/stripe_secret_key", version=1)
    data = raw_bytes(db)
    assert b"billing key" in data  # the search works: metadata is stored in clear
    for v in values:
        assert v.encode() not in data
        assert v[7:].encode() not in data
    backend.close()
    data = raw_bytes(db)
    assert not any(v[7:].encode() in data for v in values)


# -- tampering ------------------------------------------------------------------------
def test_row_moved_to_another_path_fails(backend: SQLiteBackend, db: Path) -> None:
    value = canary()
    backend.put("acme/shared/key", value, ctx=CTX)
    sql(db, "UPDATE secrets SET path = 'evil/shared/key' WHERE path = 'acme/shared/key'")
    sql(db, "UPDATE versions SET path = 'evil/shared/key' WHERE path = 'acme/shared/key'")
    with pytest.raises(IntegrityError) as exc_info:
        backend.get("evil/shared/key")
    assert value not in str(exc_info.value)
    with pytest.raises(IntegrityError):
        backend.get("evil/shared/key", version=1)
    with pytest.raises(NotFound):
        backend.get("acme/shared/key")


def test_row_copied_over_another_path_fails(backend: SQLiteBackend, db: Path) -> None:
    a_value = canary()
    backend.put("acme/a", a_value, ctx=CTX)
    backend.put("evil/b", "b", ctx=CTX)
    kid, wrapped, ct = crypto(db, "acme/a", 1)
    for table, where in (("secrets", "path = 'evil/b'"),
                         ("versions", "path = 'evil/b' AND version = 1")):
        sql(db, f"UPDATE {table} SET key_id = ?, wrapped_key = ?, ciphertext = ? "
                f"WHERE {where}", (kid, wrapped, ct))
    with pytest.raises(IntegrityError):
        backend.get("evil/b")
    with pytest.raises(IntegrityError):
        backend.get("evil/b", version=1)
    assert backend.get("acme/a") == (a_value, 1)


def test_row_moved_to_another_version_fails(backend: SQLiteBackend, db: Path) -> None:
    backend.put("acme/k", "old", ctx=CTX)
    backend.put("acme/k", "new", ctx=CTX)
    kid, wrapped, ct = crypto(db, "acme/k", 1)
    sql(db, "UPDATE versions SET key_id = ?, wrapped_key = ?, ciphertext = ? "
            "WHERE path = 'acme/k' AND version = 2", (kid, wrapped, ct))
    sql(db, "UPDATE secrets SET key_id = ?, wrapped_key = ?, ciphertext = ? "
            "WHERE path = 'acme/k'", (kid, wrapped, ct))
    with pytest.raises(IntegrityError):
        backend.get("acme/k")
    with pytest.raises(IntegrityError):
        backend.get("acme/k", version=2)
    assert backend.get("acme/k", version=1) == ("old", 1)


@pytest.mark.parametrize("column", ["ciphertext", "wrapped_key"])
def test_tampered_byte_fails(backend: SQLiteBackend, db: Path, column: str) -> None:
    value = canary()
    backend.put("acme/k", value, ctx=CTX)
    backend.put("acme/k", value + "-2", ctx=CTX)
    _, wrapped, ct = crypto(db, "acme/k", 2)
    original = ct if column == "ciphertext" else wrapped
    for i in (0, NONCE, len(original) // 2, len(original) - 1):
        bad = flip(original, i)
        sql(db, f"UPDATE secrets SET {column} = ? WHERE path = 'acme/k'", (bad,))
        with pytest.raises(IntegrityError) as exc_info:
            backend.get("acme/k")
        assert value not in str(exc_info.value)
    # an old version's row, read through the versions table
    _, wrapped1, ct1 = crypto(db, "acme/k", 1)
    bad = flip(ct1 if column == "ciphertext" else wrapped1, NONCE + 1)
    sql(db, f"UPDATE versions SET {column} = ? WHERE path = 'acme/k' AND version = 1", (bad,))
    with pytest.raises(IntegrityError):
        backend.get("acme/k", version=1)


def test_relabelled_key_id_fails(backend: SQLiteBackend, db: Path, ring: KeyRing) -> None:
    backend.put("acme/k", "v", ctx=CTX)
    bigger, new_kid = ring.with_new_active()
    backend.close()
    b = SQLiteBackend(db, bigger)
    try:
        sql(db, "UPDATE secrets SET key_id = ?", (new_kid,))
        with pytest.raises(IntegrityError):
            b.get("acme/k")
    finally:
        b.close()


def test_undecodable_plaintext_is_an_integrity_error(backend: SQLiteBackend, db: Path,
                                                     ring: KeyRing) -> None:
    backend.put("acme/k", "v", ctx=CTX)
    s = Envelope(ring).seal("acme/k", 1, b"\xff\xfe not utf-8")
    sql(db, "UPDATE secrets SET key_id = ?, wrapped_key = ?, ciphertext = ?",
        (s.key_id, s.wrapped_key, s.ciphertext))
    with pytest.raises(IntegrityError, match="not valid text"):
        backend.get("acme/k")


# -- crypto-shredding -------------------------------------------------------------------
def test_destroy_and_purge_leave_no_ciphertext_on_disk(backend: SQLiteBackend,
                                                       db: Path) -> None:
    for i in range(30):  # neighbours on the same pages
        backend.put(f"acme/filler/{i:02}", canary() * 4, ctx=CTX)
    big = canary() * 2000  # ~90 KB: overflow pages
    backend.put("acme/target", canary(), ctx=CTX)
    backend.put("acme/target", canary(), ctx=CTX)
    backend.put("acme/target", big, ctx=CTX)
    backend.put("acme/victim", canary(), ctx=CTX)
    backend.put("acme/victim", big + "x", ctx=CTX)

    def pieces(path: str, version: int) -> list[bytes]:
        _, wrapped, ct = crypto(db, path, version)
        return [wrapped[NONCE:], ct[NONCE:NONCE + 48], ct[len(ct) // 2:len(ct) // 2 + 48],
                ct[-48:]]

    shredded = pieces("acme/target", 1) + pieces("acme/target", 3)
    purged = pieces("acme/victim", 1) + pieces("acme/victim", 2)
    kept = pieces("acme/target", 2)
    data = raw_bytes(db)
    assert all(p in data for p in shredded + purged + kept)  # the search works

    assert backend.destroy("acme/target", [1, 3], ctx=CTX) == [1, 3]
    data = raw_bytes(db)
    assert [p for p in shredded if p in data] == []
    assert all(p in data for p in kept)

    backend.delete("acme/victim", ctx=CTX)
    backend.purge("acme/victim", ctx=CTX)
    data = raw_bytes(db)
    assert [p for p in purged if p in data] == []
    assert backend.get("acme/target", version=2)[1] == 2
    backend.close()
    data = raw_bytes(db)
    assert [p for p in shredded + purged if p in data] == []


def test_destroyed_rows_hold_no_key_material(backend: SQLiteBackend, db: Path) -> None:
    backend.put("acme/k", "one", ctx=CTX)
    backend.put("acme/k", "two", ctx=CTX)
    backend.destroy("acme/k", [1, 2], ctx=CTX)
    assert sql(db, "SELECT key_id, wrapped_key, ciphertext, destroyed FROM versions "
                   "ORDER BY version") == [(None, None, None, 1)] * 2
    assert sql(db, "SELECT key_id, wrapped_key, ciphertext FROM secrets") == [
        (None, None, None)]


# -- reopening ------------------------------------------------------------------------
def test_reopening_keeps_everything(db: Path, ring: KeyRing) -> None:
    b = SQLiteBackend(db, ring, max_versions=5)
    for i in range(1, 4):
        b.put("acme/k", f"value {i}", ctx=CTX,
              meta=MetadataUpdate(description="d", tags={"t": str(i)}, rotation_days=30))
    b.destroy("acme/k", [1], ctx=CTX)
    b.put("acme/gone", "g", ctx=CTX)
    b.delete("acme/gone", ctx=CTX)
    before = (b.describe("acme/k"), b.versions("acme/k"),
              b.describe("acme/gone", include_deleted=True), b.list("", include_deleted=True))
    b.close()

    b = SQLiteBackend(db, ring, max_versions=5)
    try:
        after = (b.describe("acme/k"), b.versions("acme/k"),
                 b.describe("acme/gone", include_deleted=True), b.list("", include_deleted=True))
        assert after == before
        assert b.get("acme/k") == ("value 3", 3)
        assert b.get("acme/k", version=2) == ("value 2", 2)
        with pytest.raises(NotFound):
            b.get("acme/k", version=1)
        with pytest.raises(NotFound):
            b.get("acme/gone")
        with pytest.raises(Conflict):
            b.put("acme/k", "stale", ctx=CTX, expected_version=2)
        assert b.put("acme/k", "value 4", ctx=CTX, expected_version=3).version == 4
    finally:
        b.close()


def test_reopening_with_the_wrong_key(db: Path, ring: KeyRing) -> None:
    b = SQLiteBackend(db, ring)
    b.put("acme/k", "v", ctx=CTX)
    b.close()
    other = SQLiteBackend(db, KeyRing.generate())
    try:
        with pytest.raises(ConfigError, match="is not available"):
            other.get("acme/k")
    finally:
        other.close()
    impostor = SQLiteBackend(db, KeyRing({ring.active: bytes(KEY_BYTES)}, ring.active))
    try:
        with pytest.raises(IntegrityError):
            impostor.get("acme/k")
    finally:
        impostor.close()


def test_two_connections_share_the_file(db: Path, ring: KeyRing) -> None:
    a, b = SQLiteBackend(db, ring), SQLiteBackend(db, ring)
    try:
        a.put("acme/k", "from a", ctx=CTX)
        assert b.get("acme/k") == ("from a", 1)
        assert b.put("acme/k", "from b", ctx=CTX, expected_version=1).version == 2
        with pytest.raises(Conflict) as exc_info:
            a.put("acme/k", "stale", ctx=CTX, expected_version=1)
        assert exc_info.value.current_version == 2
        assert a.get("acme/k") == ("from b", 2)
    finally:
        a.close()
        b.close()


# -- re-keying ------------------------------------------------------------------------
def test_rewrap_all_moves_every_row_to_the_new_key(db: Path, ring: KeyRing) -> None:
    b = SQLiteBackend(db, ring)
    for i in range(3):
        b.put("acme/a", f"a{i}", ctx=CTX)
    b.put("acme/b", "b0", ctx=CTX)
    b.put("acme/c", "c0", ctx=CTX)
    b.put("acme/c", "c1", ctx=CTX)
    b.destroy("acme/c", [1], ctx=CTX)
    b.put("acme/d", "d0", ctx=CTX)
    b.delete("acme/d", ctx=CTX)
    b.close()

    bigger, new_kid = ring.with_new_active()
    b = SQLiteBackend(db, bigger)
    calls: list[tuple[int, int]] = []
    try:
        assert b.key_ids_in_use() == {ring.active}
        assert b.rewrap_all(lambda done, total: calls.append((done, total)), batch=2) == 6
        assert calls[-1] == (6, 6)
        assert [done for done, _ in calls] == sorted(done for done, _ in calls)
        assert b.key_ids_in_use() == {new_kid}
        assert b.rewrap_all() == 0
    finally:
        b.close()
    assert {r[0] for r in sql(db, "SELECT key_id FROM secrets")} == {new_kid}
    assert {r[0] for r in sql(db, "SELECT key_id FROM versions WHERE destroyed = 0")} == {
        new_kid}

    # The old key can go now: every value still reads with the new key alone.
    b = SQLiteBackend(db, bigger.without([ring.active]))
    try:
        assert [b.get("acme/a", version=v) for v in (1, 2, 3)] == [
            ("a0", 1), ("a1", 2), ("a2", 3)]
        assert b.get("acme/a") == ("a2", 3)
        assert b.get("acme/b") == ("b0", 1)
        assert b.get("acme/c") == ("c1", 2)
        b.restore("acme/d", ctx=CTX)
        assert b.get("acme/d") == ("d0", 1)
        assert [v.key_id for v in b.versions("acme/a")] == [new_kid] * 3
    finally:
        b.close()


def test_rewrap_all_keeps_values_of_a_pruned_store(db: Path, ring: KeyRing) -> None:
    b = SQLiteBackend(db, ring, max_versions=1)
    for i in range(3):
        b.put("acme/k", f"v{i}", ctx=CTX)
    bigger, _ = ring.with_new_active()
    b.close()
    b = SQLiteBackend(db, bigger, max_versions=1)
    try:
        assert b.rewrap_all() == 1
    finally:
        b.close()
    b = SQLiteBackend(db, bigger.without([ring.active]))
    try:
        assert b.get("acme/k") == ("v2", 3)
    finally:
        b.close()


# -- put_many -----------------------------------------------------------------------
def test_put_many(backend: SQLiteBackend) -> None:
    items = [(f"acme/bulk/{i:03}", f"value {i}") for i in range(50)]
    assert backend.put_many(iter(items), ctx=CTX) == 50
    for path, value in items[::7]:
        assert backend.get(path) == (value, 1)
        assert [v.version for v in backend.versions(path)] == [1]
        meta = backend.describe(path)
        assert (meta.current_version, meta.versions, meta.created_by) == (1, 1, "tester@test")
    assert [m.path for m in backend.list("acme/bulk/")] == [p for p, _ in items]
    assert backend.put("acme/bulk/000", "next", ctx=CTX, expected_version=1).version == 2


def test_put_many_is_all_or_nothing(backend: SQLiteBackend) -> None:
    backend.put("acme/exists", "v", ctx=CTX)
    with pytest.raises(Conflict, match="acme/exists"):
        backend.put_many([("acme/new1", "x"), ("acme/exists", "y"), ("acme/new2", "z")],
                         ctx=CTX)
    assert [m.path for m in backend.list("acme/", include_deleted=True)] == ["acme/exists"]
    assert backend.get("acme/exists") == ("v", 1)
    with pytest.raises(Conflict):
        backend.put_many([("acme/twice", "x"), ("acme/twice", "y")], ctx=CTX)
    with pytest.raises(NotFound):
        backend.describe("acme/twice", include_deleted=True)


def test_put_many_conflict_reports_the_current_version(backend: SQLiteBackend) -> None:
    for _ in range(3):
        backend.put("acme/exists", "v", ctx=CTX)
    with pytest.raises(Conflict) as exc_info:
        backend.put_many([("acme/exists", "y")], ctx=CTX)
    assert exc_info.value.current_version == 3


def test_repr_names_the_file_only(backend: SQLiteBackend, db: Path) -> None:
    value = canary()
    backend.put("acme/k", value, ctx=CTX)
    assert repr(backend) == f"SQLiteBackend({str(db)!r})"
    assert value not in repr(backend)



def _two_puts_then_conflict(b: SQLiteBackend, new: str, taken: str, *,
                            join: bool = False) -> None:
    """In a nested transaction: create ``new``, then fail check-and-set on ``taken``."""
    with b.transaction(join=join):
        b.put(new, "new", ctx=CTX)
        b.put(taken, "again", ctx=CTX, expected_version=0)


def test_nested_transaction_is_a_savepoint(backend: SQLiteBackend) -> None:
    with backend.transaction():
        backend.put("a/b/c/d/x", "one", ctx=CTX)
        with pytest.raises(Conflict):
            _two_puts_then_conflict(backend, "a/b/c/d/y", "a/b/c/d/x")
    assert backend.get("a/b/c/d/x") == ("one", 1)
    with pytest.raises(NotFound):
        backend.get("a/b/c/d/y")  # undone by the inner savepoint only


def _joined(b: SQLiteBackend) -> None:
    with b.transaction(join=True):
        b.put("a/b/c/d/x", "two", ctx=CTX)
        _two_puts_then_conflict(b, "a/b/c/d/y", "a/b/c/d/x")  # joins: no savepoint


def test_joined_transaction_is_all_or_nothing(backend: SQLiteBackend) -> None:
    backend.put("a/b/c/d/x", "one", ctx=CTX)
    with pytest.raises(Conflict):
        _joined(backend)
    assert backend.get("a/b/c/d/x") == ("one", 1)
    with pytest.raises(NotFound):
        backend.get("a/b/c/d/y")
    with backend.transaction(join=True):
        backend.put("a/b/c/d/x", "two", ctx=CTX)
    assert backend.get("a/b/c/d/x") == ("two", 2)
    with backend.transaction():  # the join flag ended with its transaction
        backend.put("a/b/c/d/z", "z", ctx=CTX)
        with pytest.raises(Conflict):
            _two_puts_then_conflict(backend, "a/b/c/d/w", "a/b/c/d/z")
    assert backend.get("a/b/c/d/z") == ("z", 1)
    with pytest.raises(NotFound):
        backend.get("a/b/c/d/w")


# -- checkpoints off the write path ------------------------------------------------------


def _wal_pages(path: Path) -> int:
    wal = Path(str(path) + "-wal")
    return wal.stat().st_size // 4096 if wal.exists() else 0


def test_background_checkpoints_keep_the_wal_small(db: Path, ring: KeyRing) -> None:
    """Writers never checkpoint inline (their automatic checkpoint is a far-off safety
    net), yet the WAL is copied back and restarted: a thread does it between writes."""
    import time

    b = SQLiteBackend(db, ring)
    try:
        assert b._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] > 1000
        for i in range(300):  # ~1,200 WAL frames: past SQLite's default checkpoint
            b.put(f"app/dev/org/d/s{i % 50}", f"value-{i}", ctx=CTX)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            # A completed checkpoint lets the next writer restart the WAL at its start.
            b.put("app/dev/org/d/tick", "x", ctx=CTX)
            _busy, log, _done = b._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if log < 50:
                break
            time.sleep(0.05)
        assert log < 50, "the WAL kept growing: no checkpoint ran"
        thread = b._checkpointer._thread if b._checkpointer else None
        assert thread is not None
        assert thread.is_alive()
    finally:
        b.close()
    assert not thread.is_alive(), "close() stops the checkpoint thread"


def test_checkpoint_thread_ends_with_a_dropped_store(db: Path, ring: KeyRing) -> None:
    """A store dropped without close() does not leave its thread behind."""
    import gc

    b = SQLiteBackend(db, ring)
    b.put("app/dev/org/d/a", "v", ctx=CTX)
    assert b._checkpointer is not None
    thread = b._checkpointer._thread
    assert thread is not None
    del b
    gc.collect()
    thread.join(timeout=5)
    assert not thread.is_alive()
    # Everything committed is still there for the next process.
    again = SQLiteBackend(db, ring)
    try:
        assert again.get("app/dev/org/d/a") == ("v", 1)
    finally:
        again.close()


def test_a_store_opened_only_to_read_starts_no_thread(db: Path, ring: KeyRing) -> None:
    SQLiteBackend(db, ring).close()
    b = SQLiteBackend(db, ring)
    try:
        assert b._checkpointer is not None
        assert b._checkpointer._thread is None
    finally:
        b.close()
