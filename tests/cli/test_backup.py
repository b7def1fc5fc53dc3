"""``keysafe db backup`` and ``keysafe db restore`` through the installed script: a
consistent copy while a writer keeps writing, a restore that checks everything before
changing anything, and no value or master key in a backup."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from keysafe import backup as bk
from keysafe.config import load_settings

KEYSAFE = str(Path(sys.executable).parent / "keysafe")
Ks = Callable[..., Any]  # the conftest's ks fixture: ks(*args, input=, env=) -> Run

CANARY = "canary-backup-\u00e9-" + "w" * 20


def put(ks: Ks, name: str, value: str) -> None:
    r = ks("put", name, "--org", "acme", input=value)
    assert r.code == 0, r.err


def get(ks: Ks, name: str) -> str:
    r = ks("get", name, "--org", "acme")
    assert r.code == 0, r.err
    return r.out


def test_backup_then_restore_round_trip(ks: Ks, home: Path, tmp_path: Path) -> None:
    put(ks, "db-pass", CANARY)
    put(ks, "api-key", "first-" + "a" * 20)
    dest = tmp_path / "backup"
    r = ks("db", "backup", str(dest), "--verify", "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert out["verified"] == {"audit_records": 3, "values": 2}  # 2 writes + db_backup
    assert out["counts"]["secrets"] == 2
    assert out["missing_keys"] == []
    assert sorted(os.listdir(dest)) == ["keysafe.db", "manifest.json"]
    assert oct(dest.stat().st_mode & 0o777) == "0o700"
    assert all(oct((dest / f).stat().st_mode & 0o777) == "0o600" for f in os.listdir(dest))
    manifest = json.loads((dest / "manifest.json").read_text())
    key = json.loads((home / "master.key").read_text())
    assert manifest["key_ids"] == [key["active"]]
    # Neither a value nor the master key anywhere in the backup.
    secret_bytes = [base64.b64decode(k) for k in key["keys"].values()]
    for f in dest.iterdir():
        data = f.read_bytes()
        assert CANARY.encode() not in data
        for kb in secret_bytes:
            assert kb not in data
            assert base64.b64encode(kb) not in data
    # Changes after the backup, then the restore: the backup's state is back.
    put(ks, "api-key", "second-" + "b" * 20)
    put(ks, "later", "c" * 20)
    r = ks("db", "restore", str(dest), "--yes", "--json")
    assert r.code == 0, r.err
    res = json.loads(r.out)
    assert res["files"] == ["keysafe.db"]
    assert res["audit"] == {"ok": True, "checked": 4}  # the backup's 3 + db_restore
    assert get(ks, "api-key") == "first-" + "a" * 20
    assert get(ks, "db-pass") == CANARY
    assert ks("status", "later", "--org", "acme").code == 3
    # What it replaced is kept aside, readable with the same key.
    aside = Path(res["aside"])
    assert aside.parent == home
    assert (aside / "keysafe.db").is_file()
    assert ks("audit", "verify").code == 0
    audit = ks("audit", "--action", "db_restore", "--json")
    assert audit.code == 0
    assert str(dest) in audit.out


def test_backup_while_a_writer_writes_is_consistent(ks: Ks, home: Path,
                                                    tmp_path: Path) -> None:
    put(ks, "seed", "s" * 20)  # creates the store and key
    script = ("import sys\n"
              "from keysafe import SecretManager\n"
              "m = SecretManager.from_env()\n"
              "for i in range(400):\n"
              "    m.put(f'w{i % 40}', f'value-{i}-' + 'x' * 20, 'acme')\n"
              "    print(i, flush=True)\n")
    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              env=dict(os.environ))
    try:
        assert writer.stdout is not None
        for _ in range(30):  # some writes before the backup starts
            writer.stdout.readline()
        backups = []
        for n in range(3):
            dest = tmp_path / f"b{n}"
            r = ks("db", "backup", str(dest), "--verify", "--json")
            assert r.code == 0, r.err
            backups.append(json.loads(r.out))
    finally:
        writer.wait(timeout=120)
    assert writer.returncode == 0
    for b in backups:  # each copy: one moment, chain intact, every value decrypts
        assert b["verified"]["values"] == b["counts"]["secrets"] >= 2
        assert b["verified"]["audit_records"] == b["counts"]["audit_records"]


def test_restore_checks_before_changing_anything(ks: Ks, home: Path, tmp_path: Path) -> None:
    put(ks, "api-key", CANARY)
    dest = tmp_path / "backup"
    assert ks("db", "backup", str(dest)).code == 0
    before = (home / "keysafe.db").read_bytes()

    def unchanged() -> None:
        assert (home / "keysafe.db").read_bytes() == before
        assert not list(home.glob("pre-restore-*"))

    # Not a backup.
    r = ks("db", "restore", str(tmp_path), "--yes")
    assert r.code == 8
    assert "not a keysafe backup" in r.err
    unchanged()
    # A CLI pointed at a server works through it: store commands refuse, first.
    r = ks("db", "restore", str(dest), "--yes",
           env={"KEYSAFE_SERVER_URL": "http://127.0.0.1:9"})
    assert r.code == 8
    assert "KEYSAFE_SERVER_URL is set" in r.err
    unchanged()
    # Declined.
    r = ks("db", "restore", str(dest), input="n\n")
    assert r.code == 1
    unchanged()
    # A server holds the serve lock (a shared flock, as `keysafe serve` takes it).
    fd = bk.hold_serve_lock(home)
    try:
        r = ks("db", "restore", str(dest), "--yes")
        assert r.code == 8
        assert "server is running" in r.err
    finally:
        assert fd is not None
        os.close(fd)
    unchanged()
    # Another master key: the backup needs the one it was made with.
    other = base64.b64encode(os.urandom(32)).decode()
    r = ks("db", "restore", str(dest), "--yes", env={"KEYSAFE_MASTER_KEY": other})
    assert r.code == 8
    assert "needs master key id" in r.err
    unchanged()
    # An altered file (one byte): integrity error, exit 6.
    db = dest / "keysafe.db"
    data = bytearray(db.read_bytes())
    data[len(data) // 2] ^= 1
    db.write_bytes(bytes(data))
    r = ks("db", "restore", str(dest), "--yes")
    assert r.code == 6
    assert "altered or truncated" in r.err
    unchanged()
    # A manifest from a future keysafe.
    m = json.loads((dest / "manifest.json").read_text())
    (dest / "manifest.json").write_text(json.dumps({**m, "version": 99}))
    r = ks("db", "restore", str(dest), "--yes")
    assert r.code == 8
    assert "newer keysafe" in r.err
    unchanged()
    assert CANARY not in r.err + r.out


def test_backup_refusals(ks: Ks, home: Path, tmp_path: Path) -> None:
    r = ks("db", "backup", str(tmp_path / "nothing-yet"))
    assert r.code == 3  # no store yet
    put(ks, "api-key", "v" * 20)
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("keep me")
    r = ks("db", "backup", str(full))
    assert r.code == 5
    assert (full / "x").read_text() == "keep me"
    r = ks("db", "backup", str(home / "inside"))
    assert r.code == 2
    assert "inside KEYSAFE_HOME" in r.err
    r = ks("db", "backup", str(tmp_path / "mem"), env={"KEYSAFE_BACKEND": "memory"})
    assert r.code == 9
    r = ks("db", "backup", str(tmp_path / "pg"),
           env={"KEYSAFE_DATABASE_URL": "postgresql://127.0.0.1:1/none"})
    assert r.code == 9
    assert "pg_dump" in r.err
    # Only the db_backup of the one that ran is recorded: refusals record nothing.
    audit = ks("audit", "--action", "db_backup", "--json")
    assert audit.code == 0
    assert audit.out.strip() == ""


@pytest.mark.parametrize(("backend", "files"), [("sqlite", ["keysafe.db", "server.db"]),
                                                 ("aws-sm", ["audit.db", "server.db"]),
                                                 ("vault", ["audit.db", "server.db"])])
def test_which_files_a_store_keeps_in_its_home(backend: str, files: list[str],
                                              tmp_path: Path) -> None:
    settings = load_settings({"KEYSAFE_HOME": str(tmp_path), "KEYSAFE_BACKEND": backend})
    assert bk._names(settings) == files


def test_a_server_holds_the_serve_lock(tmp_path: Path) -> None:
    """`keysafe serve` on the embedded store holds the lock a restore needs."""
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("KEYSAFE_") and k != "ENVIRONMENT"}
    env.update(KEYSAFE_HOME=str(home), KEYSAFE_KEY_CHECKS="off")
    import socket

    with socket.socket() as sock:  # a free loopback port
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    p = subprocess.Popen([KEYSAFE, "serve", "--host", "127.0.0.1", "--port", str(port)],
                         env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (home / bk.SERVE_LOCK).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        with pytest.raises(Exception, match="server is running"), \
                bk.no_server_running(home):
            pass
    finally:
        p.terminate()
        p.wait(timeout=30)
    with bk.no_server_running(home):  # released with the process
        pass


def test_a_failed_backup_is_recorded_as_failed_and_leaves_nothing(
        ks: Ks, home: Path, tmp_path: Path) -> None:
    put(ks, "api-key", "v" * 20)
    dest = tmp_path / "b"
    other = base64.b64encode(os.urandom(32)).decode()
    r = ks("db", "backup", str(dest), "--verify", env={"KEYSAFE_MASTER_KEY": other})
    assert r.code != 0
    assert not dest.exists()
    audit = ks("audit", "--action", "db_backup", "--json")
    assert [json.loads(line)["outcome"] for line in audit.out.splitlines()] == [
        "started", "failed"]


def test_an_interrupted_restore_leaves_a_whole_database(
        ks: Ks, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed between setting the old file aside and renaming the new one in: the
    store's path still holds the old database, whole (its WAL folded in first)."""
    put(ks, "api-key", "old-" + "a" * 20)
    dest = tmp_path / "b"
    assert ks("db", "backup", str(dest)).code == 0
    put(ks, "later", "l" * 20)  # only in the live store (and its WAL)
    real = os.replace

    def dies(a: object, b: object) -> None:
        if str(a).endswith(".restore"):
            raise KeyboardInterrupt  # stands for the process dying here
        real(a, b)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", dies)
    with pytest.raises(KeyboardInterrupt):
        bk.restore(load_settings(), dest)
    monkeypatch.setattr(os, "replace", real)
    assert not list(home.glob(".*.restore"))
    assert get(ks, "later") == "l" * 20
    assert ks("audit", "verify").code == 0


def test_a_cloud_store_backs_up_its_local_audit_chain(ks: Ks, home: Path,
                                                      tmp_path: Path) -> None:
    env = {"KEYSAFE_BACKEND": "env", "FOO_KEY": "f" * 20}
    ks("get", "FOO_KEY", "--org", "acme", env=env)  # any call makes the audit file
    assert (home / "audit.db").is_file()
    dest = tmp_path / "b"
    r = ks("db", "backup", str(dest), "--json", env=env)
    assert r.code == 0, r.err
    assert list(json.loads(r.out)["files"]) == ["audit.db"]
    r = ks("db", "restore", str(dest), "--yes", env=env)
    assert r.code == 0, r.err
    assert "were not changed" in r.err
    audit = ks("audit", "--action", "db_restore", "--json", env=env)
    detail = json.loads(audit.out.splitlines()[0])["detail"]
    assert detail["replaced_head"]["seq"] >= 2


def _home_files(home: Path) -> dict[str, bytes]:
    """Every file in KEYSAFE_HOME with its bytes (the serve lock aside: a restore may
    create it, empty, to take its lock)."""
    return {str(p.relative_to(home)): p.read_bytes() for p in sorted(home.rglob("*"))
            if p.is_file() and p.name != bk.SERVE_LOCK}


def _write_manifest(dest: Path, files: dict[str, bytes], key_ids: list[str]) -> None:
    import hashlib

    (dest / "manifest.json").write_text(json.dumps({
        "format": bk.FORMAT, "version": bk.VERSION, "created_at": "2026-11-24T00:00:00+00:00",
        "backend": "sqlite", "app": None, "env": None, "key_ids": key_ids, "counts": {},
        "files": {n: {"bytes": len(b), "sha256": hashlib.sha256(b).hexdigest()}
                  for n, b in files.items()}}))
    for n, b in files.items():
        (dest / n).write_bytes(b)


def _assert_untouched(ks: Ks, home: Path, before: dict[str, bytes], value: str) -> None:
    """The live store's files are byte for byte what they were (checked first: reading
    records an audit event), nothing set aside or left staged, and it still reads."""
    assert _home_files(home) == before
    assert not list(home.glob("pre-restore-*"))
    assert not list(home.glob(".*.restore*"))
    assert get(ks, "api-key") == value
    assert ks("audit", "verify").code == 0


def test_restore_refuses_a_backup_file_that_is_not_a_keysafe_database(
        ks: Ks, home: Path, tmp_path: Path) -> None:
    """Hashes that match the manifest are not enough: each staged copy is opened
    read-only (integrity check, keysafe's tables) before the live store is touched."""
    import sqlite3

    put(ks, "api-key", CANARY)
    before = _home_files(home)
    # 8 KB of random bytes with a manifest that describes them exactly.
    junk = tmp_path / "junk"
    junk.mkdir()
    _write_manifest(junk, {"keysafe.db": os.urandom(8192)}, [])
    r = ks("db", "restore", str(junk), "--yes")
    assert r.code == 6, r.err
    assert "keysafe.db" in r.err
    assert "not a usable SQLite database" in r.err
    assert "file is not a database" in r.err
    _assert_untouched(ks, home, before, CANARY)
    # A sound SQLite file without keysafe's tables.
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.commit()
    conn.close()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    _write_manifest(foreign, {"keysafe.db": other.read_bytes()}, [])
    before = _home_files(home)
    r = ks("db", "restore", str(foreign), "--yes")
    assert r.code == 6, r.err
    assert "is not a keysafe database (no secrets table)" in r.err
    _assert_untouched(ks, home, before, CANARY)
    # A real backup whose copy is damaged (a page zeroed), the manifest made to match.
    real = tmp_path / "real"
    assert ks("db", "backup", str(real)).code == 0
    data = bytearray((real / "keysafe.db").read_bytes())
    data[4096:8192] = bytes(4096)
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    _write_manifest(damaged, {"keysafe.db": bytes(data)}, [])
    before = _home_files(home)
    r = ks("db", "restore", str(damaged), "--yes")
    assert r.code == 6, r.err
    assert "keysafe.db in the backup" in r.err
    _assert_untouched(ks, home, before, CANARY)
    assert CANARY not in r.err + r.out


def test_restore_reads_the_key_ids_from_the_staged_store_not_the_manifest(
        ks: Ks, home: Path, tmp_path: Path) -> None:
    """A backup from another home (another master key) whose manifest claims it needs no
    key: refused before the swap, naming the key id its rows actually use."""
    other_home = tmp_path / "other-home"
    env = {"KEYSAFE_HOME": str(other_home)}
    r = ks("put", "api-key", "--org", "acme", input="other-" + "o" * 20, env=env)
    assert r.code == 0, r.err
    dest = tmp_path / "backup"
    assert ks("db", "backup", str(dest), env=env).code == 0
    other_kid = json.loads((other_home / "master.key").read_text())["active"]
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["key_ids"] == [other_kid]
    manifest["key_ids"] = []  # the hashes cover the .db files, not this claim
    (dest / "manifest.json").write_text(json.dumps(manifest))

    put(ks, "api-key", CANARY)  # this home: its own store and master key
    before = _home_files(home)
    r = ks("db", "restore", str(dest), "--yes")
    assert r.code == 8, r.err
    assert f"needs master key id(s) {other_kid}" in r.err
    assert "manifest does not list" in r.err
    _assert_untouched(ks, home, before, CANARY)

    # The id is in the key ring but under another key: the copy's data keys do not
    # unwrap with it, so it is refused too (and this home's own key still works).
    key = json.loads((home / "master.key").read_text())
    key["keys"][other_kid] = base64.b64encode(os.urandom(32)).decode()
    (home / "master.key").write_text(json.dumps(key))
    before = _home_files(home)
    r = ks("db", "restore", str(dest), "--yes")
    assert r.code == 8, r.err
    assert f"the configured master key {other_kid} does not open keysafe.db" in r.err
    _assert_untouched(ks, home, before, CANARY)

    # With the right key in the ring the same backup restores.
    other_key = json.loads((other_home / "master.key").read_text())
    key["keys"][other_kid] = other_key["keys"][other_kid]
    (home / "master.key").write_text(json.dumps(key))
    r = ks("db", "restore", str(dest), "--yes")
    assert r.code == 0, r.err
    assert get(ks, "api-key") == "other-" + "o" * 20
