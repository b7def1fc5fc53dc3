"""The PostgreSQL store beyond the conformance suite: what many replicas sharing one
database rely on (key check, migrations, NOTIFY cache invalidation, check-and-set and
the audit chain across pools, scheduled jobs run once), and the security invariants
(no value in the server's files, tables, errors or logs; no password in messages).

Each "replica" is a PostgresBackend of its own (its own pool and listener) on the
same database; real processes are used where a death must be observed.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from keysafe.backends import pg_schema
from keysafe.backends.memory import MemoryBackend
from keysafe.backends.postgres import PostgresAuditStore, PostgresBackend, redact_url
from keysafe.config import load_settings
from keysafe.crypto.keys import KeyRing
from keysafe.errors import BackendUnavailable, ConfigError, Conflict, KeysafeError, NotFound
from keysafe.manager.audit import AuditFilter, AuditLog, verify_rows
from keysafe.manager.cache import SecretCache
from keysafe.manager.manager import SecretManager
from keysafe.scheduler import Job, Scheduler, run_locally_exclusive
from keysafe.server.tokenstore import PostgresTokenDB, TokenStore

from .polling import NOTIFY_WAIT, wait_until


# -- helpers ---------------------------------------------------------------------------
def env_key() -> tuple[str, KeyRing]:
    """A KEYSAFE_MASTER_KEY value and the ring it stands for."""
    value = "k1:" + base64.b64encode(os.urandom(32)).decode()
    return value, KeyRing.from_env_value(value)


def db_name(url: str) -> str:
    return url.rsplit("/", 1)[1]


def admin_db(pg_server: Any, url: str) -> Any:
    """An autocommit superuser connection to the test's own database."""
    return psycopg.connect(pg_server.url(db_name(url)), autocommit=True)


def snapshot(pg_server: Any, url: str) -> dict[str, list[str]]:
    """Every row of every table in the public schema, as text (sorted)."""
    with admin_db(pg_server, url) as c:
        tables = [r[0] for r in c.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'public' ORDER BY table_name")]
        return {t: sorted(r[0] for r in c.execute(
            f'SELECT t::text FROM "{t}" t')) for t in tables}


class Seen:
    """The change notifications a replica received, in order (registered after the
    replica's own cache invalidators, so it runs after them)."""

    def __init__(self, backend: PostgresBackend) -> None:
        self.payloads: list[str] = []
        backend.watch(self.payloads.append)

    def wait(self, payload: str) -> bool:
        return wait_until(lambda: payload in self.payloads)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def managers() -> Iterator[Callable[..., SecretManager]]:
    """A SecretManager per replica, as the server builds it (audit chain in PostgreSQL,
    a long-lived cache so only invalidation can refresh it)."""
    made: list[SecretManager] = []

    def make(backend: PostgresBackend, actor: str = "replica", **kw: Any) -> SecretManager:
        m = SecretManager(backend, audit=AuditLog(PostgresAuditStore(backend)),
                          cache=SecretCache(ttl=300), actor=actor, **kw)
        made.append(m)
        return m

    yield make
    for m in made:
        m.audit.close()  # the backends fixture closes the backends


# -- key check -------------------------------------------------------------------------
def test_another_master_key_is_refused_and_changes_nothing(pg_server, pg_url, backends,
                                                          managers, ring):
    a = backends()
    managers(a).put("api_token", "first-value", "acme")
    before = snapshot(pg_server, pg_url)

    other = KeyRing.generate()
    with pytest.raises(ConfigError) as err:
        backends(key=other)
    msg = str(err.value)
    assert ring.active in msg  # the database's key id
    assert other.active in msg  # what this process has
    assert "KEYSAFE_MASTER_KEY" in msg
    assert snapshot(pg_server, pg_url) == before
    assert a.get("keysafe/local/acme/shared/api_token") == ("first-value", 1)


def test_same_key_id_with_other_key_bytes_is_refused(pg_server, pg_url, backends, ring):
    backends()
    before = snapshot(pg_server, pg_url)
    impostor = KeyRing(keys={ring.active: os.urandom(32)}, active=ring.active)
    with pytest.raises(ConfigError) as err:
        backends(key=impostor)
    msg = str(err.value)
    assert ring.active in msg
    assert "not the key this database was written with" in msg
    assert snapshot(pg_server, pg_url) == before


def test_same_key_from_another_ring_object_is_accepted(backends, ring):
    a = backends()
    a_copy = KeyRing(keys={ring.active: ring.key(ring.active)}, active=ring.active)
    b = backends(key=a_copy)
    b.ping()
    assert a.envelope.keyring.active == b.envelope.keyring.active


def test_two_keys_racing_on_an_empty_database_one_wins(pg_server, pg_url):
    """Two replicas with different keys start at once on a fresh database: exactly one
    records its key, the other is refused (never two key checks)."""
    rings = [KeyRing.generate(), KeyRing.generate()]
    barrier = threading.Barrier(2)
    results: list[object] = [None, None]

    def start(i: int) -> None:
        barrier.wait(timeout=10)
        try:
            results[i] = PostgresBackend(pg_url, rings[i], pool_max=2)
        except KeysafeError as exc:
            results[i] = exc

    threads = [threading.Thread(target=start, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    try:
        opened = [r for r in results if isinstance(r, PostgresBackend)]
        refused = [r for r in results if isinstance(r, ConfigError)]
        assert len(opened) == 1, results
        assert len(refused) == 1, results
        with admin_db(pg_server, pg_url) as c:
            keys = [r[0] for r in c.execute("SELECT key FROM meta ORDER BY key")]
        assert keys == ["active_key_id", f"key_check:{opened[0].envelope.keyring.active}"]
    finally:
        for r in results:
            if isinstance(r, PostgresBackend):
                r.close()


# -- migrations ------------------------------------------------------------------------
def test_fresh_database_without_auto_upgrade_names_keysafe_db_upgrade(pg_server, pg_url,
                                                                     ring):
    with pytest.raises(ConfigError) as err:
        PostgresBackend(pg_url, ring, auto_upgrade=False)
    assert "keysafe db upgrade" in str(err.value)
    assert "version 0" in str(err.value)
    assert snapshot(pg_server, pg_url) == {}  # nothing was created


def test_concurrent_upgrades_apply_each_step_once(pg_server, pg_url, backends, managers):
    n = 4
    barrier = threading.Barrier(n)
    results: list[object] = [None] * n

    def run(i: int) -> None:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            barrier.wait(timeout=10)
            try:
                results[i] = pg_schema.upgrade(conn)
            except Exception as exc:
                results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert all(isinstance(r, tuple) for r in results), results
    latest = pg_schema.LATEST
    assert results.count((0, latest)) == 1, results
    assert results.count((latest, latest)) == n - 1, results
    with admin_db(pg_server, pg_url) as c:
        versions = [r[0] for r in c.execute(
            "SELECT version FROM keysafe_schema ORDER BY version")]
    assert versions == [v for v, _, _ in pg_schema.MIGRATIONS]

    b = backends(auto_upgrade=False)  # the schema works afterwards
    m = managers(b)
    m.put("token", "value-1", "acme")
    assert m.get("token", "acme") == "value-1"
    assert m.audit_verify().ok


def test_status_reports_versions_and_a_second_upgrade_is_a_no_op(pg_server, pg_url):
    latest = pg_schema.LATEST
    r = pg_schema.status(pg_url)
    assert (r["before"], r["schema_version"], r["latest"], r["applied"]) == (0, 0, latest, [])
    assert isinstance(r["server_version"], int)
    assert r["server_version"] > 0
    assert pg_server.password not in json.dumps(r)
    assert snapshot(pg_server, pg_url) == {}  # status creates nothing

    r = pg_schema.status(pg_url, upgrade_now=True)
    assert (r["before"], r["schema_version"]) == (0, latest)
    assert r["applied"] == [v for v, _, _ in pg_schema.MIGRATIONS]
    after_first = snapshot(pg_server, pg_url)

    r = pg_schema.status(pg_url, upgrade_now=True)
    assert (r["before"], r["schema_version"], r["applied"]) == (latest, latest, [])
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert pg_schema.upgrade(conn) == (latest, latest)
        assert pg_schema.current_version(conn) == latest
    assert snapshot(pg_server, pg_url) == after_first
    assert pg_schema.status(pg_url)["schema_version"] == latest


def test_newer_schema_is_left_alone_by_an_older_keysafe(pg_server, pg_url, backends, ring):
    """Rolling back keysafe: its `db upgrade` finds a newer schema and changes nothing,
    and its replicas still start."""
    pg_schema.status(pg_url, upgrade_now=True)
    newer = pg_schema.LATEST + 1
    with admin_db(pg_server, pg_url) as c:
        c.execute("INSERT INTO keysafe_schema VALUES (%s, 'from the future', 0)", (newer,))
    before = snapshot(pg_server, pg_url)
    r = pg_schema.status(pg_url, upgrade_now=True)
    assert (r["before"], r["schema_version"], r["applied"]) == (newer, newer, [])
    assert snapshot(pg_server, pg_url) == before
    backends(auto_upgrade=False).ping()


# -- cross-instance cache invalidation --------------------------------------------------
def test_write_on_one_replica_drops_the_others_cached_value(backends, managers):
    a, b = backends(), backends()
    ma, mb = managers(a, "replica-a"), managers(b, "replica-b")
    seen = Seen(b)
    assert a.listening.wait(NOTIFY_WAIT)
    assert b.listening.wait(NOTIFY_WAIT)
    key = ("webhook_secret", "acme", None, None, None)
    path = ma.path("webhook_secret", "acme")

    ma.put("webhook_secret", "value-1", "acme")
    # Let B hear of this first write, so its late arrival cannot drop what B caches next.
    assert seen.wait(path)
    assert mb.get("webhook_secret", "acme") == "value-1"
    assert mb.cache.get(key) == "value-1"
    hits = mb.stats()["cache_hits"]
    assert mb.get("webhook_secret", "acme") == "value-1"
    assert mb.stats()["cache_hits"] == hits + 1  # really served from B's cache

    ma.put("webhook_secret", "value-2", "acme")
    assert wait_until(lambda: mb.cache.get(key) is None), "B's cache entry was not dropped"
    assert mb.get("webhook_secret", "acme") == "value-2"

    # A delete and a restore travel the same way.
    ma.delete("webhook_secret", "acme")
    assert wait_until(lambda: mb.cache.get(key) is None)
    with pytest.raises(NotFound):
        mb.get("webhook_secret", "acme")
    ma.restore("webhook_secret", "acme")
    assert wait_until(lambda: mb.has("webhook_secret", "acme"))
    assert mb.get("webhook_secret", "acme") == "value-2"


def test_write_on_one_replica_drops_the_others_cached_status(backends, managers):
    """The server's status responses sit in the same cache (as meta entries): another
    replica's write drops them as it drops values."""
    a, b = backends(), backends()
    ma, mb = managers(a, "replica-a"), managers(b, "replica-b")
    seen = Seen(b)
    assert b.listening.wait(NOTIFY_WAIT)
    path = ma.path("webhook_secret", "acme")
    ma.put("webhook_secret", "value-1", "acme")
    assert seen.wait(path)
    for change in (lambda: ma.put("webhook_secret", "value-2", "acme"),
                   lambda: ma.delete("webhook_secret", "acme"),
                   lambda: ma.restore("webhook_secret", "acme")):
        mb.cache.put_meta(("webhook_secret", "acme", None), path, "status on B",
                          mb.cache.generation(path))
        mb.cache.put_meta(("webhook_secret", "acme", "shared"), path, "status on B")
        assert mb.cache.get_meta(("webhook_secret", "acme", None)) == "status on B"
        change()
        assert wait_until(lambda: mb.cache.get_meta(("webhook_secret", "acme", None)) is None
                          and mb.cache.get_meta(("webhook_secret", "acme", "shared")) is None)


def test_listener_reconnect_drops_everything_cached(pg_server, pg_url, backends, managers):
    """A change committed while B's listener was disconnected is never announced to B;
    on reconnecting B must drop everything it cached."""
    a, b = backends(), backends()
    ma, mb = managers(a), managers(b)
    seen = Seen(b)
    assert b.listening.wait(NOTIFY_WAIT)
    ma.put("signing_key", "old", "acme")
    assert seen.wait(ma.path("signing_key", "acme"))
    assert mb.get("signing_key", "acme") == "old"
    key = ("signing_key", "acme", None, None, None)
    assert mb.cache.get(key) == "old"
    mb.cache.put_meta(("signing_key", "acme", None), ma.path("signing_key", "acme"), "status")

    db = db_name(pg_url)
    with pg_server.admin() as c:
        # Keep the listener out while A writes (A's pool keeps its open connection).
        c.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS false')
        try:
            heard = len(seen.payloads)
            killed = c.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND query ILIKE 'LISTEN%%'", (db,)).fetchone()[0]
            assert killed >= 1
            # The listener noticed (it drops everything as it goes deaf).
            assert wait_until(lambda: "*" in seen.payloads[heard:], timeout=5)
            assert not b.listening.is_set()
            # B caches while deaf (its pool still works); A's write goes unannounced.
            assert mb.get("signing_key", "acme") == "old"
            assert mb.cache.get(key) == "old"
            ma.put("signing_key", "new", "acme")
        finally:
            c.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS true')
    assert wait_until(b.listening.is_set, timeout=10)
    assert mb.cache.get(key) is None
    assert mb.cache.get_meta(("signing_key", "acme", None)) is None
    assert mb.get("signing_key", "acme") == "new"
    # and the new listener delivers again
    ma.put("signing_key", "newer", "acme")
    assert wait_until(lambda: mb.get("signing_key", "acme") == "newer")


def test_token_revoked_on_one_replica_stops_on_the_other(backends):
    a, b = backends(), backends()
    ta, tb = TokenStore(PostgresTokenDB(a)), TokenStore(PostgresTokenDB(b))
    assert b.listening.wait(NOTIFY_WAIT)
    token, info = ta.create(name="agent-runner", roles=["service"], orgs=["acme"],
                            created_by="test")
    ident = tb.authenticate(token)
    assert ident is not None
    assert ident.token_id == info.id
    assert tb.authenticate(token) is not None  # now cached on B

    ta.revoke(info.id)
    assert ta.authenticate(token) is None
    assert wait_until(lambda: tb.authenticate(token) is None), \
        "a token revoked on replica A still authenticates on replica B"
    assert tb.get(info.id).revoked_at is not None
    # Another token keeps working on B (the revocation dropped only its own entry).
    token2, _ = ta.create(name="other", roles=["viewer"], orgs=None, created_by="test")
    assert tb.authenticate(token2) is not None


def test_tokens_work_only_in_the_environment_they_were_made_in(backends):
    """A development and a production server on one database (or state database) do not
    take each other's tokens; a token from before the binding (env NULL) works in both."""
    a, b = backends(), backends()
    dev, prod = TokenStore(PostgresTokenDB(a), env="dev"), TokenStore(PostgresTokenDB(b),
                                                                      env="production")
    token, info = dev.create(name="dev-runner", roles=["service"], orgs=["acme"],
                             created_by="test")
    assert info.env == "dev"
    assert dev.authenticate(token) is not None
    assert prod.authenticate(token) is None
    legacy, old = dev.create(name="old-runner", roles=["viewer"], orgs=["acme"],
                             created_by="test")
    with a.transaction():
        a.sql("UPDATE tokens SET env = NULL WHERE id = %s", (old.id,), write=True)
    fresh = TokenStore(PostgresTokenDB(b), env="production")
    assert fresh.authenticate(legacy) is not None
    assert fresh.get(old.id).env is None


def test_a_rate_limit_is_shared_by_replicas(backends):
    """Live key checks per identity count on every replica together (rate_events)."""
    a, b = backends(), backends()
    ta, tb = TokenStore(PostgresTokenDB(a)), TokenStore(PostgresTokenDB(b))
    assert [t.take("key_check:token:ci", 3, 60.0) for t in (ta, tb, ta)] == [None] * 3
    for t in (ta, tb):
        wait = t.take("key_check:token:ci", 3, 60.0)
        assert wait is not None
        assert 1.0 <= wait <= 60.0
    assert tb.take("key_check:token:other", 3, 60.0) is None  # per identity
    assert ta.take("key_check:token:ci", 0, 60.0) is None  # 0: no limit


def test_a_version_1_database_gains_the_rate_table(pg_server, pg_url, backends):
    """An older keysafe's database (schema 1) is upgraded in place to the latest."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(pg_schema._VERSION_TABLE)
        with conn.transaction():
            for stmt in pg_schema.MIGRATIONS[0][2]:
                conn.execute(stmt)
            conn.execute("INSERT INTO keysafe_schema VALUES (1, 'one', 0)")
    assert pg_schema.status(pg_url)["schema_version"] == 1
    b = backends()  # auto-upgrade on
    assert pg_schema.status(pg_url)["schema_version"] == pg_schema.LATEST == 4
    assert TokenStore(PostgresTokenDB(b)).take("k", 1, 60.0) is None


def test_revocation_arriving_during_a_cache_fill_is_not_lost(backends):
    """Replica B reads the token row (not yet revoked); before B caches it, A revokes and
    B's listener handles the NOTIFY. B must not then cache the stale row."""
    a, b = backends(), backends()
    ta, tb = TokenStore(PostgresTokenDB(a)), TokenStore(PostgresTokenDB(b))
    assert b.listening.wait(NOTIFY_WAIT)
    token, info = ta.create(name="racer", roles=["service"], orgs=["acme"], created_by="t")
    delivered = threading.Event()
    # Registered after B's TokenStore: runs after its handler has seen the payload.
    b.watch(lambda p: delivered.set() if p == f"token:{info.id}" else None)
    db = tb._db
    real_one = db.one

    def one_then_revoke_elsewhere(sql: str, args: tuple[Any, ...]) -> Any:
        row = real_one(sql, args)
        if "digest" in sql and not delivered.is_set():
            ta.revoke(info.id)
            # Usually B has handled the NOTIFY by now (a fix that makes the handler wait
            # for this fill just lets this wait time out, which is fine too).
            delivered.wait(NOTIFY_WAIT)
        return row

    db.one = one_then_revoke_elsewhere  # type: ignore[method-assign]
    tb.authenticate(token)  # the racing fill (its answer is legitimately either)
    db.one = real_one  # type: ignore[method-assign]
    assert wait_until(delivered.is_set)
    assert wait_until(lambda: tb.authenticate(token) is None), \
        "revoked token still authenticates on replica B"


# -- check-and-set across instances -----------------------------------------------------
def test_read_modify_write_across_replicas_loses_no_update(backends, managers):
    per_thread, threads_per_replica = 25, 4
    reps = [backends(max_versions=0, pool_max=6) for _ in range(2)]
    mgrs = [managers(b, f"replica-{i}") for i, b in enumerate(reps)]
    mgrs[0].put("counter", "0", "acme", expected_version=0)
    barrier = threading.Barrier(2 * threads_per_replica)
    done: list[int] = []
    errors: list[BaseException] = []

    def worker(m: SecretManager) -> None:
        n = 0
        try:
            barrier.wait(timeout=10)
            for _ in range(5000):
                if n == per_thread:
                    break
                value, version = m.read("counter", "acme")
                try:
                    m.put("counter", str(int(value) + 1), "acme", expected_version=version)
                except Conflict:
                    continue
                n += 1
        except BaseException as exc:
            errors.append(exc)
        done.append(n)

    ts = [threading.Thread(target=worker, args=(m,))
          for m in mgrs for _ in range(threads_per_replica)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=120)
    assert not errors, errors
    total = sum(done)
    assert total == 2 * threads_per_replica * per_thread
    value, version = mgrs[1].read("counter", "acme")
    assert value == str(total)
    assert version == total + 1
    path = mgrs[0].path("counter", "acme")
    assert [v.version for v in reps[1].versions(path)] == list(range(1, total + 2))
    # Every version is its predecessor plus one: no lost and no doubled increment.
    assert all(reps[0].get(path, v) == (str(v - 1), v) for v in range(1, total + 2))


def test_tag_changes_across_replicas_lose_none(backends, managers):
    """update_tags reads the tags under the write lock: threads on two replicas each
    setting tags of their own on one secret, none is lost, and no version is made."""
    reps = [backends(pool_max=6) for _ in range(2)]
    mgrs = [managers(b, f"replica-{i}") for i, b in enumerate(reps)]
    mgrs[0].put("shared_key", "v", "acme", tags={"keep": "1"})
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def worker(m: SecretManager, t: int) -> None:
        try:
            barrier.wait(timeout=10)
            for i in range(8):
                m.update_tags("shared_key", "acme", set_tags={f"t{t}-{i}": "x"},
                              unset=[f"t{t}-{i - 1}"] if i % 2 else [])
        except BaseException as exc:
            errors.append(exc)

    ts = [threading.Thread(target=worker, args=(mgrs[t % 2], t)) for t in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=120)
    assert not errors, errors
    tags = mgrs[1].describe("shared_key", "acme").tags
    # Each thread set 8 and unset the 4 before its odd ones: 4 left each, plus "keep".
    assert tags == {"keep": "1", **{f"t{t}-{i}": "x" for t in range(6) for i in (1, 3, 5, 7)}}
    assert mgrs[0].describe("shared_key", "acme").current_version == 1


def test_access_report_counts_in_postgresql(backends, managers):
    """keysafe audit report's GROUP BY queries, on PostgreSQL, from two replicas."""
    from keysafe.manager.access import access_report

    reps = [backends() for _ in range(2)]
    a, b = managers(reps[0], "svc-a"), managers(reps[1], "intruder")
    since = datetime.now(UTC) - timedelta(minutes=5)
    for i in range(3):
        a.put(f"s{i}", f"v{i}", "acme")
    a.get("s0", "acme", fresh=True)
    a.get("s1", "acme", fresh=True)
    for _ in range(5):
        b.record("read_value", a.path("s2", "acme"), "denied", org="acme")
    a.audit.flush()
    b.audit.flush()
    rep = access_report(b, since=since, org="acme", max_secrets=2)
    by = {x.actor: x for x in rep.actors}
    assert (by["svc-a"].reads, by["svc-a"].writes, by["svc-a"].secrets_read) == (2, 3, 2)
    assert by["intruder"].denied == 5
    assert {(f.kind, f.actor) for f in rep.findings} >= {
        ("denials", "intruder"), ("breadth", "svc-a"), ("unread", None)}
    assert rep.unread == (a.path("s2", "acme"),)


# -- audit chain -------------------------------------------------------------------------
def _busy_chain(backends: Callable[..., PostgresBackend],
                managers: Callable[..., SecretManager]) -> tuple[list[SecretManager], int]:
    """Writes and buffered read records from two replicas, 3 threads each; returns the
    managers and the number of records they made."""
    reps = [backends(pool_max=6) for _ in range(2)]
    mgrs = [managers(b, f"replica-{i}") for i, b in enumerate(reps)]
    rounds, per_replica = 8, 3
    barrier = threading.Barrier(2 * per_replica)
    errors: list[BaseException] = []

    def worker(m: SecretManager, name: str) -> None:
        try:
            barrier.wait(timeout=10)
            for i in range(rounds):
                m.put(name, f"value-{i}", "acme")
                m.read(name, "acme")  # a buffered (relaxed) read record
        except BaseException as exc:
            errors.append(exc)

    ts = [threading.Thread(target=worker, args=(m, f"s{r}_{t}"))
          for r, m in enumerate(mgrs) for t in range(per_replica)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=60)
    assert not errors, errors
    expected = 2 * per_replica * rounds * 2
    for m in mgrs:
        m.audit.flush()
    # A background flush may have taken the last reads just before ours: let it land.
    store = PostgresAuditStore(reps[0])
    assert wait_until(lambda: (store.head() or (0, ""))[0] == expected, timeout=5)
    return mgrs, expected


def test_audit_chain_from_two_replicas_verifies(pg_server, pg_url, backends, managers):
    mgrs, expected = _busy_chain(backends, managers)
    store = PostgresAuditStore(mgrs[0].backend)  # type: ignore[arg-type]
    result = verify_rows(store.scan(), store.head())
    assert result.ok, result.problems
    assert result.checked == expected
    assert store.head()[0] == expected
    assert mgrs[1].audit_verify().ok
    events = store.query(AuditFilter())
    assert [e.seq for e in events] == list(range(1, expected + 1))
    for i in range(2):
        mine = store.query(AuditFilter(actor=f"replica-{i}"))
        assert sorted(e.action for e in mine) == ["read"] * (expected // 4) + \
            ["write"] * (expected // 4)


def test_audit_edit_is_detected_and_named(pg_server, pg_url, backends, managers):
    mgrs, _ = _busy_chain(backends, managers)
    store = PostgresAuditStore(mgrs[0].backend)  # type: ignore[arg-type]
    assert verify_rows(store.scan(), store.head()).ok
    with admin_db(pg_server, pg_url) as c:
        c.execute("UPDATE audit SET actor = 'x' WHERE seq = 3")
    result = verify_rows(store.scan(), store.head())
    assert not result.ok
    assert [s for s, _ in result.problems] == [3]
    assert "record 3 was edited" in result.problems[0][1]
    assert not mgrs[1].audit_verify().ok


def test_audit_removal_of_the_newest_record_is_detected_via_the_head(pg_server, pg_url,
                                                                       backends, managers):
    mgrs, expected = _busy_chain(backends, managers)
    store = PostgresAuditStore(mgrs[0].backend)  # type: ignore[arg-type]
    with admin_db(pg_server, pg_url) as c:
        c.execute("DELETE FROM audit WHERE seq = (SELECT max(seq) FROM audit)")
    result = verify_rows(store.scan(), store.head())
    assert not result.ok
    assert result.checked == expected - 1
    assert result.problems == [(expected, f"record {expected} removed from the end of "
                                          "the log")]


# -- run_exclusive -----------------------------------------------------------------------
def test_two_replicas_racing_for_a_job_run_it_once(backends):
    reps = [backends(), backends()]
    runs: list[int] = []
    barrier = threading.Barrier(2)
    outcome: list[object] = [None, None]

    def slow_job() -> None:
        runs.append(1)
        time.sleep(0.5)

    def race(i: int) -> None:
        barrier.wait(timeout=10)
        outcome[i] = reps[i].run_exclusive("purge", 3600, slow_job, holder=f"replica-{i}")

    ts = [threading.Thread(target=race, args=(i,)) for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=30)
    assert sorted(outcome) == [False, True]  # type: ignore[type-var]
    assert runs == [1]
    winner = outcome.index(True)
    last, due, holder = reps[1 - winner].job_state("purge")
    assert holder == f"replica-{winner}"
    assert last is not None
    assert due is not None
    assert due > last
    # Nobody runs it again within the period.
    for r in reps:
        assert r.run_exclusive("purge", 3600, slow_job, holder="late") is False
    assert runs == [1]


def test_job_not_yet_due_does_not_run_and_a_due_one_does(pg_server, pg_url, backends):
    a, b = backends(), backends()
    runs: list[str] = []
    assert a.run_exclusive("purge", 3600, lambda: runs.append("1"), holder="a") is True
    assert a.run_exclusive("purge", 3600, lambda: runs.append("2"), holder="a") is False
    assert b.run_exclusive("purge", 3600, lambda: runs.append("3"), holder="b") is False
    assert runs == ["1"]
    # Another job has its own schedule.
    assert b.run_exclusive("rotate", 3600, lambda: runs.append("r"), holder="b") is True
    # Once its period has passed (here: the row says so), it is due again, once.
    with admin_db(pg_server, pg_url) as c:
        c.execute("UPDATE jobs SET next_due = 0 WHERE name = 'purge'")
    assert b.run_exclusive("purge", 3600, lambda: runs.append("4"), holder="b") is True
    assert a.run_exclusive("purge", 3600, lambda: runs.append("5"), holder="a") is False
    assert runs == ["1", "r", "4"]
    assert a.job_state("purge")[2] == "b"


def test_job_that_raised_stays_due(backends):
    a, b = backends(), backends()

    def boom() -> None:
        raise RuntimeError("job failed")

    with pytest.raises(RuntimeError):
        a.run_exclusive("purge", 3600, boom, holder="a")
    assert a.job_state("purge") == (None, None, None)
    runs: list[int] = []
    assert b.run_exclusive("purge", 3600, lambda: runs.append(1), holder="b") is True
    assert runs == [1]
    assert b.job_state("purge")[2] == "b"


_HOLDER_SCRIPT = """
import pathlib, sys, time
from keysafe.backends.postgres import PostgresBackend
from keysafe.crypto.keys import KeyRing
url, marker, key = sys.argv[1:4]
b = PostgresBackend(url, KeyRing.from_env_value(key), pool_max=2)
def job():
    pathlib.Path(marker).write_text("running")
    time.sleep(60)
b.run_exclusive("purge", 3600, job, holder="doomed")
"""


def test_job_holder_killed_mid_job_leaves_it_due(pg_url, tmp_path, backends):
    key_value, ring = env_key()
    mine = backends(key=ring)  # records the key first, so the child agrees with it
    marker = tmp_path / "marker"
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER_SCRIPT, pg_url, str(marker),
                             key_value], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert wait_until(lambda: marker.exists() or proc.poll() is not None, timeout=30,
                          interval=0.05)
        assert marker.exists(), proc.communicate(timeout=10)
        runs: list[int] = []
        # While the holder lives, nobody else runs the job.
        assert mine.run_exclusive("purge", 3600, lambda: runs.append(1), holder="me") is False
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert wait_until(lambda: mine.run_exclusive("purge", 3600, lambda: runs.append(1),
                                                     holder="me"),
                          timeout=10, interval=0.1)
        assert runs == [1]
        assert mine.job_state("purge")[2] == "me"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]


# -- Scheduler ---------------------------------------------------------------------------
def test_local_exclusive_job_runs_once_per_period_across_threads(tmp_path):
    """Stores that cannot lease (the embedded store): a flock in KEYSAFE_HOME decides."""
    lock_dir = tmp_path / "jobs"
    runs: list[int] = []

    def slow_job() -> None:
        runs.append(1)
        time.sleep(0.3)

    scheds = [Scheduler(MemoryBackend(), [Job("purge", 3600, slow_job)], lock_dir=lock_dir)
              for _ in range(2)]
    barrier = threading.Barrier(2)
    ran: list[list[str]] = []

    def go(s: Scheduler) -> None:
        barrier.wait(timeout=10)
        ran.append(s.run_pending())

    ts = [threading.Thread(target=go, args=(s,)) for s in scheds]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=30)
    assert sorted(ran) == [[], ["purge"]]
    assert runs == [1]
    assert [s.run_pending() for s in scheds] == [[], []]  # not due again yet
    assert sum(s.runs["purge"] for s in scheds) == 1
    assert (lock_dir / "purge.lock").is_file()

    # Once the period has passed (here: the lock file says so) it runs again, once.
    (lock_dir / "purge.lock").write_text(f"{time.time() - 1:.3f}\n")
    assert sorted(s.run_pending() for s in scheds) == [[], ["purge"]]
    assert [s.run_pending() for s in scheds] == [[], []]
    assert runs == [1, 1]


_FLOCK_HOLDER = """
import pathlib, sys, time
from keysafe.scheduler import run_locally_exclusive
lock_dir, marker = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
def job():
    marker.write_text("running")
    time.sleep(60)
run_locally_exclusive(lock_dir, "purge", 3600, job)
"""


def test_local_exclusive_job_held_by_a_killed_process_runs_here(tmp_path):
    lock_dir, marker = tmp_path / "jobs", tmp_path / "marker"
    proc = subprocess.Popen([sys.executable, "-c", _FLOCK_HOLDER, str(lock_dir), str(marker)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: marker.exists() or proc.poll() is not None, timeout=30,
                          interval=0.05)
        assert marker.exists()
        runs: list[int] = []
        assert run_locally_exclusive(lock_dir, "purge", 3600, lambda: runs.append(1)) is False
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert run_locally_exclusive(lock_dir, "purge", 3600, lambda: runs.append(1)) is True
        assert runs == [1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_scheduler_on_postgres_uses_run_exclusive(tmp_path, backends):
    lock_dir = tmp_path / "jobs"
    runs: list[str] = []
    a, b = backends(), backends()
    sa = Scheduler(a, [Job("purge-expired", 3600, lambda: runs.append("a"))],
                   lock_dir=lock_dir)
    sb = Scheduler(b, [Job("purge-expired", 3600, lambda: runs.append("b"))],
                   lock_dir=lock_dir)
    assert sa.run_pending() == ["purge-expired"]
    assert sb.run_pending() == []
    assert sa.run_pending() == []
    assert runs == ["a"]
    assert b.job_state("purge-expired")[2] == sa.holder
    assert not lock_dir.exists()  # the database decided, not a local lock file


def test_scheduler_failed_job_is_retried_on_the_next_tick(tmp_path, backends, caplog):
    b = backends()
    calls: list[int] = []

    def flaky() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("transient")

    s = Scheduler(b, [Job("purge-expired", 3600, flaky)], lock_dir=tmp_path / "jobs")
    with caplog.at_level(logging.WARNING, logger="keysafe.scheduler"):
        assert s.run_pending() == []
    assert "purge-expired failed" in caplog.text
    assert b.job_state("purge-expired") == (None, None, None)
    assert s.run_pending() == ["purge-expired"]
    assert calls == [1, 1]
    assert s.runs["purge-expired"] == 1


def test_scheduled_purge_through_the_manager_purges_on_postgres(tmp_path, backends,
                                                                 managers):
    b = backends()
    m = managers(b, recovery_window_days=0)
    m.put("old_key", "v", "acme")
    m.delete("old_key", "acme")
    s = Scheduler(b, [Job("purge-expired", 3600, m.purge_expired)], lock_dir=tmp_path / "j")
    assert s.run_pending() == ["purge-expired"]
    assert b.deleted_before(datetime.now(UTC)) == []
    with pytest.raises(NotFound):
        b.describe(m.path("old_key", "acme"), include_deleted=True)


def test_scheduled_purge_works_with_a_pool_of_one(tmp_path, backends, managers):
    b = backends(pool_max=1, connect_timeout=1)
    m = managers(b, recovery_window_days=0)
    m.put("old_key", "v", "acme")
    m.delete("old_key", "acme")
    s = Scheduler(b, [Job("purge-expired", 3600, m.purge_expired)], lock_dir=tmp_path / "j")
    assert s.run_pending() == ["purge-expired"]
    assert b.deleted_before(datetime.now(UTC)) == []


# -- canary: no value in the server's files, rows, errors, reprs or logs --------------------
def _files_containing(root: Path, needles: list[bytes]) -> list[str]:
    found = []
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            try:
                data = p.read_bytes()
            except OSError:
                continue
            if any(n in data for n in needles):
                found.append(str(p))
    return found


def test_canary_value_is_nowhere_in_the_database(pg_server, pg_url, backends, managers,
                                                 caplog):
    datadir = pg_server.datadir
    try:
        os.listdir(datadir)
        (datadir / "PG_VERSION").read_bytes()
    except OSError:
        pytest.skip("the server's data directory is not readable by this user")
    canary = "canary-" + secrets.token_hex(16)
    b = backends()
    other = backends()
    m, m2 = managers(b), managers(other)
    seen: list[str] = []
    caplog.set_level(logging.DEBUG)

    for i in range(1, 5):
        info = m.put("canary_secret", f"{canary}-v{i}", "acme",
                     description="canary test", tags={"kind": "canary"})
        seen.append(repr(info))
    assert m2.get("canary_secret", "acme") == f"{canary}-v4"
    m.put_json("canary_json", {"token": canary}, "acme")
    m.update_json("canary_json", {"other": canary + "-merged"}, "acme")
    seen.append(repr(m.describe("canary_secret", "acme")))
    seen.append(repr(m.versions("canary_secret", "acme")))
    seen += [repr(b), repr(m), repr(b.envelope.keyring), str(m.stats())]
    # Failures holding the value in hand must not echo it.
    for call in (lambda: m.put("canary_secret", canary + "-cas", "acme", expected_version=1),
                 lambda: m.put("openai_api_key", canary, "acme"),
                 lambda: m.put("bad name", canary, "acme"),
                 lambda: m.put("big", canary * 5000, "acme")):
        with pytest.raises(KeysafeError) as err:
            call()
        seen += [str(err.value), repr(err.value)]
    assert m.destroy("canary_secret", [1, 2], "acme") == [1, 2]
    with pytest.raises(NotFound) as err:
        m.get("canary_secret", "acme", version=1)
    seen += [str(err.value), repr(err.value)]
    m.rollback("canary_secret", 3, "acme")
    m.delete("canary_secret", "acme")
    m.delete("canary_json", "acme", force=True)
    for mm in (m, m2):
        mm.audit.flush()
    assert m.audit_verify().ok

    needles = [canary, canary.encode().hex()]
    rows = snapshot(pg_server, pg_url)
    assert rows["audit"], "the audit table should hold the operations"
    leaked_rows = [(t, r) for t, rs in rows.items() for r in rs
                   if any(n in r for n in needles)]
    assert leaked_rows == []
    events = m.audit_query()
    assert not [e for e in events if canary in json.dumps(e.to_dict(), default=str)]
    assert not [s for s in seen if canary in s]
    assert canary not in caplog.text

    with pg_server.admin() as c:
        c.execute("CHECKPOINT")
    # The whole cluster directory: data files, WAL, and the server log beside them.
    leaked = _files_containing(datadir.parent, [canary.encode()])
    assert leaked == []


# -- outage and passwords ---------------------------------------------------------------
def test_unreachable_store_fails_fast_without_the_password(ring, caplog):
    password = "Distinctive-Pa55word-" + secrets.token_hex(4)
    url = f"postgresql://keysafe:{password}@127.0.0.1:{closed_port()}/keysafe"
    caplog.set_level(logging.DEBUG)
    t0 = time.monotonic()
    with pytest.raises(BackendUnavailable) as err:
        PostgresBackend(url, ring, connect_timeout=0.5)
    assert time.monotonic() - t0 < 15  # a bound against hanging, not a benchmark
    text = f"{err.value} {err.value!r}"
    assert password not in text
    assert "keysafe:***@127.0.0.1" in text
    with pytest.raises(BackendUnavailable) as err2:
        pg_schema.status(url)
    assert password not in f"{err2.value} {err2.value!r}"
    assert password not in caplog.text


def test_connections_killed_under_a_replica_recover(pg_server, pg_url, backends, managers):
    """The server drops every connection (a failover, a restart): calls fail with
    BackendUnavailable at worst, never anything else, and work again afterwards."""
    b = backends()
    m = managers(b)
    m.put("db_creds", "value-1", "acme")
    with admin_db(pg_server, pg_url) as c:
        c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                  "datname = current_database() AND pid != pg_backend_pid()")
    outcomes: list[str] = []
    messages: list[str] = []

    def attempt() -> bool:
        try:
            outcomes.append(m.read("db_creds", "acme")[0])
        except BackendUnavailable as exc:
            messages.append(f"{exc} {exc!r}")
            outcomes.append("unavailable")
            return False
        return True

    assert wait_until(attempt, timeout=10, interval=0.1)
    assert outcomes[-1] == "value-1"
    assert set(outcomes) <= {"unavailable", "value-1"}
    assert not [t for t in messages if pg_server.password in t]
    m.put("db_creds", "value-2", "acme")
    assert m.get("db_creds", "acme") == "value-2"


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://ks:hunter2-secret@db.internal:5432/keysafe",
     "postgresql://ks:***@db.internal:5432/keysafe"),
    ("postgresql://ks:hunter2-secret@db.internal/keysafe?sslmode=verify-full",
     "postgresql://ks:***@db.internal/keysafe?sslmode=verify-full"),
    ("postgresql://ks:p%40ss%2Fhunter2-secret@db/keysafe", "postgresql://ks:***@db/keysafe"),
    ("postgresql:///keysafe", "postgresql:///keysafe"),
    ("postgresql://ks@db/keysafe", "postgresql://ks@db/keysafe"),
])
def test_redact_url_hides_the_password(url, shown):
    assert redact_url(url) == shown
    assert "hunter2" not in redact_url(url)


@pytest.mark.parametrize("url", [
    "postgresql://ks@db.internal/keysafe?password=hunter2-secret",
    "host=db.internal user=ks password=hunter2-secret dbname=keysafe",
])
def test_redact_url_hides_other_spellings_of_the_password(url):
    assert "hunter2" not in redact_url(url)


def test_redact_url_keeps_an_ipv6_host_readable():
    assert redact_url("postgresql://ks:pw@[::1]:5432/db") == "postgresql://ks:***@[::1]:5432/db"


# -- configuration -----------------------------------------------------------------------
def test_database_url_alone_selects_postgres(tmp_home, pg_url):
    s = load_settings({"KEYSAFE_DATABASE_URL": pg_url, "KEYSAFE_HOME": str(tmp_home)})
    assert s.backend == "postgres"
    assert s.sources["backend"] == "implied by database_url (env KEYSAFE_DATABASE_URL)"
    assert pg_url not in repr(s)
    shown = {name: value for name, value, _src in s.describe()}
    assert shown["database_url"] == "******** (set)"
    explicit = load_settings({"KEYSAFE_DATABASE_URL": pg_url, "KEYSAFE_BACKEND": "sqlite"})
    assert explicit.backend == "sqlite"


def test_doctor_shows_the_implied_postgres_backend(tmp_home, pg_server, pg_url, monkeypatch):
    from typer.testing import CliRunner

    from keysafe.cli.app import app

    key_value, _ = env_key()
    monkeypatch.setenv("KEYSAFE_DATABASE_URL", pg_url)
    monkeypatch.setenv("KEYSAFE_MASTER_KEY", key_value)
    r = CliRunner().invoke(app, ["doctor", "--json"])
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)
    rows = {row["setting"]: (row["value"], row["source"]) for row in data["settings"]}
    assert rows["backend"] == ("postgres", "implied by database_url (env KEYSAFE_DATABASE_URL)")
    assert rows["database_url"][0] == "******** (set)"
    checks = {c["name"]: c for c in data["checks"]}
    assert checks["backend"]["status"] == "ok"
    assert "postgres: reachable" in checks["backend"]["detail"]
    human = CliRunner().invoke(app, ["doctor"])
    assert human.exit_code == 0
    assert "postgres" in human.stdout
    assert "implied by database_url" in human.stdout
    for out in (r.stdout, r.stderr, human.stdout, human.stderr):
        assert pg_server.password not in out
        assert key_value.split(":", 1)[1] not in out


def test_doctor_on_postgres_without_a_key_creates_nothing(tmp_home, pg_server, pg_url,
                                                          monkeypatch):
    from typer.testing import CliRunner

    from keysafe.cli.app import app

    monkeypatch.setenv("KEYSAFE_DATABASE_URL", pg_url)
    r = CliRunner().invoke(app, ["doctor", "--json"])
    assert r.exit_code == 0, r.stderr
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert checks["master key"]["status"] == "warn"
    assert not (tmp_home / "master.key").exists()
    assert snapshot(pg_server, pg_url).get("meta", []) == []


def test_doctor_on_postgres_in_production_without_a_key_fails(tmp_home, pg_server, pg_url,
                                                              monkeypatch):
    from typer.testing import CliRunner

    from keysafe.cli.app import app

    monkeypatch.setenv("KEYSAFE_DATABASE_URL", pg_url)
    monkeypatch.setenv("KEYSAFE_ENV", "production")
    r = CliRunner().invoke(app, ["doctor", "--json"])
    assert r.exit_code == 8, (r.stdout, r.stderr)
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert checks["master key"]["status"] == "fail"
    assert "KEYSAFE_MASTER_KEY" in checks["master key"]["detail"]
    assert pg_server.password not in r.stdout + r.stderr
    assert list(tmp_home.iterdir()) == []
    assert snapshot(pg_server, pg_url) == {}


@pytest.mark.parametrize("env", ["test", "local"])
def test_from_settings_end_to_end_creates_a_key_file_for_local_work(tmp_home, pg_url,
                                                                   monkeypatch, env):
    monkeypatch.setenv("KEYSAFE_DATABASE_URL", pg_url)
    monkeypatch.setenv("KEYSAFE_ENV", env)
    with SecretManager.from_settings(load_settings()) as m:
        assert m.backend.name == "postgres"
        m.put("api_token", "end-to-end", "acme")
        assert m.get("api_token", "acme") == "end-to-end"
        assert m.audit_verify().ok
    key_file = tmp_home / "master.key"
    assert key_file.is_file()
    assert key_file.stat().st_mode & 0o077 == 0
    # Another process with the same settings opens the same key and reads the value.
    with SecretManager.from_settings(load_settings()) as m2:
        assert m2.get("api_token", "acme") == "end-to-end"
        assert m2.path("api_token", "acme") == f"keysafe/{env}/acme/shared/api_token"


def test_production_without_a_master_key_refuses_to_open(tmp_home, pg_server, pg_url,
                                                         monkeypatch):
    monkeypatch.setenv("KEYSAFE_DATABASE_URL", pg_url)
    monkeypatch.setenv("KEYSAFE_ENV", "production")
    with pytest.raises(ConfigError) as err:
        SecretManager.from_settings(load_settings())
    assert "KEYSAFE_MASTER_KEY" in str(err.value)
    assert pg_server.password not in str(err.value)
    assert list(tmp_home.iterdir()) == []  # no key file made
    assert snapshot(pg_server, pg_url) == {}  # the database was not touched

    key_value, ring = env_key()
    monkeypatch.setenv("KEYSAFE_MASTER_KEY", key_value)
    with SecretManager.from_settings(load_settings()) as m:
        m.put("api_token", "prod-value", "acme")
        assert m.get("api_token", "acme") == "prod-value"
        assert m.backend.envelope.keyring.active == ring.active  # type: ignore[attr-defined]
    assert list(tmp_home.iterdir()) == []


def test_settings_control_auto_upgrade_and_pool_size(tmp_home, pg_url, monkeypatch):
    key_value, _ = env_key()
    monkeypatch.setenv("KEYSAFE_DATABASE_URL", pg_url)
    monkeypatch.setenv("KEYSAFE_MASTER_KEY", key_value)
    monkeypatch.setenv("KEYSAFE_DB_AUTO_UPGRADE", "0")
    monkeypatch.setenv("KEYSAFE_DB_POOL_MAX", "3")
    with pytest.raises(ConfigError) as err:
        SecretManager.from_settings(load_settings())
    assert "keysafe db upgrade" in str(err.value)
    pg_schema.status(pg_url, upgrade_now=True)
    with SecretManager.from_settings(load_settings()) as m:
        assert m.backend._pool.max_size == 3  # type: ignore[attr-defined]
        m.put("api_token", "v", "acme")


def test_a_rotation_held_by_another_replica_is_refused(backends, managers):
    """One rotation of a secret across replicas: the second gets Conflict at once
    (instead of taking the first one's pending value for a crash's)."""
    a, b = managers(backends()), managers(backends())
    a.put("encryption_key", "e" * 48, "acme", tags={"rotator": "random"})
    path = a.path("encryption_key", "acme")
    with backends().hold(f"rotate:{path}") as held:  # as replica a's rotation would
        assert held
        with pytest.raises(Conflict, match="running in another process"):
            b.rotate("encryption_key", "acme")
    assert b.rotate("encryption_key", "acme").version == 2
