"""AsyncSecretManager (keysafe.manager.aio): the verbs for asyncio code, and which
thread each call runs in."""

from __future__ import annotations

import asyncio
import base64
import os
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from keysafe import (
    AsyncSecretManager,
    AuditFilter,
    Conflict,
    InvalidValue,
    NotFound,
    SecretManager,
)
from keysafe.backends.memory import MemoryBackend
from keysafe.manager.cache import SecretCache

T = TypeVar("T")
OPENAI_KEY = "sk-" + "A1b2C3d4E5" * 3


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class ThreadRecordingBackend(MemoryBackend):
    """Notes the thread of every read that reaches the store."""

    def __init__(self) -> None:
        super().__init__()
        self.get_threads: list[int] = []

    def get(self, path: str, version: int | None = None) -> tuple[str, int]:
        self.get_threads.append(threading.get_ident())
        return super().get(path, version)


def amanager(backend: MemoryBackend | None = None, ttl: float = 300) -> AsyncSecretManager:
    return AsyncSecretManager(SecretManager(backend or MemoryBackend(),
                                            cache=SecretCache(ttl=ttl), actor="tester"))


def test_async_verbs() -> None:
    async def main() -> None:
        am = amanager()
        info = await am.put("token", "one", "acme")
        assert info.version == 1
        assert await am.get("token", "acme") == "one"
        assert await am.has("token", "acme")
        assert not await am.has("nope", "acme")
        meta = await am.describe("token", "acme")
        assert meta.current_version == 1
        await am.put("token", "two", "acme", expected_version=1)
        with pytest.raises(Conflict):
            await am.put("token", "three", "acme", expected_version=1)
        assert await am.get("token", "acme") == "two"
        assert await am.get("token", "acme", version=1) == "one"
        assert [v.version for v in await am.versions("token", "acme")] == [1, 2]
        assert (await am.rollback("token", 1, "acme")).version == 3
        assert await am.get("token", "acme") == "one"
        assert [x.path for x in await am.list("acme")] == [am.sync.path("token", "acme")]
        await am.update_metadata("token", "acme", description="d")
        assert (await am.describe("token", "acme")).description == "d"
        await am.delete("token", "acme")
        with pytest.raises(NotFound):
            await am.get("token", "acme")
        await am.restore("token", "acme")
        assert await am.get("token", "acme") == "one"
        assert await am.destroy("token", [1], "acme") == [1]
        await am.delete("token", "acme", force=True)
        assert not await am.has("token", "acme")
        with pytest.raises(InvalidValue):
            await am.put("token", "", "acme")
        stats = await am.stats()
        assert stats["cache_hits"] == 0  # every read above followed a write
        assert stats["cache_misses"] >= 5
        await am.aclose()

    run(main())


def test_async_json_and_llm_key() -> None:
    async def main() -> None:
        am = amanager()
        await am.put_json("creds", {"user": "u", "password": "p"}, "acme")
        assert await am.get_json("creds", "acme") == {"user": "u", "password": "p"}
        await am.update_json("creds", {"password": None, "host": "h"}, "acme")
        assert await am.get_json("creds", "acme") == {"user": "u", "host": "h"}
        assert await am.get_json_field("creds", "host", "acme") == "h"
        assert await am.get_llm_api_key("acme", "openai") is None
        await am.put("openai_api_key", OPENAI_KEY, "acme")
        assert await am.get_llm_api_key("acme", "openai", "card-services") == OPENAI_KEY

    run(main())


def test_async_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in list(os.environ):
        if var.startswith("KEYSAFE_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("KEYSAFE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KEYSAFE_MASTER_KEY", base64.b64encode(os.urandom(32)).decode())
    monkeypatch.chdir(tmp_path)

    async def main() -> None:
        am = AsyncSecretManager.from_env()
        await am.put("token", "v", "acme")
        assert await am.get("token", "acme") == "v"
        assert await am.get("token", "acme", fresh=True) == "v"
        assert am.sync.backend.name == "sqlite"
        await am.aclose()

    run(main())


def test_a_cache_hit_runs_in_the_event_loop_thread_and_a_miss_in_a_worker() -> None:
    backend = ThreadRecordingBackend()
    am = amanager(backend)
    am.sync.put("token", "v", "acme")

    async def main() -> None:
        loop_thread = threading.get_ident()
        assert await am.get("token", "acme") == "v"  # miss
        assert len(backend.get_threads) == 1
        assert backend.get_threads[0] != loop_thread
        assert await am.get("token", "acme") == "v"  # hit
        assert len(backend.get_threads) == 1
        assert await am.get("token", "acme", fresh=True) == "v"  # fresh: a worker again
        assert len(backend.get_threads) == 2
        assert backend.get_threads[1] != loop_thread

    run(main())
    assert am.sync.stats()["cache_hits"] == 1


def test_a_cache_hit_does_not_hop_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    am = amanager()
    am.sync.put("token", "v", "acme")
    am.sync.put("other", "w", "acme")

    async def main() -> None:
        assert await am.get("token", "acme") == "v"  # miss, through to_thread

        async def no_thread(*a: Any, **k: Any) -> Any:
            raise AssertionError("a cache hit went to a worker thread")

        monkeypatch.setattr(asyncio, "to_thread", no_thread)
        for _ in range(10):
            assert await am.get("token", "acme") == "v"
        # a miss still needs the worker: proves the patch is in effect
        with pytest.raises(AssertionError, match="worker thread"):
            await am.get("other", "acme")

    run(main())
    assert am.sync.stats()["cache_hits"] == 10


def test_async_hits_are_counted_not_audited() -> None:
    async def main() -> None:
        am = amanager()
        await am.put("token", "v", "acme")
        for _ in range(5):
            await am.get("token", "acme")
        reads = am.sync.audit_query(AuditFilter(action="read"))
        assert len(reads) == 1
        assert am.sync.stats()["cache_hits"] == 4

    run(main())


def test_async_writes_invalidate_the_cache() -> None:
    async def main() -> None:
        am = amanager()
        await am.put("token", "v1", "acme")
        assert await am.get("token", "acme") == "v1"
        assert await am.get(am.sync.path("token", "acme")) == "v1"
        await am.put("token", "v2", "acme")
        assert await am.get("token", "acme") == "v2"
        assert await am.get(am.sync.path("token", "acme")) == "v2"
        await am.delete("token", "acme")
        with pytest.raises(NotFound):
            await am.get("token", "acme")

    run(main())


def test_many_concurrent_async_reads() -> None:
    async def main() -> None:
        am = amanager(ttl=0)
        for i in range(20):
            await am.put(f"s{i}", f"v{i}", "acme")
        got = await asyncio.gather(*(am.get(f"s{i}", "acme") for i in range(20)))
        assert got == [f"v{i}" for i in range(20)]

    run(main())


# -- SecretManager.get_async: the server's miss path on a network store ----------------------


class AsyncReadBackend(MemoryBackend):
    """A store with ``get_async`` (as PostgreSQL's), counting where reads run; ``down``
    makes reads fail as an outage does."""

    def __init__(self) -> None:
        super().__init__()
        self.async_reads = 0
        self.sync_reads = 0
        self.down = False

    def get(self, path: str, version: int | None = None) -> tuple[str, int]:
        self.sync_reads += 1
        return super().get(path, version)

    async def get_async(self, path: str, version: int | None = None) -> tuple[str, int]:
        self.async_reads += 1
        if self.down:
            from keysafe.errors import BackendUnavailable

            raise BackendUnavailable("store unreachable (test)")
        await asyncio.sleep(0)
        return MemoryBackend.get(self, path, version)


def test_manager_get_async_reads_misses_on_the_loop_and_caches_them() -> None:
    from keysafe.errors import NotFound
    from keysafe.manager.audit import AuditFilter

    b = AsyncReadBackend()
    mgr = SecretManager(b, cache=SecretCache(ttl=300, stale_if_error=600), actor="tester")
    mgr.put("token", "one", "acme")

    async def main() -> None:
        assert await mgr.get_async("token", "acme") == "one"  # a miss: read on the loop
        assert await mgr.get_async("token", "acme") == "one"  # a hit
        assert (b.async_reads, b.sync_reads) == (1, 0)
        assert mgr.stats()["cache_hits"] == 1
        assert mgr.stats()["cache_misses"] == 1
        mgr.put("token", "two", "acme")  # invalidates
        assert await mgr.get_async("token", "acme") == "two"
        assert b.async_reads == 2
        with pytest.raises(NotFound):
            await mgr.get_async("nope", "acme")
        # An outage serves the stale value within stale-if-error, recorded as such.
        from time import monotonic

        mgr.cache._data[("token", "acme", None, None, None)] = (
            "two", monotonic() - 1, mgr.path("token", "acme"))  # expired, not yet stale
        b.down = True
        assert await mgr.get_async("token", "acme") == "two"
        assert mgr.stats()["stale_served"] == 1

    asyncio.run(main())
    mgr.audit.flush()
    outcomes = [(e.path.rsplit("/", 1)[-1], e.outcome)
                for e in mgr.audit_query(AuditFilter(action="read"))]
    assert outcomes == [("token", "ok"), ("token", "ok"), ("nope", "not_found"),
                        ("token", "stale")]


def test_manager_get_async_runs_in_a_thread_without_get_async() -> None:
    b = ThreadRecordingBackend()
    mgr = SecretManager(b, cache=SecretCache(ttl=300), actor="tester")
    mgr.put("token", "one", "acme")

    async def main() -> int:
        assert await mgr.get_async("token", "acme") == "one"
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert b.get_threads
    assert loop_thread not in b.get_threads


def test_async_manager_uses_the_stores_get_async_for_misses() -> None:
    b = AsyncReadBackend()
    am = AsyncSecretManager(SecretManager(b, cache=SecretCache(ttl=300), actor="tester"))
    am.sync.put("token", "one", "acme")

    async def main() -> None:
        assert await am.get("token", "acme") == "one"
        assert await am.get("token", "acme") == "one"  # a hit
        assert await am.get("token", "acme", fresh=True) == "one"  # fresh: in a thread
        assert await am.get("token", "acme", version=1) == "one"  # a version: in a thread

    asyncio.run(main())
    assert (b.async_reads, b.sync_reads) == (1, 2)
