"""`keysafe audit` filters and formats; `keysafe audit verify` finds tampering."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import typer

from keysafe.cli import exitcodes
from keysafe.cli.options import parse_time


def _lines(r) -> list[dict]:
    return [json.loads(line) for line in r.out.splitlines()]


@pytest.fixture
def history(kc, put, monkeypatch):
    put("a", "1")
    put("b", "2", org="other")
    kc("get", "a", "--org", "acme")
    kc("get", "missing", "--org", "acme")
    monkeypatch.setenv("KEYSAFE_ACTOR", "someone-else")
    kc("rm", "a", "--org", "acme")
    monkeypatch.setenv("KEYSAFE_ACTOR", "tester")


def test_audit_json_lines_and_filters(kc, history):
    every = _lines(kc("audit", "--json"))
    assert [e["seq"] for e in every] == list(range(1, len(every) + 1))
    assert {"seq", "ts", "actor", "action", "path", "version", "outcome", "org", "client",
            "hash", "prev_hash"} <= set(every[0])
    assert all(e["client"] == "keysafe-cli" for e in every if e["action"] != "init")

    acme = _lines(kc("audit", "--org", "acme", "--json"))
    assert acme
    assert all(e["org"] == "acme" for e in acme)
    reads = _lines(kc("audit", "--action", "read", "--json"))
    assert {(e["path"], e["outcome"]) for e in reads} == {
        ("keysafe/local/acme/shared/a", "ok"),
        ("keysafe/local/acme/shared/missing", "not_found")}
    by_path = _lines(kc("audit", "--path", "keysafe/local/acme/shared/a", "--json"))
    assert {e["action"] for e in by_path} == {"write", "read", "delete"}
    prefix = _lines(kc("audit", "--path", "keysafe/local/other/", "--json"))
    assert [e["action"] for e in prefix] == ["write"]
    mine = _lines(kc("audit", "--actor", "someone-else", "--json"))
    assert [e["action"] for e in mine] == ["delete"]
    failed = _lines(kc("audit", "--outcome", "not_found", "--json"))
    assert len(failed) == 1

    last2 = _lines(kc("audit", "--limit", "2", "--json"))
    assert [e["seq"] for e in last2] == [e["seq"] for e in every[-2:]]
    assert _lines(kc("audit", "--since", "1h", "--json")) == every
    assert _lines(kc("audit", "--until", "1h", "--json")) == []
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert _lines(kc("audit", "--since", future, "--json")) == []
    assert _lines(kc("audit", "--until", future, "--json")) == every


def test_audit_table(kc, history):
    r = kc("audit", "--org", "acme")
    assert r.code == 0
    assert "keysafe/local/acme/shared/a" in r.out
    assert "not_found" in r.out
    assert "someone-else" in r.out
    few = kc("audit", "--limit", "1")
    assert "showing the newest 1 records" in few.err
    none = kc("audit", "--actor", "nobody")
    assert none.code == 0
    assert "no audit records match" in none.err


def test_parse_time_forms():
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert parse_time("90s", option="--since", now=now) == now - timedelta(seconds=90)
    assert parse_time("15m", option="--since", now=now) == now - timedelta(minutes=15)
    assert parse_time("1h", option="--since", now=now) == now - timedelta(hours=1)
    assert parse_time("7d", option="--since", now=now) == now - timedelta(days=7)
    assert parse_time("2w", option="--since", now=now) == now - timedelta(weeks=2)
    assert parse_time("2024-05-01T10:00:00Z", option="--since") == datetime(
        2024, 5, 1, 10, tzinfo=UTC)
    assert parse_time("2024-05-01T10:00:00", option="--since") == datetime(
        2024, 5, 1, 10, tzinfo=UTC)
    assert parse_time("2024-05-01T10:00:00+02:00", option="--since") == datetime(
        2024, 5, 1, 8, tzinfo=UTC)
    assert parse_time(None, option="--since") is None
    with pytest.raises(typer.BadParameter):
        parse_time("last tuesday", option="--since")


def test_verify_ok(ks, put):
    put("a", "1")
    r = ks("audit", "verify")
    assert r.code == 0
    assert "audit chain intact" in r.out
    j = ks("audit", "verify", "--json")
    assert j.code == 0
    assert j.json()["ok"] is True
    assert j.json()["problems"] == []


def test_verify_detects_an_edited_record(ks, put, home: Path):
    for v in ("1", "2", "3"):
        put("a", v)
    with sqlite3.connect(home / "keysafe.db") as db:
        db.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 2")
    r = ks("audit", "verify")
    assert r.code == exitcodes.INTEGRITY
    assert "record 2 was edited" in r.out
    assert "keysafe: error: the audit chain is broken" in r.err
    assert "first at record 2" in r.err
    j = ks("audit", "verify", "--json")
    assert j.code == exitcodes.INTEGRITY
    assert [p["seq"] for p in j.json()["problems"]] == [2]
    assert json.loads(j.err)["error"] == "integrity_error"


def test_verify_detects_a_removed_record(ks, put, home: Path):
    for v in ("1", "2", "3"):
        put("a", v)
    with sqlite3.connect(home / "keysafe.db") as db:
        db.execute("DELETE FROM audit WHERE seq = 2")
    r = ks("audit", "verify")
    assert r.code == exitcodes.INTEGRITY
    assert "record 2 removed" in r.out


def test_archive_then_verify_both(kc, put, home: Path, tmp_path: Path):
    for v in ("1", "2", "3"):
        put("a", v)
    dest = tmp_path / "audit-2026.jsonl"
    r = kc("audit", "archive", "--before", "0s", "--to", str(dest))
    assert r.code == 0, r.err
    assert "archived 3 audit records (1..3" in r.err
    assert kc("audit", "verify").code == 0
    v = kc("audit", "verify", "--archive", str(dest))
    assert v.code == 0
    assert "archived audit records intact: 3 records checked" in v.out
    put("a", "4")
    j = kc("audit", "archive", "--before", "0s", "--to", str(tmp_path / "b.jsonl"), "--json")
    assert j.code == 0
    assert {k: json.loads(j.out)[k] for k in ("records", "first", "through")} == {
        "records": 2, "first": 4, "through": 5}
    both = kc("audit", "verify", "--archive", str(dest), "--archive",
              str(tmp_path / "b.jsonl"), "--json")
    assert both.code == 0
    assert json.loads(both.out)["checked"] == 5
    assert json.loads(both.out)["notes"] == []
    # The first file alone: it checks, and says what it could not.
    alone = kc("audit", "verify", "--archive", str(dest))
    assert alone.code == 0
    assert ("note: these files end at record 3, and the store's chain starts after record 5"
            in " ".join(alone.err.split()))
    # Nothing older than a day: nothing to do.
    none = kc("audit", "archive", "--before", "1d", "--to", str(tmp_path / "c.jsonl"))
    assert none.code == 0
    assert "no audit records older than" in none.err


def test_db_compact_after_an_archive(kc, put, home: Path, tmp_path: Path, monkeypatch):
    for v in range(200):
        put(f"k{v % 5}", "x" * 500 + str(v))
    assert kc("audit", "archive", "--before", "0s", "--to", str(tmp_path / "a.jsonl")).code == 0
    r = kc("db", "compact")
    assert r.code == 0, r.err
    assert f"compacted {home / 'keysafe.db'}:" in r.err
    assert " MiB -> " in r.err
    j = kc("db", "compact", "--json")
    assert j.code == 0
    body = json.loads(j.out)
    assert (body["compacted"], body["store"]) == (True, "sqlite")
    assert body["bytes_after"] <= body["bytes_before"]
    assert kc("audit", "verify").code == 0
    assert [e["action"] for e in _lines(kc("audit", "--json"))][-2:] == ["compact", "compact"]
    monkeypatch.setenv("KEYSAFE_BACKEND", "memory")
    m = kc("db", "compact", "--json")
    assert m.code == 0
    assert json.loads(m.out) == {"backend": "memory", "compacted": False,
                                 "note": "the memory store has nothing to compact"}


def test_archive_bad_input_exits_2_and_changes_nothing(kc, put, tmp_path: Path):
    put("a", "1")
    taken = tmp_path / "taken.jsonl"
    taken.write_text("x\n")
    r = kc("audit", "archive", "--before", "0s", "--to", str(taken))
    assert r.code == exitcodes.USAGE
    assert "already exists" in r.err
    r = kc("audit", "archive", "--before", "yesterday", "--to", str(tmp_path / "n.jsonl"))
    assert r.code == exitcodes.USAGE
    assert "--before" in r.err
    r = kc("audit", "archive", "--to", str(tmp_path / "n.jsonl"))
    assert r.code == exitcodes.USAGE
    assert not (tmp_path / "n.jsonl").exists()
    assert taken.read_text() == "x\n"
    assert _lines(kc("audit", "--json"))[0]["seq"] == 1  # nothing archived


def test_archive_refuses_a_broken_chain_and_verify_flags_a_bad_archive(
        kc, put, home: Path, tmp_path: Path):
    for v in ("1", "2", "3"):
        put("a", v)
    with sqlite3.connect(home / "keysafe.db") as db:
        db.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 2")
    r = kc("audit", "archive", "--before", "0s", "--to", str(tmp_path / "a.jsonl"))
    assert r.code == exitcodes.INTEGRITY
    assert "record 2 was edited" in r.err
    assert not (tmp_path / "a.jsonl").exists()
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{}\n")
    v = kc("audit", "verify", "--archive", str(bad))
    assert v.code == exitcodes.INTEGRITY
    assert "line 1 is not an archived audit record" in v.err


def test_token_create_and_revoke_from_the_cli_are_audited(kc):
    """As POST and DELETE /api/tokens are: the audit log shows who made or revoked a
    token, never the token; revoking twice changes and records nothing more."""
    made = kc("token", "create", "--role", "writer", "--org", "acme", "--name", "ci",
              "--json")
    assert made.code == 0, made.err
    body = json.loads(made.out)
    tid, token = body["id"], body["token"]
    for _ in range(2):
        r = kc("token", "revoke", tid)
        assert r.code == 0, r.err
    assert "was already revoked, at " in r.err
    events = [e for e in _lines(kc("audit", "--json")) if e["action"].startswith("token_")]
    assert [(e["action"], e["org"], e["detail"]["token_id"]) for e in events] == [
        ("token_create", "acme", tid), ("token_revoke", "acme", tid)]
    assert events[0]["detail"]["roles"] == ["writer"]
    assert token.split("_", 2)[2] not in kc("audit", "--json").out
