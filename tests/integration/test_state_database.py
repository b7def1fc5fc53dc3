"""KEYSAFE_STATE_DATABASE_URL: replicas in front of a cloud store (AWS Secrets Manager
on moto's server) share one PostgreSQL (a real server on loopback) for what the cloud
store cannot keep: one audit chain, the tokens, job locks and change notices."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aws_fixtures import MotoAws, aws  # noqa: F401 - aws: module fixture
from typer.testing import CliRunner

from keysafe import SecretManager, load_settings
from keysafe.backends.postgres import PostgresBackend
from keysafe.cli.app import app as cli_app
from keysafe.server.tokenstore import open_token_store
from keysafe.testing.postgres import PgServer

ORG = "acme"
CANARY = "canary-state-db-" + "z" * 24


@pytest.fixture
def replicas(pg_server: PgServer, aws: MotoAws, tmp_path: Path,  # noqa: F811 - the fixture
             monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Settings for two replicas (each its own KEYSAFE_HOME) on one moto and one state
    database; the values cached for a long time, so only a notice can refresh them."""
    pg = pg_server
    db = pg.create_db()
    for var in list(os.environ):
        if var.startswith("KEYSAFE_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws.url)
    common = {"KEYSAFE_BACKEND": "aws-sm", "KEYSAFE_STATE_DATABASE_URL": pg.url(db),
              "KEYSAFE_MASTER_KEY": "k1:" + base64.b64encode(os.urandom(32)).decode(),
              "KEYSAFE_CACHE_TTL": "300", "KEYSAFE_APP": f"st{db[-6:]}"}
    homes = [tmp_path / "a", tmp_path / "b"]

    def settings(i: int, **extra: str) -> Any:
        with monkeypatch.context() as m:
            for k, v in {**common, "KEYSAFE_HOME": str(homes[i]),
                         "KEYSAFE_ACTOR": f"replica-{'ab'[i]}", **extra}.items():
                m.setenv(k, v)
            return load_settings()

    yield {"settings": settings, "homes": homes, "url": pg.url(db), "env": common}
    pg.drop_db(db)


def test_two_replicas_share_audit_chain_and_cache_notices(replicas: dict[str, Any]) -> None:
    settings = replicas["settings"]
    with SecretManager.from_settings(settings(0)) as a, \
            SecretManager.from_settings(settings(1)) as b:
        assert isinstance(a.state, PostgresBackend)
        a.put("openai_api_key", "sk-" + "A" * 40, ORG)
        assert b.get("openai_api_key", ORG) == "sk-" + "A" * 40  # now cached in b
        a.put("openai_api_key", "sk-" + "B" * 40, ORG)
        # b's copy is dropped by a's notice, not by its 300 s TTL.
        deadline = time.monotonic() + 5
        while b.get("openai_api_key", ORG) != "sk-" + "B" * 40:
            assert time.monotonic() < deadline, "no change notice reached replica b"
            time.sleep(0.02)
        b.put("db_password", CANARY, ORG)
        a.audit.flush()
        b.audit.flush()
        # One chain holds both replicas' records, and it verifies.
        actors = {e.actor for e in a.audit_query()}
        assert {"replica-a", "replica-b"} <= actors
        assert a.audit_verify().ok
        assert CANARY not in repr([e.to_dict() for e in b.audit_query()])
    # Nothing of it is kept on either replica's disk.
    for home in replicas["homes"]:
        assert not (home / "audit.db").exists()
        assert not (home / "server.db").exists()


def test_tokens_are_shared_and_revocation_reaches_every_replica(
        replicas: dict[str, Any]) -> None:
    settings = replicas["settings"]
    with SecretManager.from_settings(settings(0)) as a, \
            SecretManager.from_settings(settings(1)) as b:
        ta = open_token_store(settings(0), a.state)
        tb = open_token_store(settings(1), b.state)
        token, info = ta.create(name="svc", roles=["service"], orgs=[ORG], created_by="t")
        ident = tb.authenticate(token)
        assert ident is not None
        assert ident.name == "svc"
        ta.revoke(info.id)
        deadline = time.monotonic() + 5
        while tb.authenticate(token) is not None:
            assert time.monotonic() < deadline, "revocation did not reach replica b"
            time.sleep(0.02)


def test_cli_and_configuration(replicas: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                               tmp_path: Path) -> None:
    env = {**replicas["env"], "KEYSAFE_HOME": str(tmp_path / "cli")}
    runner = CliRunner()
    r = runner.invoke(cli_app, ["db", "status", "--json"], env=env)
    assert r.exit_code == 0, r.output
    assert '"state_database": true' in r.output
    r = runner.invoke(cli_app, ["token", "create", "--name", "ops", "--role", "writer",
                                "--org", ORG], env=env)
    assert r.exit_code == 0, r.output
    # The token is in the state database: another replica's settings find it.
    settings = replicas["settings"]
    with SecretManager.from_settings(settings(1)) as b:
        names = [t.name for t in open_token_store(settings(1), b.state).list()]
    assert "ops" in names
    # doctor never shows the URL (it may carry a password).
    r = runner.invoke(cli_app, ["doctor"], env=env)
    assert replicas["url"] not in r.output
    # The embedded store keeps its own state: the setting is not its (a migration from
    # it may run with the setting there for the other side).
    with monkeypatch.context() as m:
        for k, v in {**env, "KEYSAFE_BACKEND": "sqlite"}.items():
            m.setenv(k, v)
        settings = load_settings()
        with SecretManager.from_settings(settings) as local:
            assert local.state is None
            store = open_token_store(settings, local.backend)
            assert type(store._db).__name__ == "SQLiteTokenDB"  # server.db, not the URL
            store.close()


def test_a_write_is_refused_while_the_state_database_is_down(
        replicas: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The audit record follows the cloud store's write, which cannot be undone: with
    the state database unreachable the write is refused first, and nothing changes."""
    from fastapi.testclient import TestClient

    from keysafe.errors import BackendUnavailable
    from keysafe.server.app import create_app

    with SecretManager.from_settings(replicas["settings"](0)) as a:
        a.put("openai_api_key", "sk-" + "A" * 40, ORG)

        def down() -> None:
            raise BackendUnavailable("PostgreSQL store: connection refused")

        monkeypatch.setattr(a.state, "ping", down)
        with pytest.raises(BackendUnavailable):
            a.put("openai_api_key", "sk-" + "C" * 40, ORG)
        assert a.backend.get(a.path("openai_api_key", ORG))[0] == "sk-" + "A" * 40
    app = create_app(replicas["settings"](1))
    with TestClient(app) as c:
        assert c.get("/readyz").status_code == 200
        monkeypatch.setattr(app.keysafe.manager.state, "ping", down)
        assert c.get("/readyz").status_code == 503  # out of the load balancer


def test_the_server_keeps_tokens_and_job_locks_in_the_state_database(
        replicas: dict[str, Any]) -> None:
    from fastapi.testclient import TestClient

    from keysafe.server.app import create_app
    from keysafe.server.tokenstore import PostgresTokenDB

    app = create_app(replicas["settings"](0))
    with TestClient(app):
        state = app.keysafe
        assert type(state.tokens._db) is PostgresTokenDB
        assert isinstance(state.scheduler.backend, PostgresBackend)  # advisory locks
        assert state.manager.cache.enabled  # notices arrive, so replicas may cache
