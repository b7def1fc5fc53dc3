"""PostgreSQL role passwords rotated against a real server (keysafe.rotation.postgres).

The four-step protocol (create, apply, test, promote) with the ``single`` and
``alternating`` schemes: the new credential logs in, the old one stops working (at once
for ``single``, after the grace period for ``alternating``), and a failure injected at
each step leaves the old credential working and the secret's current version as it was.
No password ever reaches the audit log, an error message or the server's log.
"""

from __future__ import annotations

import json
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from keysafe import SecretManager
from keysafe.backends.sqlite import SQLiteBackend
from keysafe.crypto.keys import KeyRing
from keysafe.errors import ConfigError, RotationError
from keysafe.manager.audit import AuditFilter, AuditLog, SQLiteAuditStore
from keysafe.rotation import RotationContext, RotationEngine
from keysafe.rotation.engine import record_path
from keysafe.rotation.postgres import PostgresPasswordRotator
from keysafe.testing.postgres import PgServer

ORG = "acme"
NAME = "database_password"
GRACE = timedelta(hours=2)


# -- fixtures -----------------------------------------------------------------------------
@dataclass
class Cluster:
    """One database and a few login roles made for a test (dropped afterwards)."""

    server: PgServer
    db: str
    roles: dict[str, str] = field(default_factory=dict)  # role -> its first password

    def cred(self, user: str, password: str) -> dict[str, Any]:
        return {"username": user, "password": password, "host": "127.0.0.1",
                "port": self.server.port, "dbname": self.db}

    def role(self, prefix: str, *, createrole: bool = False) -> tuple[str, str]:
        """A new login role whose statements the server logs (see test_no_password_leaks)."""
        sql = psycopg.sql
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        password = "pw-" + uuid.uuid4().hex
        extra = " CREATEROLE" if createrole else ""
        with self.server.admin() as c, c.transaction():
            c.execute(sql.SQL("CREATE ROLE {} LOGIN{} PASSWORD {}").format(
                sql.Identifier(name), sql.SQL(extra), sql.Literal(password)))
            c.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                sql.Identifier(self.db), sql.Identifier(name)))
            # Every statement of this role's sessions goes to the server log, so a
            # password sent in a statement would be there to find.
            c.execute(sql.SQL("ALTER ROLE {} SET log_statement = 'all'").format(
                sql.Identifier(name)))
        self.roles[name] = password
        return name, password


@pytest.fixture(scope="module")
def cluster_db(pg_server: PgServer) -> Iterator[Cluster]:
    """One database for the module (creating one per test costs more than the tests);
    each test makes its own uniquely named roles. Dropped with their grants at the end."""
    cl = Cluster(pg_server, pg_server.create_db())
    try:
        yield cl
    finally:
        pg_server.drop_db(cl.db)
        with pg_server.admin() as c:
            for role in cl.roles:
                c.execute(psycopg.sql.SQL("DROP ROLE IF EXISTS {}").format(
                    psycopg.sql.Identifier(role)))


@pytest.fixture
def cluster(cluster_db: Cluster) -> Cluster:
    return cluster_db


@pytest.fixture
def mgr(tmp_path: Path) -> Iterator[SecretManager]:
    # synchronous=OFF: the store's durability is not under test here, its speed matters.
    backend = SQLiteBackend(tmp_path / "keysafe.db", KeyRing.generate(), synchronous="OFF")
    m = SecretManager(backend, audit=AuditLog(SQLiteAuditStore(backend)), env="test",
                      actor="tester")
    yield m
    m.close()


def logs_in(cred: dict[str, Any]) -> bool:
    try:
        with psycopg.connect(host=cred["host"], port=cred["port"], dbname=cred["dbname"],
                             user=cred["username"], password=cred["password"],
                             connect_timeout=5) as conn:
            row = conn.execute("SELECT current_user").fetchone()
    except psycopg.OperationalError:
        return False
    assert row is not None
    assert row[0] == cred["username"]
    return True


def rotate_events(m: SecretManager, path: str) -> list[tuple[str, dict[str, Any]]]:
    return [(e.outcome, e.detail) for e in m.audit_query(AuditFilter(action="rotate",
                                                                     path=path))]


def audit_text(m: SecretManager, tmp_path: Path) -> str:
    """Every audit record as JSON, plus the raw bytes of the store's files (the audit
    table is in the same SQLite file; secret values there are sealed)."""
    m.audit.flush()
    text = "\n".join(json.dumps(e.to_dict(), default=str) for e in m.audit_query())
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("keysafe.db*"))
    return text + "\n" + raw.decode("latin-1")


def server_log(server: PgServer) -> str:
    return (server.datadir.parent / "server.log").read_text(errors="replace")


def single_secret(cl: Cluster, m: SecretManager) -> dict[str, Any]:
    user, password = cl.role("app_x")
    cred = cl.cred(user, password)
    m.put_json(NAME, cred, ORG, tags={"rotator": "postgres"})
    return cred


def alternating_secret(cl: Cluster, m: SecretManager) -> tuple[dict[str, Any], str]:
    """(the current credential: role a; role b's name). The admin is a CREATEROLE role,
    not the superuser, as a team would configure it."""
    a, pa = cl.role("app_a")
    b, _ = cl.role("app_b")
    admin, padmin = cl.role("ks_admin", createrole=True)
    m.put_json("pg_admin", cl.cred(admin, padmin), ORG)
    cred = cl.cred(a, pa)
    m.put_json(NAME, cred, ORG, tags={"rotator": "postgres", "rotator.scheme": "alternating",
                                      "rotator.users": f"{a},{b}",
                                      "rotator.admin_secret": "pg_admin"})
    return cred, b


def current(m: SecretManager) -> tuple[dict[str, Any], int]:
    value, version = m.backend.get(m.path(NAME, ORG))
    return json.loads(value), version


# -- the single scheme --------------------------------------------------------------------
def test_single_scheme_rotates_the_role_password(cluster: Cluster, mgr: SecretManager):
    old = single_secret(cluster, mgr)
    assert logs_in(old)
    engine = RotationEngine(mgr, grace=GRACE)

    out = engine.rotate(NAME, ORG)

    assert out.outcome == "rotated"
    assert out.version == 2
    new, version = current(mgr)
    assert version == 2
    assert new["username"] == old["username"]
    assert new["password"] != old["password"]
    assert {k: v for k, v in new.items() if k != "password"} == \
        {k: v for k, v in old.items() if k != "password"}  # the shape is kept
    assert logs_in(new)
    assert not logs_in(old)
    # The library's cache sees the rotated value (the promote went through the manager).
    assert json.loads(mgr.get(NAME, ORG))["password"] == new["password"]

    path = mgr.path(NAME, ORG)
    outcomes = [o for o, _ in rotate_events(mgr, path)]
    assert outcomes == ["pending_created", "ok"]
    records = [m.path for m in mgr.backend.list("_rotation/", include_deleted=True)]
    assert records == [record_path(path, "previous")]  # no pending record left
    assert json.loads(engine.previous(NAME, ORG) or "{}") == old
    # single: the old password is already gone in the target, retiring revokes nothing
    # more, and the previous record is dropped.
    assert engine.retire_expired(now=datetime.now(UTC) + GRACE * 2) == [path]
    assert engine.previous(NAME, ORG) is None
    assert logs_in(new)


def test_single_scheme_rotates_twice_and_keeps_a_url_shape(cluster: Cluster,
                                                          mgr: SecretManager):
    user, password = cluster.role("app_u")
    url = (f"postgresql://{user}:{password}@127.0.0.1:{cluster.server.port}/{cluster.db}"
           "?sslmode=disable")
    mgr.put("orders_db", url, ORG, secret_type="connection_url",
            tags={"rotator": "postgres"})
    engine = RotationEngine(mgr, grace=GRACE)

    engine.rotate("orders_db", ORG)
    first = mgr.get("orders_db", ORG)
    engine.rotate("orders_db", ORG)
    second = mgr.get("orders_db", ORG)

    assert mgr.describe("orders_db", ORG).current_version == 3
    for value in (first, second):
        assert value.startswith(f"postgresql://{user}:")
        assert value.endswith(f"@127.0.0.1:{cluster.server.port}/{cluster.db}?sslmode=disable")
    with psycopg.connect(second, connect_timeout=5) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (user,)
    for stale in (url, first):
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(stale, connect_timeout=5)


# -- the alternating scheme ----------------------------------------------------------------
def test_alternating_scheme_keeps_the_old_role_until_the_grace_period_ends(
        cluster: Cluster, mgr: SecretManager):
    old, b = alternating_secret(cluster, mgr)
    engine = RotationEngine(mgr, grace=GRACE)
    path = mgr.path(NAME, ORG)

    out = engine.rotate(NAME, ORG)

    assert out.outcome == "rotated"
    new, version = current(mgr)
    assert version == 2
    assert new["username"] == b
    assert logs_in(new)
    assert logs_in(old)  # the grace period: services holding it keep working
    assert json.loads(engine.previous(NAME, ORG) or "{}") == old
    assert json.loads(mgr.verification_values(NAME, ORG)[1]) == old

    # Not expired yet: nothing is retired.
    assert engine.retire_expired() == []
    assert logs_in(old)

    later = datetime.now(UTC) + GRACE + timedelta(minutes=1)
    assert engine.retire_expired(now=later) == [path]
    assert not logs_in(old)
    assert logs_in(new)
    assert engine.previous(NAME, ORG, now=later) is None
    assert engine.previous(NAME, ORG) is None  # the record itself is gone
    outcomes = [o for o, _ in rotate_events(mgr, path)]
    assert outcomes == ["pending_created", "ok", "retired"]


def test_alternating_scheme_switches_back_and_forth(cluster: Cluster, mgr: SecretManager):
    old, b = alternating_secret(cluster, mgr)
    engine = RotationEngine(mgr, grace=GRACE)

    engine.rotate(NAME, ORG)
    second, _ = current(mgr)
    engine.rotate(NAME, ORG)
    third, version = current(mgr)

    assert version == 3
    assert second["username"] == b
    assert third["username"] == old["username"]
    assert third["password"] != old["password"]
    assert logs_in(third)
    assert logs_in(second)  # the previous credential, in its grace period
    assert not logs_in(old)  # role a got a new password at the second rotation
    # Retiring the previous (role b) scrambles b, never the live role a.
    engine.retire_expired(now=datetime.now(UTC) + GRACE * 2)
    assert not logs_in(second)
    assert logs_in(third)


def test_a_refused_retire_is_recorded_not_raised(cluster: Cluster, mgr: SecretManager):
    old, _ = alternating_secret(cluster, mgr)
    engine = RotationEngine(mgr, grace=GRACE)
    engine.rotate(NAME, ORG)
    admin = json.loads(mgr.get("pg_admin", ORG))["username"]
    with cluster.server.admin() as c:
        c.execute(psycopg.sql.SQL("ALTER ROLE {} NOCREATEROLE").format(
            psycopg.sql.Identifier(admin)))

    done = engine.retire_expired(now=datetime.now(UTC) + GRACE * 2)

    assert done == []
    assert logs_in(old)  # not retired: the previous record stays for the next try
    assert json.loads(mgr.backend.get(record_path(mgr.path(NAME, ORG), "previous"))[0]) == old
    outcomes = [o for o, _ in rotate_events(mgr, mgr.path(NAME, ORG))]
    assert outcomes[-1] == "retire_failed"


# -- failures injected at each step ---------------------------------------------------------
class Boom(RuntimeError):
    """An injected failure (its message names no value)."""


class Faulty(PostgresPasswordRotator):
    """The real rotator, failing at one chosen step.

    generate: before any value exists. apply: before the password is set. apply_after:
    after it is set (rollback must restore it). test: after a successful login with the
    new password. promote: a concurrent write of the secret, so the check-and-set at
    promotion fails. promoted_hook: the optional ``promoted`` hook raises.
    """

    def __init__(self, step: str, mgr: SecretManager) -> None:
        self.step = step
        self.mgr = mgr
        self.new: str | None = None

    def generate(self, ctx: RotationContext) -> str:
        if self.step == "generate":
            raise Boom("injected at generate")
        self.new = super().generate(ctx)
        return self.new

    def apply(self, ctx: RotationContext, new: str) -> None:
        if self.step == "apply":
            raise Boom("injected at apply")
        super().apply(ctx, new)
        if self.step == "apply_after":
            raise Boom("injected after apply")

    def test(self, ctx: RotationContext, new: str) -> None:
        super().test(ctx, new)
        if self.step == "test":
            raise Boom("injected at test")
        if self.step == "promote":
            # Another writer stores the secret again (the same credential) between test
            # and promote: the rotation's check-and-set must lose.
            assert ctx.current is not None
            self.mgr.put(NAME, ctx.current, ORG, check_format=False,
                         tags={"rotator": "postgres", **{f"rotator.{k}": v for k, v in
                                                        ctx.options.items()}})

    def promoted(self, ctx: RotationContext, new: str) -> None:
        if self.step == "promoted_hook":
            raise Boom("injected in the promoted hook")


STEPS = {  # injected step -> the step the audit log and the error name
    "generate": "create",
    "apply": "apply",
    "apply_after": "apply",
    "test": "test",
    "promote": "promote",
}


@pytest.mark.parametrize("scheme", ["single", "alternating"])
@pytest.mark.parametrize("step", list(STEPS))
def test_failure_at_each_step_leaves_the_old_credential_working(
        cluster: Cluster, mgr: SecretManager, scheme: str, step: str):
    if scheme == "single":
        old = single_secret(cluster, mgr)
    else:
        old, _ = alternating_secret(cluster, mgr)
    path = mgr.path(NAME, ORG)
    faulty = Faulty(step, mgr)
    engine = RotationEngine(mgr, grace=GRACE, rotator_factory=lambda name: faulty)

    with pytest.raises(RotationError) as info:
        engine.rotate(NAME, ORG)

    err = info.value
    assert err.code == "rotation_error"
    assert getattr(err, "step", None) == STEPS[step]
    assert f"failed at step {STEPS[step]}" in err.message
    assert "unchanged" in err.message
    shown = "".join(traceback.format_exception(err)) + repr(err)
    assert old["password"] not in shown
    if faulty.new is not None:
        assert json.loads(faulty.new)["password"] not in shown
    # The old credential still works and is still current.
    assert logs_in(old)
    value, version = current(mgr)
    expected_version = 2 if step == "promote" else 1  # 2: the concurrent writer's
    assert version == expected_version
    assert value == old
    assert json.loads(mgr.get(NAME, ORG)) == old
    # The new credential, if one was made, was undone in the target.
    if faulty.new is not None:
        assert not logs_in(json.loads(faulty.new))
    # No pending record, no previous record (nothing was promoted).
    assert mgr.backend.list("_rotation/") == []
    assert engine.previous(NAME, ORG) is None
    # The audit log says which step failed.
    events = rotate_events(mgr, path)
    failed = [d for o, d in events if o == "failed"]
    assert len(failed) == 1
    assert failed[0]["step"] == STEPS[step]
    assert failed[0]["undo"] == ("nothing to undo" if step == "generate"
                                 else "rolled back in the target")
    assert failed[0]["reason"] == ("Boom" if step != "promote" else
                                   f"{path} is at version 2, not the expected 1")
    assert "ok" not in [o for o, _ in events]
    # A second run afterwards rotates cleanly with the real rotator.
    RotationEngine(mgr, grace=GRACE).rotate(NAME, ORG)
    fresh, _ = current(mgr)
    assert logs_in(fresh)


@pytest.mark.parametrize("scheme", ["single", "alternating"])
def test_failure_in_the_promoted_hook_leaves_a_working_current_credential(
        cluster: Cluster, mgr: SecretManager, scheme: str):
    if scheme == "single":
        old = single_secret(cluster, mgr)
    else:
        old, _ = alternating_secret(cluster, mgr)
    engine = RotationEngine(mgr, grace=GRACE,
                            rotator_factory=lambda name: Faulty("promoted_hook", mgr))

    # The new value is already current and tested when the hook runs: undoing it in the
    # target now would leave the secret a dead credential. The rotation stands and the
    # hook's failure is audited.
    out = engine.rotate(NAME, ORG)
    assert out.outcome == "rotated"
    stored, version = current(mgr)
    # Whatever the secret holds now must log in: that is what readers will use.
    assert logs_in(stored), "the secret's current credential no longer logs in"
    assert version == 2
    assert stored != old
    mgr.audit.flush()
    hook = [e for e in mgr.audit_query(AuditFilter(action="rotate"))
            if e.outcome == "promoted_hook_failed"]
    assert len(hook) == 1


# -- a crash mid-rotation, then the next run ---------------------------------------------------
class Crash(BaseException):
    """Stands in for the process dying: not an Exception, so the engine's failure
    handling never runs and the pending record stays as the crash left it."""


class Crashing(PostgresPasswordRotator):
    def __init__(self, where: str) -> None:
        self.where = where

    def apply(self, ctx: RotationContext, new: str) -> None:
        if self.where == "in_apply":
            raise Crash
        super().apply(ctx, new)

    def test(self, ctx: RotationContext, new: str) -> None:
        if self.where == "after_apply":
            raise Crash
        super().test(ctx, new)

    def promoted(self, ctx: RotationContext, new: str) -> None:
        if self.where == "after_promote":
            raise Crash


@pytest.mark.parametrize(("scheme", "where", "pending_step", "result"), [
    ("single", "in_apply", "applying", "rolled back"),
    ("single", "after_apply", "applied", "completed"),
    ("single", "after_promote", "promoting", "completed"),
    ("alternating", "after_apply", "applied", "completed"),
])
def test_a_crashed_rotation_is_resumed_or_rolled_back(
        cluster: Cluster, mgr: SecretManager, scheme: str, where: str, pending_step: str,
        result: str):
    if scheme == "single":
        old = single_secret(cluster, mgr)
    else:
        old, _ = alternating_secret(cluster, mgr)
    path = mgr.path(NAME, ORG)
    with pytest.raises(Crash):
        RotationEngine(mgr, grace=GRACE,
                       rotator_factory=lambda name: Crashing(where)).rotate(NAME, ORG)
    rpath = record_path(path, "pending")
    assert mgr.backend.describe(rpath).tags["rotation.step"] == pending_step
    pending = json.loads(mgr.backend.get(rpath)[0])

    engine = RotationEngine(mgr, grace=GRACE)  # the next run, with the real rotator
    if result == "rolled back":
        with pytest.raises(RotationError):
            engine.rotate(NAME, ORG)
        assert current(mgr) == (old, 1)
        assert logs_in(old)
        assert not logs_in(pending)
    else:
        out = engine.rotate(NAME, ORG)
        assert out.outcome == "resumed"
        assert current(mgr) == (pending, 2)
        assert logs_in(pending)
        assert logs_in(old) is (scheme == "alternating")
        assert json.loads(engine.previous(NAME, ORG) or "{}") == old
    records = [m.path for m in mgr.backend.list("_rotation/", include_deleted=True)]
    assert records == ([] if result == "rolled back" else [record_path(path, "previous")])
    resumed = [d for o, d in rotate_events(mgr, path) if o == "resumed"]
    assert len(resumed) == 1
    assert resumed[0]["from"] == pending_step
    assert resumed[0]["result"] == result
    # And the rotation after that is an ordinary one.
    assert engine.rotate(NAME, ORG).outcome == "rotated"
    assert logs_in(current(mgr)[0])


# -- no password anywhere it should not be --------------------------------------------------
def test_no_password_leaks_to_audit_errors_or_server_log(cluster: Cluster,
                                                         mgr: SecretManager,
                                                         tmp_path: Path):
    single = single_secret(cluster, mgr)
    mgr.put_json("other_db", single, ORG)  # a second copy, to rotate through the alt path
    passwords = [single["password"]]
    engine = RotationEngine(mgr, grace=GRACE)
    engine.rotate(NAME, ORG)
    passwords.append(current(mgr)[0]["password"])

    # Alternating, in its own scope (domain "alt"), with a failure at test.
    a, pa = cluster.role("app_a")
    b, pb = cluster.role("app_b")
    admin, padmin = cluster.role("ks_admin", createrole=True)
    passwords += [pa, pb, padmin]
    mgr.put_json("pg_admin", cluster.cred(admin, padmin), ORG, domain="alt")
    mgr.put_json(NAME, cluster.cred(a, pa), ORG, domain="alt", tags={
        "rotator": "postgres", "rotator.scheme": "alternating",
        "rotator.users": f"{a},{b}", "rotator.admin_secret": "pg_admin"})
    engine.rotate(NAME, ORG, domain="alt")
    passwords.append(json.loads(mgr.get(NAME, ORG, domain="alt"))["password"])
    faulty = Faulty("test", mgr)
    failing = RotationEngine(mgr, grace=GRACE, rotator_factory=lambda name: faulty)
    with pytest.raises(RotationError) as info:
        failing.rotate(NAME, ORG, domain="alt")
    assert faulty.new is not None
    passwords.append(json.loads(faulty.new)["password"])
    # A login failure's error, as the rotator reports it.
    mgr.put_json("broken_db", cluster.cred(a, "wrong-" + uuid.uuid4().hex), ORG,
                 tags={"rotator": "postgres"})
    with pytest.raises(RotationError) as broken:
        engine.rotate("broken_db", ORG)
    passwords.append(json.loads(mgr.get("broken_db", ORG))["password"])
    engine.retire_expired(now=datetime.now(UTC) + GRACE * 2)

    texts = {
        "audit": audit_text(mgr, tmp_path),
        "errors": "\n".join(
            "".join(traceback.format_exception(e)) + repr(e) + str(e.__context__)
            for e in (info.value, broken.value)),
        "server log": server_log(cluster.server),
    }
    assert "cannot log in to PostgreSQL" in broken.value.message
    # The role's sessions were logged (log_statement=all), so the check means something.
    assert "ALTER ROLE" in texts["server log"]
    assert "SCRAM-SHA-256$" in texts["server log"]
    for where, text in texts.items():
        for pw in passwords:
            assert pw not in text, f"a password appeared in the {where}"


# -- linked secrets: spec 004's database-password beside database-url ------------------------
def pair(cl: Cluster, m: SecretManager, **tags: str) -> tuple[str, str, str]:
    """A role whose password is stored bare (database_password, rotated) and inside a URL
    (database_url, linked). (role, password, url)."""
    user, password = cl.role("app_l")
    url = (f"postgresql://{user}:{password}@127.0.0.1:{cl.server.port}/{cl.db}"
           "?sslmode=disable")
    m.put("database_url", url, ORG)
    m.put(NAME, password, ORG, tags={"rotator": "postgres",
                                     "rotator.linked": "database_url", **tags})
    return user, password, url


def url_logs_in(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            return conn.execute("SELECT current_user").fetchone() is not None
    except psycopg.OperationalError:
        return False


def test_a_bare_password_rotates_with_its_url_in_step(cluster: Cluster, mgr: SecretManager):
    _user, old, url = pair(cluster, mgr)
    engine = RotationEngine(mgr, grace=GRACE)

    out = engine.rotate(NAME, ORG)

    assert out.outcome == "rotated"
    new = mgr.get(NAME, ORG)
    assert new != old
    assert not new.startswith(("{", "postgres"))  # still a bare password
    new_url = mgr.get("database_url", ORG)
    assert new_url == url.replace(f":{old}@", f":{new}@")  # only the password changed
    assert url_logs_in(new_url)
    assert not url_logs_in(url)
    assert mgr.describe("database_url", ORG).current_version == 2
    ok = [d for o, d in rotate_events(mgr, mgr.path(NAME, ORG)) if o == "ok"]
    assert ok[0]["linked"] == ["database_url"]
    # Both were written by the rotation's actor, and the next rotation keeps them in step.
    engine.rotate(NAME, ORG)
    third = mgr.get(NAME, ORG)
    assert mgr.get("database_url", ORG) == url.replace(f":{old}@", f":{third}@")
    assert url_logs_in(mgr.get("database_url", ORG))


def test_a_url_rotates_with_a_bare_password_and_a_json_copy(cluster: Cluster,
                                                            mgr: SecretManager):
    user, password = cluster.role("app_m")
    url = f"postgresql://{user}:{password}@127.0.0.1:{cluster.server.port}/{cluster.db}"
    mgr.put("database_url", url, ORG, tags={"rotator": "postgres",
                                            "rotator.linked": "database_password,db_json"})
    mgr.put(NAME, password, ORG)
    mgr.put_json("db_json", dict(cluster.cred(user, password), sslmode="disable"), ORG)

    RotationEngine(mgr, grace=GRACE).rotate("database_url", ORG)

    new_url = mgr.get("database_url", ORG)
    new_pw = mgr.get(NAME, ORG)
    as_json = json.loads(mgr.get("db_json", ORG))
    assert url_logs_in(new_url)
    assert new_url == url.replace(f":{password}@", f":{new_pw}@")
    assert as_json == dict(cluster.cred(user, new_pw), sslmode="disable")  # fields kept
    assert logs_in(as_json)


def test_the_alternating_scheme_moves_the_linked_url_to_the_other_role(
        cluster: Cluster, mgr: SecretManager):
    old, b = alternating_secret(cluster, mgr)
    url = (f"postgresql://{old['username']}:{old['password']}@127.0.0.1:"
           f"{cluster.server.port}/{cluster.db}")
    mgr.put("database_url", url, ORG)
    tags = dict(mgr.describe(NAME, ORG).tags, **{"rotator.linked": "database_url"})
    mgr.put_json(NAME, old, ORG, tags=tags)

    RotationEngine(mgr, grace=GRACE).rotate(NAME, ORG)

    new, _ = current(mgr)
    assert new["username"] == b
    assert mgr.get("database_url", ORG) == (
        f"postgresql://{b}:{new['password']}@127.0.0.1:{cluster.server.port}/{cluster.db}")
    assert url_logs_in(mgr.get("database_url", ORG))
    assert url_logs_in(url)  # role a keeps working through the grace period


def test_a_bare_password_cannot_take_the_alternating_scheme(cluster: Cluster,
                                                            mgr: SecretManager):
    a, _ = cluster.role("app_a")
    b, _ = cluster.role("app_b")
    _, old, _url = pair(cluster, mgr, **{"rotator.scheme": "alternating",
                                        "rotator.users": f"{a},{b}",
                                        "rotator.admin_secret": "pg_admin"})
    with pytest.raises(RotationError, match="bare password, which cannot say which role"):
        RotationEngine(mgr, grace=GRACE).rotate(NAME, ORG)
    assert mgr.get(NAME, ORG) == old


@pytest.mark.parametrize("case", ["no link", "missing link", "other role"])
def test_a_link_that_cannot_be_kept_in_step_stops_the_rotation_before_apply(
        cluster: Cluster, mgr: SecretManager, case: str):
    user, old, url = pair(cluster, mgr)
    if case == "no link":
        # update_metadata replaces every tag (a put keeps rotation settings it is not
        # given): the link goes.
        mgr.update_metadata(NAME, ORG, tags={"rotator": "postgres"})
        expected = "as a bare password it needs rotator.linked naming"
    elif case == "missing link":
        mgr.delete("database_url", ORG, force=True)
        expected = "not found|does not exist|no secret"
    else:
        # The rotated secret names its role (JSON); the URL linked to it is another's.
        other, opw = cluster.role("app_o")
        mgr.put_json(NAME, cluster.cred(user, old), ORG,
                     tags={"rotator": "postgres", "rotator.linked": "database_url"})
        mgr.put("database_url", url.replace(f"{user}:{old}", f"{other}:{opw}"), ORG)
        expected = f"database_url, linked to {NAME}, is the credential of role {other}"
    before = mgr.describe(NAME, ORG).current_version
    with pytest.raises(RotationError, match=expected) as info:
        RotationEngine(mgr, grace=GRACE).rotate(NAME, ORG)
    assert getattr(info.value, "step", None) == "create"
    assert mgr.describe(NAME, ORG).current_version == before
    assert logs_in(cluster.cred(user, old))  # nothing was applied
    assert old not in info.value.message


class LinkRacer(PostgresPasswordRotator):
    """The real rotator; once the engine has read the linked URL for the promotion,
    another writer stores it again, so its check-and-set in the promotion's transaction
    must lose."""

    def __init__(self, mgr: SecretManager) -> None:
        self.mgr = mgr

    def follow(self, ctx: RotationContext, new: str, held: str, name: str) -> str:
        out = super().follow(ctx, new, held, name)
        if name == "database_url":
            self.mgr.put("database_url", held, ORG)
        return out


@pytest.fixture
def pg_mgr(backends: Any) -> Iterator[SecretManager]:
    """A manager on a PostgreSQL store (its own transactions, its own audit table)."""
    m = SecretManager(backends(), env="test", actor="tester")
    yield m
    m.close()


@pytest.mark.parametrize("store", ["mgr", "pg_mgr"])
def test_a_linked_secret_changed_mid_rotation_undoes_the_whole_promotion(
        cluster: Cluster, request: pytest.FixtureRequest, store: str):
    mgr = request.getfixturevalue(store)
    _user, old, url = pair(cluster, mgr)
    engine = RotationEngine(mgr, grace=GRACE, rotator_factory=lambda n: LinkRacer(mgr))

    with pytest.raises(RotationError, match="failed at step promote") as info:
        engine.rotate(NAME, ORG)

    assert "database_url" in info.value.message
    # Neither secret moved (the URL only by the racer's own write), and the target was
    # rolled back: the stored credential still logs in.
    assert mgr.get(NAME, ORG) == old
    assert mgr.describe(NAME, ORG).current_version == 1
    assert mgr.get("database_url", ORG) == url
    assert mgr.describe("database_url", ORG).current_version == 2
    assert url_logs_in(url)
    failed = [d for o, d in rotate_events(mgr, mgr.path(NAME, ORG)) if o == "failed"]
    assert failed[0]["undo"] == "rolled back in the target"


class NoTransactions:
    """The same SQLite store seen without its ``transaction``: a store like Vault's or a
    cloud's, where each write commits alone (keysafe.backends.base.Transactional)."""

    def __init__(self, inner: SQLiteBackend) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        if name == "transaction":
            raise AttributeError(name)
        return getattr(self._inner, name)


@pytest.fixture
def plain_mgr(tmp_path: Path) -> Iterator[SecretManager]:
    from keysafe.backends.base import Transactional

    inner = SQLiteBackend(tmp_path / "plain.db", KeyRing.generate(), synchronous="OFF")
    backend = NoTransactions(inner)
    assert not isinstance(backend, Transactional)
    m = SecretManager(backend, audit=AuditLog(SQLiteAuditStore(inner)),  # type: ignore[arg-type]
                      env="test", actor="tester")
    yield m
    m.close()


def test_without_store_transactions_a_linked_write_that_fails_is_audited(
        cluster: Cluster, plain_mgr: SecretManager):
    m = plain_mgr
    user, _old, url = pair(cluster, m)

    out = RotationEngine(m, grace=GRACE, rotator_factory=lambda n: LinkRacer(m)).rotate(
        NAME, ORG)

    # The new password is current and works; the URL lost its check-and-set to the
    # racer, which the audit log says (an operator re-runs or fixes it by hand).
    assert out.outcome == "rotated"
    new = m.get(NAME, ORG, fresh=True)
    assert logs_in(cluster.cred(user, new))
    assert m.get("database_url", ORG, fresh=True) == url
    events = rotate_events(m, m.path(NAME, ORG))
    failed = [d for o, d in events if o == "linked_failed"]
    assert len(failed) == 1
    assert failed[0]["linked"] == "database_url"
    assert "linked" not in next(d for o, d in events if o == "ok")
    assert "3 times" in failed[0]["reason"]


class OnceRacer(PostgresPasswordRotator):
    """Another writer stores the linked URL again once, after the promotion: the
    engine's first write of it loses its check-and-set, and it reads and follows the
    URL again."""

    def __init__(self, mgr: SecretManager) -> None:
        self.mgr = mgr
        self.raced = False

    def follow(self, ctx: RotationContext, new: str, held: str, name: str) -> str:
        out = super().follow(ctx, new, held, name)
        if name == "database_url" and not self.raced \
                and self.mgr.describe(NAME, ORG).current_version > 1:
            self.raced = True
            self.mgr.put("database_url", held, ORG)
        return out


def test_without_store_transactions_a_linked_write_lost_once_is_tried_again(
        cluster: Cluster, plain_mgr: SecretManager):
    m = plain_mgr
    user, _old, _url = pair(cluster, m)
    racer = OnceRacer(m)

    out = RotationEngine(m, grace=GRACE, rotator_factory=lambda n: racer).rotate(NAME, ORG)

    assert out.outcome == "rotated"
    assert racer.raced
    new = m.get(NAME, ORG, fresh=True)
    assert logs_in(cluster.cred(user, new))
    assert url_logs_in(m.get("database_url", ORG, fresh=True))
    assert m.describe("database_url", ORG).current_version == 3  # the racer's, then ours
    events = rotate_events(m, m.path(NAME, ORG))
    assert not [d for o, d in events if o == "linked_failed"]
    assert next(d for o, d in events if o == "ok")["linked"] == ["database_url"]


def test_without_store_transactions_a_crash_after_promotion_is_completed_on_resume(
        cluster: Cluster, plain_mgr: SecretManager):
    m = plain_mgr
    _user, old, url = pair(cluster, m)

    class CrashBeforeLinks(PostgresPasswordRotator):
        def follow(self, ctx: RotationContext, new: str, held: str, name: str) -> str:
            # Without transactions the engine asks only once the new value is
            # current: the process dies there, before any link is written.
            raise Crash

    with pytest.raises(Crash):
        RotationEngine(m, grace=GRACE,
                       rotator_factory=lambda n: CrashBeforeLinks()).rotate(NAME, ORG)
    new = m.get(NAME, ORG, fresh=True)
    assert new != old
    assert m.get("database_url", ORG, fresh=True) == url  # behind: the crash

    out = RotationEngine(m, grace=GRACE).rotate(NAME, ORG)

    assert out.outcome == "resumed"
    assert m.get(NAME, ORG, fresh=True) == new
    assert m.get("database_url", ORG, fresh=True) == url.replace(f":{old}@", f":{new}@")
    assert url_logs_in(m.get("database_url", ORG))


def test_linked_option_is_checked_when_configured():
    rot = PostgresPasswordRotator()
    rot.check_options(NAME, {"linked": "database_url, db_json"})
    for bad, why in [("database_password", "names the secret itself"),
                     ("database_url,database_url", "names a secret twice"),
                     ("../x", "rotator.linked")]:
        with pytest.raises(ConfigError, match=why):
            rot.check_options(NAME, {"linked": bad})


@pytest.mark.parametrize("url", [
    "postgresql+psycopg://app:old@db.internal/app",          # SQLAlchemy's form, no port
    "postgres://app:old@[::1]:6432/app?sslmode=require",      # IPv6, the short scheme
    "postgresql://app:old@/app?host=/var/run/postgresql",     # a socket, no host
])
def test_a_linked_url_keeps_everything_but_its_password(url: str):
    from keysafe.rotation.postgres import format_credential, parse_credential

    d, shape = parse_credential(url)
    out = format_credential(dict(d, password="n3w/p@ss"), shape)
    assert out == url.replace("app:old@", "app:n3w%2Fp%40ss@")


@pytest.mark.parametrize(("held", "message"), [
    ("jdbc:postgresql://db/app?user=app&password=x", "nor the same password"),
    ("host=db user=app password=x", "nor the same password"),
    ("postgresql://app:x@other-db:5432/app", "is for the server other-db:5432"),
])
def test_a_link_in_a_shape_or_for_a_server_it_cannot_keep_stops_at_create(
        cluster: Cluster, mgr: SecretManager, held: str, message: str):
    user, old = cluster.role("app_s")
    mgr.put_json(NAME, cluster.cred(user, old), ORG,
                 tags={"rotator": "postgres", "rotator.linked": "database_url"})
    mgr.put("database_url", held.replace("app:", f"{user}:"), ORG, check_format=False)
    with pytest.raises(RotationError, match=message) as info:
        RotationEngine(mgr, grace=GRACE).rotate(NAME, ORG)
    assert getattr(info.value, "step", None) == "create"
    assert "password=x" not in info.value.message
    assert logs_in(cluster.cred(user, old))
    assert mgr.get("database_url", ORG) == held.replace("app:", f"{user}:")


def test_without_store_transactions_one_failed_link_does_not_stop_the_others(
        cluster: Cluster, plain_mgr: SecretManager):
    m = plain_mgr
    _user, old, url = pair(cluster, m)
    m.put("db_url_copy", url, ORG)
    tags = dict(m.describe(NAME, ORG).tags, **{"rotator.linked": "database_url,db_url_copy"})
    m.put(NAME, old, ORG, tags=tags)

    RotationEngine(m, grace=GRACE, rotator_factory=lambda n: LinkRacer(m)).rotate(NAME, ORG)

    new = m.get(NAME, ORG, fresh=True)
    # database_url lost to the racer; the copy was still written and logs in.
    assert m.get("database_url", ORG, fresh=True) == url
    assert m.get("db_url_copy", ORG, fresh=True) == url.replace(f":{old}@", f":{new}@")
    assert url_logs_in(m.get("db_url_copy", ORG, fresh=True))
    events = rotate_events(m, m.path(NAME, ORG))
    assert [d["linked"] for o, d in events if o == "linked_failed"] == ["database_url"]
    assert next(d for o, d in events if o == "ok")["linked"] == ["db_url_copy"]
