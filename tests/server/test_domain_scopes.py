"""Tokens and JWTs limited to some domains of an org (spec 001: domain-level scoping;
specs 002-004: least privilege): ``acme-corp/card-services`` covers that domain only."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient

from keysafe.manager.audit import AuditFilter
from keysafe.server.app import KeysafeApp
from keysafe.server.auth import Identity

from .serverkit import OPENAI, VALUE_1, VALUE_2, bearer, build_app, make_token

ORG, CARDS, FRAUD = "acme-corp", "card-services", "fraud"
SCOPE = f"{ORG}/{CARDS}"


@pytest.fixture
def tokens(app: KeysafeApp) -> dict[str, str]:
    return {
        "root": make_token(app, "root", ["admin"], None),
        "cards-writer": make_token(app, "cards-writer", ["writer"], [SCOPE]),
        "cards-service": make_token(app, "cards-service", ["service"], [SCOPE]),
        "cards-and-shared": make_token(app, "cards-and-shared", ["service"],
                                       [SCOPE, f"{ORG}/shared"]),
        "cards-admin": make_token(app, "cards-admin", ["admin"], [SCOPE]),
        "org-admin": make_token(app, "org-admin", ["admin"], [ORG]),
    }


def put(c: TestClient, token: str, domain: str | None, value: str = VALUE_1,
        name: str = OPENAI) -> Any:
    body: dict[str, Any] = {"secret_value": value}
    if domain:
        body["domain_id"] = domain
    return c.put(f"/api/secrets/{ORG}/{name}", json=body, headers=bearer(token))


def test_identity_scopes() -> None:
    ident = Identity("x", frozenset({"writer"}), frozenset({SCOPE, "globex"}))
    assert ident.covers(ORG)
    assert ident.covers("globex")
    assert not ident.covers("other")
    assert ident.covers_domain(ORG, CARDS)
    assert not ident.covers_domain(ORG, FRAUD)
    assert ident.covers_domain("globex", FRAUD)  # the whole org
    assert ident.whole("globex")
    assert not ident.whole(ORG)
    assert ident.includes(frozenset({SCOPE}))
    assert ident.includes(frozenset({"globex/a"}))
    assert not ident.includes(frozenset({ORG}))
    assert not ident.includes(frozenset({f"{ORG}/{FRAUD}"}))
    assert not ident.includes(None)
    everyone = Identity("r", frozenset({"admin"}), None)
    assert everyone.includes(None)
    assert everyone.covers_domain("any", "thing")


def test_a_domain_token_writes_and_reads_its_domain_only(
        client: TestClient, app: KeysafeApp, tokens: dict[str, str]) -> None:
    c, w = client, tokens["cards-writer"]
    assert put(c, w, CARDS).status_code == 200
    # Another domain of the org, or the default (shared) one: 403, named, nothing written.
    for domain in (FRAUD, None, "shared"):
        r = put(c, w, domain, VALUE_2)
        assert r.status_code == 403, r.text
        assert f"does not cover domain {domain or 'shared'!r}" in r.json()["detail"]
        assert VALUE_2 not in r.text
    for domain in (FRAUD, None):
        assert put(c, tokens["root"], domain, VALUE_2).status_code == 200
    # Status, versions and the other verbs follow the same scopes.
    url = f"/api/secrets/{ORG}/{OPENAI}"
    assert c.get(url, params={"domain_id": CARDS}, headers=bearer(w)).status_code == 200
    assert c.get(url, headers=bearer(w)).status_code == 403
    assert c.get(url + "/versions", params={"domain_id": FRAUD},
                 headers=bearer(w)).status_code == 403
    assert c.delete(url, params={"domain_id": FRAUD}, headers=bearer(w)).status_code == 403
    assert c.patch(url, json={"domain_id": FRAUD, "tags": {"a": "b"}},
                   headers=bearer(w)).status_code == 403
    # Another org is not found, as for any token.
    assert c.get(f"/api/secrets/globex/{OPENAI}", headers=bearer(w)).status_code == 404
    # The denials are audited with the path asked for; the other domains are unchanged.
    denied = app.keysafe.manager.audit_query(AuditFilter(outcome="denied", org=ORG))
    assert {r.path for r in denied} >= {
        f"keysafe/local/{ORG}/{FRAUD}/{OPENAI}", f"keysafe/local/{ORG}/shared/{OPENAI}"}
    assert app.keysafe.manager.get(OPENAI, ORG, domain=FRAUD, fresh=True) == VALUE_2
    assert app.keysafe.manager.versions(OPENAI, ORG, domain=FRAUD)[-1].version == 1


def test_listing_shows_the_covered_domains_only(
        client: TestClient, tokens: dict[str, str]) -> None:
    c = client
    for domain in (CARDS, FRAUD, None):
        assert put(c, tokens["root"], domain, name="stripe_secret_key",
                   value="sk_live_" + "a" * 24).status_code == 200
    listed = c.get(f"/api/orgs/{ORG}/secrets", headers=bearer(tokens["cards-writer"]))
    assert listed.status_code == 200
    assert {s["domain_id"] for s in listed.json()["secrets"]} == {CARDS}
    full = c.get(f"/api/orgs/{ORG}/secrets", headers=bearer(tokens["org-admin"])).json()
    assert {s["domain_id"] for s in full["secrets"]} == {CARDS, FRAUD, "shared"}
    r = c.get(f"/api/orgs/{ORG}/secrets", params={"domain_id": FRAUD},
              headers=bearer(tokens["cards-writer"]))
    assert r.status_code == 403


def test_value_reads_and_the_llm_key_fallback(client: TestClient,
                                              tokens: dict[str, str]) -> None:
    c = client
    assert put(c, tokens["root"], None, VALUE_1).status_code == 200  # the org's shared key
    svc = bearer(tokens["cards-service"])
    value_url = f"/api/secrets/{ORG}/{OPENAI}/value"
    assert c.get(value_url, headers=svc).status_code == 403
    llm = f"/api/orgs/{ORG}/llm-keys/openai"
    # No key in card-services, and the shared fallback is outside the token's scopes.
    r = c.get(llm, params={"domain_id": CARDS}, headers=svc)
    assert r.status_code == 404
    assert VALUE_1 not in r.text
    assert c.get(llm, headers=svc).status_code == 403  # the shared domain itself
    both = bearer(tokens["cards-and-shared"])
    assert c.get(llm, params={"domain_id": CARDS}, headers=both).json()["value"] == VALUE_1
    # Once card-services has its own key, the domain token reads it.
    assert put(c, tokens["root"], CARDS, VALUE_2).status_code == 200
    assert c.get(llm, params={"domain_id": CARDS}, headers=svc).json()["value"] == VALUE_2
    assert c.get(value_url, params={"domain_id": CARDS}, headers=svc).json()["value"] == VALUE_2


def test_domain_admins_and_tokens(client: TestClient, tokens: dict[str, str]) -> None:
    c = client
    cards_admin = bearer(tokens["cards-admin"])
    # The org's audit log spans every domain: not for a domain admin.
    r = c.get("/api/audit", params={"org_id": ORG}, headers=cards_admin)
    assert r.status_code == 403
    assert "only some domains" in r.json()["detail"]
    assert c.get("/api/audit/report", params={"org_id": ORG},
                 headers=cards_admin).status_code == 403
    assert c.get("/api/audit", params={"org_id": ORG},
                 headers=bearer(tokens["org-admin"])).status_code == 200

    def create(who: dict[str, str], orgs: list[str], name: str) -> Any:
        return c.post("/api/tokens", json={"name": name, "roles": ["viewer"], "orgs": orgs},
                      headers=who)

    # A domain admin may hand out its own domain, nothing wider.
    made = create(cards_admin, [SCOPE], "cards-viewer")
    assert made.status_code == 201, made.text
    assert made.json()["orgs"] == [SCOPE]
    for orgs in ([ORG], [f"{ORG}/{FRAUD}"], ["*"]):
        assert create(cards_admin, orgs, "too-wide").status_code == 403, orgs
    # An org admin may scope tokens to any domain of its org.
    assert create(bearer(tokens["org-admin"]), [f"{ORG}/{FRAUD}"], "fraud-viewer"
                  ).status_code == 201
    # Each sees the tokens within its scopes.
    seen = {t["name"] for t in c.get("/api/tokens", headers=cards_admin).json()}
    assert "cards-viewer" in seen
    assert "fraud-viewer" not in seen
    assert "org-admin" not in seen
    seen = {t["name"] for t in c.get("/api/tokens",
                                     headers=bearer(tokens["org-admin"])).json()}
    assert {"cards-viewer", "fraud-viewer", "cards-admin"} <= seen
    # The new token works in its domain.
    viewer = bearer(made.json()["token"])
    assert c.get(f"/api/orgs/{ORG}/secrets", headers=viewer).status_code == 200
    # Scopes are checked: a bad domain segment names the problem.
    for bad in (f"{ORG}/", f"{ORG}/a/b/c", f"{ORG}/a/b c", f"{ORG}/..", "/x"):
        r = create(bearer(tokens["root"]), [bad], "bad-scope")
        assert r.status_code == 422, (bad, r.text)


def test_a_jwt_org_claim_may_name_a_domain(home: Path) -> None:
    secret = "hs256-scope-secret-0123456789abcdefghijklmnopqrstuvwxyz"
    app = build_app(home, jwt_hs256_secret=secret)
    token = jwt.encode({"sub": "bob@host", "exp": int(time.time()) + 300,
                        "org": SCOPE, "role": "writer"}, secret, algorithm="HS256")
    with TestClient(app) as c:
        assert put(c, token, CARDS).status_code == 200
        assert put(c, token, FRAUD).status_code == 403
        who = c.get("/api/whoami", headers=bearer(token)).json()
        assert who["orgs"] == [SCOPE]


def test_no_domain_scopes_where_paths_have_no_domain(home: Path) -> None:
    """With a naming template without {domain}, every domain is the same secret: a
    domain scope would be no limit, so it is refused when created and never honoured."""
    app = build_app(home, naming_template="{app}/{env}/{org}/{name}")
    root = make_token(app, "root", ["admin"], None)
    # Made behind the API's back (an older token, or a store shared with another
    # configuration): it is refused on every request about that org.
    scoped = make_token(app, "scoped", ["writer"], [SCOPE])
    with TestClient(app) as c:
        r = c.post("/api/tokens", json={"name": "x", "roles": ["viewer"], "orgs": [SCOPE]},
                   headers=bearer(root))
        assert r.status_code == 422
        assert "no {domain}" in r.json()["detail"]
        assert put(c, root, None).status_code == 200
        for domain in (CARDS, None):
            r = put(c, scoped, domain, VALUE_2)
            assert r.status_code == 403, r.text
            assert "naming template has no {domain}" in r.json()["detail"]
        assert c.get(f"/api/orgs/{ORG}/secrets", headers=bearer(scoped)).status_code == 403
        assert app.keysafe.manager.get(OPENAI, ORG, fresh=True) == VALUE_1


def test_an_empty_domain_is_the_default_one(client: TestClient, app: KeysafeApp,
                                            tokens: dict[str, str]) -> None:
    assert put(client, tokens["root"], None).status_code == 200
    url = f"/api/secrets/{ORG}/{OPENAI}"
    shared = bearer(tokens["cards-and-shared"])
    assert client.get(url, params={"domain_id": ""}, headers=shared).status_code == 200
    assert client.get(url, params={"domain_id": ""},
                      headers=bearer(tokens["cards-writer"])).status_code == 403
    # A denial names the domain asked for, also where there is no secret name.
    r = client.get(f"/api/orgs/{ORG}/secrets", params={"domain_id": FRAUD},
                   headers=bearer(tokens["cards-writer"]))
    assert r.status_code == 403
    denied = app.keysafe.manager.audit_query(AuditFilter(outcome="denied", action="list"))
    assert denied[-1].detail == {"reason": "PermissionDenied", "domain": FRAUD}
