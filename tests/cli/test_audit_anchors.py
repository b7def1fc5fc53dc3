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


def test_an_anchor_catches_a_rewritten_log(kc: Ks, put: Callable[..., Run],
                                           home: Path, tmp_path: Path) -> None:
    for i in range(5):
        put(f"key_{i}", f"value-{i}")
    anchors = tmp_path / "offsite" / "anchors.jsonl"
    r = kc("audit", "anchor", "--out", str(anchors), "--json")
    assert r.code == 0, r.err
    taken = json.loads(r.out)
    assert taken["kind"] == "keysafe-audit-anchor"
    assert taken["seq"] >= 5
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
    assert [p["seq"] for p in problems] == [taken["seq"]]
    assert "the log was rewritten from there on" in problems[0]["problem"]


def test_an_anchor_catches_a_log_cut_short(kc: Ks, put: Callable[..., Run], home: Path,
                                           tmp_path: Path) -> None:
    for i in range(4):
        put(f"key_{i}", f"value-{i}")
    anchors = tmp_path / "anchors.jsonl"
    assert kc("audit", "anchor", "--out", str(anchors)).code == 0
    head = json.loads(anchors.read_text())["seq"]
    cut_after(home, 2)
    assert kc("audit", "verify").code == 0  # the head row was moved back too
    r = kc("audit", "verify", "--anchors", str(anchors))
    assert r.code == 6
    assert f"record {head}" in r.out
    assert "is gone: the log ends at record 2" in r.out


def test_archived_anchors_are_checked_in_the_archive(kc: Ks, put: Callable[..., Run],
                                                     tmp_path: Path) -> None:
    from datetime import UTC, datetime

    anchors = tmp_path / "anchors.jsonl"
    put("key_0", "value-0")
    assert kc("audit", "anchor", "--out", str(anchors)).code == 0  # record 1
    for i in range(1, 3):
        put(f"key_{i}", f"value-{i}")
    assert kc("audit", "anchor", "--out", str(anchors)).code == 0  # record 3
    archive = tmp_path / "audit-old.jsonl"
    r = kc("audit", "archive", "--before", datetime.now(UTC).isoformat(), "--to",
           str(archive), "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["through"] == 3
    put("key_9", "value-9")
    # The store's chain starts after record 3: that one is confirmed by where it starts,
    # record 1 is in the archive.
    r = kc("audit", "verify", "--anchors", str(anchors), "--json")
    assert r.code == 0, r.err
    notes = json.loads(r.out)["notes"]
    assert any("record 1 (anchored" in n and "is archived" in n for n in notes)
    assert "1 of 2 anchor(s) confirmed" in notes
    r = kc("audit", "verify", "--archive", str(archive), "--anchors", str(anchors), "--json")
    assert r.code == 0, r.err
    assert "2 of 2 anchor(s) confirmed" in json.loads(r.out)["notes"]


def test_bad_anchor_files_and_an_empty_log(kc: Ks, put: Callable[..., Run],
                                           tmp_path: Path) -> None:
    r = kc("audit", "anchor")
    assert r.code == 3
    assert "holds no record yet" in r.err
    put("key_0", "v")
    bad = tmp_path / "bad.jsonl"
    for text, message in [("not json\n", "line 1 is not JSON"),
                          ('{"seq": 1}\n', "is not a keysafe audit anchor"),
                          ('{"kind": "keysafe-audit-anchor", "seq": 0, "hash": "'
                           + "a" * 64 + '"}\n', "seq must be a record number"),
                          ('{"kind": "keysafe-audit-anchor", "seq": 1, "hash": "xyz"}\n',
                           "hash must be 64 hex digits")]:
        bad.write_text(text)
        r = kc("audit", "verify", "--anchors", str(bad))
        assert r.code == 2, (text, r.out, r.err)
        assert message in r.err
