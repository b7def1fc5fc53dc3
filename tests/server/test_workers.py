"""`keysafe serve --workers 2` on the embedded store: the worker processes cannot hear
each other's writes, so none may answer from a stale cache: a new value and a revoked
token take effect on every worker at once. Real processes on 127.0.0.1; bounded loops."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .serverkit import RealServer, bearer

ORG = "acme"
ROUNDS = 24  # new connection each time, so the kernel spreads them over the workers


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    s = RealServer(tmp_path_factory.mktemp("workers") / "home",
                   {"KEYSAFE_SERVER_CACHE_TTL": "300", "KEYSAFE_PURGE_INTERVAL": "0",
                    "KEYSAFE_ROTATION_INTERVAL": "0"}, workers=2)
    s.start(timeout=60)
    try:
        yield s
    finally:
        s.stop()


def _token(srv: RealServer, roles: list[str]) -> tuple[str, str]:
    r = httpx.post(f"{srv.url}/api/tokens", headers=bearer(srv.token), timeout=10,
                   json={"name": "-".join(roles), "roles": roles, "orgs": [ORG]})
    assert r.status_code == 201, r.text
    return r.json()["token"], r.json()["id"]


def _reads(srv: RealServer, token: str, url: str) -> list[str]:
    out = []
    for _ in range(ROUNDS):
        with httpx.Client(base_url=srv.url, timeout=10) as c:  # a new connection
            r = c.get(url, headers=bearer(token))
            assert r.status_code == 200, r.text
            out.append(r.json()["value"])
    return out


def test_a_new_value_is_served_by_every_worker_at_once(srv: RealServer) -> None:
    svc, _ = _token(srv, ["service"])
    url = f"/api/secrets/{ORG}/webhook_secret/value"
    put = f"{srv.url}/api/secrets/{ORG}/webhook_secret"
    assert httpx.put(put, json={"secret_value": "first-value"}, headers=bearer(srv.token),
                     timeout=10).status_code == 200
    assert set(_reads(srv, svc, url)) == {"first-value"}  # cached, were there a cache
    assert httpx.put(put, json={"secret_value": "second-value"}, headers=bearer(srv.token),
                     timeout=10).status_code == 200
    assert set(_reads(srv, svc, url)) == {"second-value"}


def test_a_new_status_is_served_by_every_worker_at_once(srv: RealServer) -> None:
    url = f"/api/secrets/{ORG}/status_probe"

    def versions() -> set[int | None]:
        out = set()
        for _ in range(ROUNDS):
            with httpx.Client(base_url=srv.url, timeout=10) as c:  # a new connection
                r = c.get(url, headers=bearer(srv.token))
                assert r.status_code == 200, r.text
                assert "probe-value" not in r.text
                out.add(r.json().get("version"))
        return out

    assert versions() == {None}  # not configured, on every worker
    for n in (1, 2):
        r = httpx.put(srv.url + url, json={"secret_value": f"probe-value-{n}"},
                      headers=bearer(srv.token), timeout=10)
        assert r.status_code == 200, r.text
        assert versions() == {n}


def test_a_revoked_token_is_refused_by_every_worker_at_once(srv: RealServer) -> None:
    tok, tid = _token(srv, ["viewer"])
    for _ in range(ROUNDS):
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            assert c.get("/api/whoami", headers=bearer(tok)).status_code == 200
    r = httpx.delete(f"{srv.url}/api/tokens/{tid}", headers=bearer(srv.token), timeout=10)
    assert r.status_code in (200, 204)
    for _ in range(ROUNDS):
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            assert c.get("/api/whoami", headers=bearer(tok)).status_code == 401


def test_home_is_shared(srv: RealServer) -> None:
    assert Path(srv.home, "keysafe.db").exists() or any(Path(srv.home).glob("*.db"))
