"""The CLI on the PostgreSQL store: ``keysafe db status|upgrade``, exit codes and
messages when the database is unreachable, tokens kept in PostgreSQL, the audit chain.

As in tests/cli: the typer app in process (CliRunner) where that is enough, the
installed console script as a real process where exit codes and the fast path matter.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from keysafe.backends import pg_schema
from keysafe.backends.postgres import PostgresBackend, redact_url
from keysafe.cli import exitcodes
from keysafe.cli.app import app
from keysafe.crypto.keys import KeyRing
from keysafe.server.tokenstore import PostgresTokenDB, TokenStore

from .polling import wait_until

KEYSAFE = str(Path(sys.executable).parent / "keysafe")


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def home(tmp_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KEYSAFE_ACTOR", "tester")
    return tmp_home


@pytest.fixture
def master_key(monkeypatch: pytest.MonkeyPatch) -> tuple[str, KeyRing]:
    """KEYSAFE_MASTER_KEY for the CLI, and the same ring for a replica in the test."""
    value = "k1:" + base64.b64encode(os.urandom(32)).decode()
    monkeypatch.setenv("KEYSAFE_MASTER_KEY", value)
    return value, KeyRing.from_env_value(value)


@pytest.fixture
def kc(home: Path) -> Callable[..., Run]:
    """The typer app in process."""
    runner = CliRunner()

    def run(*args: str, input: str | None = None) -> Run:
        r = runner.invoke(app, list(args), input=input)
        return Run(r.exit_code, r.stdout, r.stderr)

    return run


@pytest.fixture
def ks(home: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Run]:
    """The installed console script, as a real process."""
    pycache = str(tmp_path_factory.getbasetemp() / "pycache")

    def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Run:
        full = dict(os.environ, PYTHONPYCACHEPREFIX=pycache, **(env or {}))
        full.pop("PYTHONDONTWRITEBYTECODE", None)
        p = subprocess.run([KEYSAFE, *args], input=(input or "").encode(),
                           capture_output=True, env=full, timeout=120)
        return Run(p.returncode, p.stdout.decode(), p.stderr.decode())

    return run


@pytest.fixture
def replica(pg_url: str) -> Iterator[Callable[[KeyRing], PostgresBackend]]:
    """Another process's view of the store: a PostgresBackend of the test's own."""
    made: list[PostgresBackend] = []

    def make(ring: KeyRing) -> PostgresBackend:
        b = PostgresBackend(pg_url, ring, pool_max=2)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


def tables(pg_server: Any, url: str) -> list[str]:
    with psycopg.connect(pg_server.url(url.rsplit("/", 1)[1]), autocommit=True) as c:
        return [r[0] for r in c.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'public' ORDER BY table_name")]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- keysafe db --------------------------------------------------------------------------
@pytest.mark.parametrize("auto_upgrade", ["0", "1"])
def test_db_status_on_a_fresh_database_shows_version_0(kc, pg_server, pg_url, monkeypatch,
                                                       auto_upgrade):
    monkeypatch.setenv("KEYSAFE_DATABASE_URL", pg_url)
    monkeypatch.setenv("KEYSAFE_DB_AUTO_UPGRADE", auto_upgrade)
    r = kc("db", "status", "--json")
    assert r.code == 0, r.err
    data = r.json()
    assert data["backend"] == "postgres"
    assert (data["schema_version"], data["before"], data["applied"]) == (0, 0, [])
    assert data["latest"] == pg_schema.LATEST
    assert data["database"] == redact_url(pg_url)
    human = kc("db", "status")
    assert human.code == 0
    said = human.out + human.err  # human messages go to stderr
    assert "schema version 0" in said
    assert "keysafe db upgrade" in said
    for out in (r.out, r.err, human.out, human.err):
        assert pg_server.password not in out
    assert tables(pg_server, pg_url) == []  # status changes nothing


def test_db_upgrade_applies_once_then_nothing(kc, pg_server, pg_url, monkeypatch):
    monkeypatch.setenv("KEYSAFE_DATABASE_URL", pg_url)
    first = kc("db", "upgrade", "--json")
    assert first.code == 0, first.err
    data = first.json()
    assert data["applied"] == [v for v, _, _ in pg_schema.MIGRATIONS] == [1, 2, 3, 4]
    assert (data["before"], data["schema_version"]) == (0, pg_schema.LATEST)
    created = tables(pg_server, pg_url)
    assert {"secrets", "versions", "audit", "audit_head", "meta", "tokens", "jobs",
            "rate_events", "keysafe_schema"} <= set(created)

    second = kc("db", "upgrade", "--json")
    assert second.code == 0, second.err
    again = second.json()
    assert again["applied"] == []
    assert again["before"] == again["schema_version"] == pg_schema.LATEST
    assert tables(pg_server, pg_url) == created

    human = kc("db", "upgrade")
    assert human.code == 0
    assert "up to date" in human.out + human.err
    status = kc("db", "status", "--json")
    assert status.json()["schema_version"] == pg_schema.LATEST
    again_status = kc("db", "status")
    assert "up to date" in again_status.out + again_status.err
    for r in (first, second, human, status):
        assert pg_server.password not in r.out + r.err


def test_db_upgrade_reports_what_it_applied(kc, pg_url, monkeypatch):
    monkeypatch.setenv("KEYSAFE_DATABASE_URL", pg_url)
    r = kc("db", "upgrade")
    assert r.code == 0, r.err
    said = r.out + r.err
    assert f"{redact_url(pg_url)}: schema 0 -> {pg_schema.LATEST} (applied 1, 2, 3, 4)" in said


def test_then_a_replica_without_auto_upgrade_starts(kc, pg_url, monkeypatch, master_key):
    monkeypatch.setenv("KEYSAFE_DATABASE_URL", pg_url)
    monkeypatch.setenv("KEYSAFE_DB_AUTO_UPGRADE", "0")
    refused = kc("ls", "--org", "acme")
    assert refused.code == exitcodes.CONFIG
    assert "keysafe db upgrade" in refused.err
    assert kc("db", "upgrade").code == 0
    assert kc("put", "api_token", "--org", "acme", input="after-upgrade").code == 0
    assert kc("ls", "--org", "acme").code == 0


@pytest.mark.parametrize("verb", ["upgrade", "status"])
def test_db_with_the_sqlite_backend_has_nothing_to_do(kc, home, verb):
    r = kc("db", verb)
    assert r.code == 0, r.err
    assert "nothing to do" in r.out + r.err
    j = kc("db", verb, "--json")
    assert j.code == 0
    assert j.json()["backend"] == "sqlite"
    assert j.json()["applied"] == []
    assert not (home / "keysafe.db").exists()  # it did not create a store either


@pytest.mark.parametrize("args", [["db", "status"], ["db", "upgrade"],
                                  ["db", "status", "--json"], ["db", "upgrade", "--json"]])
def test_unreachable_database_exits_7_without_the_password(ks, home, args):
    password = "Distinctive-Pa55word-" + secrets.token_hex(4)
    url = f"postgresql://keysafe:{password}@127.0.0.1:{closed_port()}/keysafe"
    r = ks(*args, env={"KEYSAFE_DATABASE_URL": url})
    assert r.code == exitcodes.UNAVAILABLE == 7, (r.out, r.err)
    assert password not in r.out + r.err
    assert "keysafe:***@127.0.0.1" in r.err
    if "--json" in args:
        err = json.loads(r.err)
        assert err["error"] == "backend_unavailable"
        assert err["exit_code"] == 7
    else:
        assert r.err.startswith("keysafe: error:")


# -- tokens in PostgreSQL ------------------------------------------------------------------
def test_tokens_from_the_cli_live_in_postgres(kc, home, pg_server, pg_url, monkeypatch,
                                              master_key, replica):
    _, ring = master_key
    monkeypatch.setenv("KEYSAFE_DATABASE_URL", pg_url)
    other = TokenStore(PostgresTokenDB(replica(ring)))  # a running server replica

    created = kc("token", "create", "--name", "agent-runner", "--role", "service",
                 "--org", "acme", "--json")
    assert created.code == 0, created.err
    info = created.json()
    token, tid = info["token"], info["id"]
    ident = other.authenticate(token)
    assert ident is not None
    assert (ident.name, ident.token_id, ident.orgs) == ("agent-runner", tid,
                                                        frozenset({"acme"}))
    assert not (home / "server.db").exists()  # not the embedded token database

    listed = kc("token", "list", "--json")
    assert listed.code == 0, listed.err
    rows = {t["id"]: t for t in listed.json()}
    assert rows[tid]["name"] == "agent-runner"
    assert rows[tid]["revoked_at"] is None
    assert token not in listed.out
    secret_part = token.split("_", 2)[2]
    with psycopg.connect(pg_server.url(pg_url.rsplit("/", 1)[1]), autocommit=True) as c:
        stored = c.execute("SELECT t::text FROM tokens t").fetchall()
    assert len(stored) == 1
    assert secret_part not in stored[0][0]  # only its digest is kept

    revoked = kc("token", "revoke", tid, "--json")
    assert revoked.code == 0, revoked.err
    assert revoked.json()["revoked_at"] is not None
    # The running replica had it cached; the revocation reaches it all the same.
    assert wait_until(lambda: other.authenticate(token) is None), \
        "a token revoked from the CLI still authenticates on a running replica"
    human = kc("token", "list")
    assert human.code == 0
    assert tid in human.out
    assert kc("token", "revoke", "nosuchid").code == exitcodes.NOT_FOUND
    for r in (created, listed, revoked, human):
        assert pg_server.password not in r.out + r.err


# -- values and the audit chain through the CLI -------------------------------------------
def test_put_and_get_through_the_console_script(ks, pg_url, master_key, replica):
    _, ring = master_key
    env = {"KEYSAFE_DATABASE_URL": pg_url}
    put = ks("put", "api_token", "--org", "acme", input="from-the-cli", env=env)
    assert put.code == 0, put.err
    got = ks("get", "api_token", "--org", "acme", env=env)  # the fast path
    assert got.code == 0, got.err
    assert got.out.rstrip("\n") == "from-the-cli"
    assert replica(ring).get("keysafe/local/acme/shared/api_token") == ("from-the-cli", 1)
    missing = ks("get", "nothing_here", "--org", "acme", env=env)
    assert missing.code == exitcodes.NOT_FOUND


def test_audit_verify_on_postgres_detects_an_edit(kc, pg_server, pg_url, monkeypatch,
                                                  master_key):
    monkeypatch.setenv("KEYSAFE_DATABASE_URL", pg_url)
    for i in range(3):
        assert kc("put", "api_token", "--org", "acme", input=f"value-{i}").code == 0
    ok = kc("audit", "verify", "--json")
    assert ok.code == 0, ok.err
    assert ok.json()["ok"] is True
    assert ok.json()["checked"] >= 3
    with psycopg.connect(pg_server.url(pg_url.rsplit("/", 1)[1]), autocommit=True) as c:
        c.execute("UPDATE audit SET actor = 'x' WHERE seq = 2")
    bad = kc("audit", "verify", "--json")
    assert bad.code == exitcodes.INTEGRITY, (bad.out, bad.err)
    assert 2 in [p["seq"] for p in bad.json()["problems"]]


def test_audit_anchors_on_postgres(kc, pg_server, pg_url, monkeypatch, master_key,
                                   tmp_path):
    """An anchor on the PostgreSQL store is its own durable record; a log cut short
    behind it (the head row moved back too, so the chain alone still verifies) fails."""
    monkeypatch.setenv("KEYSAFE_DATABASE_URL", pg_url)
    for i in range(3):
        assert kc("put", "api_token", "--org", "acme", input=f"value-{i}").code == 0
    anchors = tmp_path / "anchors.jsonl"
    taken = kc("audit", "anchor", "--out", str(anchors), "--json")
    assert taken.code == 0, taken.err
    seq = taken.json()["seq"]
    assert kc("put", "api_token", "--org", "acme", input="later").code == 0
    ok = kc("audit", "verify", "--anchors", str(anchors), "--json")
    assert ok.code == 0, ok.err
    assert "1 of 1 anchor(s) confirmed" in ok.json()["notes"]
    with psycopg.connect(pg_server.url(pg_url.rsplit("/", 1)[1]), autocommit=True) as c:
        keep = seq - 2
        h = c.execute("SELECT hash FROM audit WHERE seq = %s", (keep,)).fetchone()[0]
        c.execute("DELETE FROM audit WHERE seq > %s", (keep,))
        c.execute("UPDATE audit_head SET seq = %s, hash = %s", (keep, h))
    assert kc("audit", "verify").code == 0
    bad = kc("audit", "verify", "--anchors", str(anchors), "--json")
    assert bad.code == exitcodes.INTEGRITY, (bad.out, bad.err)
    assert [p["seq"] for p in bad.json()["problems"]] == [seq]
