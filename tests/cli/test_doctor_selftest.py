"""`keysafe doctor` (configuration with sources, key and backend checks) and
`keysafe test-secrets` (spec 000's self-test)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from keysafe import maintenance
from keysafe.cli import exitcodes
from keysafe.config import load_settings
from keysafe.manager.manager import SecretManager


def _sources(data: dict) -> dict[str, tuple[str, str]]:
    return {row["setting"]: (row["value"], row["source"]) for row in data["settings"]}


def test_doctor_shows_each_source(kc, home: Path, monkeypatch):
    kc("init")
    (home / "keysafe.toml").write_text("max_versions = 3\n")
    monkeypatch.setenv("KEYSAFE_APP", "ragstar")
    r = kc("doctor", "--json")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    src = _sources(data)
    assert src["app"] == ("ragstar", "env KEYSAFE_APP")
    assert src["max_versions"] == ("3", f"file {home / 'keysafe.toml'}")
    assert src["recovery_window_days"] == ("7", "default")
    assert src["home"] == (str(home), "env KEYSAFE_HOME")
    checks = {c["name"]: c for c in data["checks"]}
    assert checks["master key"]["status"] == "ok"
    assert "0600" in checks["master key"]["detail"]
    assert checks["backend"]["status"] == "ok"
    assert "reachable" in checks["backend"]["detail"]
    assert checks["config file"]["detail"] == str(home / "keysafe.toml")
    assert data["ok"] is True

    human = kc("doctor")
    assert human.code == 0
    for text in ("Configuration", "env KEYSAFE_APP", "default", "keysafe.toml", "Checks",
                 "reachable", "✓"):
        assert text in human.out


def test_doctor_masks_the_master_key_and_reports_env_keys(kc, home: Path, monkeypatch):
    import base64

    key = base64.b64encode(os.urandom(32)).decode()
    monkeypatch.setenv("KEYSAFE_MASTER_KEY", f"prod1:{key}")
    kc("init")
    r = kc("doctor", "--json")
    assert r.code == 0, r.err
    assert key not in r.out
    data = json.loads(r.out)
    assert _sources(data)["master_key"] == ("******** (set)", "env KEYSAFE_MASTER_KEY")
    checks = {c["name"]: c for c in data["checks"]}
    assert "from KEYSAFE_MASTER_KEY" in checks["master key"]["detail"]
    assert "prod1" in checks["master key"]["detail"]


def test_doctor_warns_on_open_key_file(kc, home: Path):
    kc("init")
    (home / "master.key").chmod(0o644)
    r = kc("doctor", "--json")
    assert r.code == 0  # a warning, not a failure
    checks = {c["name"]: c for c in json.loads(r.out)["checks"]}
    assert checks["master key"]["status"] == "warn"
    assert "0644" in checks["master key"]["detail"]
    assert "chmod 600" in checks["master key"][
        "detail"]
    assert "! warn" in kc("doctor").out


def test_doctor_before_init_creates_nothing(kc, home: Path):
    r = kc("doctor", "--json")
    assert r.code == 0
    checks = {c["name"]: c for c in json.loads(r.out)["checks"]}
    assert checks["master key"]["status"] == "warn"
    assert "keysafe init" in checks[
        "master key"]["detail"]
    assert not home.exists()


def test_doctor_fails_when_the_key_file_is_lost(ks, home: Path):
    ks("init")
    (home / "master.key").unlink()
    r = ks("doctor")
    assert r.code == exitcodes.CONFIG
    assert "cannot be read" in r.err
    assert "✗" in r.out
    assert not (home / "master.key").exists()  # doctor never makes a key


def test_test_secrets_passes_and_cleanup_leaves_nothing(ks):
    r = ks("test-secrets")
    assert r.code == 0, r.out + r.err
    for step in ("put", "has", "get", "versions", "put JSON credentials",
                 "update JSON credentials", "get JSON credentials", "delete", "restore"):
        assert step in r.out
    assert "✓" in r.out
    assert "✗" not in r.out
    assert "self-test passed" in r.err
    left = ks("ls", "--org", maintenance.SELFTEST_ORG, "--deleted", "--json").json()
    assert len(left) == 2  # kept without --cleanup

    c = ks("test-secrets", "--cleanup", "--json")
    assert c.code == 0, c.err
    data = c.json()
    assert data["ok"] is True
    assert data["backend"] == "sqlite"
    assert [s["status"] for s in data["steps"]] == ["ok"] * len(data["steps"])
    assert data["steps"][-1]["name"] == "cleanup"
    assert "purged 4" in data["steps"][-1]["detail"]  # this run's two and the last run's
    assert ks("ls", "--org", maintenance.SELFTEST_ORG, "--deleted", "--json").json() == []


def test_test_secrets_on_the_memory_backend(ks):
    r = ks("test-secrets", "--cleanup", "--json", env={"KEYSAFE_BACKEND": "memory"})
    assert r.code == 0, r.err
    assert r.json()["backend"] == "memory"
    assert r.json()["ok"] is True


def test_test_secrets_reports_a_failing_step(cli, monkeypatch):
    real_get = SecretManager.get

    def wrong(self, *a, **k):
        value = real_get(self, *a, **k)
        return value + "x"

    monkeypatch.setattr(SecretManager, "get", wrong)
    r = cli("test-secrets", "--cleanup")
    assert r.exit_code == exitcodes.INTEGRITY
    assert "✗ failed" in r.stdout
    assert "- skipped" in r.stdout
    assert "self-test failed at step 'get'" in r.stderr
    assert "differs" in r.stderr


def test_self_test_library_call(home: Path):
    with SecretManager.from_settings(load_settings()) as mgr:
        result = maintenance.self_test(mgr, cleanup=True, org="selftest-lib")
        assert result.ok, result.to_dict()
        assert mgr.list("selftest-lib", include_deleted=True) == []
