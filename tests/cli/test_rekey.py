"""`keysafe rekey`: a new master key, every data key re-wrapped, no value changed."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from keysafe import maintenance
from keysafe.cli import exitcodes
from keysafe.config import load_settings
from keysafe.crypto.keys import KeyRing


def _key_ids_in_rows(home: Path) -> set[str]:
    with sqlite3.connect(home / "keysafe.db") as db:
        rows = db.execute("SELECT key_id FROM versions WHERE key_id IS NOT NULL "
                          "UNION SELECT key_id FROM secrets WHERE key_id IS NOT NULL")
        return {r[0] for r in rows}


def _fill(ks, put) -> dict[tuple[str, int], str]:
    """Secrets with several versions, a soft-deleted one and a destroyed version."""
    values: dict[tuple[str, int], str] = {}
    for name in ("a", "b", "c"):
        for v in (1, 2, 3):
            value = f"{name}-value-{v}"
            put(name, value)
            values[(name, v)] = value
    assert ks("rm", "b", "--org", "acme").code == 0
    assert ks("destroy", "c", "--org", "acme", "--versions", "1", "--yes").code == 0
    del values[("c", 1)]
    return values


def _check_values(ks, values: dict[tuple[str, int], str]) -> None:
    ks("restore", "b", "--org", "acme")
    for (name, v), value in values.items():
        r = ks("get", name, "--org", "acme", "--version", str(v))
        assert (r.code, r.out) == (0, value), (name, v, r.err)


def test_rekey_keeps_values_and_retires_the_old_key(ks, put, home: Path):
    values = _fill(ks, put)
    key_file = home / "master.key"
    old_id = json.loads(key_file.read_text())["active"]
    assert _key_ids_in_rows(home) == {old_id}

    r = ks("rekey")
    assert r.code == 0, r.err
    new_id = json.loads(key_file.read_text())["active"]
    assert new_id != old_id
    assert f"new master key {new_id} is active" in r.err
    assert "re-wrapped 8 data key(s)" in r.err  # 9 versions, one destroyed

    ring = json.loads(key_file.read_text())
    assert list(ring["keys"]) == [new_id]  # the old key is gone from the file
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert _key_ids_in_rows(home) == {new_id}
    assert not list(home.glob("*.tmp"))
    _check_values(ks, values)
    vs = ks("versions", "a", "--org", "acme", "--json").json()
    assert {v["key_id"] for v in vs} == {new_id}

    audit = ks("audit", "--action", "rekey", "--json").out.splitlines()
    assert json.loads(audit[-1])["detail"] == {"rewrapped": 8}

    j = ks("rekey", "--json")
    assert j.code == 0
    data = j.json()
    assert data["retired_key_ids"] == [new_id]
    assert data["rewrapped"] == 8
    assert _key_ids_in_rows(home) == {data["active_key_id"]}
    _check_values(ks, values)


def test_rekey_writes_both_keys_before_rewrapping(home: Path, monkeypatch, ks, put):
    """If the re-wrap dies half-way, the key file still holds every key needed."""
    put("a", "value-a")
    key_file = home / "master.key"
    old_id = json.loads(key_file.read_text())["active"]

    from keysafe.manager.manager import SecretManager

    def crash(self, progress=None):
        raise RuntimeError("power cut")

    with monkeypatch.context() as m:
        m.setattr(SecretManager, "rekey", crash)
        with pytest.raises(RuntimeError):
            maintenance.rekey(load_settings())
    ring = json.loads(key_file.read_text())
    assert old_id in ring["keys"]
    assert ring["active"] != old_id
    assert len(ring["keys"]) == 2
    assert ks("get", "a", "--org", "acme").out == "value-a"
    # finishing the job: rewrap-only re-wraps to the (new) active key
    r = ks("rekey", "--rewrap-only", "--json")
    assert r.code == 0, r.err
    assert r.json()["retired_key_ids"] == [old_id]
    assert _key_ids_in_rows(home) == {ring["active"]}


def _b64key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def test_rekey_with_env_master_key_explains_rewrap_only(ks, home: Path):
    old = _b64key()
    env = {"KEYSAFE_MASTER_KEY": f"old:{old}"}
    assert ks("put", "a", "--org", "acme", input="value-a", env=env).code == 0
    assert not (home / "master.key").exists()

    refused = ks("rekey", env=env)
    assert refused.code == exitcodes.CONFIG
    assert "--rewrap-only" in refused.err
    assert "new key first" in refused.err
    assert "active key id now is old" in refused.err
    assert old not in refused.err

    new = _b64key()
    both = {"KEYSAFE_MASTER_KEY": f"new:{new},old:{old}"}
    r = ks("rekey", "--rewrap-only", env=both)
    assert r.code == 0, r.err
    assert "no data key uses old any more: remove it from KEYSAFE_MASTER_KEY" in r.err
    assert _key_ids_in_rows(home) == {"new"}
    only_new = {"KEYSAFE_MASTER_KEY": f"new:{new}"}
    assert ks("get", "a", "--org", "acme", env=only_new).out == "value-a"
    assert ks("get", "a", "--org", "acme", env=env).code == exitcodes.CONFIG
    assert not (home / "master.key").exists()


def test_rekey_refuses_without_key_file(ks, home: Path):
    r = ks("rekey")
    assert r.code == exitcodes.CONFIG
    assert "keysafe init" in r.err


def test_rekey_reports_rows_left_under_an_old_key(home: Path, monkeypatch, put):
    put("a", "value-a")
    from keysafe.backends.sqlite import SQLiteBackend

    monkeypatch.setattr(SQLiteBackend, "key_ids_in_use", lambda self: {"k-stale"})
    with pytest.raises(Exception) as info:
        maintenance.rekey(load_settings())
    assert exitcodes.exit_code_for(info.value) == exitcodes.CONFLICT
    ring = KeyRing.from_file(home / "master.key")
    assert len(ring.ids) == 2  # nothing removed
