"""The client-side cache (keysafe.manager.cache) and how the manager uses it."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from keysafe import AuditFilter, BackendUnavailable, NotFound, SecretManager
from keysafe.backends.base import WriteContext
from keysafe.backends.memory import MemoryBackend
from keysafe.manager.cache import SecretCache


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    for mod in ("keysafe.manager.manager", "keysafe.manager.cache", "keysafe.manager.aio"):
        monkeypatch.setattr(f"{mod}.monotonic", c)
    return c


class CountingBackend(MemoryBackend):
    """Counts the reads that reach the store; ``down`` makes them fail as an outage."""

    def __init__(self) -> None:
        super().__init__(max_versions=100)
        self.gets = 0
        self.down = False

    def get(self, path: str, version: int | None = None) -> tuple[str, int]:
        self.gets += 1
        if self.down:
            raise BackendUnavailable("the store is unreachable (test)")
        return super().get(path, version)


class FlakyBackend:
    """Wraps any backend; its get raises BackendUnavailable while ``down``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.down = False
        self.gets = 0

    def get(self, path: str, version: int | None = None) -> tuple[str, int]:
        self.gets += 1
        if self.down:
            raise BackendUnavailable("the store is unreachable (test)")
        result: tuple[str, int] = self.inner.get(path, version)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def manager(backend: Any = None, **cache: Any) -> SecretManager:
    return SecretManager(backend if backend is not None else CountingBackend(),
                         cache=SecretCache(**cache), actor="tester")


def ctx() -> WriteContext:
    return WriteContext.make("out-of-band")


# -- SecretCache on its own ----------------------------------------------------------------


def test_secret_cache_put_get_invalidate(clock: Clock) -> None:
    c = SecretCache(ttl=10)
    assert c.get("k") is None
    c.put("k", "p/1", "v")
    c.put("k2", "p/1", "v")
    c.put("k3", "p/2", "w")
    assert c.get("k") == "v"
    assert len(c) == 3
    c.invalidate("p/1")
    assert c.get("k") is None
    assert c.get("k2") is None
    assert c.get("k3") == "w"
    c.invalidate("p/unknown")
    c.clear()
    assert len(c) == 0


def test_secret_cache_ttl_and_stale_window(clock: Clock) -> None:
    c = SecretCache(ttl=10, stale_if_error=5)
    c.put("k", "p", "v")
    clock.advance(9.9)
    assert c.get("k") == "v"
    clock.advance(0.2)
    assert c.get("k") is None
    assert c.get_stale("k") == "v"
    clock.advance(5)
    assert c.get_stale("k") is None


def test_anything_may_have_changed_expires_but_keeps_the_stale_window(clock: Clock) -> None:
    """A change listener's "*" (lost, or back): nothing is fresh any more, but a value
    stays for stale-if-error, as the store may be what went away; a read that began
    before it caches nothing; meta entries go."""
    c = SecretCache(ttl=10, stale_if_error=5)
    c.put("k", "p", "v")
    c.put_meta("m", "p", {"shown": 1})
    before = c.generation("p")
    c.expire_all()
    assert c.get("k") is None
    assert c.get_stale("k") == "v"
    assert c.get_meta("m") is None
    c.put("k2", "p", "read before", generation=before)
    assert c.get("k2") is None
    clock.advance(5.1)
    assert c.get_stale("k") is None
    c2 = SecretCache(ttl=10)  # no stale window: the same as clear()
    c2.put("k", "p", "v")
    c2.expire_all()
    assert len(c2) == 0


def test_a_lost_listener_keeps_stale_if_error_serving(clock: Clock) -> None:
    """The manager's handling of "*": with the store down, a value read before is still
    served within the stale-if-error window."""
    b = CountingBackend()
    m = manager(b, ttl=10, stale_if_error=60)
    m.put("x", "v1", "acme")
    assert m.get("x", "acme") == "v1"
    from keysafe.manager.manager import _invalidator

    _invalidator(m.cache)("*")
    b.down = True
    assert m.get("x", "acme") == "v1"  # stale, the store being down
    assert b.gets == 2  # it was asked first


def test_secret_cache_without_stale_window_serves_nothing_stale(clock: Clock) -> None:
    c = SecretCache(ttl=10)
    c.put("k", "p", "v")
    clock.advance(11)
    assert c.get_stale("k") is None


def test_secret_cache_size_bound_drops_the_oldest(clock: Clock) -> None:
    c = SecretCache(ttl=10, max_entries=3)
    for i in range(5):
        c.put(f"k{i}", f"p{i}", f"v{i}")
        c.put(f"k{i}", f"p{i}", f"v{i}")  # read twice: admitted even when full
        assert len(c) <= 3
    assert c.get("k0") is None
    assert c.get("k1") is None
    assert [c.get(f"k{i}") for i in (2, 3, 4)] == ["v2", "v3", "v4"]
    c.put("k2", "p2", "v2b")  # replacing an entry does not evict another
    assert len(c) == 3
    assert c.get("k3") == "v3"


def test_a_full_cache_admits_a_key_on_its_second_miss(clock: Clock) -> None:
    c = SecretCache(ttl=10, max_entries=3)
    for i in range(3):
        c.put(f"hot{i}", f"h{i}", "v")  # room: cached at once
    for i in range(50):  # a scan of one-off names pushes nothing out
        c.put(f"scan{i}", f"s{i}", "v")
        assert c.get(f"scan{i}") is None
    assert [c.get(f"hot{i}") for i in range(3)] == ["v", "v", "v"]
    c.put("again", "a", "v1")
    assert c.get("again") is None
    c.put("again", "a", "v2")  # its second miss: displaces the oldest
    assert c.get("again") == "v2"
    assert c.get("hot0") is None
    assert len(c) == 3
    c.clear()  # forgets the doorkeeper too
    for i in range(3):
        c.put(f"n{i}", f"n{i}", "v")
    c.put("again", "a", "v3")
    assert c.get("again") is None


def test_the_doorkeeper_is_bounded(clock: Clock) -> None:
    c = SecretCache(ttl=10, max_entries=2)
    c.put("a", "a", "v")
    c.put("b", "b", "v")
    c.put("x", "x", "v")  # remembered
    for i in range(2):  # the doorkeeper fills (2 keys) and is emptied: x is forgotten
        c.put(f"y{i}", f"y{i}", "v")
    assert len(c._door) <= 2
    c.put("x", "x", "v")
    assert c.get("x") is None


@pytest.mark.parametrize(("ttl", "size"), [(0, 10), (10, 0)])
def test_secret_cache_disabled(ttl: float, size: int) -> None:
    c = SecretCache(ttl=ttl, max_entries=size)
    assert not c.enabled
    c.put("k", "p", "v")
    assert len(c) == 0


# -- meta entries (what the server shows as a secret's status) ----------------------------


def test_meta_entries_share_the_values_invalidation(clock: Clock) -> None:
    c = SecretCache(ttl=10)
    c.put("k", "p/1", "v")
    c.put_meta("k", "p/1", ("status", 1))  # the same key as a value: its own table
    c.put_meta("m2", "p/1", "other")
    c.put_meta("m3", "p/2", "kept")
    assert c.get("k") == "v"
    assert c.get_meta("k") == ("status", 1)
    assert len(c) == 1  # values only
    c.invalidate("p/1")
    assert c.get("k") is None
    assert c.get_meta("k") is None
    assert c.get_meta("m2") is None
    assert c.get_meta("m3") == "kept"
    c.clear()
    assert c.get_meta("m3") is None


def test_meta_entries_expire_with_the_ttl_and_are_never_stale(clock: Clock) -> None:
    c = SecretCache(ttl=10, stale_if_error=60)
    c.put_meta("k", "p", "s")
    clock.advance(9.9)
    assert c.get_meta("k") == "s"
    clock.advance(0.2)
    assert c.get_meta("k") is None


def test_meta_entries_skip_a_fill_that_raced_an_invalidation(clock: Clock) -> None:
    c = SecretCache(ttl=10)
    gen = c.generation("p")
    c.invalidate("p")  # a write landed after the read began
    c.put_meta("k", "p", "old", gen)
    assert c.get_meta("k") is None
    c.put_meta("k", "p", "new", c.generation("p"))
    assert c.get_meta("k") == "new"


def test_meta_entries_are_bounded_apart_from_values(clock: Clock) -> None:
    c = SecretCache(ttl=10, max_entries=2)
    c.put("v", "p", "value")
    for i in range(4):
        c.put_meta(f"m{i}", f"p{i}", i)
        c.put_meta(f"m{i}", f"p{i}", i)  # polled twice: admitted even when full
    assert [c.get_meta(f"m{i}") for i in range(4)] == [None, None, 2, 3]
    assert c.get("v") == "value"  # status polling never evicts a value
    c.invalidate("p0")  # an evicted entry's path: nothing left to drop, nothing breaks
    c.invalidate("p2")
    assert c.get_meta("m2") is None
    assert c.get_meta("m3") == 3


@pytest.mark.parametrize(("ttl", "size"), [(0, 10), (10, 0)])
def test_meta_entries_off_when_the_cache_is_off(ttl: float, size: int) -> None:
    c = SecretCache(ttl=ttl, max_entries=size)
    c.put_meta("k", "p", "s")
    assert c.get_meta("k") is None


# -- through the manager ---------------------------------------------------------------------


def test_hits_within_ttl_do_not_reach_the_store(clock: Clock) -> None:
    b = CountingBackend()
    m = manager(b, ttl=30)
    m.put("token", "v1", "acme")
    assert m.get("token", "acme") == "v1"
    assert b.gets == 1
    for _ in range(5):
        clock.advance(5)
        assert m.get("token", "acme") == "v1"
    assert b.gets == 1
    clock.advance(6)  # 31 s after the first read: expired
    assert m.get("token", "acme") == "v1"
    assert b.gets == 2
    s = m.stats()
    assert s["cache_hits"] == 5
    assert s["cache_misses"] == 2


def test_ttl_zero_disables_caching(clock: Clock) -> None:
    b = CountingBackend()
    m = manager(b, ttl=0)
    m.put("token", "v1", "acme")
    for _ in range(3):
        assert m.get("token", "acme") == "v1"
    assert b.gets == 3
    assert m.stats()["cache_hits"] == 0


def test_size_bound(clock: Clock) -> None:
    b = CountingBackend()
    m = manager(b, ttl=30, max_entries=3)
    for i in range(5):
        m.put(f"s{i}", f"v{i}", "acme")
        m.get(f"s{i}", "acme")
        m.get(f"s{i}", "acme", fresh=True)  # a second miss: admitted even when full
    assert len(m.cache) <= 3
    assert m.stats()["cache_entries"] <= 3
    before = b.gets
    assert m.get("s4", "acme") == "v4"  # recent: cached
    assert b.gets == before
    assert m.get("s0", "acme") == "v0"  # oldest: evicted, read again
    assert b.gets == before + 1


def test_cache_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    for var in list(os.environ):
        if var.startswith("KEYSAFE_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("KEYSAFE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KEYSAFE_BACKEND", "memory")
    monkeypatch.setenv("KEYSAFE_CACHE_TTL", "12.5")
    monkeypatch.setenv("KEYSAFE_CACHE_MAX_ENTRIES", "7")
    monkeypatch.setenv("KEYSAFE_CACHE_STALE_IF_ERROR", "90")
    monkeypatch.chdir(tmp_path)
    with SecretManager.from_env() as m:
        assert (m.cache.ttl, m.cache.max_entries, m.cache.stale_if_error) == (12.5, 7, 90.0)


def spellings(m: SecretManager) -> list[dict[str, Any]]:
    """Several ways of naming the same secret, each its own cache key."""
    path = m.path("token", "acme")
    return [
        {"name": "token", "org": "acme"},
        {"name": "token", "org": "acme", "domain": "shared"},
        {"name": "token", "org": "acme", "env": "local"},
        {"name": "token", "org": "acme", "domain": "shared", "env": "local"},
        {"name": path},
    ]


def read_all(m: SecretManager) -> list[str]:
    return [m.get(**kw) for kw in spellings(m)]


@pytest.mark.parametrize("change", [
    "put", "put_json", "update_json", "rollback", "restore_then_put", "as_actor_put",
])
def test_writes_invalidate_every_spelling(clock: Clock, change: str) -> None:
    m = manager(ttl=300)
    m.put("token", '{"a": "1"}', "acme")
    m.put("token", '{"a": "2"}', "acme")
    assert read_all(m) == ['{"a": "2"}'] * 5
    assert len(m.cache) == 5
    if change == "put":
        m.put("token", "new", "acme", domain="shared")
        expected = "new"
    elif change == "put_json":
        m.put_json(m.path("token", "acme"), {"b": "3"})
        expected = '{"b": "3"}'
    elif change == "update_json":
        m.update_json("token", {"c": "4"}, "acme", env="local")
        expected = '{"a": "2", "c": "4"}'
    elif change == "rollback":
        m.rollback("token", 1, "acme")
        expected = '{"a": "1"}'
    elif change == "restore_then_put":
        m.delete("token", "acme")
        m.restore("token", "acme")
        m.put("token", "after-restore", "acme")
        expected = "after-restore"
    else:
        m.as_actor("alice").put("token", "alice-wrote", "acme")
        expected = "alice-wrote"
    assert read_all(m) == [expected] * 5


@pytest.mark.parametrize("change", ["delete", "force_delete", "destroy_current"])
def test_deletes_invalidate_every_spelling(clock: Clock, change: str) -> None:
    m = manager(ttl=300)
    m.put("token", "v1", "acme")
    read_all(m)
    if change == "delete":
        m.delete(m.path("token", "acme"))
    elif change == "force_delete":
        m.delete("token", "acme", domain="shared", force=True)
    else:
        m.destroy("token", [1], "acme")
    for kw in spellings(m):
        with pytest.raises(NotFound):
            m.get(**kw)


def test_destroy_invalidates_a_cached_old_version(clock: Clock) -> None:
    m = manager(ttl=300)
    m.put("token", "v1", "acme")
    m.put("token", "v2", "acme")
    assert m.get("token", "acme", version=1) == "v1"
    assert m.get(m.path("token", "acme"), version=1) == "v1"
    m.destroy("token", [1], "acme")
    with pytest.raises(NotFound):
        m.get("token", "acme", version=1)
    with pytest.raises(NotFound):
        m.get(m.path("token", "acme"), version=1)
    assert m.get("token", "acme") == "v2"


def test_purge_expired_invalidates(clock: Clock) -> None:
    m = manager(ttl=300)
    m.put("token", "v1", "acme")
    m.get("token", "acme")
    m.delete("token", "acme")
    m.recovery_window = m.recovery_window * 0
    m.purge_expired()
    with pytest.raises(NotFound):
        m.get("token", "acme")


def test_a_write_to_another_secret_keeps_the_cache(clock: Clock) -> None:
    b = CountingBackend()
    m = manager(b, ttl=300)
    m.put("token", "v1", "acme")
    m.get("token", "acme")
    m.put("other", "x", "acme")
    m.put("token", "x", "globex")
    m.put("token", "x", "acme", domain="billing")
    before = b.gets
    assert m.get("token", "acme") == "v1"
    assert b.gets == before


def test_fresh_bypasses_and_refreshes_the_cache(clock: Clock) -> None:
    b = CountingBackend()
    m = manager(b, ttl=300)
    m.put("token", "v1", "acme")
    path = m.path("token", "acme")
    assert m.get("token", "acme") == "v1"
    b.put(path, "changed-elsewhere", ctx=ctx())  # not through this manager
    assert m.get("token", "acme") == "v1"  # cached
    assert m.get("token", "acme", fresh=True) == "changed-elsewhere"
    assert m.get("token", "acme") == "changed-elsewhere"  # the fresh read refilled it
    b.put(path, '{"k": "j"}', ctx=ctx())
    assert m.get_json("token", "acme", fresh=True) == {"k": "j"}


class RacingBackend(MemoryBackend):
    """Runs ``during_get`` after a read has fetched its value, before the manager caches
    it: the interleaving of a read in one thread with writes in another."""

    during_get: Any = None

    def get(self, path: str, version: int | None = None) -> tuple[str, int]:
        out = super().get(path, version)
        hook, self.during_get = self.during_get, None
        if hook is not None:
            hook()
        return out


def test_a_read_racing_a_write_does_not_cache_the_old_value(clock: Clock) -> None:
    b = RacingBackend()
    m = manager(b, ttl=300)
    m.put("token", "old", "acme")
    b.during_get = lambda: m.put("token", "new", "acme")
    assert m.get("token", "acme") == "old"  # the read began before the write
    assert m.get("token", "acme") == "new"


def test_a_read_racing_a_write_of_another_spelling_does_not_cache(clock: Clock) -> None:
    b = RacingBackend()
    m = manager(b, ttl=300)
    m.put("token", "old", "acme")
    b.during_get = lambda: m.put(m.path("token", "acme"), "new")
    assert m.get("token", "acme", domain="shared") == "old"
    assert m.get("token", "acme", domain="shared") == "new"
    assert m.get("token", "acme") == "new"


def test_a_read_racing_a_write_and_many_other_writes_does_not_cache(clock: Clock) -> None:
    b = RacingBackend()
    m = manager(b, ttl=300, max_entries=10)
    m.put("token", "old", "acme")

    def other_writes(tag: str) -> None:
        for i in range(4200):  # e.g. an import, or a long-running process's history
            m.cache.invalidate(f"keysafe/local/acme/shared/{tag}-{i}")

    other_writes("before")

    def writes_meanwhile() -> None:
        m.put("token", "new", "acme")
        other_writes("during")

    b.during_get = writes_meanwhile
    assert m.get("token", "acme") == "old"
    assert m.get("token", "acme") == "new"


# -- stale-if-error -------------------------------------------------------------------------------


def test_stale_if_error_serves_an_expired_value_within_the_window(clock: Clock) -> None:
    b = CountingBackend()
    m = manager(b, ttl=10, stale_if_error=60)
    m.put("token", "v1", "acme")
    assert m.get("token", "acme") == "v1"
    b.down = True
    clock.advance(5)
    assert m.get("token", "acme") == "v1"  # fresh hit; the store is not asked
    assert b.gets == 1
    clock.advance(10)  # expired, inside the stale window
    assert m.get("token", "acme") == "v1"
    assert m.get("token", "acme") == "v1"
    assert m.stats()["stale_served"] == 2
    stale = m.audit_query(AuditFilter(action="read", outcome="stale"))
    assert len(stale) == 2
    assert stale[0].path == m.path("token", "acme")
    clock.advance(60)  # past ttl + stale_if_error
    with pytest.raises(BackendUnavailable):
        m.get("token", "acme")
    assert m.stats()["stale_served"] == 2
    failed = m.audit_query(AuditFilter(action="read", outcome="backend_unavailable"))
    assert len(failed) == 1
    # The store comes back: the value is read and cached afresh.
    b.down = False
    assert m.get("token", "acme") == "v1"
    b.down = True
    clock.advance(11)
    assert m.get("token", "acme") == "v1"


def test_without_stale_if_error_an_outage_fails_reads_after_the_ttl(clock: Clock) -> None:
    b = CountingBackend()
    m = manager(b, ttl=10)
    m.put("token", "v1", "acme")
    m.get("token", "acme")
    b.down = True
    clock.advance(11)
    with pytest.raises(BackendUnavailable):
        m.get("token", "acme")
    assert m.stats()["stale_served"] == 0


def test_stale_if_error_never_serves_a_value_that_was_never_cached(clock: Clock) -> None:
    b = CountingBackend()
    m = manager(b, ttl=10, stale_if_error=60)
    m.put("token", "v1", "acme")
    b.down = True
    with pytest.raises(BackendUnavailable):
        m.get("token", "acme")


def test_stale_if_error_is_only_for_outages_not_for_not_found(clock: Clock) -> None:
    b = CountingBackend()
    m = manager(b, ttl=10, stale_if_error=60)
    m.put("token", "v1", "acme")
    path = m.path("token", "acme")
    m.get("token", "acme")
    b.delete(path, ctx=ctx())  # deleted elsewhere
    clock.advance(11)
    with pytest.raises(NotFound):
        m.get("token", "acme")


def test_stale_if_error_configured_from_settings(clock: Clock, monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    for var in list(os.environ):
        if var.startswith("KEYSAFE_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("KEYSAFE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KEYSAFE_MASTER_KEY", base64.b64encode(os.urandom(32)).decode())
    monkeypatch.chdir(tmp_path)
    m = SecretManager.from_env(cache_ttl=10, cache_stale_if_error=60)
    flaky = FlakyBackend(m.backend)
    m.backend = flaky  # type: ignore[assignment]
    try:
        m.put("token", "v1", "acme")
        assert m.get("token", "acme") == "v1"
        flaky.down = True
        clock.advance(30)
        assert m.get("token", "acme") == "v1"
        clock.advance(60)
        with pytest.raises(BackendUnavailable):
            m.get("token", "acme")
    finally:
        flaky.down = False
        m.close()


# -- hits are counted, not audited one by one -----------------------------------------------


@pytest.fixture
def sqlite_manager(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[SecretManager]:
    for var in list(os.environ):
        if var.startswith("KEYSAFE_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("KEYSAFE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KEYSAFE_MASTER_KEY", base64.b64encode(os.urandom(32)).decode())
    monkeypatch.chdir(tmp_path)
    m = SecretManager.from_env(cache_ttl=300)
    yield m
    m.close()


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_cache_hits_are_counted_and_not_audited(clock: Clock, kind: str,
                                                sqlite_manager: SecretManager) -> None:
    m = sqlite_manager if kind == "sqlite" else manager(ttl=300)
    m.put("token", "v1", "acme")
    m.get("token", "acme")  # reaches the store: recorded
    for _ in range(20):
        m.get("token", "acme")  # hits
    m.get("token", "acme", fresh=True)  # reaches the store: recorded
    s = m.stats()
    assert s["cache_hits"] == 20
    assert s["cache_misses"] == 2
    reads = m.audit_query(AuditFilter(action="read"))
    assert len(reads) == 2
    assert all(r.outcome == "ok" and r.version == 1 for r in reads)
    assert all(r.path == m.path("token", "acme") for r in reads)
