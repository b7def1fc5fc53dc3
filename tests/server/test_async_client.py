"""keysafe.AsyncKeysafeClient and the clients' cache, against a real ``keysafe serve``
(a subprocess on loopback): every verb awaited, a worker thread's own connection per
call, cache hits on the event loop, stale values through an outage."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from keysafe import (
    AsyncKeysafeClient,
    BackendUnavailable,
    KeysafeClient,
    NotFound,
    PermissionDenied,
)

from .serverkit import RealServer, bearer, real_server

ORG = "acme"
VALUE = "sk-" + "a1" * 20


def tokens_for(srv: RealServer) -> dict[str, str]:
    out = {}
    with httpx.Client(base_url=srv.url, headers=bearer(srv.token), timeout=30) as c:
        for label, roles in (("app", ["service"]), ("ops", ["writer"])):
            r = c.post("/api/tokens", json={"name": label, "roles": roles, "orgs": [ORG]})
            assert r.status_code == 201, r.text
            out[label] = r.json()["token"]
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RealServer, dict]]:
    with real_server(tmp_path_factory.mktemp("aclient") / "home") as srv:
        yield srv, tokens_for(srv)


def test_every_verb_awaited(server: tuple[RealServer, dict]) -> None:
    srv, t = server

    async def main() -> None:
        async with AsyncKeysafeClient(srv.url, t["ops"]) as ops, \
                AsyncKeysafeClient(srv.url, t["app"]) as app:
            assert repr(app) == f"AsyncKeysafeClient({srv.url!r})"
            assert await ops.put("openai_api_key", VALUE, ORG) == 1
            await ops.put_json("creds", {"user": "u", "password": "p" * 20}, ORG)
            got = await asyncio.gather(*(app.get("openai_api_key", ORG) for _ in range(20)))
            assert set(got) == {VALUE}
            assert await app.get_json("creds", ORG) == {"user": "u", "password": "p" * 20}
            assert await app.get_json_field("creds", "user", ORG) == "u"
            assert await app.get_llm_api_key(ORG, "openai") == VALUE
            assert await app.has("openai_api_key", ORG)
            with pytest.raises(NotFound):
                await app.get("nope", ORG)
            with pytest.raises(AttributeError, match="no verb 'teleport'"):
                await app.teleport()

    asyncio.run(main())


def test_cache_hits_stay_on_the_loop_and_writes_clear_it(
        server: tuple[RealServer, dict], monkeypatch: pytest.MonkeyPatch) -> None:
    srv, t = server
    hops: list[Any] = []
    real = asyncio.to_thread

    async def counting(fn: Any, *a: Any, **kw: Any) -> Any:
        hops.append(fn)
        return await real(fn, *a, **kw)

    monkeypatch.setattr(asyncio, "to_thread", counting)

    async def main() -> None:
        async with AsyncKeysafeClient(srv.url, t["app"], cache_ttl=60) as app, \
                AsyncKeysafeClient(srv.url, t["ops"], cache_ttl=60) as ops:
            await ops.put("cached_key", "one-" + "x" * 20, ORG)
            assert await app.get("cached_key", ORG) == "one-" + "x" * 20
            n = len(hops)
            for _ in range(5):
                assert await app.get("cached_key", ORG) == "one-" + "x" * 20
            assert len(hops) == n  # answered on the loop
            await ops.put("cached_key", "two-" + "x" * 20, ORG)
            assert await app.get("cached_key", ORG) == "one-" + "x" * 20  # until it expires
            assert await app.get("cached_key", ORG, fresh=True) == "two-" + "x" * 20
            assert await app.get("cached_key", ORG) == "two-" + "x" * 20

    asyncio.run(main())


def test_stale_if_error_carries_reads_through_an_outage(tmp_path: Path) -> None:
    """Expired values are served while the server cannot be reached (within the
    window); a value never read is an error, as without a cache."""
    with real_server(tmp_path / "home") as srv:
        t = tokens_for(srv)
        with KeysafeClient(srv.url, t["ops"]) as ops:
            ops.put("outage_key", VALUE, ORG)
            ops.put("never_read", VALUE, ORG)
        sync = KeysafeClient(srv.url, t["app"], cache_ttl=0.05, stale_if_error=600)
        aclient = AsyncKeysafeClient(srv.url, t["app"], cache_ttl=0.05, stale_if_error=600)
        assert sync.get("outage_key", ORG) == VALUE
        assert asyncio.run(aclient.get("outage_key", ORG)) == VALUE
    time.sleep(0.1)  # expired, and the server is gone
    assert sync.get("outage_key", ORG) == VALUE
    # A write that fails meanwhile (or any other call) keeps the fallback.
    with pytest.raises(BackendUnavailable):
        sync.put("outage_key", "new-" + VALUE, ORG)
    with pytest.raises(BackendUnavailable):
        sync.check_key("openai_api_key", ORG, value=VALUE)
    assert sync.get("outage_key", ORG) == VALUE
    # Without a stale window, fresh=True during an outage is an error, not a cached value.
    nostale = KeysafeClient(srv.url, t["app"], cache_ttl=600)
    nostale.cache.put(("outage_key", ORG, None), f"{ORG}//outage_key", VALUE)  # type: ignore[union-attr]
    assert nostale.get("outage_key", ORG) == VALUE
    with pytest.raises(BackendUnavailable):
        nostale.get("outage_key", ORG, fresh=True)
    assert asyncio.run(aclient.get("outage_key", ORG)) == VALUE
    with pytest.raises(BackendUnavailable):
        sync.get("never_read", ORG)
    with pytest.raises(BackendUnavailable):
        asyncio.run(aclient.get("never_read", ORG))
    sync.close()
    asyncio.run(aclient.aclose())


def test_a_bad_url_fails_at_construction() -> None:
    with pytest.raises(Exception, match="not an http"):
        AsyncKeysafeClient("ftp://x", "ks_a_b")


def test_what_empties_or_skips_the_cache(server: tuple[RealServer, dict]) -> None:
    """A refusal empties it (the token revoked), a missing secret drops its entry, the
    current value for verification is read past it, a key check keeps it, and
    get_llm_api_key goes through it."""
    srv, t = server
    with httpx.Client(base_url=srv.url, headers=bearer(srv.token), timeout=30) as root:
        r = root.post("/api/tokens", json={"name": "revoked-later", "roles": ["service"],
                                           "orgs": [ORG]})
        doomed, doomed_id = r.json()["token"], r.json()["id"]
        with KeysafeClient(srv.url, t["ops"]) as ops:
            ops.put("jwt_secret", "j1-" + "j" * 40, ORG, domain="cachetest")
            ops.put("anthropic_api_key", "sk-ant-" + "k" * 40, ORG)
            ops.put("to_delete", "d" * 20, ORG)
            app = KeysafeClient(srv.url, doomed, cache_ttl=600)
            assert app.get("to_delete", ORG) == "d" * 20
            assert app.get_llm_api_key(ORG, "anthropic") == "sk-ant-" + "k" * 40
            assert len(app.cache) == 2  # type: ignore[arg-type]
            ops.delete("to_delete", ORG)
            with pytest.raises(NotFound):
                app.get("to_delete", ORG, fresh=True)
            assert len(app.cache) == 1  # type: ignore[arg-type]
            # A rotation elsewhere: verification sees the new key at once.
            assert app.get("jwt_secret", ORG, domain="cachetest") == "j1-" + "j" * 40
            assert ops.rotate("jwt_secret", ORG, domain="cachetest")["outcome"] == "rotated"
            both = app.verification_values("jwt_secret", ORG, domain="cachetest")
            assert both[1] == "j1-" + "j" * 40
            assert both[0] != both[1]
        assert root.delete(f"/api/tokens/{doomed_id}").status_code == 200
    with pytest.raises(PermissionDenied):
        app.get_llm_api_key(ORG, "anthropic", fresh=True)
    assert len(app.cache) == 0  # type: ignore[arg-type]
    app.close()


def test_aclose_and_close(server: tuple[RealServer, dict]) -> None:
    srv, t = server

    async def main() -> None:
        ks = AsyncKeysafeClient(srv.url, t["app"])
        await ks.has("anything", ORG)
        with pytest.raises(AttributeError, match="aclose"):
            await ks.close()
        await ks.aclose()
        assert not list(ks._clients)
        await ks.has("anything", ORG)  # a new connection after aclose
        assert list(ks._clients)
        await ks.aclose()

    asyncio.run(main())
