"""Reads of current values on an event loop, coalesced: the misses that wait together go
as one statement (``path = ANY($1)``). What they must keep: each waiter its own path's
value or NotFound, recovery from a connection killed mid-batch, no stale value cached
after a write that raced the read, and a cancelled waiter that leaves the others be."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import psycopg
import pytest

from keysafe.backends import postgres as pgmod
from keysafe.backends.base import WriteContext
from keysafe.backends.postgres import PostgresBackend
from keysafe.errors import BackendUnavailable, NotFound
from keysafe.manager.cache import SecretCache
from keysafe.manager.manager import SecretManager

BASE = "app/prod/acme/shared"


def ctx() -> WriteContext:
    return WriteContext.make("tester")


def admin(pg_server: Any, pg_url: str) -> Any:
    return psycopg.connect(pg_server.url(pg_url.rsplit("/", 1)[1]), autocommit=True)


def count_batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of rows each batch statement returned, in order."""
    sizes: list[int] = []
    real = PostgresBackend._rows_of

    def rows_of(self: PostgresBackend, conn: Any, res: Any) -> Any:
        out = real(self, conn, res)
        sizes.append(len(out))
        return out

    monkeypatch.setattr(PostgresBackend, "_rows_of", rows_of)
    return sizes


def test_concurrent_misses_are_one_statement_and_each_gets_its_own(backends, monkeypatch):
    b = backends()
    for i in range(10):
        b.put(f"{BASE}/s{i}", f"v{i}", ctx=ctx())
    b.put(f"{BASE}/gone", "x", ctx=ctx())
    b.delete(f"{BASE}/gone", ctx=ctx())
    sizes = count_batches(monkeypatch)

    async def main() -> list[Any]:
        await b.get_async(f"{BASE}/s0")  # a connection, idle from now on
        sizes.clear()
        reads = [b.get_async(f"{BASE}/s{i}") for i in range(10)]
        reads += [b.get_async(f"{BASE}/s3"), b.get_async(f"{BASE}/missing"),
                  b.get_async(f"{BASE}/gone")]
        return list(await asyncio.gather(*reads, return_exceptions=True))

    got = asyncio.run(main())
    assert got[:11] == [(f"v{i}", 1) for i in range(10)] + [("v3", 1)]
    assert isinstance(got[11], NotFound)
    assert "missing" in str(got[11])
    assert isinstance(got[12], NotFound)
    assert "gone" in str(got[12])
    assert sizes == [10]  # one statement for twelve reads (eleven distinct paths)
    assert b._loop_count == len(b._loop_free) == 1


def test_paths_that_need_quoting_in_an_array_are_read_exactly(backends):
    b = backends()
    odd = [f"{BASE}/a,b", f'{BASE}/q"uote', f"{BASE}/back\\slash", f"{BASE}/{{brace}}",
           f"{BASE}/sp ace", f"{BASE}/NULL", f"{BASE}/é"]
    for i, p in enumerate(odd):
        b.put(p, f"v{i}", ctx=ctx())

    async def main() -> list[Any]:
        reads = [b.get_async(p) for p in odd]
        reads.append(b.get_async(f"{BASE}/back"))  # a prefix of one above: not found
        return list(await asyncio.gather(*reads, return_exceptions=True))

    got = asyncio.run(main())
    assert got[:-1] == [(f"v{i}", 1) for i in range(len(odd))]
    assert isinstance(got[-1], NotFound)


def test_reads_arriving_while_a_batch_is_in_flight_go_together_next(backends, monkeypatch):
    b = backends()
    for i in range(8):
        b.put(f"{BASE}/s{i}", f"v{i}", ctx=ctx())
    sizes = count_batches(monkeypatch)

    async def main() -> None:
        await b.get_async(f"{BASE}/s0")
        sizes.clear()
        first = asyncio.ensure_future(b.get_async(f"{BASE}/s0"))
        await asyncio.sleep(0)  # the first batch is sent
        reads = await asyncio.gather(*(b.get_async(f"{BASE}/s{i}") for i in range(1, 8)))
        assert await first == ("v0", 1)
        assert reads == [(f"v{i}", 1) for i in range(1, 8)]

    asyncio.run(main())
    assert sizes == [1, 7]


def test_a_connection_killed_mid_batch_is_replaced_and_the_batch_read_once_more(
        pg_server, pg_url, backends):
    b = backends()
    for i in range(4):
        b.put(f"{BASE}/s{i}", f"v{i}", ctx=ctx())
    locker = admin(pg_server, pg_url)
    locker.autocommit = False

    async def main() -> list[tuple[str, int]]:
        await b.get_async(f"{BASE}/s0")
        # The batch's statement waits behind this lock, in flight, until it is killed.
        locker.execute("LOCK TABLE secrets IN ACCESS EXCLUSIVE MODE")
        reads = asyncio.gather(*(b.get_async(f"{BASE}/s{i}") for i in range(4)))
        with admin(pg_server, pg_url) as c:
            for _ in range(200):
                await asyncio.sleep(0.01)
                pids = [r[0] for r in c.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND query LIKE '%ANY%'").fetchall()]
                if pids:
                    break
            assert pids, "the batch never waited on the lock"
            c.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) pid", (pids,))
        await asyncio.sleep(0.2)  # the retry waits on the lock in its turn
        locker.commit()
        return list(await reads)

    try:
        got = asyncio.run(main())
    finally:
        locker.close()
    assert got == [(f"v{i}", 1) for i in range(4)]
    assert b._loop_count == len(b._loop_free) == 1


def test_a_batch_that_fails_twice_raises_to_every_waiter(backends, monkeypatch):
    b = backends()
    b.put(f"{BASE}/s0", "v0", ctx=ctx())

    def lost(self: PostgresBackend, conn: Any, res: Any) -> Any:
        raise pgmod._Retry(psycopg.OperationalError("server closed the connection"))

    async def main() -> list[Any]:
        await b.get_async(f"{BASE}/s0")
        monkeypatch.setattr(PostgresBackend, "_rows_of", lost)
        return list(await asyncio.gather(*(b.get_async(f"{BASE}/s{i}") for i in range(3)),
                                         return_exceptions=True))

    got = asyncio.run(main())
    assert all(isinstance(e, BackendUnavailable) for e in got), got
    assert b._loop_count == len(b._loop_free) == 0
    monkeypatch.undo()
    assert asyncio.run(b.get_async(f"{BASE}/s0")) == ("v0", 1)


def test_every_connection_killed_between_batches(pg_server, pg_url, backends):
    b = backends()
    for i in range(3):
        b.put(f"{BASE}/s{i}", f"v{i}", ctx=ctx())

    async def main() -> None:
        for _ in range(3):
            got = await asyncio.gather(*(b.get_async(f"{BASE}/s{i}") for i in range(3)))
            assert got == [(f"v{i}", 1) for i in range(3)]
            with admin(pg_server, pg_url) as c:
                c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                          "datname = current_database() AND pid <> pg_backend_pid()")
            await asyncio.sleep(0.05)

    asyncio.run(main())


def test_a_cancelled_waiter_leaves_the_others_and_the_connection_be(backends):
    b = backends()
    for i in range(4):
        b.put(f"{BASE}/s{i}", f"v{i}", ctx=ctx())

    async def main() -> None:
        await b.get_async(f"{BASE}/s0")
        conn = b._loop_free[0]
        tasks = [asyncio.ensure_future(b.get_async(f"{BASE}/s{i}")) for i in range(4)]
        twin = asyncio.ensure_future(b.get_async(f"{BASE}/s1"))
        await asyncio.sleep(0)
        await asyncio.sleep(0)  # sent: in flight
        tasks[1].cancel()
        tasks[2].cancel()
        got = await asyncio.gather(*tasks, return_exceptions=True)
        assert got[0] == ("v0", 1)
        assert got[3] == ("v3", 1)
        assert isinstance(got[1], asyncio.CancelledError)
        assert isinstance(got[2], asyncio.CancelledError)
        assert await twin == ("v1", 1)  # the same path, still wanted: still read
        assert not conn.closed
        assert b._loop_free == [conn]

        # Cancelled before its batch went: the batch goes without it.
        gone = asyncio.ensure_future(b.get_async(f"{BASE}/s2"))
        kept = asyncio.ensure_future(b.get_async(f"{BASE}/s3"))
        await asyncio.sleep(0)
        gone.cancel()
        assert await kept == ("v3", 1)
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert b._loop_free == [conn]

    asyncio.run(main())


def test_a_batch_whose_waiters_are_all_cancelled_drops_its_connection(backends):
    b = backends()
    b.put(f"{BASE}/s0", "v0", ctx=ctx())

    async def main() -> None:
        await b.get_async(f"{BASE}/s0")
        conn = b._loop_free[0]
        tasks = [asyncio.ensure_future(b.get_async(f"{BASE}/s0")) for _ in range(3)]
        for _ in range(100):
            await asyncio.sleep(0)
            if not b._loop_free and conn.pgconn.is_busy():
                break
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert conn.closed
        assert b._loop_count == 0
        assert await b.get_async(f"{BASE}/s0") == ("v0", 1)

    asyncio.run(main())


def test_a_write_racing_a_batched_read_never_leaves_the_old_value_cached(backends,
                                                                         monkeypatch):
    b = backends()
    other = backends()
    path = f"{BASE}/token"
    b.put(path, "old", ctx=ctx())
    mgr = SecretManager(b, app="app", env="prod", cache=SecretCache(60.0),
                        audit_reads=False)
    real = PostgresBackend._rows_of
    race = {"armed": True}

    def rows_of(self: PostgresBackend, conn: Any, res: Any) -> Any:
        out = real(self, conn, res)
        if race["armed"]:
            # The statement has run (it saw "old"); another replica commits a new value
            # and its notification invalidates before the read caches what it got.
            race["armed"] = False
            other.put(path, "new", ctx=ctx())
            mgr.cache.invalidate(path)
        return out

    monkeypatch.setattr(PostgresBackend, "_rows_of", rows_of)

    async def main() -> None:
        got = await asyncio.gather(*(mgr.get_async("token", "acme") for _ in range(3)))
        assert got == ["old"] * 3  # what the statement saw: not wrong, but not cached
        assert mgr.cache.get(("token", "acme", None, None, None)) is None
        assert await mgr.get_async("token", "acme") == "new"

    asyncio.run(main())
    mgr.audit.close()


def test_a_read_never_joins_a_batch_already_in_flight(backends, monkeypatch):
    """A read that starts after a write committed must see it: it may not share the
    answer of a statement sent before it began."""
    b = backends()
    other = backends()
    path = f"{BASE}/token"
    b.put(path, "old", ctx=ctx())
    mgr = SecretManager(b, app="app", env="prod", cache=SecretCache(60.0),
                        audit_reads=False)
    hold = threading.Event()
    hold.set()
    real = pgmod._LoopReads._readable

    def readable(self: Any, loop: Any) -> None:
        if not hold.is_set():
            real(self, loop)

    monkeypatch.setattr(pgmod._LoopReads, "_readable", readable)

    async def main() -> None:
        first = asyncio.ensure_future(mgr.get_async("token", "acme"))
        for _ in range(100):
            await asyncio.sleep(0)
            reads = b._reads_last[1]
            if reads is not None and reads._inflight is not None:
                break
        time.sleep(0.1)  # its statement has run, and its answer waits on the socket
        other.put(path, "new", ctx=ctx())
        mgr.cache.invalidate(path)  # as the change notification would
        second = asyncio.ensure_future(mgr.get_async("token", "acme"))
        await asyncio.sleep(0)
        hold.clear()
        assert await first == "old"
        assert await second == "new"
        assert await mgr.get_async("token", "acme") == "new"

    hold.clear()
    asyncio.run(b.get_async(path))  # a connection to make hot
    hold.set()
    asyncio.run(main())
    mgr.audit.close()
