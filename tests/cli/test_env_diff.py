"""``keysafe diff``: the secrets one environment has that another lacks (a promotion
check: production must hold every secret staging holds), by org, domain and name; no
value is read."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

Ks = Callable[..., Any]  # the conftest's ks fixture
CANARY = "canary-diff-\u00e9-" + "d" * 20


@pytest.fixture
def keyed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A master key for every environment (only local ones make a key file)."""
    monkeypatch.setenv("KEYSAFE_MASTER_KEY", base64.b64encode(os.urandom(32)).decode())


def put(ks: Ks, env: str, name: str, *extra: str, org: str = "acme") -> None:
    r = ks("put", name, "--org", org, "--env", env, "--no-format-check", *extra,
           input=CANARY)
    assert r.code == 0, r.err


@pytest.fixture
def envs(ks: Ks, keyed: None) -> None:
    for env in ("staging", "production"):
        put(ks, env, "database_url", "--type", "connection_url")
        put(ks, env, "stripe_key", "--domain", "billing")
    put(ks, "staging", "openai_api_key")              # production lacks it
    put(ks, "staging", "jwt_secret", "--type", "jwt")
    put(ks, "production", "jwt_secret", "--type", "generic")  # type differs
    put(ks, "production", "legacy_token")             # only production has it
    put(ks, "staging", "other_org_key", org="globex")


def test_differences_by_name_never_a_value(ks: Ks, envs: None) -> None:
    r = ks("diff", "--env", "production", "--against", "staging", "--json")
    assert r.code == 1, r.err
    out = json.loads(r.out)
    assert (out["env"], out["other_env"], out["secrets"], out["other_secrets"]) == (
        "production", "staging", 4, 5)
    assert [(e["org"], e["domain"], e["name"], e["state"]) for e in out["entries"]] == [
        ("acme", "shared", "jwt_secret", "type differs"),
        ("acme", "shared", "legacy_token", "extra"),
        ("acme", "shared", "openai_api_key", "missing"),
        ("globex", "shared", "other_org_key", "missing")]
    missing = out["entries"][2]
    assert missing["here"] is None
    assert missing["there"]["path"] == "keysafe/staging/acme/shared/openai_api_key"
    human = ks("diff", "--env", "production", "--against", "staging")
    assert human.code == 1
    assert "production differs from staging in 4 secret(s)" in human.err
    assert "openai_api_key" in human.out
    for text in (r.out, r.err, human.out, human.err):
        assert CANARY not in text


def test_missing_only_and_a_scope(ks: Ks, envs: None) -> None:
    r = ks("diff", "--env", "production", "--against", "staging", "--org", "acme",
           "--missing", "--json")
    assert r.code == 1
    assert [e["name"] for e in json.loads(r.out)["entries"]] == ["openai_api_key"]
    # Once production has it, the promotion check passes (extra and type do not count).
    put(ks, "production", "openai_api_key")
    r = ks("diff", "--env", "production", "--against", "staging", "--org", "acme",
           "--missing")
    assert r.code == 0, r.err
    assert "production (5 secrets) lacks nothing of staging (4 secrets)" in r.err
    r = ks("diff", "--env", "production", "--against", "staging", "--domain", "billing",
           "--all", "--json")
    assert r.code == 0
    assert [(e["name"], e["state"]) for e in json.loads(r.out)["entries"]] == [
        ("stripe_key", "same")]


def test_no_value_is_read(ks: Ks, envs: None, home: Path) -> None:
    """Two listings in the audit log, no read."""
    before = len(json.loads(ks("audit", "--json", "--action", "read").out or "[]"))
    assert ks("diff", "--env", "production", "--against", "staging").code == 1
    after = ks("audit", "--json", "--action", "read").out
    assert len(json.loads(after or "[]")) == before


def test_bad_input(ks: Ks, keyed: None) -> None:
    r = ks("diff", "--env", "staging", "--against", "staging")
    assert r.code == 2
    assert "names the environment being checked" in r.err
    r = ks("diff", "--against", "prod", "--env", "production")
    assert r.code == 0  # both empty: nothing differs, but the spelling is pointed out
    assert "prod is not production" in r.err
