"""Helpers for the master-key-wrapped-by-a-KMS tests: the real ``keysafe`` script in a
fresh process (one unwrap each, as in production), a clean KEYSAFE_HOME, and the
canary search for the plaintext master keys."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KEYSAFE = str(Path(sys.executable).parent / "keysafe")


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


class Cli:
    """``keysafe`` subprocesses with KEYSAFE_HOME and the KMS settings of one test."""

    def __init__(self, home: Path, **env: str) -> None:
        self.home = home
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("KEYSAFE_") and k != "ENVIRONMENT"}
        self.env.update(KEYSAFE_HOME=str(home), KEYSAFE_ACTOR="tester", **env)
        self.work = home.parent / "work"
        self.work.mkdir(parents=True, exist_ok=True)  # no stray keysafe.toml

    @property
    def key_file(self) -> Path:
        return self.home / "master.key"

    def __call__(self, *args: str, input: str = "", **env: str | None) -> Run:
        full = dict(self.env)
        for k, v in env.items():
            if v is None:
                full.pop(k, None)
            else:
                full[k] = v
        p = subprocess.run([KEYSAFE, *args], input=input.encode(), capture_output=True,
                           env=full, cwd=self.work, timeout=120)
        return Run(p.returncode, p.stdout.decode(), p.stderr.decode())

    def put(self, name: str, value: str, **env: str | None) -> None:
        r = self("put", name, "--org", "acme", input=value, **env)
        assert r.code == 0, r.err

    def get(self, name: str, **env: str | None) -> Run:
        return self("get", name, "--org", "acme", **env)


def key_forms(ring: dict[str, Any]) -> list[bytes]:
    """Every way a plaintext ring's keys could leak: raw, base64, hex, urlsafe base64."""
    forms: list[bytes] = []
    for b64 in ring["keys"].values():
        raw = base64.b64decode(b64)
        forms += [raw, b64.encode(), raw.hex().encode(), base64.urlsafe_b64encode(raw)]
    return forms


def assert_no_key(ring: dict[str, Any], *blobs: bytes | str) -> None:
    """The canary search: no form of any key in any of ``blobs``."""
    for blob in blobs:
        data = blob.encode() if isinstance(blob, str) else blob
        for form in key_forms(ring):
            assert form not in data, "a plaintext master key leaked"


def wrapped_doc(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    assert doc["format"] == "keysafe-wrapped-master-key-ring"
    assert doc["version"] == 1
    assert set(doc) == {"format", "version", "kms", "ciphertext"}
    return doc


def init_put_get_rekey_doctor(cli: Cli, ref: str,
                              open_ring: Callable[[dict[str, Any]], dict[str, Any]],
                              *extra: bytes) -> dict[str, Any]:
    """The whole life of a wrapped ring through the real script: ``init`` writes the
    file wrapped by ``ref`` (mode 0600), values round-trip, ``rekey`` saves a new ring
    wrapped by the same key, ``doctor`` names the reference and its source; neither
    ring's keys appear in the file, any output, the database or ``extra`` (request
    bodies the KMS saw). ``open_ring`` decrypts a wrapped document the KMS's own way.
    Returns doctor's JSON."""
    r = cli("init", "--json")
    assert r.code == 0, r.err
    assert r.json()["kms"] == ref
    doc = wrapped_doc(cli.key_file)
    assert doc["kms"] == ref
    assert stat.S_IMODE(cli.key_file.stat().st_mode) == 0o600
    first = open_ring(doc)
    cli.put("db_password", "wrapped-ring-value-1")
    assert cli.get("db_password").out == "wrapped-ring-value-1"

    rk = cli("rekey", "--json")
    assert rk.code == 0, rk.err
    second = open_ring(wrapped_doc(cli.key_file))
    assert second["active"] == rk.json()["active_key_id"] != first["active"]
    assert cli.get("db_password").out == "wrapped-ring-value-1"

    doctor = cli("doctor", "--json")
    assert doctor.code == 0, doctor.err
    report: dict[str, Any] = doctor.json()
    row = next(s for s in report["settings"] if s["setting"] == "master_key_kms")
    assert (row["value"], row["source"]) == (ref, "env KEYSAFE_MASTER_KEY_KMS")
    for ring in (first, second):
        assert_no_key(ring, cli.key_file.read_bytes(), r.out, r.err, rk.out, rk.err,
                      doctor.out, doctor.err, (cli.home / "keysafe.db").read_bytes(),
                      *extra)
    return report


def wrap_unwrap_round_trip(cli: Cli,
                           open_ring: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """A plaintext deployment wrapped (`master-key wrap`: the KMS's document holds the
    same ring) and unwrapped again (the same plaintext file), values readable at each
    step, no key in any output."""
    cli("init", KEYSAFE_MASTER_KEY_KMS=None)
    cli.put("a", "value-a", KEYSAFE_MASTER_KEY_KMS=None)
    plain = json.loads(cli.key_file.read_text())
    w = cli("master-key", "wrap", "--yes", "--json")
    assert w.code == 0, w.err
    assert w.json()["changed"] is True
    assert open_ring(wrapped_doc(cli.key_file)) == plain
    assert cli.get("a").out == "value-a"
    u = cli("master-key", "unwrap", "--yes")
    assert u.code == 0, u.err
    assert "Unset KEYSAFE_MASTER_KEY_KMS" in u.err
    assert json.loads(cli.key_file.read_text()) == plain
    assert cli.get("a", KEYSAFE_MASTER_KEY_KMS=None).out == "value-a"
    assert_no_key(plain, w.out, w.err, u.out, u.err)
    # Each change of the key file is in the audit log, before and after, in one chain.
    for action, kms in (("master_key_wrap", cli.env["KEYSAFE_MASTER_KEY_KMS"]),
                        ("master_key_unwrap", cli.env["KEYSAFE_MASTER_KEY_KMS"])):
        assert audit_outcomes(cli, action) == [("started", None), ("ok", True)]
        assert all(d["kms"] == kms for d in audit_details(cli, action))
    v = cli("audit", "verify", KEYSAFE_MASTER_KEY_KMS=None)
    assert v.code == 0, v.err


def audit_details(cli: Cli, action: str, **env: str | None) -> list[dict[str, Any]]:
    """The ``detail`` of each audit record of ``action``, oldest first."""
    env.setdefault("KEYSAFE_MASTER_KEY_KMS", None)
    r = cli("audit", "--action", action, "--json", **env)
    assert r.code == 0, r.err
    rows = [json.loads(line) for line in r.out.splitlines() if line.strip()]
    rows.sort(key=lambda row: row["seq"])
    return [{**(row.get("detail") or {}), "outcome": row["outcome"]} for row in rows]


def audit_outcomes(cli: Cli, action: str, **env: str | None) -> list[tuple[str, Any]]:
    """(outcome, detail's ``changed``) of each audit record of ``action``."""
    return [(d["outcome"], d.get("changed")) for d in audit_details(cli, action, **env)]


def missing_sdk_names_the_extra(monkeypatch: Any, home: Path, module: str, reference: str,
                                extra: str) -> None:
    """With ``module`` not importable, making a wrapped ring is a ConfigError naming
    ``pip install 'keysafe[extra]'``, and no key file is left."""
    import pytest

    from keysafe.config import load_settings
    from keysafe.crypto import wrapped
    from keysafe.crypto.keys import load_keyring
    from keysafe.crypto.kms import kms_from_settings
    from keysafe.errors import ConfigError

    monkeypatch.setitem(sys.modules, module, None)
    wrapped.forget()
    kms = kms_from_settings(load_settings({"KEYSAFE_HOME": str(home),
                                           "KEYSAFE_MASTER_KEY_KMS": reference}))
    with pytest.raises(ConfigError, match=rf"pip install 'keysafe\[{extra}\]'"):
        load_keyring(None, home / "master.key", create=True, kms=kms)
    assert not (home / "master.key").exists()
