"""Tokens limited to some secrets of a domain (specs 002-004: "only grant access to
needed secrets"): ``acme-corp/shared/openai_api_key`` or a pattern such as
``acme-corp/shared/db_*`` covers those names only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from keysafe.errors import InvalidName, InvalidValue
from keysafe.manager.audit import AuditFilter
from keysafe.server.app import KeysafeApp
from keysafe.server.auth import Identity, check_orgs

from .serverkit import OPENAI, VALUE_1, VALUE_2, bearer, build_app, make_token

ORG = "acme-corp"
ANTHROPIC = "anthropic_api_key"
ANTHROPIC_KEY = "sk-ant-" + "k" * 40
NAMES = [f"{ORG}/shared/{OPENAI}", f"{ORG}/shared/db_*"]


@pytest.fixture
def tokens(app: KeysafeApp) -> dict[str, str]:
    return {
        "root": make_token(app, "root", ["admin"], None),
        "app": make_token(app, "app", ["service", "viewer", "writer"], NAMES),
        "named-admin": make_token(app, "named-admin", ["admin"], NAMES),
        "shared-admin": make_token(app, "shared-admin", ["admin"], [f"{ORG}/shared"]),
    }


def put(c: TestClient, token: str, name: str, value: str = VALUE_1,
        domain: str | None = None) -> Any:
    body: dict[str, Any] = {"secret_value": value}
    if domain:
        body["domain_id"] = domain
    return c.put(f"/api/secrets/{ORG}/{name}", json=body, headers=bearer(token))


def test_identity_name_scopes() -> None:
    ident = Identity("x", frozenset({"service"}), frozenset([*NAMES, "globex/ops"]))
    assert ident.covers_name(ORG, "shared", OPENAI)
    assert ident.covers_name(ORG, "shared", "db_password")
    assert not ident.covers_name(ORG, "shared", ANTHROPIC)
    assert not ident.covers_name(ORG, "cards", OPENAI)  # another domain
    assert ident.covers_name("globex", "ops", "anything")  # a whole domain
    assert not ident.whole(ORG)
    # A scope for the whole domain (or org) lifts the name limits there.
    wider = Identity("y", frozenset({"service"}), frozenset([*NAMES, f"{ORG}/shared"]))
    assert wider.covers_name(ORG, "shared", ANTHROPIC)
    # Granting: the same pattern, or anything inside a whole domain; never wider.
    assert ident.includes(frozenset({f"{ORG}/shared/db_*"}))
    assert not ident.includes(frozenset({f"{ORG}/shared/db_password"}))  # not the pattern
    assert not ident.includes(frozenset({f"{ORG}/shared"}))
    assert not ident.includes(frozenset({f"{ORG}/shared/*"}))
    assert wider.includes(frozenset({f"{ORG}/shared/{ANTHROPIC}", f"{ORG}/shared"}))
    # Malformed scopes are refused, naming the problem.
    for bad in (f"{ORG}/shared/a/b", f"{ORG}/shared/bad name", f"{ORG}/shared/",
                f"{ORG}//{OPENAI}"):
        with pytest.raises((InvalidValue, InvalidName)):
            check_orgs([bad])


def test_a_name_token_reaches_its_secrets_only(client: TestClient, app: KeysafeApp,
                                               tokens: dict[str, str]) -> None:
    c, a = client, tokens["app"]
    assert put(c, a, OPENAI).status_code == 200
    assert put(c, a, "db_password", "pg-" + "p" * 20).status_code == 200
    assert put(c, tokens["root"], ANTHROPIC, ANTHROPIC_KEY).status_code == 200
    assert put(c, tokens["root"], OPENAI, VALUE_2, domain="cards").status_code == 200
    # Another name of the same domain: 403 naming it, audited, nothing written or read.
    r = put(c, a, ANTHROPIC, "sk-ant-" + "z" * 40)
    assert r.status_code == 403
    assert f"does not cover secret {ANTHROPIC!r}" in r.json()["detail"]
    for path in (f"/api/secrets/{ORG}/{ANTHROPIC}", f"/api/secrets/{ORG}/{ANTHROPIC}/value"):
        r = c.get(path, headers=bearer(a))
        assert r.status_code == 403
        assert ANTHROPIC_KEY not in r.text
    assert c.get(f"/api/secrets/{ORG}/{OPENAI}/value", params={"domain_id": "cards"},
                 headers=bearer(a)).status_code == 403
    assert c.get(f"/api/secrets/globex/{OPENAI}", headers=bearer(a)).status_code == 404
    # Its own: read and listed; the listing shows nothing else.
    r = c.get(f"/api/secrets/{ORG}/{OPENAI}/value", headers=bearer(a))
    assert r.json()["value"] == VALUE_1
    listed = c.get(f"/api/orgs/{ORG}/secrets", headers=bearer(a)).json()["secrets"]
    assert sorted(s["secret_name"] for s in listed) == ["db_password", OPENAI]
    # Spec 001's llm-keys: the OpenAI key is its own, the Anthropic one is not.
    llm = f"/api/orgs/{ORG}/llm-keys"
    assert c.get(f"{llm}/openai", headers=bearer(a)).json()["value"] == VALUE_1
    r = c.get(f"{llm}/anthropic", headers=bearer(a))
    assert r.status_code == 404  # not one it may read: never read, told as absent
    assert ANTHROPIC_KEY not in r.text
    # Org-wide things need the whole org.
    assert c.get("/api/audit", params={"org_id": ORG},
                 headers=bearer(tokens["named-admin"])).status_code == 403
    denied = app.keysafe.manager.audit_query(AuditFilter(outcome="denied"))
    paths = {e.path for e in denied}
    assert f"keysafe/local/{ORG}/shared/{ANTHROPIC}" in paths
    assert all(ANTHROPIC_KEY not in repr(e) for e in denied)


def test_admins_grant_names_within_their_own(client: TestClient,
                                             tokens: dict[str, str]) -> None:
    c = client

    def create(by: str, orgs: list[str]) -> int:
        r = c.post("/api/tokens", json={"name": f"t-{len(orgs)}-{by}-{orgs[0][-6:]}",
                                        "roles": ["writer"], "orgs": orgs},
                   headers=bearer(tokens[by]))
        return r.status_code

    assert create("shared-admin", [f"{ORG}/shared/stripe_*"]) == 201
    assert create("named-admin", [f"{ORG}/shared/db_*"]) == 201
    assert create("named-admin", [f"{ORG}/shared/{ANTHROPIC}"]) == 403
    assert create("named-admin", [f"{ORG}/shared"]) == 403
    assert create("root", [f"{ORG}/shared/bad name"]) == 422
    # The token list shows a name admin only tokens inside its scopes.
    listed = c.get("/api/tokens", headers=bearer(tokens["named-admin"])).json()
    assert {t["name"] for t in listed} == {"app", "named-admin", "t-1-named-admin-d/db_*"}


def test_another_spelling_does_not_pass_a_name_scope(tmp_path: Path) -> None:
    """The env backend reads one variable for names that differ in case, '-' or '.':
    a name scope is checked against the name the store lists too."""
    home = tmp_path / "home"
    home.mkdir()
    env_file = tmp_path / "app.env"
    env_file.write_text(f"ACME_CORP__SHARED__OPENAI_ADMIN_KEY={ANTHROPIC_KEY}\n"
                        "ACME_CORP__SHARED__OPENAI_APP=app-value-123456\n")
    (home / "keysafe.toml").write_text(
        '[profiles.local]\nbackend = "env"\nscoped = true\nenviron = false\n'
        f'files = ["{env_file}"]\n')
    app = build_app(home)
    token = make_token(app, "kebab", ["service", "viewer"], [f"{ORG}/shared/openai-*"])
    with TestClient(app) as c:
        for name in ("openai-admin-key", "OPENAI_ADMIN_KEY", "openai_admin_key"):
            r = c.get(f"/api/secrets/{ORG}/{name}/value", headers=bearer(token))
            assert r.status_code == 403, (name, r.text)
            assert ANTHROPIC_KEY not in r.text
        listed = c.get(f"/api/orgs/{ORG}/secrets", headers=bearer(token)).json()
        assert listed["secrets"] == []
        # The spellings do reach the variable: a token for the whole org reads it.
        whole = make_token(app, "whole", ["service"], [ORG])
        r = c.get(f"/api/secrets/{ORG}/openai-admin-key/value", headers=bearer(whole))
        assert r.json()["value"] == ANTHROPIC_KEY
