"""``keysafe scan --database`` on SQLite files (spec 000: "no plaintext secrets in the
database"): findings located as table.column[row], masked, never printed; the file is
only read; hashes and short or ordinary values are not findings; bad usage exits 2."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
from tests.cli.conftest import Ks

CANARY = "sk-proj-" + "Q7vX2mK9pL4rT8wZ3nB6cF1hJ5dG0sY2aE7uR4iO9"
WEBHOOK = "Hq8Zr2Lx9Vt4Nw7Km3Pb6Yc1Fd5Gs0Ju"  # random, in a column named like a secret
BCRYPT = "$2b$12$" + "R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW"


@pytest.fixture
def app_db(home: Path) -> Path:
    """An application's database as spec 000 found it: integration credentials in plain
    text, beside user password hashes and ordinary data."""
    path = Path.cwd() / "app.sqlite3"
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE integrations (id INTEGER PRIMARY KEY, org TEXT, "
                  "provider TEXT, api_key TEXT, settings TEXT)")
        c.execute("INSERT INTO integrations VALUES (1, 'acme', 'github', NULL, '{}')")
        c.execute("INSERT INTO integrations VALUES (7, 'acme', 'openai', ?, ?)",
                  (CANARY, json.dumps({"model": "gpt-4o", "webhook_secret": WEBHOOK})))
        c.execute("CREATE TABLE users (email TEXT PRIMARY KEY, password TEXT, bio TEXT)")
        c.execute("INSERT INTO users VALUES ('ann@example.com', ?, 'likes tokens')",
                  (BCRYPT,))
        c.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, body TEXT)")
        c.executemany("INSERT INTO events (body) VALUES (?)",
                      [(f"user signed in from host-{i:05d}",) for i in range(50)])
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(
        path.parent.glob(path.name + "*")))).hexdigest()


def test_plaintext_secrets_are_found_masked_and_the_file_is_only_read(kc: Ks, app_db: Path):
    before = digest(app_db)

    r = kc("scan", "--database", str(app_db))

    assert r.code == 1, r.err
    assert "main.integrations.api_key[id=7]" in r.out
    assert "main.integrations.settings[id=7]" in r.out
    assert "sk-p…(49 chars)" in r.out
    assert "users" not in r.out  # a bcrypt hash is not a plaintext password
    assert "events" not in r.out
    assert "2 plaintext secret(s) found in" in r.err
    assert "3 table(s)" in r.err
    for text in (r.out, r.err):
        assert CANARY not in text
        assert CANARY[8:20] not in text
        assert WEBHOOK not in text
        assert WEBHOOK[4:16] not in text
    assert digest(app_db) == before


def test_json_report_locates_each_value(kc: Ks, app_db: Path):
    r = kc("scan", "--database", f"sqlite:///{app_db}", "--json")
    assert r.code == 1, r.err
    doc = json.loads(r.out)
    assert doc["mode"] == "database"
    found = {(f["path"], f["rule"], f["variable"], f["source"]) for f in doc["findings"]}
    assert ("main.integrations.api_key[id=7]", "openai-api-key", None, "database") in {
        (p, rule, v, s) for p, rule, v, s in found if rule != "high-entropy-assignment"}
    (hit,) = [f for f in doc["findings"] if f["variable"] == "webhook_secret"]
    assert hit["path"] == "main.integrations.settings[id=7]"
    # Line and column are within the value (the JSON text as stored).
    stored = json.dumps({"model": "gpt-4o", "webhook_secret": WEBHOOK})
    assert hit["column"] == stored.index(WEBHOOK) + 1
    assert doc["summary"]["tables"] == 3
    assert doc["summary"]["truncated"] == []
    assert doc["summary"]["database"] == str(app_db)
    assert CANARY not in r.out
    assert WEBHOOK not in r.out


def test_a_text_primary_key_never_names_the_row(kc: Ks, home: Path):
    # The key itself is the secret: the row is named by its rowid instead.
    path = Path.cwd() / "tokens.db"
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE api_tokens (token TEXT PRIMARY KEY, owner TEXT)")
        c.execute("INSERT INTO api_tokens VALUES (?, 'ann')", (CANARY,))
    r = kc("scan", "--database", str(path), "--json")
    assert r.code == 1
    (f,) = json.loads(r.out)["findings"]
    assert f["path"] == "main.api_tokens.token[rowid=1]"
    assert CANARY not in r.out


def test_max_rows_exclude_and_baseline(kc: Ks, app_db: Path):
    with sqlite3.connect(app_db) as c:
        c.execute("INSERT INTO events (body) VALUES (?)", (f"leaked {CANARY}",))
    cut = kc("scan", "--database", str(app_db), "--max-rows", "10", "--json")
    summary = json.loads(cut.out)["summary"]
    assert summary["truncated"] == ["main.events"]
    assert all("events" not in f["path"] for f in json.loads(cut.out)["findings"])
    human = kc("scan", "--database", str(app_db), "--max-rows", "10")
    assert "main.events: stopped at the --max-rows limit" in human.err

    full = json.loads(kc("scan", "--database", str(app_db), "--json").out)
    assert "main.events.body[id=51]" in {f["path"] for f in full["findings"]}

    r = kc("scan", "--database", str(app_db), "--exclude", "integrations",
           "--exclude", "events.body", "--json")
    assert r.code == 0, r.out
    assert json.loads(r.out)["summary"]["tables"] == 1

    base = Path.cwd() / "db-baseline.json"
    assert kc("scan", "--database", str(app_db), "--baseline", str(base),
              "--update-baseline").code == 0
    assert kc("scan", "--database", str(app_db), "--baseline", str(base)).code == 0
    assert CANARY not in base.read_text()


def test_the_url_can_come_from_a_variable_or_stdin(kc: Ks, app_db: Path,
                                                   monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("APP_DATABASE_URL", f"sqlite:///{app_db}")
    assert kc("scan", "--database", "env:APP_DATABASE_URL").code == 1
    assert kc("scan", "--database", "-", input=f"sqlite:///{app_db}\n").code == 1
    assert kc("scan", "--database", f"sqlite:///{app_db.name}").code == 1  # relative
    r = kc("scan", "--database", "env:NOT_SET_ANYWHERE", "--json")
    assert r.code == 2
    assert json.loads(r.err)["message"] == ("--database env:NOT_SET_ANYWHERE: the "
                                            "variable NOT_SET_ANYWHERE is not set")


@pytest.mark.parametrize(("args", "message"), [
    (["app.py"], "it takes no PATHS"),
    (["--git-history"], "it takes no PATHS"),
    (["--import", "--org", "acme"], "--import rewrites files"),
    (["--format", "sarif"], "SARIF locates findings in files"),
])
def test_bad_combinations_exit_2_and_read_nothing(kc: Ks, app_db: Path, args: list[str],
                                                  message: str):
    r = kc("scan", "--database", str(app_db), *args)
    assert r.code == 2
    assert message in r.err
    assert r.out == ""


@pytest.mark.parametrize(("url", "message"), [
    ("mysql://root:hunter2@127.0.0.1/app", "not mysql://"),
    ("missing.db", "missing.db: no such database file"),
    ("notes.txt", "is not a readable SQLite database"),
])
def test_a_database_that_cannot_be_read_exits_2(kc: Ks, home: Path, url: str, message: str):
    (Path.cwd() / "notes.txt").write_text("just some text, not a database\n" * 20)
    r = kc("scan", "--database", url, "--json")
    assert r.code == 2
    assert message in json.loads(r.err)["message"]
    assert "hunter2" not in r.err


def test_a_without_rowid_table_names_rows_by_position(kc: Ks, home: Path):
    path = Path.cwd() / "kv.db"
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID")
        c.execute("INSERT INTO kv VALUES ('openai', ?)", (CANARY,))
    r = kc("scan", "--database", str(path), "--json")
    assert r.code == 1
    (f,) = json.loads(r.out)["findings"]
    assert f["path"] == "main.kv.v[row 1]"


def test_a_key_that_holds_text_or_a_rowid_column_never_names_the_row(kc: Ks, home: Path):
    path = Path.cwd() / "odd.db"
    with sqlite3.connect(path) as c:
        # INTEGER affinity, but SQLite stores the text as it is: the key is the secret.
        c.execute("CREATE TABLE tok (token BIGINT PRIMARY KEY, api_key TEXT)")
        c.execute("INSERT INTO tok VALUES (?, ?)", (CANARY, CANARY))
        # A user column named rowid hides SQLite's own: another alias names the row.
        c.execute("CREATE TABLE notes (rowid TEXT, body TEXT)")
        c.execute("INSERT INTO notes VALUES (?, ?)", (CANARY, f"key {CANARY}"))
    r = kc("scan", "--database", str(path), "--json")
    assert r.code == 1
    paths = {f["path"] for f in json.loads(r.out)["findings"]}
    assert "main.tok.api_key[row 1]" in paths
    assert "main.notes.body[_rowid_=1]" in paths
    assert CANARY not in r.out
    assert CANARY[8:20] not in r.out


def test_a_wal_database_is_read_without_leaving_files(kc: Ks, home: Path):
    path = Path.cwd() / "wal.db"
    with sqlite3.connect(path) as c:
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("CREATE TABLE s (id INTEGER PRIMARY KEY, api_key TEXT)")
        c.execute("INSERT INTO s VALUES (1, ?)", (CANARY,))
    c.close()
    before = sorted(p.name for p in Path.cwd().iterdir())
    assert "wal.db-wal" not in before  # checkpointed and removed on close

    r = kc("scan", "--database", str(path), "--json")
    assert r.code == 1
    assert sorted(p.name for p in Path.cwd().iterdir()) == before

    # A writer holds the database open: the rows in its -wal file are read too.
    writer = sqlite3.connect(path)
    try:
        writer.execute("PRAGMA wal_autocheckpoint=0")
        writer.execute("INSERT INTO s VALUES (2, ?)", (CANARY.replace("Q7", "Z9"),))
        writer.commit()
        assert (Path.cwd() / "wal.db-wal").stat().st_size > 0
        found = json.loads(kc("scan", "--database", str(path), "--json").out)["findings"]
        assert {f["path"] for f in found} == {"main.s.api_key[id=1]", "main.s.api_key[id=2]"}
    finally:
        writer.close()


def test_a_dsn_or_an_escaped_url_is_not_echoed(kc: Ks, home: Path):
    r = kc("scan", "--database", "host=db user=app password=hunter2xyz dbname=app", "--json")
    assert r.code == 2
    assert "hunter2xyz" not in r.err
    assert "not shown: it may hold a password" in r.err
    (Path.cwd() / "a?b.db").write_bytes(b"")
    with sqlite3.connect(Path.cwd() / "a?b.db") as c:
        c.execute("CREATE TABLE t (api_key TEXT)")
    assert kc("scan", "--database", f"sqlite:///{Path.cwd()}/a%3Fb.db").code == 0
