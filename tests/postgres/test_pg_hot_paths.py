"""The PostgreSQL store's hot paths: value reads on each thread's own connection
(prepared statements through libpq, binary results) and audit records of reads appended
with a compare-and-set on the chain's head. What they must keep: committed data only,
recovery after the server drops connections, one verifiable chain across replicas,
relaxed commits for read records only, no record stored twice after a retry."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import psycopg
import pytest

from keysafe.backends import postgres as pgmod
from keysafe.backends.base import WriteContext
from keysafe.backends.postgres import PostgresAuditStore, PostgresBackend
from keysafe.errors import NotFound
from keysafe.manager.audit import AuditFilter, AuditLog, Draft, chain, now_us, verify_rows
from keysafe.manager.cache import SecretCache
from keysafe.manager.manager import SecretManager

PATH = "app/prod/acme/shared/db_password"


def ctx() -> WriteContext:
    return WriteContext.make("tester")


def admin(pg_server: Any, pg_url: str) -> Any:
    return psycopg.connect(pg_server.url(pg_url.rsplit("/", 1)[1]), autocommit=True)


def kill_all(pg_server: Any, pg_url: str) -> int:
    """Terminate every connection to the test's database but the admin's own."""
    with admin(pg_server, pg_url) as c:
        rows = c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                         "datname = current_database() AND pid <> pg_backend_pid()").fetchall()
    return len(rows)


def drafts(n: int, actor: str = "svc") -> list[Draft]:
    return [(now_us(), actor, "read", PATH, 1, "ok", "acme", "127.0.0.1", f"r{i}", None)
            for i in range(n)]


def chain_ok(store: PostgresAuditStore) -> int:
    result = verify_rows(store.scan(), store.head())
    assert result.ok, result.problems
    return result.checked


# -- value reads ------------------------------------------------------------------------
def test_reads_take_no_pool_connection_and_see_every_commit(backends):
    b = backends()
    b.put(PATH, "v1", ctx=ctx())
    requests = b._pool.get_stats().get("requests_num", 0)
    other = backends()
    for i in range(2, 7):
        other.put(PATH, f"v{i}", ctx=ctx())
        assert b.get(PATH) == (f"v{i}", i)  # committed elsewhere a moment ago
    assert b.get(PATH, 3) == ("v3", 3)
    assert b._pool.get_stats().get("requests_num", 0) == requests
    assert len(b._owned) == 1


def test_deleted_destroyed_and_missing_reads_are_not_found(backends):
    b = backends()
    b.put(PATH, "v1", ctx=ctx())
    b.put(PATH, "v2", ctx=ctx())
    b.destroy(PATH, [1], ctx=ctx())
    with pytest.raises(NotFound):
        b.get(PATH, 1)
    with pytest.raises(NotFound):
        b.get(PATH, 9)
    b.delete(PATH, ctx=ctx())
    with pytest.raises(NotFound):
        b.get(PATH)
    with pytest.raises(NotFound):
        b.get("app/prod/acme/shared/nothing_here")


def test_own_connections_are_capped_and_the_other_threads_use_the_pool(backends):
    b = backends(pool_max=2)
    b.put(PATH, "v1", ctx=ctx())
    barrier = threading.Barrier(5)
    got: list[tuple[str, int]] = []
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            barrier.wait(timeout=10)
            for _ in range(20):
                got.append(b.get(PATH))
        except BaseException as exc:
            errors.append(exc)

    ts = [threading.Thread(target=reader) for _ in range(5)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=60)
    assert not errors, errors
    assert got == [("v1", 1)] * 100
    assert len(b._owned) <= 2


def test_a_finished_threads_connection_is_taken_over_by_a_new_thread(backends):
    b = backends(pool_max=2)
    b.put(PATH, "v1", ctx=ctx())
    seen: list[Any] = []

    def read() -> None:
        assert b.get(PATH) == ("v1", 1)
        seen.append(b._local.own)

    for _ in range(5):  # one thread after another: one connection for all of them
        t = threading.Thread(target=read)
        t.start()
        t.join(timeout=30)
    assert len({id(c) for c in seen}) == 1
    assert not seen[0].closed
    assert len(b._owned) == 1


def test_reads_and_writes_survive_every_connection_being_killed(pg_server, pg_url,
                                                               backends):
    """A restart or failover drops every connection: the next read retries once on a
    fresh connection, and the next write skips the pool's dead connections."""
    b = backends()
    b.put(PATH, "v1", ctx=ctx())
    assert b.get(PATH) == ("v1", 1)
    assert kill_all(pg_server, pg_url) >= 2  # this thread's own and the pool's
    time.sleep(0.1)
    assert b.get(PATH) == ("v1", 1)
    kill_all(pg_server, pg_url)
    time.sleep(0.1)
    b.put(PATH, "v2", ctx=ctx())
    assert b.get(PATH) == ("v2", 2)


def test_a_deallocated_statement_is_prepared_again(backends):
    b = backends()
    b.put(PATH, "v1", ctx=ctx())
    assert b.get(PATH) == ("v1", 1)
    own = b._local.own
    own.execute("DEALLOCATE ALL")  # what a pooler (or psycopg after a rollback) may do
    assert b.get(PATH) == ("v1", 1)
    assert b._local.own is own  # the same connection, statement prepared again


def test_close_closes_every_own_connection(pg_server, pg_url, ring):
    b = PostgresBackend(pg_url, ring, pool_max=4)
    b.put(PATH, "v1", ctx=ctx())
    ts = [threading.Thread(target=b.get, args=(PATH,)) for _ in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=30)
    owned = [c for c in b._owned.values() if c is not None]
    assert len(owned) == 3
    b.close()
    assert all(c.closed for c in owned)
    with admin(pg_server, pg_url) as c:
        left = c.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                         "current_database() AND pid <> pg_backend_pid()").fetchone()[0]
    assert left == 0


# -- audit records of reads ---------------------------------------------------------------
def test_appends_from_two_replicas_interleaved_form_one_chain(backends):
    """Each replica's cached head is stale after the other's append: the compare-and-set
    misses, and the locked path chains onto the real head."""
    stores = [PostgresAuditStore(backends()), PostgresAuditStore(backends())]
    total = 0
    for i in range(30):
        store = stores[i % 2]
        with store.relaxed():
            done = store.append(drafts(1 + i % 3, actor=f"r{i % 2}"))
        total += len(done)
        assert done[-1][0] == total
    assert chain_ok(stores[0]) == total


def test_concurrent_appends_from_two_replicas_lose_nothing(backends):
    stores = [PostgresAuditStore(backends()) for _ in range(2)]
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def work(store: PostgresAuditStore) -> None:
        try:
            barrier.wait(timeout=10)
            for _ in range(40):
                with store.relaxed():
                    store.append(drafts(3))
        except BaseException as exc:
            errors.append(exc)

    ts = [threading.Thread(target=work, args=(s,)) for s in stores for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=120)
    assert not errors, errors
    assert chain_ok(stores[0]) == 4 * 40 * 3


def test_one_replica_appends_in_one_statement(backends, monkeypatch):
    store = PostgresAuditStore(backends())
    store.append(drafts(2))  # learns the head (locked path)
    sent: list[bytes] = []
    real = PostgresAuditStore._locked

    def spy(self: PostgresAuditStore, *a: Any, **kw: Any) -> Any:
        sent.append(b"locked")
        return real(self, *a, **kw)

    monkeypatch.setattr(PostgresAuditStore, "_locked", spy)
    for _ in range(5):
        with store.relaxed():
            store.append(drafts(4))
    assert sent == []
    assert chain_ok(store) == 22


def test_a_retry_after_a_lost_commit_stores_the_records_once(backends, monkeypatch):
    """The connection breaks after the append committed: the retry finds the head where
    that append left it and stores nothing more."""
    store = PostgresAuditStore(backends())
    store.append(drafts(1))
    real = PostgresAuditStore._put
    calls = []

    def put_then_break(self: PostgresAuditStore, conn: Any, *a: Any, **kw: Any) -> bool:
        ok = real(self, conn, *a, **kw)
        calls.append(ok)
        if len(calls) == 1:
            raise pgmod._Retry(psycopg.OperationalError("server closed the connection"))
        return ok

    monkeypatch.setattr(PostgresAuditStore, "_put", put_then_break)
    done = store.append(drafts(3))
    assert calls == [True]  # the retry found them committed: no second insert
    assert [r[0] for r in done] == [2, 3, 4]
    assert chain_ok(store) == 4


def test_a_retry_after_a_lost_statement_stores_the_records(backends, monkeypatch):
    store = PostgresAuditStore(backends())
    store.append(drafts(1))
    real = PostgresAuditStore._put
    calls = []

    def break_first(self: PostgresAuditStore, conn: Any, *a: Any, **kw: Any) -> bool:
        calls.append(1)
        if len(calls) == 1:
            raise pgmod._Retry(psycopg.OperationalError("server closed the connection"))
        return real(self, conn, *a, **kw)

    monkeypatch.setattr(PostgresAuditStore, "_put", break_first)
    done = store.append(drafts(2))
    assert [r[0] for r in done] == [2, 3]
    assert chain_ok(store) == 3


def test_appends_survive_every_connection_being_killed(pg_server, pg_url, backends):
    store = PostgresAuditStore(backends())
    with store.relaxed():
        store.append(drafts(2))
    kill_all(pg_server, pg_url)
    time.sleep(0.1)
    with store.relaxed():
        store.append(drafts(2))
    assert chain_ok(store) == 4


@pytest.mark.parametrize(("relaxed", "expected"), [(True, "off"), (False, "on")])
def test_only_records_of_reads_commit_without_waiting_for_the_wal(backends, relaxed,
                                                                    expected):
    """The append statement sets synchronous_commit for its own transaction only."""
    b = backends()
    store = PostgresAuditStore(b)
    store.append(drafts(1))
    conn = b._own()
    pg = conn.pgconn
    pg.exec_(b"BEGIN")
    try:
        head = store._head
        assert head is not None
        rows = chain(drafts(1), head[0], head[1])
        assert store._put(conn, rows, head, "off" if relaxed else None)
        assert conn.execute("SHOW synchronous_commit").fetchone()[0] == expected
    finally:
        pg.exec_(b"ROLLBACK")
    assert conn.execute("SHOW synchronous_commit").fetchone()[0] == "on"


def test_write_records_join_the_write_and_roll_back_with_it(backends):
    b = backends()
    m = SecretManager(b, audit=AuditLog(PostgresAuditStore(b)), cache=SecretCache(ttl=0))
    try:
        m.put("db_password", "v1", "acme")

        def undone_write() -> None:
            with b.transaction():
                m.record("custom", None, "ok", durable=True)
                raise RuntimeError("undo")

        with pytest.raises(RuntimeError):
            undone_write()
        m.get("db_password", "acme")  # a buffered read record, after the undone one
        m.audit.flush()
        store = PostgresAuditStore(b)
        actions = [e.action for e in store.query(AuditFilter())]
        assert "custom" not in actions
        assert actions[-1] == "read"
        assert chain_ok(store) == len(actions)
    finally:
        m.audit.close()


# -- value reads on the event loop ----------------------------------------------------------
def test_async_reads_see_every_commit_and_raise_as_get_does(backends):
    b = backends()
    other = backends()

    async def main() -> None:
        with pytest.raises(NotFound):
            await b.get_async(PATH)
        for i in range(1, 5):
            other.put(PATH, f"v{i}", ctx=ctx())
            assert await b.get_async(PATH) == (f"v{i}", i)
        assert await b.get_async(PATH, 2) == ("v2", 2)
        with pytest.raises(NotFound):
            await b.get_async(PATH, 9)
        other.delete(PATH, ctx=ctx())
        with pytest.raises(NotFound):
            await b.get_async(PATH)

    asyncio.run(main())
    assert b._loop_count == len(b._loop_free) == 1


def test_async_reads_in_flight_beyond_the_cap_run_in_the_executor(backends):
    b = backends(pool_max=3)
    for i in range(20):
        b.put(f"{PATH}_{i}", f"v{i}", ctx=ctx())

    async def main() -> list[tuple[str, int]]:
        return list(await asyncio.gather(*(b.get_async(f"{PATH}_{i % 20}")
                                           for i in range(60))))

    got = asyncio.run(main())
    assert got == [(f"v{i % 20}", 1) for i in range(60)]
    assert 1 <= b._loop_count <= 3
    assert b._loop_count == len(b._loop_free)


def test_an_async_read_cancelled_in_flight_drops_its_connection(backends):
    b = backends()
    b.put(PATH, "v1", ctx=ctx())

    async def main() -> None:
        assert await b.get_async(PATH) == ("v1", 1)
        first = b._loop_free[0]
        task = asyncio.ensure_future(b.get_async(PATH))
        for _ in range(100):  # until the statement is sent and the read waits for it
            await asyncio.sleep(0)
            if not b._loop_free and first.pgconn.is_busy():
                break
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert first.closed  # its answer may still arrive: never used again
        assert b._loop_count == 0
        assert await b.get_async(PATH) == ("v1", 1)

    asyncio.run(main())


def test_async_reads_survive_every_connection_being_killed(pg_server, pg_url, backends):
    b = backends()
    b.put(PATH, "v1", ctx=ctx())

    async def read() -> tuple[str, int]:
        return await b.get_async(PATH)

    assert asyncio.run(read()) == ("v1", 1)
    kill_all(pg_server, pg_url)
    time.sleep(0.1)
    assert asyncio.run(read()) == ("v1", 1)  # another loop: the idle connection is shared
    assert b._loop_count == 1


def test_close_closes_the_async_connections(backends):
    b = backends()
    b.put(PATH, "v1", ctx=ctx())

    async def main() -> None:
        await asyncio.gather(*(b.get_async(PATH) for _ in range(3)))

    asyncio.run(main())
    conns = list(b._loop_free)
    assert conns
    b.close()
    assert all(c.closed for c in conns)
    assert b._loop_count == 0


def test_an_async_read_cancelled_while_connecting_leaves_no_connection(backends,
                                                                       monkeypatch):
    b = backends()
    b.put(PATH, "v1", ctx=ctx())
    made: list[Any] = []
    real = PostgresBackend._connect_loop_conn

    def slow(self: PostgresBackend) -> Any:
        time.sleep(0.3)
        conn = real(self)
        made.append(conn)
        return conn

    monkeypatch.setattr(PostgresBackend, "_connect_loop_conn", slow)

    async def main() -> None:
        task = asyncio.ensure_future(b.get_async(PATH))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.6)  # the connect finishes in its thread meanwhile

    asyncio.run(main())
    assert len(made) == 1
    assert made[0].closed
    assert b._loop_count == 0
    assert not b._loop_free
