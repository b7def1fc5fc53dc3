"""KEYSAFE_DEFAULT_ORG: a single-tenant application (specs 002-004: ``get_secret(
"database-password")``) names its secrets without an org; a multi-tenant server never
lets it stand in for the org a request leaves out."""

from __future__ import annotations

from pathlib import Path

import pytest

from keysafe import InvalidName, SecretManager, load_settings
from keysafe.backends.memory import MemoryBackend


def test_names_without_an_org_are_the_default_orgs() -> None:
    mgr = SecretManager(MemoryBackend(), env="production", app="aragora",
                        default_org="aragora")
    mgr.put("jwt_secret", "j" * 40)
    assert [m.path for m in mgr.list()] == ["aragora/production/aragora/shared/jwt_secret"]
    assert mgr.get("jwt_secret") == "j" * 40
    assert mgr.get_secret("jwt_secret").reveal() == "j" * 40
    assert mgr.has("jwt_secret")
    assert mgr.describe("jwt_secret").current_version == 1
    # An explicit org, or a full path, still wins.
    mgr.put("jwt_secret", "k" * 40, "other")
    assert mgr.get("jwt_secret", "other") == "k" * 40
    assert mgr.get("aragora/production/aragora/shared/jwt_secret") == "j" * 40


def test_without_one_a_name_needs_an_org_and_the_error_says_how() -> None:
    mgr = SecretManager(MemoryBackend())
    with pytest.raises(InvalidName, match="KEYSAFE_DEFAULT_ORG"):
        mgr.get("jwt_secret")


def test_a_bad_default_org_is_refused_at_once() -> None:
    with pytest.raises(InvalidName, match="org"):
        SecretManager(MemoryBackend(), default_org="../etc")


def test_the_setting_and_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from keysafe.cli.app import app

    for var in ("KEYSAFE_ENV", "ENVIRONMENT", "KEYSAFE_DEFAULT_ORG", "KEYSAFE_SERVER_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KEYSAFE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KEYSAFE_DEFAULT_ORG", "aragora")
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert (s.default_org, s.sources["default_org"]) == ("aragora",
                                                         "env KEYSAFE_DEFAULT_ORG")
    runner = CliRunner()
    assert runner.invoke(app, ["init"]).exit_code == 0
    r = runner.invoke(app, ["put", "jwt_secret"], input="j" * 40)
    assert r.exit_code == 0, r.stderr
    r = runner.invoke(app, ["get", "jwt_secret"])
    assert (r.exit_code, r.stdout) == (0, "j" * 40)
    r = runner.invoke(app, ["get", "jwt_secret", "--org", "other"])
    assert r.exit_code == 3


def test_the_server_never_uses_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("fastapi")
    from keysafe.server.app import create_app

    monkeypatch.delenv("KEYSAFE_SERVER_URL", raising=False)
    settings = load_settings(home=tmp_path / "home", default_org="aragora")
    api = create_app(settings)
    try:
        assert api.state.keysafe.manager.default_org is None
    finally:
        api.state.keysafe.close()


def test_changing_it_forgets_what_names_resolved_to() -> None:
    mgr = SecretManager(MemoryBackend(), default_org="a")
    mgr.put("k", "in a")
    mgr.put("k", "in b", "b")
    assert mgr.get("k") == "in a"  # cached under (k, None, ...)
    mgr.default_org = "b"
    assert mgr.get("k") == "in b"
    mgr.default_org = None
    with pytest.raises(InvalidName):
        mgr.get("k")
