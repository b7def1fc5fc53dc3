"""``keysafe check-reuse``: production values that development also holds (spec 003:
never use production secrets in development), by name and across names; names only
in the output, every read audited."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

Ks = Callable[..., Any]  # the conftest's ks fixture
CANARY = "canary-reuse-\u00e9-" + "r" * 20


@pytest.fixture
def keyed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A master key for every environment (only local ones make a key file)."""
    monkeypatch.setenv("KEYSAFE_MASTER_KEY", base64.b64encode(os.urandom(32)).decode())


def put(ks: Ks, env: str, name: str, value: str) -> None:
    r = ks("put", name, "--org", "acme", "--env", env, "--no-format-check", input=value)
    assert r.code == 0, r.err


def test_shared_values_are_named_never_shown(ks: Ks, home: Path, keyed: None) -> None:
    put(ks, "production", "database_url", CANARY)
    put(ks, "development", "analytics_db_url", CANARY)  # across names
    put(ks, "production", "api_token", "tok-" + "t" * 20)
    put(ks, "development", "api_token", "tok-" + "t" * 20)  # by name
    put(ks, "production", "stripe_key", "prod-" + "s" * 20)
    put(ks, "development", "stripe_key", "dev-" + "s" * 20)  # its own: fine
    r = ks("check-reuse", "--env", "production", "--against", "development", "--json")
    assert r.code == 1, r.err
    out = json.loads(r.out)
    assert (out["env"], out["other_env"], out["checked"], out["other_checked"]) == (
        "production", "development", 3, 3)
    assert [(f["path"].rsplit("/", 1)[1], f["other_path"].rsplit("/", 1)[1], f["same_name"])
            for f in out["found"]] == [("api_token", "api_token", True),
                                       ("database_url", "analytics_db_url", False)]
    human = ks("check-reuse", "--env", "production", "--against", "development")
    assert human.code == 1
    assert "rotate them in production" in human.err
    for text in (r.out, r.err, human.out, human.err):
        assert CANARY not in text
    # Each value compared was an audited read, in its own environment.
    audit = ks("audit", "--action", "read", "--json")
    paths = {json.loads(line)["path"] for line in audit.out.splitlines()}
    assert "keysafe/production/acme/shared/database_url" in paths
    assert "keysafe/development/acme/shared/analytics_db_url" in paths


def test_nothing_shared_exits_0_and_bad_input_exits_2(ks: Ks, home: Path,
                                                      keyed: None) -> None:
    put(ks, "production", "api_token", "prod-" + "t" * 20)
    put(ks, "staging", "api_token", "stage-" + "t" * 20)
    r = ks("check-reuse", "--env", "production", "--against", "staging")
    assert r.code == 0, r.err
    assert "no value of production (1 checked) is in staging (1 checked)" in r.err
    assert ks("check-reuse", "--env", "production", "--against", "production").code == 2
    assert ks("check-reuse", "--env", "production", "--against", "no such env").code == 2
    r = ks("check-reuse", "--env", "production", "--against", "qa")
    assert r.code == 8  # not a known environment, no profile for it
    assert "unknown profile" in r.err


def test_an_empty_side_is_not_a_clean_bill(ks: Ks, home: Path, keyed: None) -> None:
    """`--against dev` opens the "dev" segment, not "development": nothing to compare
    must not pass a CI check."""
    put(ks, "production", "api_token", "prod-" + "t" * 20)
    put(ks, "development", "api_token", "dev-" + "t" * 20)
    r = ks("check-reuse", "--env", "production", "--against", "dev")
    assert r.code == 3
    assert "dev holds no secrets" in r.err


def test_values_compared_are_not_kept(tmp_path: Path) -> None:
    """Read past the managers' caches: after a check neither holds a value."""
    from keysafe.config import load_settings
    from keysafe.manager.manager import SecretManager
    from keysafe.reuse import find_reuse

    key = base64.b64encode(os.urandom(32)).decode()
    base = {"KEYSAFE_HOME": str(tmp_path), "KEYSAFE_MASTER_KEY": key}
    prod = SecretManager.from_settings(load_settings({**base, "KEYSAFE_ENV": "production"}))
    dev = SecretManager.from_settings(load_settings({**base, "KEYSAFE_ENV": "development"}))
    try:
        prod.put("db_url", CANARY, "acme", check_format=False)
        dev.put("db_url", CANARY, "acme", check_format=False)
        report = find_reuse(prod, dev)
        assert len(report.found) == 1
        assert report.unreadable == []
        assert prod.stats()["cache_entries"] == dev.stats()["cache_entries"] == 0
    finally:
        prod.close()
        dev.close()
