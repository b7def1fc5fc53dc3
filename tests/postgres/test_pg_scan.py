"""``keysafe scan --database`` on a real PostgreSQL server (spec 000's application
database with integration credentials in plain text): text, varchar and jsonb columns,
rows named by integer key or ctid, tables the role may not read skipped, the data
unchanged, and a refused login reported without its password."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from keysafe.scanning import scan_database
from keysafe.testing.postgres import PgServer

KEYSAFE = str(Path(sys.executable).parent / "keysafe")
CANARY = "sk-proj-" + "Q7vX2mK9pL4rT8wZ3nB6cF1hJ5dG0sY2aE7uR4iO9"
WEBHOOK = "Hq8Zr2Lx9Vt4Nw7Km3Pb6Yc1Fd5Gs0Ju"
SCRAM = ("SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0$" + "A" * 43 + "=:" + "B" * 43 + "=")


@pytest.fixture
def app_db(pg_server: PgServer) -> Iterator[tuple[str, str]]:
    """(url of a read-only reporting role, database name)."""
    db = pg_server.create_db()
    role, password = f"scanner_{uuid.uuid4().hex[:8]}", "pw-" + uuid.uuid4().hex
    sql = psycopg.sql
    with psycopg.connect(pg_server.url(db), autocommit=True) as c:
        c.execute("CREATE TABLE integrations (id serial PRIMARY KEY, org text, "
                  "api_key varchar(200), config jsonb)")
        c.execute("INSERT INTO integrations (org, api_key, config) VALUES "
                  "('acme', NULL, '{}'), ('acme', %s, %s)",
                  (CANARY, json.dumps({"region": "eu", "webhook_secret": WEBHOOK})))
        c.execute("CREATE TABLE users (email text PRIMARY KEY, password text)")
        c.execute("INSERT INTO users VALUES ('ann@example.com', %s)", (SCRAM,))
        c.execute("CREATE TABLE tokens (token text PRIMARY KEY, owner text)")
        c.execute("INSERT INTO tokens VALUES (%s, 'ann')", (CANARY,))
        c.execute("CREATE SCHEMA billing")
        c.execute("CREATE TABLE billing.keys (id bigint PRIMARY KEY, stripe_key text)")
        c.execute("INSERT INTO billing.keys VALUES (1, %s)", (CANARY,))
        c.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(password)))
        # The role may read public's tables but not billing's: those are skipped.
        c.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(
            sql.Identifier(role)))
    try:
        yield (f"postgresql://{role}:{password}@127.0.0.1:{pg_server.port}/{db}", db)
    finally:
        pg_server.drop_db(db)
        with pg_server.admin() as c:
            c.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def snapshot(pg_server: PgServer, db: str) -> list[tuple[object, ...]]:
    with psycopg.connect(pg_server.url(db)) as c:
        return [*c.execute("SELECT * FROM integrations ORDER BY id").fetchall(),
                *c.execute("SELECT * FROM users").fetchall(),
                *c.execute("SELECT * FROM tokens").fetchall()]


def test_plaintext_columns_are_found_and_nothing_changes(pg_server: PgServer,
                                                         app_db: tuple[str, str]):
    url, db = app_db
    before = snapshot(pg_server, db)

    report = scan_database(url)

    where = {(f.path, f.rule if f.rule != "high-entropy-assignment" else f.variable)
             for f in report.findings}
    assert where == {
        ("public.integrations.api_key[id=2]", "openai-api-key"),
        ("public.integrations.config[id=2]", "webhook_secret"),
        ("public.tokens.token[ctid=(0,1)]", "openai-api-key"),  # a text key: by ctid
    }
    assert report.tables == 3  # billing.keys: not readable by the role, so not listed
    assert report.truncated == []
    assert all(f.source == "database" for f in report.findings)
    assert snapshot(pg_server, db) == before
    assert report.database is not None
    assert "pw-" not in report.database


def test_cli_reads_the_url_from_a_variable_and_never_prints_a_value(
        pg_server: PgServer, app_db: tuple[str, str], tmp_path: Path):
    url, _ = app_db
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KEYSAFE_HOME": str(tmp_path),
           "APP_DB": url}
    for fmt in ([], ["--json"]):
        p = subprocess.run([KEYSAFE, "scan", "--database", "env:APP_DB", *fmt], env=env,
                           capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert p.returncode == 1, p.stderr
        for text in (p.stdout, p.stderr):
            assert CANARY not in text
            assert CANARY[8:20] not in text
            assert WEBHOOK not in text
            assert url.split(":")[2].split("@")[0] not in text  # the role's password
    doc = json.loads(p.stdout)
    assert len(doc["findings"]) == 3


def test_a_refused_login_exits_2_without_the_password(pg_server: PgServer,
                                                      app_db: tuple[str, str],
                                                      tmp_path: Path):
    url, _ = app_db
    wrong = "wrong-" + uuid.uuid4().hex
    bad = url.replace(url.split(":")[2].split("@")[0], wrong)
    p = subprocess.run([KEYSAFE, "scan", "--database", "-", "--json"], input=bad + "\n",
                       capture_output=True, text=True, timeout=60, cwd=tmp_path,
                       env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                            "KEYSAFE_HOME": str(tmp_path)})
    assert p.returncode == 2
    err = json.loads(p.stderr)
    assert "cannot connect to postgresql://" in err["message"]
    assert "password authentication failed" in err["message"]
    assert wrong not in p.stderr


def test_grants_partitions_and_citext(pg_server: PgServer, app_db: tuple[str, str]):
    url, db = app_db
    role = url.split("//")[1].split(":")[0]
    sql = psycopg.sql
    with psycopg.connect(pg_server.url(db), autocommit=True) as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS citext")
        c.execute("CREATE TABLE notes (id int PRIMARY KEY, body citext)")
        c.execute("INSERT INTO notes VALUES (1, %s)", (f"key: {CANARY}",))
        # Partitions: each row found once, in its partition.
        c.execute("CREATE TABLE logs (id int, line text) PARTITION BY RANGE (id)")
        c.execute("CREATE TABLE logs_a PARTITION OF logs FOR VALUES FROM (0) TO (100)")
        c.execute("INSERT INTO logs VALUES (5, %s)", (f"sent {CANARY}",))
        # INSERT only: nothing this role may read.
        c.execute("CREATE TABLE inbox (id int PRIMARY KEY, body text)")
        c.execute("INSERT INTO inbox VALUES (1, %s)", (CANARY,))
        c.execute(sql.SQL("REVOKE ALL ON inbox FROM {}").format(sql.Identifier(role)))
        c.execute(sql.SQL("GRANT INSERT ON inbox TO {}").format(sql.Identifier(role)))
        # One column granted, not the key: the row is named by its position.
        c.execute("CREATE TABLE profiles (id int PRIMARY KEY, token text)")
        c.execute("INSERT INTO profiles VALUES (9, %s)", (CANARY,))
        c.execute(sql.SQL("REVOKE ALL ON profiles FROM {}").format(sql.Identifier(role)))
        c.execute(sql.SQL("GRANT SELECT (token) ON profiles TO {}").format(
            sql.Identifier(role)))
        for t in ("notes", "logs", "logs_a"):
            c.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(
                sql.Identifier(t), sql.Identifier(role)))

    report = scan_database(url)

    paths = {f.path for f in report.findings}
    assert "public.notes.body[id=1]" in paths
    assert [p for p in paths if ".logs" in p] == ["public.logs_a.line[ctid=(0,1)]"]
    assert "public.profiles.token[row 1]" in paths
    assert not [p for p in paths if "inbox" in p]
    assert report.unreadable == []  # inbox is not listed at all: no column readable


def test_an_unencoded_at_in_the_password_is_refused_unshown(pg_server: PgServer):
    bad = f"postgresql://app:s3cr@et-pw@127.0.0.1:{pg_server.port}/postgres"
    with pytest.raises(Exception, match="not percent-encoded") as info:
        scan_database(bad)
    assert "et-pw" not in str(info.value)
    assert "s3cr" not in str(info.value)


def test_a_locked_table_is_skipped_and_named_and_the_rest_is_read(
        pg_server: PgServer, app_db: tuple[str, str]):
    url, db = app_db
    with psycopg.connect(pg_server.url(db)) as holder:
        # DDL in progress elsewhere: the scan waits lock_timeout (5 s), then moves on.
        holder.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        report = scan_database(url)
        holder.rollback()
    assert len(report.unreadable) == 1
    assert report.unreadable[0].startswith("public.users: ")
    assert "lock" in report.unreadable[0]
    assert "public.integrations.api_key[id=2]" in {f.path for f in report.findings}
    assert "public.tokens.token[ctid=(0,1)]" in {f.path for f in report.findings}
