"""The server's cache of status responses (GET /api/secrets/{org}/{name}): it shares
the value cache's invalidation by path, generations, TTL and bound, so every change
shows in the next status read; reads stay authorised first and audited one by one."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from keysafe.backends.base import WriteContext
from keysafe.errors import NotFound
from keysafe.manager.audit import AuditFilter
from keysafe.manager.manager import SecretManager
from keysafe.rotation.engine import RotationEngine
from keysafe.rotation.rotators import RandomRotator, RotationContext
from keysafe.server.app import KeysafeApp
from keysafe.server.auth import Identity
from keysafe.server.deps import Ctx, make_ctx
from keysafe.server.routes import secrets as routes

from .serverkit import OPENAI, VALUE_1, VALUE_2, RealServer, bearer, build_app, make_token

ORG = "acme"
JWT = "jwt_secret"
URL = f"/api/secrets/{ORG}/{OPENAI}"


class Describes:
    """Counts the store's describe calls (what a status cache hit avoids); ``hook`` runs
    once, after a describe has read its row and before the caller uses it."""

    def __init__(self, app: KeysafeApp, monkeypatch: pytest.MonkeyPatch) -> None:
        self.n = 0
        self.hook: Callable[[], None] | None = None
        backend = app.keysafe.manager.backend
        inner = backend.describe

        def describe(path: str, *, include_deleted: bool = False) -> Any:
            self.n += 1
            try:
                return inner(path, include_deleted=include_deleted)
            finally:
                hook, self.hook = self.hook, None
                if hook is not None:
                    hook()

        monkeypatch.setattr(backend, "describe", describe)


@pytest.fixture
def app(home: Path) -> KeysafeApp:
    # A long TTL: only invalidation can make a status read see a change.
    return build_app(home, server_cache_ttl=300, purge_interval=0, rotation_interval=0)


@pytest.fixture
def admin(app: KeysafeApp) -> dict[str, str]:
    return bearer(make_token(app, "admin", ["admin"], [ORG]))


@pytest.fixture
def describes(app: KeysafeApp, monkeypatch: pytest.MonkeyPatch) -> Describes:
    return Describes(app, monkeypatch)


def status(c: TestClient, headers: dict[str, str], url: str = URL) -> dict[str, Any]:
    r = c.get(url, headers=headers)
    assert r.status_code == 200, r.text
    assert VALUE_1 not in r.text
    assert VALUE_2 not in r.text
    out: dict[str, Any] = r.json()
    return out


def truth(app: KeysafeApp, name: str = OPENAI) -> dict[str, Any]:
    """The status as an uncached read computes it now, straight from the store."""
    m = app.keysafe.manager
    ref, path = m.resolve(name, ORG, None, None)
    try:
        meta = m.backend.describe(path, include_deleted=True)
    except NotFound:
        meta = None
    ctx = Ctx(Identity("test", frozenset(), None), m, "test", "rid")
    out: dict[str, Any] = json.loads(routes.status_of(ctx, ref, meta).model_dump_json())
    return out


def cached_twice(c: TestClient, admin: dict[str, str], describes: Describes,
                 url: str = URL) -> dict[str, Any]:
    """Reads status twice; the second read must not reach the store."""
    first = status(c, admin, url)
    n = describes.n
    assert status(c, admin, url) == first
    assert describes.n == n, "the second status read reached the store"
    return first


# -- every change shows at once ------------------------------------------------------------


def test_a_cached_status_is_served_without_the_store(client: TestClient, app: KeysafeApp,
                                                     admin: dict[str, str],
                                                     describes: Describes) -> None:
    assert client.put(URL, json={"secret_value": VALUE_1}, headers=admin).status_code == 200
    before = describes.n
    for _ in range(5):
        st = status(client, admin)
        assert st["configured"] is True
        assert st["version"] == 1
    assert describes.n == before + 1
    assert st == truth(app)


def test_not_found_is_cached_and_a_put_makes_it_configured(client: TestClient,
                                                           admin: dict[str, str],
                                                           describes: Describes) -> None:
    assert cached_twice(client, admin, describes)["configured"] is False
    assert client.put(URL, json={"secret_value": VALUE_1}, headers=admin).status_code == 200
    st = status(client, admin)
    assert st["configured"] is True
    assert st["version"] == 1


@pytest.mark.parametrize("domain", [None, "shared"])
def test_every_spelling_of_the_path_is_invalidated(client: TestClient, admin: dict[str, str],
                                                   describes: Describes,
                                                   domain: str | None) -> None:
    client.put(URL, json={"secret_value": VALUE_1}, headers=admin)
    shared = f"{URL}?domain_id=shared"
    assert cached_twice(client, admin, describes)["version"] == 1
    assert cached_twice(client, admin, describes, shared)["version"] == 1
    body: dict[str, Any] = {"secret_value": VALUE_2}
    if domain:
        body["domain_id"] = domain
    client.put(URL, json=body, headers=admin)
    assert status(client, admin)["version"] == 2
    assert status(client, admin, shared)["version"] == 2


def test_http_changes_show_in_the_next_status(client: TestClient, app: KeysafeApp,
                                              admin: dict[str, str],
                                              describes: Describes) -> None:
    client.put(URL, json={"secret_value": VALUE_1, "description": "one"}, headers=admin)
    assert cached_twice(client, admin, describes)["description"] == "one"

    client.put(URL, json={"secret_value": VALUE_2, "description": "two"}, headers=admin)
    st = cached_twice(client, admin, describes)
    assert (st["version"], st["description"]) == (2, "two")

    assert client.delete(URL, headers=admin).status_code == 200
    st = cached_twice(client, admin, describes)
    assert (st["configured"], st["deleted"]) == (False, True)
    assert st["recoverable_until"] is not None

    assert client.post(f"{URL}/restore", headers=admin).status_code == 200
    st = cached_twice(client, admin, describes)
    assert (st["configured"], st["deleted"]) == (True, False)

    r = client.post(f"{URL}/rollback", json={"version": 1}, headers=admin)
    assert r.status_code == 200, r.text
    st = cached_twice(client, admin, describes)
    assert st["version"] == 3
    assert st == truth(app)

    assert client.delete(URL, params={"force": "true"}, headers=admin).status_code == 200
    st = status(client, admin)
    assert (st["configured"], st["deleted"], st.get("version")) == (False, False, None)


def test_a_conflicting_write_drops_the_cached_status(client: TestClient, app: KeysafeApp,
                                                     admin: dict[str, str],
                                                     describes: Describes) -> None:
    client.put(URL, json={"secret_value": VALUE_1}, headers=admin)
    assert cached_twice(client, admin, describes)["version"] == 1
    # Another process writes, unheard (the embedded store announces nothing).
    m = app.keysafe.manager
    m.backend.put(m.path(OPENAI, ORG), VALUE_2, ctx=WriteContext.make("elsewhere"))
    assert status(client, admin)["version"] == 1  # cached, within the TTL
    r = client.put(URL, json={"secret_value": VALUE_1, "expected_version": 1}, headers=admin)
    assert r.status_code == 409
    # The conflict says the cached copy is old: it is gone.
    assert status(client, admin)["version"] == 2


def _rotate(m: SecretManager) -> None:
    RotationEngine(m).rotate(JWT, ORG)


def _purge_expired(m: SecretManager) -> None:
    m.delete(JWT, ORG)
    m.recovery_window = timedelta(0)
    try:
        assert m.purge_expired() == [m.path(JWT, ORG)]
    finally:
        m.recovery_window = timedelta(days=7)


MANAGER_CHANGES: dict[str, Callable[[SecretManager], None]] = {
    "put": lambda m: m.put(JWT, "n" * 64, ORG),
    "update_metadata": lambda m: m.update_metadata(JWT, ORG, description="changed",
                                                    rotation_days=3),
    "destroy": lambda m: m.destroy(JWT, [1], ORG),
    "rollback": lambda m: m.rollback(JWT, 1, ORG),
    "delete": lambda m: m.delete(JWT, ORG),
    "purge": lambda m: m.delete(JWT, ORG, force=True),
    "purge_expired": _purge_expired,
    "rotate": _rotate,
    "as_actor": lambda m: m.as_actor("keysafe-scheduler").put(JWT, "s" * 64, ORG),
    "update_json": lambda m: m.update_json(JWT, {"k": "v"}, ORG),
}


@pytest.mark.parametrize("change", sorted(MANAGER_CHANGES))
def test_manager_changes_show_in_the_next_status(client: TestClient, app: KeysafeApp,
                                                 admin: dict[str, str], describes: Describes,
                                                 change: str) -> None:
    """Writes by the scheduler, rotation and CLI-like callers on the server's manager."""
    m = app.keysafe.manager
    m.put(JWT, '{"a": "' + "a" * 64 + '"}', ORG, check_format=False)
    m.put(JWT, '{"b": "' + "b" * 64 + '"}', ORG, check_format=False)
    url = f"/api/secrets/{ORG}/{JWT}"
    before = cached_twice(client, admin, describes, url)
    key = (JWT, ORG, None)
    assert m.cache.get_meta(key) is not None
    MANAGER_CHANGES[change](m)
    assert m.cache.get_meta(key) is None
    after = status(client, admin, url)
    assert after == truth(app, JWT)
    if change not in ("destroy",):  # destroying an old version shows in versions only
        assert after != before


# -- a read racing a write ------------------------------------------------------------------


def test_a_status_read_racing_a_write_does_not_cache_the_old_status(
        client: TestClient, app: KeysafeApp, admin: dict[str, str],
        describes: Describes) -> None:
    client.put(URL, json={"secret_value": VALUE_1}, headers=admin)
    m = app.keysafe.manager
    # The write lands after the read has its row, before the read caches it.
    describes.hook = lambda: m.put(OPENAI, VALUE_2, ORG)
    assert status(client, admin)["version"] == 1  # the read began before the write
    assert status(client, admin)["version"] == 2


def test_a_status_read_during_an_uncommitted_write_is_dropped_after_the_commit(
        client: TestClient, app: KeysafeApp, admin: dict[str, str]) -> None:
    """A one-transaction rotation invalidates at its promote, before its commit; a status
    read in between (on the reader connection) sees the old row and may cache it: the
    commit must drop it again."""
    m = app.keysafe.manager
    m.put(JWT, "a" * 64, ORG)
    url = f"/api/secrets/{ORG}/{JWT}"
    seen: list[int] = []

    class ReadsDuringPromote(RandomRotator):
        def promoted(self, ctx: RotationContext, new: str) -> None:
            t = threading.Thread(target=lambda: seen.append(status(client, admin, url)
                                                            ["version"]))
            t.start()
            t.join(30)

    RotationEngine(m, rotator_factory=lambda name: ReadsDuringPromote()).rotate(JWT, ORG)
    assert seen == [1]  # not yet committed
    assert status(client, admin, url)["version"] == 2


# -- the clock --------------------------------------------------------------------------------


def test_rotation_overdue_follows_the_clock(client: TestClient, admin: dict[str, str],
                                            describes: Describes,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    now = [datetime.now(UTC).timestamp()]
    monkeypatch.setattr(routes, "time", lambda: now[0])
    client.put(URL, json={"secret_value": VALUE_1, "rotation_days": 1}, headers=admin)
    st = cached_twice(client, admin, describes)
    assert st["rotation_overdue"] is False
    due = datetime.fromisoformat(st["rotation_due"]).timestamp()
    now[0] = due - 1
    assert status(client, admin)["rotation_overdue"] is False
    now[0] = due + 1
    assert status(client, admin)["rotation_overdue"] is True
    # Overdue stays overdue: that body is reused.
    assert cached_twice(client, admin, describes)["rotation_overdue"] is True


# -- authorised first, audited every time ---------------------------------------------------


def test_every_status_read_is_audited(client: TestClient, app: KeysafeApp,
                                      admin: dict[str, str]) -> None:
    client.put(URL, json={"secret_value": VALUE_1}, headers=admin)
    for _ in range(7):
        status(client, admin)
    m = app.keysafe.manager
    events = m.audit_query(AuditFilter(action="status"))
    assert len(events) == 7
    assert {(e.path, e.outcome, e.org) for e in events} == {(m.path(OPENAI, ORG), "ok", ORG)}


@pytest.mark.parametrize("name", [OPENAI, "never_written"])
def test_another_orgs_credential_learns_nothing_from_the_cache(
        client: TestClient, app: KeysafeApp, admin: dict[str, str], name: str) -> None:
    client.put(URL, json={"secret_value": VALUE_1}, headers=admin)
    url = f"/api/secrets/{ORG}/{name}"
    status(client, admin, url)  # cached now
    other = bearer(make_token(app, "globex", ["admin"], ["globex"]))
    r = client.get(url, headers=other)
    assert r.status_code == 404  # the same answer whether the name exists or not
    assert "configured" not in r.text
    assert name not in r.json()["detail"]
    denied = app.keysafe.manager.audit_query(AuditFilter(action="status", outcome="denied"))
    assert len(denied) == 1


def test_the_cache_holds_no_value(client: TestClient, app: KeysafeApp,
                                  admin: dict[str, str]) -> None:
    client.put(URL, json={"secret_value": VALUE_1}, headers=admin)
    status(client, admin)
    status(client, admin)
    st = app.keysafe.manager.cache.get_meta((OPENAI, ORG, None))
    assert isinstance(st, routes.Status)
    assert VALUE_1.encode() not in st.body
    assert VALUE_1 not in repr(st)


def test_the_documented_route_serves_the_same_status(app: KeysafeApp, admin: dict[str, str],
                                                     client: TestClient) -> None:
    client.put(URL, json={"secret_value": VALUE_1}, headers=admin)
    ctx = make_ctx(app.keysafe, admin["Authorization"], "test", "rid")
    via_route = routes.secret_status(ORG, OPENAI, ctx, None)
    assert via_route.model_dump(mode="json") == status(client, admin)
    assert routes.secret_status(ORG, OPENAI, ctx, None) == via_route  # now from the cache


# -- when the value cache is off, so is this ------------------------------------------------


@pytest.mark.parametrize("env", [{"server_cache_ttl": 0},
                                 {"server_workers": 2, "server_cache_ttl": 300}])
def test_no_status_cache_when_the_value_cache_is_off(home: Path, env: dict[str, Any]) -> None:
    app = build_app(home, purge_interval=0, rotation_interval=0, **env)
    admin = bearer(make_token(app, "admin", ["admin"], [ORG]))
    m = app.keysafe.manager
    assert not m.cache.enabled
    with TestClient(app) as c:
        c.put(URL, json={"secret_value": VALUE_1}, headers=admin)
        assert status(c, admin)["version"] == 1
        assert m.cache.get_meta((OPENAI, ORG, None)) is None
        # Another worker's write, which this one cannot hear of: seen at once.
        m.backend.put(m.path(OPENAI, ORG), VALUE_2, ctx=WriteContext.make("other-worker"))
        assert status(c, admin)["version"] == 2


# -- a real server ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    s = RealServer(tmp_path_factory.mktemp("status") / "home",
                   {"KEYSAFE_SERVER_CACHE_TTL": "300", "KEYSAFE_PURGE_INTERVAL": "0",
                    "KEYSAFE_ROTATION_INTERVAL": "0"})
    s.start(timeout=60)
    try:
        yield s
    finally:
        s.stop()


def test_real_server_status_follows_every_write(real: RealServer) -> None:
    h = bearer(real.token)
    with httpx.Client(base_url=real.url, timeout=10) as c:
        url = f"/api/secrets/{ORG}/billing_webhook_key"

        def st() -> dict[str, Any]:
            r = c.get(url, headers=h)
            assert r.status_code == 200, r.text
            assert "canary-value" not in r.text
            out: dict[str, Any] = r.json()
            return out

        assert [st()["configured"] for _ in range(3)] == [False] * 3
        assert c.put(url, json={"secret_value": "canary-value-1"}, headers=h).status_code == 200
        assert [st()["version"] for _ in range(3)] == [1] * 3
        assert c.put(url, json={"secret_value": "canary-value-2"}, headers=h).status_code == 200
        assert [st()["version"] for _ in range(3)] == [2] * 3
        assert c.delete(url, headers=h).status_code == 200
        assert [st()["deleted"] for _ in range(3)] == [True] * 3
        assert c.post(f"{url}/restore", headers=h).status_code == 200
        assert [st()["deleted"] for _ in range(3)] == [False] * 3
        assert c.post(f"{url}/rollback", json={"version": 1}, headers=h).status_code == 200
        assert [st()["version"] for _ in range(3)] == [3] * 3
        r = c.put(url, json={"secret_value": "canary-value-3", "expected_version": 1},
                  headers=h)
        assert r.status_code == 409
        assert st()["version"] == 3
