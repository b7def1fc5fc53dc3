"""Archiving old audit records (keysafe.manager.archive): the records before a time go
to a file and leave the store, every one checked first; the store's chain and the file
both still verify, and tampering with either is still found."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import stat
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from keysafe import (
    BackendUnavailable,
    Conflict,
    IntegrityError,
    InvalidValue,
    SecretManager,
    Unsupported,
)
from keysafe.manager.archive import FIELDS, archive, read_archive, verify_archives
from keysafe.manager.audit import (
    AuditDB,
    AuditFilter,
    AuditLog,
    SQLiteAuditStore,
    now_us,
    to_datetime,
)

CANARY = "canary-value-5b1d77e0"


@pytest.fixture
def home(tmp_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KEYSAFE_MASTER_KEY", base64.b64encode(os.urandom(32)).decode())
    monkeypatch.setenv("KEYSAFE_ACTOR", "tester")
    return tmp_home


@pytest.fixture(params=["memory", "sqlite"])
def m(request: pytest.FixtureRequest, home: Path) -> Iterator[SecretManager]:
    mgr = SecretManager.from_env(backend=request.param)
    yield mgr
    mgr.close()


def write_some(m: SecretManager, n: int, tag: str = "k") -> None:
    for i in range(n):
        m.put(f"{tag}{i}", f"{CANARY}-{i}", "acme")


def cut_after(m: SecretManager, seq: int) -> datetime:
    """A time just after record ``seq`` (the records are a few microseconds apart)."""
    ts = next(e.ts for e in m.audit_query() if e.seq == seq)
    nxt = [e.ts for e in m.audit_query() if e.seq == seq + 1]
    assert not nxt or nxt[0] > ts
    return ts + timedelta(microseconds=1)


def seqs(m: SecretManager) -> list[int]:
    return [e.seq for e in m.audit_query()]


def replacing(store: object, **methods: Callable[..., object]) -> object:
    """``store`` with the given methods replaced by the test's own, the rest its own."""

    class Replaced:
        def __getattr__(self, name: str) -> object:
            return methods[name] if name in methods else getattr(store, name)

    return Replaced()


def test_archives_the_older_records_and_both_sides_verify(m: SecretManager,
                                                           tmp_path: Path) -> None:
    write_some(m, 6)
    m.get("k0", "acme")
    before = cut_after(m, 4)
    dest = tmp_path / "audit-1.jsonl"
    res = m.audit_archive(before, dest)
    assert (res.records, res.first, res.through, res.path) == (4, 1, 4, str(dest))
    assert res.bytes == dest.stat().st_size
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    rows = list(read_archive(dest))
    assert [r[0] for r in rows] == [1, 2, 3, 4]
    line = json.loads(dest.read_text().splitlines()[0])
    assert set(line) == {*FIELDS, "time"}
    assert line["time"] == to_datetime(line["ts"]).isoformat()
    assert CANARY not in dest.read_text()
    # The store keeps 5.. and its chain verifies from the archive's last record.
    left = seqs(m)
    assert left[0] == 5
    assert m.audit_query(AuditFilter(action="audit_archive"))[0].detail == {
        "records": 4, "through": 4}
    assert m.audit_verify().ok
    assert m.audit_verify([dest]).ok
    # Writing goes on from where the chain was.
    m.put("after", "v", "acme")
    assert seqs(m)[-1] == left[-1] + 1
    assert m.audit_verify().ok


def test_archiving_everything_and_again_continues_one_chain(m: SecretManager,
                                                            tmp_path: Path) -> None:
    write_some(m, 3)
    first = m.audit_archive(datetime.now(UTC), tmp_path / "a1.jsonl")
    assert (first.first, first.through) == (1, 3)
    assert seqs(m) == [4]  # only the archive's own record is left
    write_some(m, 2, "j")
    second = m.audit_archive(datetime.now(UTC), tmp_path / "a2.jsonl")
    assert (second.first, second.through) == (4, 6)  # the first archive's record too
    m.put("z", "v", "acme")
    assert seqs(m) == [7, 8]
    assert m.audit_verify().ok
    both = [tmp_path / "a1.jsonl", tmp_path / "a2.jsonl"]
    res = m.audit_verify(both)
    assert res.ok
    assert res.checked == 6
    # Nothing older than a time already archived: nothing to do, no file.
    none = m.audit_archive(to_datetime(1_000_000), tmp_path / "a3.jsonl")
    assert none.records == 0
    assert not (tmp_path / "a3.jsonl").exists()


def test_a_later_archive_alone_checks_from_its_own_start(m: SecretManager,
                                                         tmp_path: Path) -> None:
    write_some(m, 3)
    m.audit_archive(datetime.now(UTC), tmp_path / "a1.jsonl")
    write_some(m, 2, "j")
    m.audit_archive(datetime.now(UTC), tmp_path / "a2.jsonl")
    assert m.audit_verify([tmp_path / "a2.jsonl"]).ok
    # Out of order, the gap shows.
    res = m.audit_verify([tmp_path / "a2.jsonl", tmp_path / "a1.jsonl"])
    assert not res.ok


def test_removing_the_oldest_record_left_is_still_found(home: Path, tmp_path: Path) -> None:
    m = SecretManager.from_env(backend="sqlite")
    try:
        write_some(m, 5)
        m.audit_archive(cut_after(m, 2), tmp_path / "a.jsonl")
        m.audit.flush()
        with sqlite3.connect(home / "keysafe.db") as c:
            c.execute("DELETE FROM audit WHERE seq = 3")
        res = m.audit_verify()
        assert not res.ok
        assert res.problems[0] == (3, "record 3 removed")
    finally:
        m.close()


def test_a_tampered_record_stops_the_archive_and_changes_nothing(home: Path,
                                                                 tmp_path: Path) -> None:
    m = SecretManager.from_env(backend="sqlite")
    try:
        write_some(m, 5)
        m.audit.flush()
        with sqlite3.connect(home / "keysafe.db") as c:
            c.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 2")
        before = seqs(m)
        dest = tmp_path / "a.jsonl"
        with pytest.raises(IntegrityError, match="record 2 was edited"):
            m.audit_archive(datetime.now(UTC), dest)
        assert not dest.exists()
        assert not (tmp_path / "a.jsonl.partial").exists()
        assert seqs(m)[: len(before)] == before  # nothing removed
        assert m.audit_query(AuditFilter(action="audit_archive"))[-1].outcome == \
            "integrity_error"
    finally:
        m.close()


def test_a_tampered_or_damaged_archive_is_found(m: SecretManager, tmp_path: Path) -> None:
    write_some(m, 4)
    dest = tmp_path / "a.jsonl"
    m.audit_archive(cut_after(m, 3), dest)
    lines = dest.read_text().splitlines()
    edited = json.loads(lines[1])
    edited["actor"] = "mallory"
    bad = tmp_path / "edited.jsonl"
    bad.write_text("\n".join([lines[0], json.dumps(edited), lines[2]]) + "\n")
    res = m.audit_verify([bad])
    assert not res.ok
    assert (2, "record 2 was edited (its hash does not match)") in res.problems
    short = tmp_path / "short.jsonl"
    short.write_text("\n".join(lines[:2]) + "\n")  # the last record dropped
    res = m.audit_verify([short])
    assert res.ok  # alone it is consistent ...
    # ... but the store's chain no longer continues from where it ends: found when
    # the file claims to end at the base with another hash.
    forged = tmp_path / "forged.jsonl"
    last = json.loads(lines[2])
    last["hash"] = "f" * 64
    forged.write_text("\n".join([*lines[:2], json.dumps(last)]) + "\n")
    res = m.audit_verify([forged])
    assert not res.ok
    assert any("does not continue" in p for _, p in res.problems)
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text(lines[0] + "\nnot json\n")
    with pytest.raises(IntegrityError, match="line 2 is not an archived audit record"):
        m.audit_verify([garbage])


def test_bad_requests_change_nothing(m: SecretManager, tmp_path: Path) -> None:
    write_some(m, 3)
    taken = tmp_path / "taken.jsonl"
    taken.write_text("keep me\n")
    with pytest.raises(InvalidValue, match="already exists"):
        m.audit_archive(datetime.now(UTC), taken)
    assert taken.read_text() == "keep me\n"
    with pytest.raises(InvalidValue, match="in the future"):
        m.audit_archive(datetime.now(UTC) + timedelta(hours=1), tmp_path / "f.jsonl")
    with pytest.raises(InvalidValue, match="not a directory"):
        m.audit_archive(datetime.now(UTC), tmp_path / "no" / "such" / "dir.jsonl")
    assert seqs(m)[:3] == [1, 2, 3]
    assert not list(tmp_path.glob("*.partial"))
    assert m.audit_verify().ok


def test_a_concurrent_archive_is_a_conflict(m: SecretManager, tmp_path: Path) -> None:
    write_some(m, 4)
    m.audit.flush()
    store = m.audit.store
    stale = store.base()  # type: ignore[attr-defined]
    m.audit_archive(cut_after(m, 2), tmp_path / "a.jsonl")
    with pytest.raises(Conflict, match="archived by someone else"):
        store.trim(stale, 3, "x" * 64)  # type: ignore[attr-defined]
    assert m.audit_verify().ok
    # The archive that lost leaves no file behind.
    rows_before = seqs(m)

    class Racing:
        """A store whose base moves between the archive's read and its trim."""

        def __getattr__(self, name: str) -> object:
            return getattr(store, name)

        def trim(self, base: object, through: int, last_hash: str) -> None:
            raise Conflict("the audit log was archived by someone else meanwhile")

    dest = tmp_path / "lost.jsonl"
    with pytest.raises(Conflict):
        archive(Racing(), now_us(), dest)
    assert not dest.exists()
    assert seqs(m) == rows_before


@pytest.fixture
def standalone(tmp_path: Path) -> Iterator[AuditLog]:
    """An audit log in a stand-alone SQLite file (AuditDB), as cloud stores keep it."""
    db = AuditDB(tmp_path / "audit.db")
    log = AuditLog(SQLiteAuditStore(db))
    yield log
    log.close()
    db.close()


def written(log: AuditLog, n: int, *, durable: bool) -> None:
    for i in range(n):
        log.record((now_us(), "a", "write", f"p/{i}", 1, "ok", None, None, None, None),
                   durable=durable)
    log.flush()


def test_the_standalone_audit_file_archives_too(standalone: AuditLog, tmp_path: Path) -> None:
    """Cloud stores keep their chain in a stand-alone SQLite file (AuditDB)."""
    written(standalone, 5, durable=True)
    store = standalone.store
    res = archive(store, now_us(), tmp_path / "a.jsonl")
    assert res.records == 5
    standalone.record((now_us(), "a", "write", "p/x", 1, "ok", None, None, None, None),
                      durable=True)
    assert [r[0] for r in store.scan()] == [6]
    assert verify_archives([tmp_path / "a.jsonl"], store.base()).ok  # type: ignore[attr-defined]


def test_a_store_without_archiving_says_so(tmp_path: Path) -> None:
    class Bare:
        def head(self) -> None:
            return None

    with pytest.raises(Unsupported, match="cannot be archived"):
        archive(Bare(), now_us(), tmp_path / "a.jsonl")


def test_records_leave_the_store_a_batch_at_a_time(m: SecretManager, tmp_path: Path) -> None:
    """Each batch is removed in its own transaction, moving the base on; if a later
    one fails, what was removed is in the file and both sides still verify."""
    write_some(m, 7)
    m.audit.flush()
    store = m.audit.store
    calls: list[int] = []

    def trim(base: object, through: int, last_hash: str) -> None:
        calls.append(through)
        if len(calls) == 2:
            raise Conflict("the audit log was archived by someone else meanwhile")
        store.trim(base, through, last_hash)  # type: ignore[attr-defined]

    dest = tmp_path / "a.jsonl"
    with pytest.raises(Conflict):
        archive(replacing(store, trim=trim), now_us(), dest, batch=3)
    assert calls == [3, 6]
    # Records 1..3 left the store: the file keeps exactly those.
    assert [r[0] for r in read_archive(dest)] == [1, 2, 3]
    assert seqs(m)[0] == 4
    assert m.audit_verify().ok
    assert m.audit_verify([dest]).ok
    res = archive(store, now_us(), tmp_path / "b.jsonl", batch=3)
    assert (res.first, res.through) == (4, 7)
    assert m.audit_verify().ok
    assert m.audit_verify([dest, tmp_path / "b.jsonl"]).ok  # one chain, no overlap


def test_verify_reads_one_moment_while_writes_go_on(m: SecretManager) -> None:
    """Verify reads the chain as of one moment: records appended while it walks the
    chain are neither seen nor reported as added or missing."""
    import threading

    write_some(m, 50)
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set() and i < 5_000:
            m.put(f"busy{i % 20}", "v", "acme")
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        results = [m.audit_verify() for _ in range(20)]
    finally:
        stop.set()
        t.join(timeout=60)
    assert all(r.ok for r in results), [r.problems for r in results if not r.ok][:1]
    assert results[-1].checked >= 50


def test_each_batch_checkpoints_its_own_frames(home: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A removal batch copies its WAL frames back before the next one, so a long
    archive's deletes do not pile up in the WAL for another writer's commit to
    checkpoint (the backstop), then leaves the write lock free for a while, so a writer
    of another process gets its turn."""
    from keysafe.manager import audit as audit_module

    pauses: list[float] = []
    monkeypatch.setattr(audit_module, "sleep", pauses.append)
    m = SecretManager.from_env(backend="sqlite")
    try:
        write_some(m, 7)
        m.audit.flush()
        store = m.audit.store
        conn = store._host.connection  # type: ignore[attr-defined]
        seen: list[str] = []
        conn.set_trace_callback(seen.append)
        try:
            archive(store, now_us(), tmp_path / "a.jsonl", batch=3)
        finally:
            conn.set_trace_callback(None)
        steps = [s.split()[0] if not s.startswith("PRAGMA") else s for s in seen
                 if s.startswith(("DELETE", "PRAGMA wal_checkpoint"))]
        # Between batches only: nothing after the last one.
        assert steps == ["DELETE", "PRAGMA wal_checkpoint(PASSIVE)"] * 2 + ["DELETE"]
        assert len(pauses) == 2
        assert min(pauses) >= audit_module.TRIM_PAUSE
        assert m.audit_verify().ok
    finally:
        m.close()


def test_compact_gives_the_archived_space_back(home: Path, tmp_path: Path) -> None:
    """After an archive the file keeps its size (freed pages wait for new records);
    compact rewrites it: smaller, every secret still readable, the chain (store and
    archive) still verifying, the compaction itself recorded, no value in the file."""
    m = SecretManager.from_env(backend="sqlite")
    try:
        for i in range(1500):
            m.put(f"k{i % 20}", f"{CANARY}-{i}", "acme")
        dest = tmp_path / "a.jsonl"
        m.audit_archive(datetime.now(UTC), dest)
        db = Path(m.backend.path)  # type: ignore[attr-defined]
        res = m.compact()
        assert res is not None
        assert (res.store, res.where) == ("sqlite", str(db))
        assert res.bytes_after < res.bytes_before / 2
        assert db.stat().st_size <= res.bytes_after
        assert m.get("k7", "acme") == f"{CANARY}-1487"
        assert m.audit_verify().ok
        assert m.audit_verify([dest]).ok
        done = m.audit_query(AuditFilter(action="compact"))
        assert [(e.outcome, e.detail["bytes_after"]) for e in done] == [("ok", res.bytes_after)]
    finally:
        m.close()
    for f in db.parent.glob("keysafe.db*"):
        assert CANARY.encode() not in f.read_bytes()


def test_compact_of_the_standalone_audit_file(standalone: AuditLog, tmp_path: Path) -> None:
    written(standalone, 2000, durable=False)
    archive(standalone.store, now_us(), tmp_path / "a.jsonl")
    res = standalone.store.compact()  # type: ignore[attr-defined]
    assert res.where == str(tmp_path / "audit.db")
    assert res.bytes_after < res.bytes_before


def test_compact_inside_a_transaction_is_refused(home: Path) -> None:
    m = SecretManager.from_env(backend="sqlite")
    try:
        m.put("k", "v", "acme")
        with m.backend.transaction(), pytest.raises(Conflict, match="inside a transaction"):  # type: ignore[attr-defined]
            m.audit.store.compact()  # type: ignore[attr-defined]
        assert m.get("k", "acme") == "v"
    finally:
        m.close()


def test_a_memory_store_has_nothing_to_compact(home: Path) -> None:
    m = SecretManager.from_env(backend="memory")
    try:
        assert m.compact() is None
    finally:
        m.close()


@pytest.mark.parametrize("where", ["after the commit", "between batches"])
def test_an_interrupted_removal_loses_no_record(m: SecretManager, tmp_path: Path,
                                                where: str) -> None:
    """Ctrl-C can land after a batch's transaction committed (or in the pause between
    batches): the file then keeps exactly what left the store, asked of the store
    itself, so every record is in the file or in the store, and both verify."""
    write_some(m, 10)
    m.audit.flush()
    store = m.audit.store
    trims: list[int] = []

    def trim(base: object, through: int, last_hash: str) -> None:
        trims.append(through)
        if where == "between batches" and len(trims) == 3:
            raise KeyboardInterrupt
        store.trim(base, through, last_hash)  # type: ignore[attr-defined]
        if where == "after the commit" and len(trims) == 2:
            raise KeyboardInterrupt

    dest = tmp_path / "a.jsonl"
    with pytest.raises(KeyboardInterrupt):
        archive(replacing(store, trim=trim), now_us(), dest, batch=3)
    kept = [r[0] for r in read_archive(dest)]
    assert kept == [1, 2, 3, 4, 5, 6]
    assert seqs(m)[0] == 7
    assert m.audit_verify().ok
    assert m.audit_verify([dest]).ok


def test_a_store_that_cannot_say_keeps_the_records_in_the_file(m: SecretManager,
                                                               tmp_path: Path) -> None:
    """If the store fails while removing and cannot even tell its base, the file keeps
    the batch (archived twice at worst, never lost)."""
    write_some(m, 7)
    m.audit.flush()
    store = m.audit.store
    calls: list[int] = []

    def base() -> object:
        if calls:
            raise BackendUnavailable("store went away")
        return store.base()  # type: ignore[attr-defined]

    def trim(base: object, through: int, last_hash: str) -> None:
        calls.append(through)
        raise BackendUnavailable("store went away")

    dest = tmp_path / "a.jsonl"
    with pytest.raises(BackendUnavailable):
        archive(replacing(store, trim=trim, base=base), now_us(), dest, batch=3)
    assert [r[0] for r in read_archive(dest)] == [1, 2, 3]
    assert seqs(m)[0] == 1  # nothing actually left the store
    res = m.audit_verify([dest])
    assert res.ok
    assert res.notes == ("the store has archived nothing: these files were not checked "
                         "against it",)


def test_records_archived_twice_are_named_not_failed(m: SecretManager, tmp_path: Path) -> None:
    """A batch that did leave the store before it failed to say so: the file keeps the
    next batch too, which is still in the store. Verify checks the link at the store's
    base and says which records the store also holds."""
    write_some(m, 7)
    m.audit.flush()
    store = m.audit.store
    calls: list[int] = []

    def base() -> object:
        if len(calls) > 1:
            raise BackendUnavailable("store went away")
        return store.base()  # type: ignore[attr-defined]

    def trim(base: object, through: int, last_hash: str) -> None:
        calls.append(through)
        if len(calls) > 1:
            raise BackendUnavailable("store went away")
        store.trim(base, through, last_hash)  # type: ignore[attr-defined]

    dest = tmp_path / "a.jsonl"
    with pytest.raises(BackendUnavailable):
        archive(replacing(store, trim=trim, base=base), now_us(), dest, batch=3)
    assert [r[0] for r in read_archive(dest)] == [1, 2, 3, 4, 5, 6]
    assert seqs(m)[0] == 4
    res = m.audit_verify([dest])
    assert (res.ok, res.checked) == (True, 6)
    assert res.notes == ("records 4..6 are in the store too (an archive stopped after "
                         "writing them): the store's copies are the live ones",)
    assert m.audit_verify().ok


def test_verify_says_what_the_files_given_leave_unchecked(m: SecretManager,
                                                          tmp_path: Path) -> None:
    write_some(m, 3)
    m.audit_archive(datetime.now(UTC), tmp_path / "a1.jsonl")  # records 1..3
    write_some(m, 2, "j")
    m.audit_archive(datetime.now(UTC), tmp_path / "a2.jsonl")  # records 4..6
    older = m.audit_verify([tmp_path / "a1.jsonl"])
    assert older.ok
    assert older.notes == (
        "these files end at record 3, and the store's chain starts after record 6: "
        "records 4..6 must be in later archive files, not given (verify them together "
        "to check the link to the store)",)
    newer = m.audit_verify([tmp_path / "a2.jsonl"])
    assert newer.ok
    assert newer.notes == ("records 1..3 were not checked: they are in earlier archive "
                           "files, not given",)
    both = m.audit_verify([tmp_path / "a1.jsonl", tmp_path / "a2.jsonl"])
    assert (both.ok, both.notes) == (True, ())
    assert both.to_dict()["notes"] == []


def test_compact_with_a_reader_open_does_not_wait_for_it(home: Path, tmp_path: Path) -> None:
    """A reader on an older snapshot keeps the VACUUMed copy in the WAL: compact says
    so (settled false) at once, instead of holding writers up until the reader ends;
    the file shrinks at a later checkpoint."""
    m = SecretManager.from_env(backend="sqlite")
    try:
        for i in range(800):
            m.put(f"k{i % 10}", f"{CANARY}-{i}", "acme")
        m.audit_archive(datetime.now(UTC), tmp_path / "a.jsonl")
        db = Path(m.backend.path)  # type: ignore[attr-defined]
        reader = sqlite3.connect(db, isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM audit").fetchone()
        try:
            res = m.compact()
        finally:
            reader.execute("COMMIT")
            reader.close()
        assert res is not None
        assert res.settled is False
        assert m.get("k3", "acme") == f"{CANARY}-793"
        assert m.compact().settled is True  # type: ignore[union-attr]
        assert m.audit_verify().ok
    finally:
        m.close()
