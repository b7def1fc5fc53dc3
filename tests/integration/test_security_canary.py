"""Security invariant 1: a secret value never shows up anywhere but the one read path.

A unique canary value is driven through every verb, failures included, with DEBUG
logging captured and the audit JSON-lines sink on. Afterwards the canary must not be in
any log record, audit record, exception, repr, or byte of the SQLite files (read both
while the store is open and after it is closed).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import traceback
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from keysafe import (
    AsyncSecretManager,
    Conflict,
    InvalidValue,
    KeysafeError,
    NotFound,
    SecretManager,
    ValueTooLarge,
    load_settings,
)


def isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **env: str) -> Path:
    for var in list(os.environ):
        if var.startswith("KEYSAFE_") or var == "ENVIRONMENT":
            monkeypatch.delenv(var)
    home = tmp_path / "home"
    monkeypatch.setenv("KEYSAFE_HOME", str(home))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(tmp_path)
    return home


class Leaks:
    """Collects every text the canary must not appear in, with where it came from."""

    def __init__(self, needles: list[str]) -> None:
        self.needles = needles
        self.texts: list[tuple[str, str]] = []

    def add(self, where: str, obj: object) -> None:
        self.texts.append((where, obj if isinstance(obj, str) else repr(obj)))
        if isinstance(obj, BaseException):
            self.texts.append((where + " str", str(obj)))
            self.texts.append((where + " traceback",
                               "".join(traceback.format_exception(obj))))
            self.texts.append((where + " args", repr(obj.args)))
            self.texts.append((where + " vars", repr(vars(obj))))

    def add_bytes(self, where: str, data: bytes) -> None:
        for n in self.needles:
            assert n.encode() not in data, f"the canary is in the bytes of {where}"

    def expect_error(self, where: str, kind: type[BaseException], fn: Callable[[], Any]) -> None:
        with pytest.raises(kind) as ei:
            fn()
        self.add(where, ei.value)

    def check(self) -> None:
        found = [w for w, t in self.texts for n in self.needles if n in t]
        assert found == [], f"the canary leaked into: {found}"


def store_files(home: Path) -> dict[str, bytes]:
    if not home.exists():  # the memory backend writes no files
        return {}
    return {p.name: p.read_bytes() for p in home.iterdir() if p.is_file()}


@pytest.mark.parametrize("backend", ["sqlite", "memory"])
def test_a_canary_driven_through_every_verb_never_leaks(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str], backend: str) -> None:
    audit_file = tmp_path / "audit" / "audit.jsonl"
    home = isolate(monkeypatch, tmp_path, KEYSAFE_AUDIT_FILE=str(audit_file),
                   KEYSAFE_BACKEND=backend, KEYSAFE_MAX_VERSIONS="50")
    caplog.set_level(logging.DEBUG)
    hexpart = uuid.uuid4().hex
    canary = "canary-" + hexpart
    leaks = Leaks([canary, hexpart])
    openai_value = "sk-" + canary  # passes the OpenAI format check, holds the canary

    m = SecretManager.from_env()
    am = AsyncSecretManager(m)
    L = leaks.add
    name, org = "canary_secret", "acme"

    # -- the verbs, successful ------------------------------------------------------------
    L("put v1", m.put(name, canary, org, description="plain text, not the value",
                      tags={"kind": "canary"}))
    assert m.get(name, org) == canary  # the one authorised read path
    assert m.get(name, org, fresh=True) == canary
    assert m.get(name, org, version=1) == canary
    L("has", m.has(name, org))
    L("describe", m.describe(name, org))
    L("list", m.list(org))
    L("list all", m.list())
    L("put v2", m.put(name, canary + "-second", org, expected_version=1))
    L("versions", m.versions(name, org))
    L("rollback", m.rollback(name, 1, org))
    assert m.get(name, org) == canary
    L("update_metadata", m.update_metadata(name, org, description="still no value"))
    L("put_json", m.put_json("canary_json", {"token": canary, "user": "svc"}, org))
    L("update_json", m.update_json("canary_json", {"other": canary + "-2", "user": None}, org))
    assert m.get_json("canary_json", org)["token"] == canary
    assert m.get_json_field("canary_json", "other", org) == canary + "-2"
    L("put openai", m.put("openai_api_key", openai_value, org, domain="card-services"))
    assert m.get_llm_api_key(org, "openai", domain="card-services") == openai_value
    L("path put", m.put(m.path("by_path", org), canary, None))

    # -- the verbs, failing with the canary in hand -----------------------------------------
    leaks.expect_error("cas conflict", Conflict,
                       lambda: m.put(name, canary + "-cas", org, expected_version=1))
    leaks.expect_error("cas create conflict", Conflict,
                       lambda: m.put(name, canary, org, expected_version=0))
    leaks.expect_error("too large", ValueTooLarge,
                       lambda: m.put("big", canary * 2000, org))
    leaks.expect_error("format check", InvalidValue,
                       lambda: m.put("openai_api_key", canary, org))
    leaks.expect_error("format check json", InvalidValue,
                       lambda: m.put("gcp_service_account_json", canary, org))
    leaks.expect_error("not json", InvalidValue, lambda: m.get_json(name, org))
    leaks.expect_error("update_json of plain", InvalidValue,
                       lambda: m.update_json(name, {"k": canary}, org))
    leaks.expect_error("missing field", NotFound,
                       lambda: m.get_json_field("canary_json", "nope", org))
    leaks.expect_error("put_json not an object", InvalidValue,
                       lambda: m.put_json("canary_json", [canary], org))  # type: ignore[arg-type]
    leaks.expect_error("put_json unserialisable", TypeError,
                       lambda: m.put_json("canary_json", {"k": {canary}}, org))
    leaks.expect_error("bad version", NotFound, lambda: m.get(name, org, version=99))
    leaks.expect_error("rollback missing", NotFound, lambda: m.rollback(name, 99, org))
    leaks.expect_error("not text", InvalidValue,
                       lambda: m.put(name, canary.encode(), org))  # type: ignore[arg-type]
    leaks.expect_error("bad name", KeysafeError, lambda: m.put(name, canary, None))

    # -- async ----------------------------------------------------------------------------------
    import asyncio

    async def via_async() -> None:
        L("async put", await am.put("async_secret", canary, org))
        assert await am.get("async_secret", org) == canary
        assert await am.get("async_secret", org) == canary  # a cache hit
        with pytest.raises(Conflict) as ei:
            await am.put("async_secret", canary, org, expected_version=0)
        L("async conflict", ei.value)

    asyncio.run(via_async())

    # -- delete, restore, destroy ---------------------------------------------------------------
    L("delete", m.delete(name, org))
    leaks.expect_error("read deleted", NotFound, lambda: m.get(name, org))
    L("restore", m.restore(name, org))
    L("destroy", m.destroy(name, [1, 2], org))
    leaks.expect_error("read destroyed", NotFound, lambda: m.get(name, org, version=1))
    L("delete json", m.delete("canary_json", org))
    m.recovery_window = timedelta(0)
    L("purge_expired", m.purge_expired())
    L("force delete", m.delete("by_path", org, force=True))

    # -- what must not hold the canary ------------------------------------------------------------
    m.audit.flush()
    for e in m.audit_query():
        L(f"audit record {e.seq}", json.dumps(e.to_dict()))
        L(f"audit record repr {e.seq}", e)
    assert m.audit_verify().ok
    L("manager", m)
    L("async manager", am)
    L("backend", m.backend)
    L("cache", m.cache)
    L("audit log", m.audit)
    L("audit store", m.audit.store)
    L("stats", m.stats())
    L("catalog", m.catalog)
    L("settings", load_settings())
    L("settings describe", load_settings().describe())
    envelope = getattr(m.backend, "envelope", None)
    if envelope is not None:
        L("keyring", envelope.keyring)
    for meta in m.list(include_deleted=True):
        L("metadata", meta)
        L("metadata dict", json.dumps(meta.to_dict(), default=str))
    for v in m.versions("openai_api_key", org, domain="card-services"):
        L("version info", v)
        L("version dict", json.dumps(v.to_dict()))
    for rec in caplog.records:
        L(f"log {rec.name}", rec.getMessage())
        L(f"log args {rec.name}", repr(rec.args))
        if rec.exc_info and rec.exc_info[1] is not None:
            L(f"log exc {rec.name}", rec.exc_info[1])
    L("captured log text", caplog.text)
    out = capsys.readouterr()
    L("stdout", out.out)
    L("stderr", out.err)
    leaks.check()

    assert audit_file.exists()
    m.audit.flush()
    assert len(audit_file.read_text().splitlines()) == len(m.audit_query())
    leaks.add_bytes("the audit JSONL file", audit_file.read_bytes())

    if backend == "sqlite":
        open_files = store_files(home)
        assert "keysafe.db" in open_files
        assert "keysafe.db-wal" in open_files
        for fname, data in open_files.items():
            leaks.add_bytes(f"{fname} (open)", data)
    m.close()
    for fname, data in store_files(home).items():
        leaks.add_bytes(f"{fname} (closed)", data)
    leaks.add_bytes("the audit JSONL file (closed)", audit_file.read_bytes())


def test_the_canary_is_not_in_sqlite_files_while_writes_are_in_flight(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Many versions without a checkpoint: the WAL holds every page ever written."""
    home = isolate(monkeypatch, tmp_path, KEYSAFE_MAX_VERSIONS="1000")
    canary = "canary-" + uuid.uuid4().hex
    with SecretManager.from_env() as m:
        for i in range(50):
            m.put(f"s{i % 5}", f"{canary}-{i}", "acme")
            m.get(f"s{i % 5}", "acme")
        m.update_json("j", {"a": canary}, "acme")
        files = store_files(home)
        assert files.get("keysafe.db-wal")
        for fname, data in files.items():
            assert canary.encode() not in data, fname
            assert canary[7:].encode() not in data, fname
    for fname, data in store_files(home).items():
        assert canary.encode() not in data, fname


@pytest.mark.parametrize("spelling", ["plain", "with_kid", "two_keys"])
def test_the_master_key_never_shows(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str],
                                    caplog: pytest.LogCaptureFixture, spelling: str) -> None:
    caplog.set_level(logging.DEBUG)
    raw = os.urandom(32)
    b64 = base64.b64encode(raw).decode()
    other = base64.b64encode(os.urandom(32)).decode()
    value = {"plain": b64, "with_kid": f"prod-1:{b64}", "two_keys": f"k2:{other},k1:{b64}"}
    db_pw = "dbpw-" + uuid.uuid4().hex
    home = isolate(monkeypatch, tmp_path, KEYSAFE_MASTER_KEY=value[spelling],
                   KEYSAFE_DATABASE_URL=f"postgresql://app:{db_pw}@db.internal/keysafe",
                   KEYSAFE_BACKEND="sqlite")  # the URL alone would choose postgres
    needles = [b64, b64[:20], raw.hex(), db_pw]
    if spelling == "two_keys":
        needles += [other, other[:20]]

    settings = load_settings()
    assert settings.master_key == value[spelling]
    rows = settings.describe()
    shown = dict((k, v) for k, v, _ in rows)
    assert shown["master_key"] != "-"  # it says the key is set
    texts = [repr(settings), str(settings), repr(rows), repr(settings.sources),
             json.dumps(rows)]
    m = SecretManager.from_settings(settings)
    m.put("token", "x", "acme")
    assert m.get("token", "acme") == "x"
    m.audit.flush()
    texts += [repr(m), repr(m.backend), repr(getattr(m.backend, "envelope", None)),
              repr(getattr(getattr(m.backend, "envelope", None), "keyring", None)),
              json.dumps([e.to_dict() for e in m.audit_query()]), caplog.text]
    for v in m.versions("token", "acme"):
        texts.append(repr(v))
    m.close()
    out = capsys.readouterr()
    texts += [out.out, out.err]
    for t in texts:
        for n in needles:
            assert n not in t
    for p in home.iterdir():
        data = p.read_bytes()
        assert b64.encode() not in data, p.name
        assert raw not in data, p.name
    assert not (home / "master.key").exists()  # the env key is not written to a file


def test_a_bad_master_key_error_does_not_quote_it(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    almost = base64.b64encode(os.urandom(31)).decode()  # valid base64, wrong length
    isolate(monkeypatch, tmp_path, KEYSAFE_MASTER_KEY=almost)
    with pytest.raises(KeysafeError) as ei:
        SecretManager.from_env()
    assert almost not in str(ei.value)
    assert almost not in repr(ei.value)
    isolate(monkeypatch, tmp_path, KEYSAFE_MASTER_KEY="not*base64*" + almost)
    with pytest.raises(KeysafeError) as ei:
        SecretManager.from_env()
    assert almost not in str(ei.value)
    assert almost not in repr(ei.value)
