"""The audit log (keysafe.manager.audit) as the manager writes it: one record per
operation, filters, the hash chain and its verification, the JSON-lines sink, and
what happens when the audit store fails."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from keysafe import (
    AuditError,
    AuditFilter,
    Conflict,
    InvalidValue,
    NotFound,
    SecretManager,
)
from keysafe.backends.memory import MemoryBackend
from keysafe.backends.sqlite import SQLiteBackend
from keysafe.manager.audit import (
    GENESIS,
    AuditLog,
    Draft,
    MemoryAuditStore,
    Row,
    chain,
    insert_rows,
    verify_rows,
)

BACKENDS = ["memory", "sqlite"]


def isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **env: str) -> Path:
    for var in list(os.environ):
        if var.startswith("KEYSAFE_") or var == "ENVIRONMENT":
            monkeypatch.delenv(var)
    home = tmp_path / "home"
    monkeypatch.setenv("KEYSAFE_HOME", str(home))
    monkeypatch.setenv("KEYSAFE_MASTER_KEY", base64.b64encode(os.urandom(32)).decode())
    monkeypatch.setenv("KEYSAFE_ACTOR", "tester")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(tmp_path)
    return home


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    return isolate(monkeypatch, tmp_path)


@pytest.fixture(params=BACKENDS)
def m(request: pytest.FixtureRequest, home: Path) -> Iterator[SecretManager]:
    mgr = SecretManager.from_env(backend=request.param)
    yield mgr
    mgr.close()


@pytest.fixture
def sq(home: Path) -> Iterator[SecretManager]:
    mgr = SecretManager.from_env(backend="sqlite")
    yield mgr
    mgr.close()


def db(home: Path) -> sqlite3.Connection:
    return sqlite3.connect(home / "keysafe.db", isolation_level=None)


def seqs(problems: Sequence[tuple[int, str]]) -> set[int]:
    return {s for s, _ in problems}


# -- one record per operation ------------------------------------------------------------


def test_every_operation_leaves_a_record(m: SecretManager) -> None:
    path = m.path("token", "acme")
    m.put("token", "one", "acme")                       # write v1
    m.put("token", "two", "acme")                       # write v2
    m.get("token", "acme")                              # read v2 (reaches the store)
    m.get("token", "acme", version=1)                   # read v1
    m.has("token", "acme")                              # describe
    m.describe("token", "acme")                         # describe
    m.list("acme")                                      # list
    m.versions("token", "acme")                         # versions
    m.rollback("token", 1, "acme")                      # rollback -> v3
    m.update_metadata("token", "acme", description="d")  # update_metadata
    m.delete("token", "acme")                           # delete
    m.restore("token", "acme")                          # restore
    m.destroy("token", [2], "acme")                     # destroy
    with pytest.raises(NotFound):
        m.get("token", "acme", version=2)               # read, not_found
    with pytest.raises(NotFound):
        m.get("absent", "acme")                         # read, not_found
    with pytest.raises(Conflict):
        m.put("token", "x", "acme", expected_version=1)  # write, conflict
    with pytest.raises(Conflict):
        m.restore("token", "acme")                      # restore, conflict
    with pytest.raises(InvalidValue):
        m.put("token", "", "acme")                      # write, invalid_value
    with pytest.raises(NotFound):
        m.describe("absent", "acme")                    # describe, not_found
    with pytest.raises(NotFound):
        m.rollback("token", 99, "acme")                 # rollback, not_found
    m.delete("token", "acme", force=True)               # purge

    got = [(e.action, e.path, e.version, e.outcome) for e in m.audit_query()]
    absent = m.path("absent", "acme")
    prefix = "keysafe/local/acme/"
    assert got == [
        ("write", path, 1, "ok"),
        ("write", path, 2, "ok"),
        ("read", path, 2, "ok"),
        ("read", path, 1, "ok"),
        ("describe", path, None, "ok"),
        ("describe", path, None, "ok"),
        ("list", prefix, None, "ok"),
        ("versions", path, None, "ok"),
        ("rollback", path, 3, "ok"),
        ("update_metadata", path, None, "ok"),
        ("delete", path, None, "ok"),
        ("restore", path, None, "ok"),
        ("destroy", path, None, "ok"),
        ("read", path, 2, "not_found"),
        ("read", absent, None, "not_found"),
        ("write", path, None, "conflict"),
        ("restore", path, None, "conflict"),
        ("write", path, None, "invalid_value"),
        ("describe", absent, None, "not_found"),
        ("rollback", path, 99, "not_found"),
        ("purge", path, None, "ok"),
    ]
    events = m.audit_query()
    assert all(e.actor == "tester" for e in events)
    assert all(e.org == "acme" for e in events)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[0].ts <= events[-1].ts
    assert events[8].detail == {"from_version": 1}
    assert events[12].detail == {"versions": [2]}
    assert events[13].detail == {"error": "NotFound"}
    assert m.audit_verify().ok


def test_cache_hits_leave_no_record_but_reads_that_reach_the_store_do(m: SecretManager) -> None:
    m.put("token", "one", "acme")
    for _ in range(5):
        m.get("token", "acme")
    m.get("token", "acme", fresh=True)
    assert len(m.audit_query(AuditFilter(action="read"))) == 2
    assert m.stats()["cache_hits"] == 4


def test_reads_are_not_recorded_when_audit_reads_is_off(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    isolate(monkeypatch, tmp_path, KEYSAFE_AUDIT_READS="false")
    with SecretManager.from_env() as m:
        m.put("token", "one", "acme")
        m.get("token", "acme")
        m.describe("token", "acme")
        with pytest.raises(NotFound):
            m.get("absent", "acme")  # failures are still recorded
        assert [(e.action, e.outcome) for e in m.audit_query()] == [
            ("write", "ok"), ("read", "not_found")]


def test_actor_client_and_request_id(m: SecretManager) -> None:
    alice = m.as_actor("alice", client="web", request_id="req-1")
    alice.put("token", "one", "acme")
    m.put("token", "two", "acme")
    first, second = m.audit_query()
    assert (first.actor, first.client, first.request_id) == ("alice", "web", "req-1")
    assert (second.actor, second.client, second.request_id) == ("tester", None, None)


def test_record_for_a_denial(m: SecretManager) -> None:
    m.record("read", m.path("token", "acme"), "permission_denied", org="acme")
    (e,) = m.audit_query(AuditFilter(outcome="permission_denied"))
    assert e.action == "read"
    assert e.org == "acme"


# -- filters -------------------------------------------------------------------------------


def test_audit_pages_by_seq(m: SecretManager) -> None:
    """``before_seq``: the next page of a newest-first listing (the server's ``before``)."""
    for i in range(5):
        m.put("k", f"v{i}", "acme")
    every = [e.seq for e in m.audit_query(AuditFilter(newest_first=True))]
    first = m.audit_query(AuditFilter(newest_first=True, limit=2))
    second = m.audit_query(AuditFilter(newest_first=True, limit=2, before_seq=first[-1].seq))
    rest = m.audit_query(AuditFilter(newest_first=True, before_seq=second[-1].seq))
    assert [e.seq for e in first + second + rest] == every
    assert m.audit_query(AuditFilter(before_seq=min(every))) == []


def test_audit_filter(m: SecretManager) -> None:
    m.put("a", "1", "acme")
    m.put("b", "1", "acme", domain="billing")
    m.as_actor("bob").put("a", "1", "globex")
    time.sleep(0.01)
    middle = datetime.now(UTC)
    time.sleep(0.01)
    m.get("a", "acme")
    m.as_actor("bob").get("a", "globex")
    with pytest.raises(NotFound):
        m.get("zzz", "acme")

    def q(**kw: Any) -> list[tuple[str, str | None]]:
        return [(e.action, e.path) for e in m.audit_query(AuditFilter(**kw))]

    a_acme, b_acme, a_globex = (m.path("a", "acme"), m.path("b", "acme", domain="billing"),
                                m.path("a", "globex"))
    assert q(org="globex") == [("write", a_globex), ("read", a_globex)]
    assert q(path=a_acme) == [("write", a_acme), ("read", a_acme)]
    assert q(path="keysafe/local/acme/") == [("write", a_acme), ("write", b_acme),
                                             ("read", a_acme), ("read", m.path("zzz", "acme"))]
    assert q(path="keysafe/local/acme/billing/") == [("write", b_acme)]
    assert q(path="keysafe/local/acme") == []  # without '/', the path must match exactly
    assert q(action="write") == [("write", a_acme), ("write", b_acme), ("write", a_globex)]
    assert q(actor="bob") == [("write", a_globex), ("read", a_globex)]
    assert q(outcome="not_found") == [("read", m.path("zzz", "acme"))]
    assert q(since=middle) == [("read", a_acme), ("read", a_globex),
                               ("read", m.path("zzz", "acme"))]
    assert q(until=middle) == [("write", a_acme), ("write", b_acme), ("write", a_globex)]
    assert q(since=middle, until=middle + timedelta(hours=1), actor="bob") == [
        ("read", a_globex)]
    assert q(since=datetime.now(UTC) + timedelta(hours=1)) == []
    assert q(org="acme", action="read", actor="tester") == [
        ("read", a_acme), ("read", m.path("zzz", "acme"))]
    assert q(limit=2) == [("write", a_acme), ("write", b_acme)]
    assert q(limit=2, newest_first=True) == [("read", m.path("zzz", "acme")),
                                             ("read", a_globex)]


# -- the hash chain ------------------------------------------------------------------------------


def make_history(m: SecretManager, n: int = 6) -> None:
    for i in range(n):
        m.put("token", f"v{i}", "acme")
    m.get("token", "acme")


def test_verify_ok_on_a_clean_chain(m: SecretManager) -> None:
    assert m.audit_verify().ok  # an empty log is fine
    make_history(m)
    res = m.audit_verify()
    assert res.ok
    assert res.checked == 7
    assert res.problems == []
    assert res.to_dict() == {"ok": True, "checked": 7, "problems": [], "notes": []}
    events = m.audit_query()
    assert events[0].prev_hash == "0" * 64
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(events))


def test_verify_detects_an_edited_row_sqlite(sq: SecretManager, home: Path) -> None:
    make_history(sq)
    with db(home) as c:
        c.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 3")
    res = sq.audit_verify()
    assert not res.ok
    assert seqs(res.problems) == {3}
    assert "3" in res.problems[0][1]


@pytest.mark.parametrize("column", ["ts", "action", "path", "version", "outcome", "org",
                                    "detail"])
def test_verify_detects_an_edit_to_any_field_sqlite(sq: SecretManager, home: Path,
                                                    column: str) -> None:
    make_history(sq)
    new = {"ts": 1, "action": "'read'", "path": "'elsewhere'", "version": 42,
           "outcome": "'denied'", "org": "'globex'", "detail": "'{\"x\": 1}'"}[column]
    with db(home) as c:
        c.execute(f"UPDATE audit SET {column} = {new} WHERE seq = 4")
    res = sq.audit_verify()
    assert not res.ok
    assert 4 in seqs(res.problems)


def test_verify_detects_a_deleted_row_sqlite(sq: SecretManager, home: Path) -> None:
    make_history(sq)
    with db(home) as c:
        c.execute("DELETE FROM audit WHERE seq = 4")
    res = sq.audit_verify()
    assert not res.ok
    assert seqs(res.problems) == {4}
    assert "removed" in res.problems[0][1]


def test_verify_detects_several_deleted_rows_sqlite(sq: SecretManager, home: Path) -> None:
    make_history(sq)
    with db(home) as c:
        c.execute("DELETE FROM audit WHERE seq IN (2, 3, 4)")
    res = sq.audit_verify()
    assert not res.ok
    assert 2 in seqs(res.problems)
    assert "2..4" in res.problems[0][1]


def test_verify_detects_a_deleted_first_row_sqlite(sq: SecretManager, home: Path) -> None:
    make_history(sq)
    with db(home) as c:
        c.execute("DELETE FROM audit WHERE seq = 1")
    res = sq.audit_verify()
    assert not res.ok
    assert 1 in seqs(res.problems)


def test_verify_detects_a_deleted_newest_row_sqlite(sq: SecretManager, home: Path) -> None:
    make_history(sq)
    sq.audit.flush()
    with db(home) as c:
        c.execute("DELETE FROM audit WHERE seq = (SELECT max(seq) FROM audit)")
    assert not sq.audit_verify().ok


_DATA_COLS = ("ts, actor, action, path, version, outcome, org, client, request_id, detail, "
              "prev_hash, hash")


def swap_rows(home: Path, a: int, b: int, cols: str = _DATA_COLS) -> None:
    """Swap the contents of two audit rows (seq is the rowid and stays in place)."""
    names = [c.strip() for c in cols.split(",")]
    with db(home) as c:
        ra = c.execute(f"SELECT {cols} FROM audit WHERE seq = ?", (a,)).fetchone()
        rb = c.execute(f"SELECT {cols} FROM audit WHERE seq = ?", (b,)).fetchone()
        sets = ", ".join(f"{n} = ?" for n in names)
        c.execute("BEGIN")
        c.execute(f"UPDATE audit SET {sets} WHERE seq = ?", (*rb, a))
        c.execute(f"UPDATE audit SET {sets} WHERE seq = ?", (*ra, b))
        c.execute("COMMIT")


def test_verify_detects_two_swapped_rows_sqlite(sq: SecretManager, home: Path) -> None:
    make_history(sq)
    swap_rows(home, 2, 5)
    res = sq.audit_verify()
    assert not res.ok
    assert {2, 5} <= seqs(res.problems)


def test_verify_detects_two_swapped_rows_without_their_hashes_sqlite(sq: SecretManager,
                                                                     home: Path) -> None:
    make_history(sq)
    swap_rows(home, 3, 4, cols="ts, actor, action, path, version, outcome, org, detail")
    res = sq.audit_verify()
    assert not res.ok
    assert {3, 4} <= seqs(res.problems)


def test_verify_detects_a_reordered_row_sqlite(sq: SecretManager, home: Path) -> None:
    """Record 2 moved to the end of the chain (seq is the rowid, so moving it renumbers it)."""
    make_history(sq)
    sq.audit.flush()
    with db(home) as c:
        c.execute("UPDATE audit SET seq = (SELECT max(seq) + 1 FROM audit) WHERE seq = 2")
    res = sq.audit_verify()
    assert not res.ok
    assert 2 in seqs(res.problems)
    assert 8 in seqs(res.problems)


def test_verify_detects_tampering_in_the_memory_store() -> None:
    m = SecretManager(MemoryBackend(), actor="tester")
    make_history(m)
    m.audit.flush()
    store = m.audit.store
    assert isinstance(store, MemoryAuditStore)
    clean = list(store.rows)

    store.rows[2] = (*clean[2][:2], "mallory", *clean[2][3:])
    assert seqs(m.audit_verify().problems) == {3}

    store.rows[:] = clean[:3] + clean[4:]
    assert seqs(m.audit_verify().problems) == {4}

    store.rows[:] = [clean[0], clean[2], clean[1], *clean[3:]]
    res = m.audit_verify()
    assert not res.ok
    assert 2 in seqs(res.problems) or 3 in seqs(res.problems)

    store.rows[:] = clean
    assert m.audit_verify().ok


def test_verify_rows_names_each_broken_record() -> None:
    store = MemoryAuditStore()
    drafts: list[Draft] = [(i, "a", "write", "p", i, "ok", "o", None, None, None)
                           for i in range(1, 6)]
    rows: list[Row] = store.append(drafts)
    assert verify_rows(rows).ok
    edited = [*rows[:1], (*rows[1][:6], "denied", *rows[1][7:]), *rows[2:]]
    assert seqs(verify_rows(edited).problems) == {2}
    # A None field and the text "None" hash differently.
    assert seqs(verify_rows([*rows[:2], (*rows[2][:7], "None", *rows[2][8:]),
                             *rows[3:]]).problems) == {3}


# -- JSON-lines sink -------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_jsonl_sink_gets_each_record(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                     backend: str) -> None:
    sink = tmp_path / "logs" / "audit.jsonl"
    isolate(monkeypatch, tmp_path, KEYSAFE_AUDIT_FILE=str(sink))
    with SecretManager.from_env(backend=backend) as m:
        make_history(m, 3)
        with pytest.raises(NotFound):
            m.get("absent", "acme")
        m.delete("token", "acme")
        m.audit.flush()
        events = [e.to_dict() for e in m.audit_query()]
    lines = [json.loads(x) for x in sink.read_text().splitlines()]
    assert lines == events
    assert [x["seq"] for x in lines] == list(range(1, 7))
    assert {x["action"] for x in lines} == {"write", "read", "delete"}


def test_a_failing_sink_does_not_fail_the_operation(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    sink = tmp_path / "logs" / "audit.jsonl"
    isolate(monkeypatch, tmp_path, KEYSAFE_AUDIT_FILE=str(sink))
    with SecretManager.from_env() as m:
        sink.mkdir()  # a directory where the file should be: every append fails
        with caplog.at_level(logging.WARNING, logger="keysafe.audit"):
            m.put("token", "one", "acme")
        assert m.get("token", "acme") == "one"
        assert "sink" in caplog.text
        assert m.audit_verify().ok


# -- a failing audit store -----------------------------------------------------------------------


def block_audit_inserts(home: Path) -> None:
    with db(home) as c:
        c.execute("CREATE TRIGGER no_audit BEFORE INSERT ON audit "
                  "BEGIN SELECT RAISE(ABORT, 'audit store is full'); END;")


def unblock_audit_inserts(home: Path) -> None:
    with db(home) as c:
        c.execute("DROP TRIGGER no_audit")


def count(home: Path, table: str) -> int:
    with db(home) as c:
        return int(c.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def test_required_audit_failure_fails_the_write_and_changes_nothing_sqlite(
        sq: SecretManager, home: Path) -> None:
    sq.put("token", "one", "acme", description="orig")
    assert sq.get("token", "acme") == "one"
    before = sq.describe("token", "acme")
    block_audit_inserts(home)
    rows = (count(home, "secrets"), count(home, "versions"), count(home, "audit"))

    with pytest.raises(AuditError, match="audit log write failed"):
        sq.put("token", "two", "acme", description="changed")
    with pytest.raises(AuditError):
        sq.put("brand-new", "x", "acme")
    with pytest.raises(AuditError):
        sq.delete("token", "acme")
    with pytest.raises(AuditError):
        sq.delete("token", "acme", force=True)
    with pytest.raises(AuditError):
        sq.rollback("token", 1, "acme")
    with pytest.raises(AuditError):
        sq.update_metadata("token", "acme", description="changed")
    with pytest.raises(AuditError):
        sq.destroy("token", [1], "acme")

    assert (count(home, "secrets"), count(home, "versions"), count(home, "audit")) == rows
    assert sq.get("token", "acme") == "one"  # the cache was not poisoned
    assert sq.get("token", "acme", fresh=True) == "one"
    assert sq.describe("token", "acme") == before
    assert not sq.has("brand-new", "acme")
    assert sq.stats()["audit_failures"] >= 7

    unblock_audit_inserts(home)
    sq.put("token", "two", "acme")
    assert sq.get("token", "acme") == "two"
    assert sq.audit_verify().ok


def test_required_audit_failure_keeps_buffered_reads(sq: SecretManager, home: Path) -> None:
    sq.audit.flush_interval = 3600.0  # only explicit flushes
    sq.put("token", "one", "acme")
    sq.get("token", "acme", fresh=True)
    block_audit_inserts(home)
    with pytest.raises(AuditError):
        sq.put("token", "two", "acme")
    unblock_audit_inserts(home)
    sq.put("token", "three", "acme")
    got = [(e.action, e.version, e.outcome) for e in sq.audit_query()]
    assert got == [("write", 1, "ok"), ("read", 1, "ok"), ("write", 2, "ok")]
    assert sq.audit_verify().ok


def test_unrequired_audit_failure_lets_the_write_succeed(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    home = isolate(monkeypatch, tmp_path, KEYSAFE_AUDIT_REQUIRED="false")
    with SecretManager.from_env() as m:
        assert m.audit.required is False
        m.put("token", "one", "acme")
        block_audit_inserts(home)
        with caplog.at_level(logging.WARNING, logger="keysafe.audit"):
            info = m.put("token", "two", "acme")
        assert info.version == 2
        assert m.get("token", "acme", fresh=True) == "two"
        assert m.stats()["audit_failures"] >= 1
        assert "audit log write failed" in caplog.text
        unblock_audit_inserts(home)
        m.put("token", "three", "acme")
        assert m.audit_verify().ok
        assert [e.version for e in m.audit_query(AuditFilter(action="write"))] == [1, 3]


class FailingAuditStore(MemoryAuditStore):
    def __init__(self) -> None:
        super().__init__()
        self.fail = False

    def append(self, drafts: Sequence[Draft]) -> list[Row]:
        if self.fail:
            raise OSError("audit disk is full")
        return super().append(drafts)


def test_required_audit_failure_fails_the_write_and_changes_nothing_memory() -> None:
    store = FailingAuditStore()
    m = SecretManager(MemoryBackend(), audit=AuditLog(store), actor="tester")
    m.put("token", "one", "acme")
    store.fail = True
    with pytest.raises(AuditError):
        m.put("token", "two", "acme")
    with pytest.raises(AuditError):
        m.put("new", "x", "acme")
    with pytest.raises(AuditError):
        m.delete("token", "acme")
    assert m.get("token", "acme", fresh=True) == "one"
    assert m.describe("token", "acme").current_version == 1
    assert [v.version for v in m.versions("token", "acme")] == [1]
    assert not m.has("new", "acme")
    store.fail = False
    assert m.put("token", "two", "acme").version == 2
    assert m.audit_verify().ok


def test_unrequired_audit_failure_memory() -> None:
    store = FailingAuditStore()
    m = SecretManager(MemoryBackend(), audit=AuditLog(store, required=False), actor="tester")
    store.fail = True
    assert m.put("token", "one", "acme").version == 1
    assert m.get("token", "acme") == "one"
    assert m.stats()["audit_failures"] >= 1


# -- buffered reads ------------------------------------------------------------------------------


def raw_actions(home: Path) -> list[str]:
    with db(home) as c:
        return [r[0] for r in c.execute("SELECT action FROM audit ORDER BY seq")]


def test_buffered_reads_are_flushed_by_flush(sq: SecretManager, home: Path) -> None:
    sq.audit.flush_interval = 3600.0  # the background flusher will not run in this test
    sq.put("token", "one", "acme")
    assert raw_actions(home) == ["write"]  # writes are durable at once
    sq.get("token", "acme")
    sq.describe("token", "acme")
    assert raw_actions(home) == ["write"]  # reads are buffered
    sq.audit.flush()
    assert raw_actions(home) == ["write", "read", "describe"]


def test_buffered_reads_are_flushed_by_close(home: Path) -> None:
    m = SecretManager.from_env()
    m.audit.flush_interval = 3600.0
    m.put("token", "one", "acme")
    m.get("token", "acme")
    m.list("acme")
    m.close()
    assert raw_actions(home) == ["write", "read", "list"]
    with SecretManager.from_env() as again:
        assert again.audit_verify().ok


def test_buffered_reads_go_before_the_next_write(sq: SecretManager, home: Path) -> None:
    sq.audit.flush_interval = 3600.0
    sq.put("token", "one", "acme")
    sq.get("token", "acme")
    sq.put("token", "two", "acme")
    assert raw_actions(home) == ["write", "read", "write"]


def test_the_background_flusher_commits_reads(sq: SecretManager, home: Path) -> None:
    sq.put("token", "one", "acme")
    sq.get("token", "acme")
    deadline = time.monotonic() + 5
    while raw_actions(home) != ["write", "read"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert raw_actions(home) == ["write", "read"]


def _committing_threads(m: SecretManager) -> list[int]:
    """The threads that commit ``m``'s audit records from now on."""
    seen: list[int] = []
    real = m.audit.store.append

    def append(drafts: Sequence[Draft]) -> list[Row]:
        seen.append(threading.get_ident())
        return real(drafts)

    m.audit.store.append = append  # type: ignore[method-assign]
    return seen


def test_a_full_buffer_is_committed_by_the_thread_that_filled_it(
        sq: SecretManager, home: Path) -> None:
    sq.audit.flush_interval = 3600.0  # the background flusher will not run in this test
    sq.audit.max_buffer = 8
    sq.put("token", "one", "acme")
    seen = _committing_threads(sq)
    for _ in range(7):
        sq.get("token", "acme", fresh=True)
    assert raw_actions(home) == ["write"]  # buffered
    sq.get("token", "acme", fresh=True)  # the eighth fills the buffer: committed now
    assert raw_actions(home) == ["write"] + ["read"] * 8
    assert seen == [threading.get_ident()]


def test_a_read_inside_a_write_transaction_leaves_its_full_buffer_to_the_flusher(
        sq: SecretManager, home: Path) -> None:
    """Records of reads never join the caller's own transaction: had it rolled back,
    they would have gone with it."""
    sq.audit.max_buffer = 4
    sq.put("token", "one", "acme")
    seen = _committing_threads(sq)
    backend = sq.backend
    assert isinstance(backend, SQLiteBackend)
    with contextlib.suppress(RuntimeError), backend.transaction():
        for _ in range(4):
            sq.get("token", "acme", fresh=True)
        assert seen == []  # not committed in this transaction
        raise RuntimeError("the write fails: its transaction rolls back")
    deadline = time.monotonic() + 5
    while raw_actions(home) != ["write"] + ["read"] * 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert raw_actions(home) == ["write"] + ["read"] * 4
    assert threading.get_ident() not in seen


def test_buffered_reads_a_rolled_back_write_took_are_kept(sq: SecretManager,
                                                          home: Path) -> None:
    """A write's record takes the buffered reads' records into its transaction (they
    come first in the chain); if that transaction rolls back, they go back to the
    buffer instead of going with it."""
    sq.audit.flush_interval = 3600.0
    sq.put("token", "one", "acme")
    sq.get("token", "acme", fresh=True)  # buffered
    backend = sq.backend
    assert isinstance(backend, SQLiteBackend)
    with contextlib.suppress(RuntimeError), backend.transaction():
        sq.put("token", "two", "acme")
        raise RuntimeError("the caller's transaction fails after the write")
    assert sq.get("token", "acme", fresh=True) == "one"
    sq.audit.flush()
    assert raw_actions(home) == ["write", "read", "read"]
    assert sq.audit_verify().ok


def test_buffered_reads_a_rolled_back_savepoint_took_are_kept(sq: SecretManager,
                                                              home: Path) -> None:
    """The same inside a savepoint (a server's batch runs each write in one): the
    records return when the savepoint rolls back, and the outer transaction commits
    the writes that succeeded, in order."""
    sq.audit.flush_interval = 3600.0
    sq.put("token", "one", "acme")
    sq.get("token", "acme", fresh=True)  # read 1, buffered
    backend = sq.backend
    assert isinstance(backend, SQLiteBackend)
    with backend.transaction():
        with contextlib.suppress(RuntimeError), backend.transaction():
            sq.put("token", "two", "acme")  # takes read 1 into the savepoint
            raise RuntimeError("this write's savepoint rolls back")
        sq.put("note", "kept", "acme")  # read 1 again goes before this record
    sq.audit.flush()
    assert raw_actions(home) == ["write", "read", "write"]
    assert sq.get("token", "acme", fresh=True) == "one"
    assert sq.audit_verify().ok


def test_an_event_loop_hands_a_full_buffer_to_the_flusher(sq: SecretManager,
                                                          home: Path) -> None:
    sq.audit.max_buffer = 4
    sq.put("token", "one", "acme")
    seen = _committing_threads(sq)

    async def reads() -> int:
        for _ in range(4):
            sq.get("token", "acme", fresh=True)
        return threading.get_ident()

    loop_thread = asyncio.run(reads())
    deadline = time.monotonic() + 5
    while raw_actions(home) != ["write"] + ["read"] * 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert raw_actions(home) == ["write"] + ["read"] * 4
    assert seen
    assert loop_thread not in seen  # the loop never waited for a commit


def test_row_hash_fast_form_is_the_general_form() -> None:
    from keysafe.manager.audit import row_hash

    def general(prev: str, seq: int, draft: Sequence[Any]) -> str:
        import hashlib

        parts = [prev, "\n", str(seq)]
        for f in draft:
            parts += ["\x1f", "\x00" if f is None else str(f)]
        return hashlib.sha256("".join(parts).encode()).hexdigest()

    drafts: list[Draft] = [
        (1, "a", "read", "p/x", 3, "ok", "acme", "cli", "r-1", '{"k": 1}'),
        (2, "a", "list", None, None, "ok", None, None, None, None),
        (3, "ü", "write", "p/\x1f", 0, "not_found", "o", None, "", "{}"),
    ]
    for i, d in enumerate(drafts):
        assert row_hash("ab" * 32, i, d) == general("ab" * 32, i, d)


def test_many_buffered_reads_commit_in_order_and_verify(sq: SecretManager, home: Path) -> None:
    sq.audit.flush_interval = 3600.0  # only explicit flushes
    sq.put("token", "one", "acme")
    for _ in range(300):  # several multi-row INSERTs of different sizes
        sq.get("token", "acme", fresh=True)
    sq.audit.flush()
    with db(home) as c:
        got = c.execute("SELECT seq, action FROM audit ORDER BY seq").fetchall()
    assert [s for s, _ in got] == list(range(1, 302))
    assert [a for _, a in got] == ["write"] + ["read"] * 300
    result = sq.audit_verify()
    assert result.ok, result.problems
    assert result.checked == 301


def test_insert_rows_keeps_every_field_whichever_columns_are_empty() -> None:
    """Records go in runs that leave the same columns empty (as NULL literals): a
    mixed batch of every shape, in runs of every length, reads back exactly."""
    shapes = list(itertools.product([False, True], repeat=6))
    drafts: list[Draft] = []
    for i, empty in enumerate(shapes * 3):
        run = 1 + i % 70
        for j in range(run if i % 7 == 0 else 1):
            f = iter(empty)
            drafts.append((i * 100 + j, "actor", "read",
                           None if next(f) else f"p/{i}", None if next(f) else i,
                           "ok", None if next(f) else "org", None if next(f) else "cli",
                           None if next(f) else f"rid-{j}",
                           None if next(f) else json.dumps({"n": j})))
    rows = chain(drafts, 0, GENESIS)
    c = sqlite3.connect(":memory:")
    c.execute("CREATE TABLE audit (seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, "
              "actor TEXT NOT NULL, action TEXT NOT NULL, path TEXT, version INTEGER, "
              "outcome TEXT NOT NULL, org TEXT, client TEXT, request_id TEXT, detail TEXT, "
              "prev_hash TEXT NOT NULL, hash TEXT NOT NULL)")
    insert_rows(c, rows)
    back = c.execute("SELECT * FROM audit ORDER BY seq").fetchall()
    assert back == [tuple(r) for r in rows]
    assert verify_rows(back).ok
