"""Write transactions on PostgreSQL with fewer round trips: BEGIN, the write lock and
the active key id in one; a put's rows and notification in one pipeline; a manager's
write and its audit record joined in one transaction without savepoints; COMMIT checked.
What must hold: all or nothing (a failure anywhere, the pipeline and the audit record
included, leaves no row, no record and no notification), a swallowed error never passes
for a commit, and the connection is clean for the next write."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from keysafe.backends.base import WriteContext
from keysafe.backends.postgres import PostgresAuditStore, PostgresBackend
from keysafe.errors import AuditError, BackendUnavailable, Conflict, NotFound
from keysafe.manager.audit import AuditFilter, AuditLog, verify_rows
from keysafe.manager.cache import SecretCache
from keysafe.manager.manager import SecretManager

ORG = "acme"


def ctx() -> WriteContext:
    return WriteContext.make("tester")


def manager(b: PostgresBackend) -> SecretManager:
    return SecretManager(b, audit=AuditLog(PostgresAuditStore(b)), env="test",
                         cache=SecretCache(ttl=0))


def records(m: SecretManager, action: str = "write") -> int:
    m.audit.flush()
    return len(m.audit_query(AuditFilter(action=action)))


def test_a_manager_write_joins_one_transaction(backends: Any) -> None:
    b = backends()
    m = manager(b)
    m.put("db_password", "v1", ORG)
    m.put("db_password", "v2", ORG, expected_version=1)
    assert m.get("db_password", ORG) == "v2"
    assert records(m) == 2
    store = m.audit.store
    assert isinstance(store, PostgresAuditStore)
    assert verify_rows(store.scan(), store.head()).ok
    assert getattr(b._local, "conn", None) is None  # nothing left checked out


def test_a_failing_audit_record_undoes_the_write(backends: Any,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    b = backends()
    m = manager(b)
    m.put("db_password", "v1", ORG)

    def broken(*_a: Any, **_k: Any) -> Any:
        raise BackendUnavailable("audit store down")

    monkeypatch.setattr(m.audit.store, "append", broken)
    with pytest.raises(AuditError):
        m.put("db_password", "v2", ORG)
    monkeypatch.undo()
    assert m.get("db_password", ORG, fresh=True) == "v1"
    assert b.describe(m.path("db_password", ORG)).current_version == 1
    m.put("db_password", "v3", ORG)  # the connection is clean for the next write
    assert b.get(m.path("db_password", ORG)) == ("v3", 2)


def test_an_error_in_the_pipeline_writes_nothing(backends: Any,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    b = backends()
    path = "app/test/acme/shared/db_password"
    b.put(path, "v1", ctx=ctx())
    seen: list[str] = []
    other = backends()
    other.watch(seen.append)
    assert other.listening.wait(10)

    def bad_notify(_path: str) -> None:
        b._tx_conn().execute("SELECT no_such_function()")

    monkeypatch.setattr(b, "_changed", bad_notify)
    with pytest.raises(Exception, match="no_such_function"):
        b.put(path, "v2", ctx=ctx())
    monkeypatch.undo()
    assert b.get(path) == ("v1", 1)
    assert [v.version for v in b.versions(path)] == [1]
    b.put(path, "v2", ctx=ctx())  # and the connection is usable again
    assert b.get(path) == ("v2", 2)


def test_a_swallowed_error_is_not_reported_as_a_commit(backends: Any) -> None:
    b = backends()
    path = "app/test/acme/shared/x"
    b.put(path, "v1", ctx=ctx())

    def swallowing() -> None:  # a caller that swallows an error inside a transaction
        with b.transaction():
            b._exec("UPDATE secrets SET description = 'changed' WHERE path = %s", (path,))
            with contextlib.suppress(Exception):
                b._exec("SELECT 1 / 0", ())

    with pytest.raises(BackendUnavailable, match="rolled back"):
        swallowing()
    assert b.describe(path).description is None
    b.put(path, "v2", ctx=ctx())
    assert b.get(path) == ("v2", 2)


def test_joined_and_nested_transactions(backends: Any) -> None:
    b = backends()
    p1, p2 = "app/test/acme/shared/a", "app/test/acme/shared/b"
    # Not joined: a nested failure is a savepoint, undone alone.
    with b.transaction():
        b.put(p1, "v1", ctx=ctx())
        with pytest.raises(NotFound):
            b.restore(p2, ctx=ctx())
        b.put(p2, "v1", ctx=ctx())
    assert b.get(p1) == ("v1", 1)
    assert b.get(p2) == ("v1", 1)
    # Joined: any error ends the whole transaction.

    def joined() -> None:
        with b.transaction(join=True):
            b.put(p1, "v2", ctx=ctx())
            b.restore("app/test/acme/shared/none", ctx=ctx())

    with pytest.raises(NotFound):
        joined()
    assert b.get(p1) == ("v1", 1)


def test_relaxed_transactions_still_commit(backends: Any) -> None:
    b = backends()
    path = "app/test/acme/shared/r"
    with b.relaxed():
        b.put(path, "v1", ctx=ctx())
    assert b.get(path) == ("v1", 1)
    with b.transaction(lock=False):
        b._exec("UPDATE secrets SET description = 'd' WHERE path = %s", (path,))
    assert b.describe(path).description == "d"


def test_buffered_reads_a_rolled_back_write_took_are_kept(backends: Any) -> None:
    """A write's record takes the buffered reads' records into its transaction; when
    that transaction (or the write's savepoint) rolls back they return to the buffer,
    and the chain stays whole."""
    b = backends()
    m = manager(b)
    m.audit.flush_interval = 3600.0  # only explicit flushes in this test
    m.put("db_password", "v1", ORG)
    m.get("db_password", ORG)  # read 1, buffered
    with contextlib.suppress(RuntimeError), b.transaction():
        m.put("db_password", "v2", ORG)  # takes read 1 into this transaction
        raise RuntimeError("the caller's transaction fails after the write")
    m.get("db_password", ORG)  # read 2
    with b.transaction():
        with contextlib.suppress(RuntimeError), b.transaction():
            m.put("db_password", "v3", ORG)  # takes reads 1 and 2 into a savepoint
            raise RuntimeError("this write's savepoint rolls back")
        m.put("api_key", "k1", ORG)  # reads 1 and 2 go before this record
    assert m.get("db_password", ORG) == "v1"  # read 3
    m.audit.flush()
    store = m.audit.store
    assert isinstance(store, PostgresAuditStore)
    actions = [(e.action, e.path.rsplit("/", 1)[-1] if e.path else None)
               for e in m.audit_query(AuditFilter())]
    assert actions == [("write", "db_password"), ("read", "db_password"),
                       ("read", "db_password"), ("write", "api_key"),
                       ("read", "db_password")]
    assert verify_rows(store.scan(), store.head()).ok


def test_archiving_the_audit_log_keeps_one_chain_across_replicas(backends: Any,
                                                                  tmp_path: Any) -> None:
    """Records before a time go to a file and leave the table; both replicas go on
    appending to one chain that verifies from the archive's end, and an archive that
    started from a base another replica has since moved is refused."""
    from datetime import UTC, datetime

    a, b = backends(), backends()
    ma, mb = manager(a), manager(b)
    for i in range(3):
        ma.put(f"k{i}", "v", ORG)
        mb.get(f"k{i}", ORG)
    mb.audit.flush()
    store = ma.audit.store
    assert isinstance(store, PostgresAuditStore)
    stale = store.base()
    assert stale is None
    res = ma.audit_archive(datetime.now(UTC), tmp_path / "a.jsonl")
    assert (res.first, res.through, res.records) == (1, 6, 6)
    for i in range(2):
        mb.put(f"j{i}", "v", ORG)
        ma.get(f"j{i}", ORG)
    ma.audit.flush()
    rows = list(store.scan())
    assert rows[0][0] == 7  # the archive's own record, then the new ones
    assert verify_rows(rows, store.head(), store.base()).ok
    assert mb.audit_verify().ok
    assert ma.audit_verify([tmp_path / "a.jsonl"]).ok
    with pytest.raises(Conflict, match="archived by someone else"):
        store.trim(stale, 8, "x" * 64)
    assert mb.audit_verify().ok
    # Compaction after the archive: VACUUM ANALYZE of the audit table (outside any
    # transaction), recorded; the pooled connections stay in autocommit mode.
    res = ma.compact()
    assert res is not None
    assert res.store == "postgres"
    assert res.where.endswith("table audit")
    assert res.bytes_after > 0
    assert res.settled is True
    for _ in range(3):
        with a._checkout() as c:
            assert c.autocommit is True
        ma.put("after-compact", "v", ORG)
    assert mb.audit_verify().ok
    assert [e.outcome for e in ma.audit_query() if e.action == "compact"] == ["ok"]


def test_sibling_savepoints_keep_their_hooks(backends) -> None:  # type: ignore[no-untyped-def]
    """As on the embedded store (tests/unit/test_transaction_hooks.py)."""
    from tests.unit.test_transaction_hooks import sibling_savepoints

    b = backends()
    assert sibling_savepoints(b.transaction, b.on_commit, b.on_rollback) == [
        "undo second", "after first"]
