"""Two ``keysafe serve`` replicas on one PostgreSQL (real processes on 127.0.0.1):
a write through one is read through the other within 100 ms; concurrent check-and-set
writers through both lose nothing; kill -9 of a replica mid-write loses no acknowledged
write and leaves the audit chain verifiable. Every loop is bounded in count and time."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from keysafe.config import load_settings
from keysafe.crypto.keys import KeyRing
from keysafe.manager.manager import SecretManager
from server.serverkit import RealServer, bearer

ORG = "acme"


def _master_key() -> str:
    ring = KeyRing.generate()
    import base64

    kid = ring.active
    return f"{kid}:{base64.b64encode(ring.key(kid)).decode()}"


@pytest.fixture
def cluster(pg_url: str, tmp_path: Path) -> Iterator[tuple[RealServer, RealServer, dict[str, str]]]:
    env = {"KEYSAFE_DATABASE_URL": pg_url, "KEYSAFE_MASTER_KEY": _master_key(),
           "KEYSAFE_ENV": "production", "KEYSAFE_MAX_VERSIONS": "1000",
           "KEYSAFE_SERVER_CACHE_TTL": "60"}
    a = RealServer(tmp_path / "a", dict(env))
    b = RealServer(tmp_path / "b", dict(env), expect_token=False)
    try:
        a.start(timeout=60)
        b.start(timeout=60)
        b.token = a.token
        yield a, b, env
    finally:
        a.stop()
        b.stop()


def _service_token(srv: RealServer) -> str:
    r = httpx.post(f"{srv.url}/api/tokens", headers=bearer(srv.token), timeout=10,
                   json={"name": "svc", "roles": ["service"], "orgs": [ORG]})
    assert r.status_code in (200, 201), r.text
    return str(r.json()["token"])


def _manager(env: dict[str, str], home: Path) -> SecretManager:
    return SecretManager.from_settings(load_settings({**env, "KEYSAFE_HOME": str(home)}))


def test_a_write_through_one_replica_is_read_through_the_other_within_100ms(
        cluster: tuple[RealServer, RealServer, dict[str, str]]) -> None:
    a, b, _ = cluster
    svc = _service_token(a)  # made on A, accepted by B: one token table
    url = f"/api/secrets/{ORG}/openai_api_key"
    value_1, value_2 = "sk-" + "a1" * 16, "sk-" + "b2" * 16
    with httpx.Client(base_url=a.url, timeout=10) as ca, \
            httpx.Client(base_url=b.url, timeout=10) as cb:
        assert ca.put(url, json={"secret_value": value_1},
                      headers=bearer(a.token)).status_code == 200
        # B reads (and caches, TTL 60 s) the first value.
        for _ in range(3):
            r = cb.get(url + "/value", headers=bearer(svc))
            assert r.status_code == 200, r.text
            assert r.json()["value"] == value_1
        assert ca.put(url, json={"secret_value": value_2},
                      headers=bearer(a.token)).status_code == 200
        acknowledged = time.monotonic()
        seen = None
        for _ in range(200):
            if cb.get(url + "/value", headers=bearer(svc)).json()["value"] == value_2:
                seen = time.monotonic() - acknowledged
                break
            time.sleep(0.002)
        assert seen is not None, "replica B never served the new value"
        assert seen <= 0.1, f"replica B served the new value after {seen * 1000:.0f} ms"
        # Status on B agrees too (its metadata is not cached past the change).
        assert cb.get(url, headers=bearer(a.token)).json()["version"] == 2


def test_a_write_through_one_replica_shows_in_the_others_status_within_100ms(
        cluster: tuple[RealServer, RealServer, dict[str, str]]) -> None:
    """B caches its status responses (TTL 60 s); A's writes reach them as they reach
    B's cached values."""
    a, b, _ = cluster
    url = f"/api/secrets/{ORG}/status_probe"
    with httpx.Client(base_url=a.url, timeout=10) as ca, \
            httpx.Client(base_url=b.url, timeout=10) as cb:

        def b_status() -> dict[str, object]:
            r = cb.get(url, headers=bearer(a.token))
            assert r.status_code == 200, r.text
            assert "probe-value" not in r.text
            out: dict[str, object] = r.json()
            return out

        def within_100ms(change: Callable[[], httpx.Response],
                         shows: Callable[[dict[str, object]], bool]) -> None:
            assert change().status_code == 200
            acknowledged = time.monotonic()
            seen = None
            for _ in range(200):
                if shows(b_status()):
                    seen = time.monotonic() - acknowledged
                    break
                time.sleep(0.002)
            assert seen is not None, "replica B never showed the change"
            assert seen <= 0.1, f"replica B showed the change after {seen * 1000:.0f} ms"

        for _ in range(3):
            assert b_status()["configured"] is False  # "not configured", cached on B
        within_100ms(lambda: ca.put(url, json={"secret_value": "probe-value-1"},
                                    headers=bearer(a.token)),
                     lambda st: st["configured"] is True)
        for _ in range(3):
            assert b_status()["version"] == 1
        within_100ms(lambda: ca.put(url, json={"secret_value": "probe-value-2"},
                                    headers=bearer(a.token)),
                     lambda st: st["version"] == 2)
        within_100ms(lambda: ca.delete(url, headers=bearer(a.token)),
                     lambda st: st["deleted"] is True)
        within_100ms(lambda: ca.post(url + "/restore", headers=bearer(a.token)),
                     lambda st: st["deleted"] is False)


def test_a_token_revoked_on_one_replica_is_refused_by_the_other(
        cluster: tuple[RealServer, RealServer, dict[str, str]]) -> None:
    a, b, _ = cluster
    r = httpx.post(f"{a.url}/api/tokens", headers=bearer(a.token), timeout=10,
                   json={"name": "short-lived", "roles": ["viewer"], "orgs": [ORG]})
    tok, tid = r.json()["token"], r.json()["id"]
    who = f"{b.url}/api/whoami"
    assert httpx.get(who, headers=bearer(tok), timeout=10).status_code == 200  # B caches it
    assert httpx.delete(f"{a.url}/api/tokens/{tid}", headers=bearer(a.token),
                        timeout=10).status_code in (200, 204)
    deadline = time.monotonic() + 5
    status = 200
    while time.monotonic() < deadline and status == 200:
        status = httpx.get(who, headers=bearer(tok), timeout=10).status_code
        time.sleep(0.01)
    assert status == 401


def test_concurrent_check_and_set_writers_through_both_replicas_lose_nothing(
        cluster: tuple[RealServer, RealServer, dict[str, str]]) -> None:
    a, b, _ = cluster
    url = f"/api/secrets/{ORG}/cas_counter"
    threads, per_thread = 8, 5
    won: list[tuple[int, str]] = []
    lock = threading.Lock()
    deadline = time.monotonic() + 60

    def writer(n: int) -> None:
        srv = (a, b)[n % 2]
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            done = attempts = 0
            while done < per_thread and attempts < 400 and time.monotonic() < deadline:
                attempts += 1
                st = c.get(url, headers=bearer(a.token)).json()
                current = st["version"] if st["configured"] else 0
                value = f"value-{n}-{attempts}"
                r = c.put(url, json={"secret_value": value, "expected_version": current},
                          headers=bearer(a.token))
                if r.status_code == 200:
                    assert r.json()["version"] == current + 1
                    with lock:
                        won.append((r.json()["version"], value))
                    done += 1
                else:
                    assert r.status_code == 409, r.text

    with ThreadPoolExecutor(threads) as pool:
        for f in [pool.submit(writer, n) for n in range(threads)]:
            f.result(timeout=90)
    versions = sorted(v for v, _ in won)
    assert len(won) == threads * per_thread
    assert versions == list(range(1, len(won) + 1))  # no gap, none won twice
    for srv in (a, b):
        st = httpx.get(srv.url + url, headers=bearer(a.token), timeout=10).json()
        assert st["version"] == len(won)


def test_kill_9_of_a_replica_mid_write_loses_no_acknowledged_write(
        cluster: tuple[RealServer, RealServer, dict[str, str]], tmp_path: Path) -> None:
    a, b, env = cluster
    acked: dict[str, str] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def writer(n: int) -> None:
        with httpx.Client(base_url=a.url, timeout=5) as c:
            for i in range(2000):
                if stop.is_set():
                    return
                name, value = f"kill_{n}_{i}", f"value-{n}-{i}"
                try:
                    r = c.put(f"/api/secrets/{ORG}/{name}", json={"secret_value": value},
                              headers=bearer(a.token))
                except httpx.HTTPError:
                    return  # the replica died under us: this write was not acknowledged
                if r.status_code == 200:
                    with lock:
                        acked[name] = value

    pool = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in pool:
        t.start()
    deadline = time.monotonic() + 30
    while len(acked) < 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    a.kill9()  # the server process and its worker, mid-write
    stop.set()
    for t in pool:
        t.join(timeout=30)
    assert len(acked) >= 40
    # Every acknowledged write is there, read through the surviving replica's store.
    m = _manager(env, tmp_path / "check")
    try:
        for name, value in acked.items():
            assert m.get(name, ORG, fresh=True) == value
        result = m.audit_verify()
        assert result.ok, result.problems
        assert result.checked >= len(acked)
    finally:
        m.close()
    # And B keeps serving writes after A's death.
    r = httpx.put(f"{b.url}/api/secrets/{ORG}/after_kill", json={"secret_value": "v"},
                  headers=bearer(a.token), timeout=10)
    assert r.status_code == 200, r.text
