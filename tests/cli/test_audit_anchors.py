"""Audit anchors: a log rewritten from some record on (every hash recomputed, so the
chain alone still verifies) or cut short (its head row moved back too) is caught by an
anchor kept elsewhere: ``keysafe audit anchor``, ``keysafe audit verify --anchors``,
``GET /api/audit/anchor`` and the server's scheduled publication."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from keysafe.manager.audit import row_hash

Ks = Callable[..., Any]  # conftest's kc: the CLI in process, answering a Run
Run = Any


def rewrite_from(home: Path, seq: int, actor: str) -> None:
    """What a database administrator could do: change record ``seq``'s actor and
    recompute every hash from there on, the head row included."""
    with sqlite3.connect(home / "keysafe.db") as c:
        rows = c.execute("SELECT * FROM audit ORDER BY seq").fetchall()
        prev = None
        for r in rows:
            r = list(r)
            if r[0] < seq:
                prev = r[12]
                continue
            if r[0] == seq:
                r[2] = actor
            r[11] = prev
            r[12] = row_hash(prev, r[0], tuple(r[1:11]))
            c.execute("UPDATE audit SET actor = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                      (r[2], r[11], r[12], r[0]))
            prev = r[12]
        c.execute("UPDATE audit_head SET seq = ?, hash = ?", (rows[-1][0], prev))


def cut_after(home: Path, seq: int) -> None:
    """Remove every record after ``seq`` and move the head row back to it."""
    with sqlite3.connect(home / "keysafe.db") as c:
        h = c.execute("SELECT hash FROM audit WHERE seq = ?", (seq,)).fetchone()[0]
        c.execute("DELETE FROM audit WHERE seq > ?", (seq,))
        c.execute("UPDATE audit_head SET seq = ?, hash = ?", (seq, h))


def set_base(home: Path, seq: int, h: str) -> None:
    with sqlite3.connect(home / "keysafe.db") as c:
        c.execute("CREATE TABLE IF NOT EXISTS audit_base (id INTEGER PRIMARY KEY CHECK "
                  "(id = 1), seq INTEGER NOT NULL, hash TEXT NOT NULL)")
        c.execute("INSERT INTO audit_base VALUES (1, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                  "seq = excluded.seq, hash = excluded.hash", (seq, h))


def anchor(kc: Ks, out: Path) -> dict[str, Any]:
    r = kc("audit", "anchor", "--out", str(out), "--json")
    assert r.code == 0, r.err
    return dict(json.loads(r.out))


def test_an_anchor_catches_a_rewritten_log(kc: Ks, put: Callable[..., Run],
                                           home: Path, tmp_path: Path) -> None:
    for i in range(5):
        put(f"key_{i}", f"value-{i}")
    anchors = tmp_path / "offsite" / "anchors.jsonl"
    taken = anchor(kc, anchors)
    assert taken["kind"] == "keysafe-audit-anchor"
    assert taken["seq"] == 6  # its own audit_anchor record, after the five writes
    assert json.loads(anchors.read_text().splitlines()[0]) == taken
    put("key_5", "value-5")  # the log goes on after the anchor

    r = kc("audit", "verify", "--anchors", str(anchors), "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["notes"] == ["1 of 1 anchor(s) confirmed"]

    rewrite_from(home, 2, "someone-else")
    # The chain alone cannot tell: every hash was recomputed.
    r = kc("audit", "verify")
    assert r.code == 0, r.err
    r = kc("audit", "verify", "--anchors", str(anchors), "--json")
    assert r.code == 6
    problems = json.loads(r.out)["problems"]
    assert [p["seq"] for p in problems] == [6]
    assert "the log was rewritten from there on" in problems[0]["problem"]


def test_an_anchor_catches_a_log_cut_short(kc: Ks, put: Callable[..., Run], home: Path,
                                           tmp_path: Path) -> None:
    for i in range(4):
        put(f"key_{i}", f"value-{i}")
    anchors = tmp_path / "anchors.jsonl"
    assert anchor(kc, anchors)["seq"] == 5
    cut_after(home, 2)
    assert kc("audit", "verify").code == 0  # the head row was moved back too
    r = kc("audit", "verify", "--anchors", str(anchors))
    assert r.code == 6
    assert "record 5 (anchored" in r.out
    assert "is gone: the log ends at record 2" in r.out


def test_a_forged_starting_point_does_not_pass(kc: Ks, put: Callable[..., Run], home: Path,
                                               tmp_path: Path) -> None:
    """Delete every record and claim the chain starts after record 100 (as if archived):
    the anchors below it cannot be confirmed, and that is a failure, not a note."""
    for i in range(3):
        put(f"key_{i}", f"value-{i}")
    anchors = tmp_path / "anchors.jsonl"
    anchor(kc, anchors)
    with sqlite3.connect(home / "keysafe.db") as c:
        c.execute("DELETE FROM audit")
        c.execute("UPDATE audit_head SET seq = 100, hash = ?", ("0" * 64,))
    set_base(home, 100, "0" * 64)
    assert kc("audit", "verify").code == 0  # nothing left to contradict the base
    r = kc("audit", "verify", "--anchors", str(anchors))
    assert r.code == 6
    assert "record 4" in r.out
    assert "cannot confirm it" in r.out


def test_archived_anchors_are_checked_in_the_archive(kc: Ks, put: Callable[..., Run],
                                                     tmp_path: Path) -> None:
    from datetime import UTC, datetime

    anchors = tmp_path / "anchors.jsonl"
    put("key_0", "value-0")
    assert anchor(kc, anchors)["seq"] == 2
    for i in range(1, 3):
        put(f"key_{i}", f"value-{i}")
    assert anchor(kc, anchors)["seq"] == 5
    archive = tmp_path / "audit-old.jsonl"
    r = kc("audit", "archive", "--before", datetime.now(UTC).isoformat(), "--to",
           str(archive), "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["through"] == 5
    put("key_9", "value-9")
    # Record 5 is where the store's chain starts: confirmed. Record 2 is archived: this
    # run cannot confirm it, and says how to.
    r = kc("audit", "verify", "--anchors", str(anchors), "--json")
    assert r.code == 6
    out = json.loads(r.out)
    assert [p["seq"] for p in out["problems"]] == [2]
    assert "verify with --archive" in out["problems"][0]["problem"]
    assert "1 of 2 anchor(s) confirmed" in out["notes"]
    # The files and the store, walked together: both confirmed.
    r = kc("audit", "verify", "--archive", str(archive), "--anchors", str(anchors), "--json")
    assert r.code == 0, r.err
    assert "2 of 2 anchor(s) confirmed" in json.loads(r.out)["notes"]


def test_anchor_files_that_cannot_be_used(kc: Ks, put: Callable[..., Run],
                                          tmp_path: Path) -> None:
    assert anchor(kc, tmp_path / "first.jsonl")["seq"] == 1  # an empty log: its own record
    put("key_0", "v")
    bad = tmp_path / "bad.jsonl"
    good = '{"kind": "keysafe-audit-anchor", "seq": 1, "hash": "' + "a" * 64 + '"}'
    for text, message in [("not json\n", "line 1 is not JSON"),
                          ('{"seq": 1}\n', "is not a keysafe audit anchor"),
                          ('{"kind": "keysafe-audit-anchor", "seq": 0, "hash": "'
                           + "a" * 64 + '"}\n', "seq must be a record number"),
                          ('{"kind": "keysafe-audit-anchor", "seq": 1, "hash": "xyz"}\n',
                           "hash must be 64 hex digits"),
                          (good + "\n" + good.replace("a" * 64, "b" * 64) + "\n",
                           "names a different hash")]:
        bad.write_text(text)
        r = kc("audit", "verify", "--anchors", str(bad))
        assert r.code == 2, (text, r.out, r.err)
        assert message in r.err
    bad.write_bytes(b"\xff\xfe not text")
    r = kc("audit", "verify", "--anchors", str(bad))
    assert r.code == 2
    assert "not UTF-8" in r.err
    # An anchor of another environment is skipped, not a false alarm.
    other = tmp_path / "prod.jsonl"
    other.write_text(good.replace('"seq": 1', '"seq": 1, "env": "production"') + "\n")
    r = kc("audit", "verify", "--anchors", str(other), "--json")
    assert r.code == 0, r.out
    assert any("environment production skipped" in n for n in json.loads(r.out)["notes"])
