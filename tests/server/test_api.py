"""The HTTP contract: spec 001's shapes exactly, the verbs around them, tokens, errors as
problem+json, health/metrics/docs, headers, limits, CORS and JWTs."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

from keysafe.manager.audit import AuditFilter
from keysafe.server.app import KeysafeApp

from .serverkit import OPENAI, VALUE_1, VALUE_2, bearer, build_app, make_token

ORG, DOMAIN = "acme-corp", "card-services"
PROBLEM = "application/problem+json"


@pytest.fixture
def tokens(app: KeysafeApp) -> dict[str, str]:
    return {
        "admin": make_token(app, "admin", ["admin"], [ORG]),
        "root": make_token(app, "root", ["admin"], None),
        "writer": make_token(app, "writer", ["writer"], [ORG]),
        "viewer": make_token(app, "viewer", ["viewer"], [ORG]),
        "service": make_token(app, "service", ["service"], [ORG]),
        "globex": make_token(app, "globex-admin", ["admin"], ["globex"]),
    }


def put(c: TestClient, token: str, name: str = OPENAI, value: str = VALUE_1,
        org: str = ORG, **body: Any) -> Any:
    return c.put(f"/api/secrets/{org}/{name}", json={"secret_value": value, **body},
                 headers=bearer(token))


def assert_problem(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body = r.json()
    for key in ("type", "title", "status", "detail"):
        assert key in body, key
    assert body["status"] == status
    assert isinstance(body["type"], str)
    assert isinstance(body["title"], str)
    assert body["title"]
    return dict(body)


# -- spec 001 ------------------------------------------------------------------------

def test_spec001_blind_write_and_status(client: TestClient, tokens: dict[str, str]) -> None:
    before = client.get(f"/api/secrets/{ORG}/{OPENAI}", params={"domain_id": DOMAIN},
                        headers=bearer(tokens["viewer"]))
    assert before.status_code == 200
    b = before.json()
    assert {k: b[k] for k in ("configured", "secret_name", "organization_id", "domain_id")} \
        == {"configured": False, "secret_name": OPENAI, "organization_id": ORG,
            "domain_id": DOMAIN}

    r = client.put(f"/api/secrets/{ORG}/{OPENAI}", headers=bearer(tokens["writer"]),
                   json={"secret_value": VALUE_1, "domain_id": DOMAIN,
                         "description": "Production OpenAI key"})
    assert r.status_code == 200, r.text
    w = r.json()
    assert w["status"] == "success"
    assert w["configured"] is True
    assert w["message"] == "Secret 'openai_api_key' has been updated successfully"
    assert VALUE_1 not in r.text

    s = client.get(f"/api/secrets/{ORG}/{OPENAI}", params={"domain_id": DOMAIN},
                   headers=bearer(tokens["viewer"]))
    assert s.status_code == 200
    st = s.json()
    assert st["configured"] is True
    assert st["secret_name"] == OPENAI
    assert st["organization_id"] == ORG
    assert st["domain_id"] == DOMAIN
    assert st["description"] == "Production OpenAI key"
    assert st["version"] == 1
    assert VALUE_1 not in s.text
    # The write went to the domain: the org's shared scope is still empty.
    shared = client.get(f"/api/secrets/{ORG}/{OPENAI}", headers=bearer(tokens["viewer"]))
    assert shared.json()["configured"] is False
    assert shared.json()["domain_id"] == "shared"


def test_spec001_well_known(client: TestClient, tokens: dict[str, str]) -> None:
    r = client.get("/api/secrets/well-known", headers=bearer(tokens["viewer"]))
    assert r.status_code == 200
    cats = r.json()["categories"]
    spec = {
        "llm": [("openai_api_key", "OpenAI API Key"), ("anthropic_api_key", "Anthropic API Key"),
                ("deepgram_api_key", "Deepgram API Key"),
                ("elevenlabs_api_key", "ElevenLabs API Key")],
        "integrations": [("github_token", "GitHub Token"),
                         ("notion_api_token", "Notion API Token"), ("n8n_api_key", "n8n API Key")],
        "infrastructure": [("livekit_api_key", "LiveKit API Key"),
                           ("livekit_api_secret", "LiveKit API Secret")],
    }
    for cat, entries in spec.items():
        got = cats[cat]
        # Spec 001's table comes first, in its order.
        assert [(e["secret_name"], e["display_name"]) for e in got[: len(entries)]] == entries
        for e in got:
            assert e["category"] == cat
            assert {"secret_name", "display_name", "description", "category"} <= set(e)
    assert cats["llm"][0]["description"] == "API key for GPT models"


def test_check_and_set(client: TestClient, tokens: dict[str, str], app: KeysafeApp) -> None:
    w = tokens["writer"]
    assert put(client, w, expected_version=0).json()["version"] == 1
    # 0 means "must not exist yet".
    again = put(client, w, value=VALUE_2, expected_version=0)
    assert_problem(again, 409)
    assert put(client, w, value=VALUE_2, expected_version=1).json()["version"] == 2
    stale = put(client, w, value=VALUE_1, expected_version=1)
    body = assert_problem(stale, 409)
    assert body["current_version"] == 2
    assert VALUE_1 not in stale.text
    assert app.keysafe.manager.get(OPENAI, ORG, fresh=True) == VALUE_2


def test_patch_changes_tags_and_description_without_a_version(
        client: TestClient, tokens: dict[str, str]) -> None:
    """PATCH is ``keysafe tag`` over HTTP: tags named are set, null removes one, the
    others (rotation settings included) stay; no new version; the value never shows."""
    assert put(client, tokens["writer"], tags={"team": "a", "old": "x"},
               domain_id=DOMAIN).status_code == 200
    url = f"/api/secrets/{ORG}/{OPENAI}"
    r = client.patch(url, json={"domain_id": DOMAIN, "description": "cards",
                                "tags": {"tier": "gold", "old": None,
                                         "env_var": "CARDS_OPENAI_KEY"}},
                     headers=bearer(tokens["writer"]))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["tags"] == {"team": "a", "tier": "gold", "env_var": "CARDS_OPENAI_KEY"}
    assert (body["description"], body["version"]) == ("cards", 1)
    assert VALUE_1 not in r.text
    for bad in ({"tags": {"rotator": "random"}}, {"tags": {"env_var": "1BAD"}},
                {"tags": {"a": 1}}, {"other": True}, {}, {"tags": {}},
                {"tags": {"": "x"}}, {"tags": {"k" * 129: "x"}}, {"tags": {"a": "v" * 257}},
                {"tags": {"a\nb": "x"}}, {"tags": {f"t{i}": "x" for i in range(51)}}):
        r = client.patch(url, json={"domain_id": DOMAIN, **bad},
                         headers=bearer(tokens["writer"]))
        assert_problem(r, 422)
    assert_problem(client.patch(url, json={"domain_id": DOMAIN, "tags": {"a": "b"}},
                                headers=bearer(tokens["viewer"])), 403)
    assert_problem(client.patch(f"/api/secrets/{ORG}/nope", json={"tags": {"a": "b"}},
                                headers=bearer(tokens["writer"])), 404)
    status = client.get(url, params={"domain_id": DOMAIN}, headers=bearer(tokens["viewer"]))
    assert status.json()["tags"] == {"team": "a", "tier": "gold",
                                     "env_var": "CARDS_OPENAI_KEY"}


def test_soft_delete_restore_and_force(client: TestClient, tokens: dict[str, str]) -> None:
    w, v, s = tokens["writer"], tokens["viewer"], tokens["service"]
    put(client, w)
    url = f"/api/secrets/{ORG}/{OPENAI}"
    d = client.delete(url, headers=bearer(w))
    assert d.status_code == 200
    assert d.json()["status"] == "success"
    st = client.get(url, headers=bearer(v)).json()
    assert st["configured"] is False
    assert st["deleted"] is True
    assert st["recoverable_until"] is not None
    assert_problem(client.get(url + "/value", headers=bearer(s)), 404)
    # Deleting twice is not a success.
    assert client.delete(url, headers=bearer(w)).status_code in (404, 409)

    r = client.post(url + "/restore", headers=bearer(w))
    assert r.status_code == 200, r.text
    assert r.json()["configured"] is True
    assert r.json()["deleted"] is False
    assert client.get(url + "/value", headers=bearer(s)).json()["value"] == VALUE_1
    assert_problem(client.post(url + "/restore", headers=bearer(w)), 409)  # not deleted

    f = client.delete(url, params={"force": "true"}, headers=bearer(tokens["admin"]))
    assert f.status_code == 200
    st = client.get(url, headers=bearer(v)).json()
    assert st["configured"] is False
    assert st["deleted"] is False
    assert_problem(client.post(url + "/restore", headers=bearer(w)), 404)


def test_rollback_and_versions(client: TestClient, tokens: dict[str, str]) -> None:
    w = tokens["writer"]
    url = f"/api/secrets/{ORG}/{OPENAI}"
    put(client, w, value=VALUE_1)
    put(client, w, value=VALUE_2)
    r = client.post(url + "/rollback", json={"version": 1}, headers=bearer(w))
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "success"
    assert r.json()["version"] == 3
    assert VALUE_1 not in r.text
    assert client.get(url + "/value", headers=bearer(tokens["service"])).json()["value"] \
        == VALUE_1
    assert_problem(client.post(url + "/rollback", json={"version": 99}, headers=bearer(w)),
                   404)
    assert_problem(client.post(url + "/rollback", json={"version": 0}, headers=bearer(w)),
                   422)

    vr = client.get(url + "/versions", headers=bearer(tokens["viewer"]))
    assert vr.status_code == 200
    body = vr.json()
    assert body["current_version"] == 3
    assert [v["version"] for v in sorted(body["versions"], key=lambda v: v["version"])] \
        == [1, 2, 3]
    for v in body["versions"]:
        assert set(v) == {"version", "created_at", "created_by", "destroyed"}
    assert VALUE_1 not in vr.text
    assert VALUE_2 not in vr.text
    assert_problem(client.get(f"/api/secrets/{ORG}/nope/versions",
                              headers=bearer(tokens["viewer"])), 404)


def test_list_by_org_and_domain(client: TestClient, tokens: dict[str, str]) -> None:
    w = tokens["writer"]
    put(client, w)
    put(client, w, domain_id=DOMAIN)
    put(client, w, name="github_token", value="ghp_" + "x" * 36, domain_id=DOMAIN)
    put(client, tokens["root"], org="globex")
    h = bearer(tokens["viewer"])
    all_ = client.get(f"/api/orgs/{ORG}/secrets", headers=h)
    assert all_.status_code == 200
    got = sorted((s["domain_id"], s["secret_name"]) for s in all_.json()["secrets"])
    assert got == [(DOMAIN, "github_token"), (DOMAIN, OPENAI), ("shared", OPENAI)]
    assert {s["organization_id"] for s in all_.json()["secrets"]} == {ORG}
    assert all(s["configured"] for s in all_.json()["secrets"])
    dom = client.get(f"/api/orgs/{ORG}/secrets", params={"domain_id": DOMAIN}, headers=h)
    assert sorted(s["secret_name"] for s in dom.json()["secrets"]) == ["github_token", OPENAI]
    assert dom.json()["domain_id"] == DOMAIN
    assert VALUE_1 not in all_.text
    # Soft-deleted secrets show only when asked for.
    client.delete(f"/api/secrets/{ORG}/github_token", params={"domain_id": DOMAIN},
                  headers=bearer(w))
    dom = client.get(f"/api/orgs/{ORG}/secrets", params={"domain_id": DOMAIN}, headers=h)
    assert [s["secret_name"] for s in dom.json()["secrets"]] == [OPENAI]
    dom = client.get(f"/api/orgs/{ORG}/secrets",
                     params={"domain_id": DOMAIN, "include_deleted": "true"}, headers=h)
    assert len(dom.json()["secrets"]) == 2


def test_audit_report(client: TestClient, tokens: dict[str, str]) -> None:
    """GET /api/audit/report: keysafe audit report for admins of the org."""
    put(client, tokens["writer"], domain_id=DOMAIN)
    put(client, tokens["writer"], name="github_token", value="ghp_" + "x" * 36)
    for _ in range(3):
        put(client, tokens["viewer"])  # denied
    client.get(f"/api/secrets/{ORG}/{OPENAI}/value", params={"domain_id": DOMAIN},
               headers=bearer(tokens["service"]))
    r = client.get("/api/audit/report", params={"org_id": ORG, "max_denied": 3},
                   headers=bearer(tokens["admin"]))
    assert r.status_code == 200, r.text
    body = r.json()
    by = {a["actor"]: a for a in body["actors"]}
    assert by["token:viewer"]["denied"] == 3
    assert by["token:service"]["reads"] == 1
    assert by["token:writer"]["writes"] == 2
    kinds = {(f["kind"], f["actor"]) for f in body["findings"]}
    assert ("denials", "token:viewer") in kinds
    assert body["unread"] == [f"keysafe/local/{ORG}/shared/github_token"]
    assert VALUE_1 not in r.text
    # Admins of other orgs (not told the org exists), viewers, and org-limited admins
    # naming no org: refused.
    for token, params, status in (("globex", {"org_id": ORG}, 404),
                                  ("viewer", {"org_id": ORG}, 403), ("admin", {}, 403)):
        assert_problem(client.get("/api/audit/report", params=params,
                                  headers=bearer(tokens[token])), status)
    assert client.get("/api/audit/report", headers=bearer(tokens["root"])).status_code == 200
    assert_problem(client.get("/api/audit/report", params={
        "org_id": ORG, "since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
        headers=bearer(tokens["admin"])), 422)


def test_audit_query_filters(client: TestClient, tokens: dict[str, str]) -> None:
    put(client, tokens["writer"], domain_id=DOMAIN)
    put(client, tokens["writer"], value=VALUE_2, domain_id=DOMAIN)
    client.get(f"/api/secrets/{ORG}/{OPENAI}", headers=bearer(tokens["viewer"]))
    put(client, tokens["viewer"])  # denied
    client.get(f"/api/secrets/{ORG}/{OPENAI}/value", params={"domain_id": DOMAIN},
               headers=bearer(tokens["service"]))
    h = bearer(tokens["admin"])

    def q(**params: Any) -> list[dict[str, Any]]:
        r = client.get("/api/audit", params={"org_id": ORG, **params}, headers=h)
        assert r.status_code == 200, r.text
        return list(r.json()["records"])

    every = q()
    assert every
    assert all(r["org"] == ORG for r in every)
    seqs = [r["seq"] for r in every]
    assert seqs == sorted(seqs, reverse=True)  # newest first
    writes = q(action="write", outcome="ok")
    assert [r["version"] for r in writes] == [2, 1]
    assert all(r["actor"] == "token:writer" and r["outcome"] == "ok" for r in writes)
    assert {r["action"] for r in q(actor="token:viewer")} == {"status", "write"}
    denied = q(outcome="denied")
    assert [(r["actor"], r["action"]) for r in denied] == [("token:viewer", "write")]
    path = f"keysafe/local/{ORG}/{DOMAIN}/{OPENAI}"
    assert {r["action"] for r in q(path=path)} == {"write", "read_value"}
    assert {r["path"] for r in q(path=f"keysafe/local/{ORG}/{DOMAIN}/")} == {path}
    assert len(q(limit=2)) == 2
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert q(since=future) == []
    assert q(until=past) == []
    assert len(q(since=past)) >= 5
    for rec in every:
        assert VALUE_1 not in json.dumps(rec)
        assert VALUE_2 not in json.dumps(rec)
    # Another org's admin sees nothing of this org; a limited admin must name an org.
    assert_problem(client.get("/api/audit", params={"org_id": ORG},
                              headers=bearer(tokens["globex"])), 404)
    assert_problem(client.get("/api/audit", headers=h), 403)
    assert client.get("/api/audit", headers=bearer(tokens["root"])).status_code == 200
    assert_problem(client.get("/api/audit", params={"org_id": ORG, "limit": 0}, headers=h),
                   422)


# -- tokens -------------------------------------------------------------------------

def test_token_shown_once_and_revoked_at_once(client: TestClient,
                                              tokens: dict[str, str]) -> None:
    # Blind write: an org admin may not mint a service token (it would read values)...
    r = client.post("/api/tokens", json={"name": "ci-runner", "roles": ["service"],
                                         "orgs": [ORG]}, headers=bearer(tokens["admin"]))
    assert r.status_code == 403, r.text
    # ...an admin of every org (the platform operator) may.
    h = bearer(tokens["root"])
    r = client.post("/api/tokens", json={"name": "ci-runner", "roles": ["service"],
                                         "orgs": [ORG]}, headers=h)
    assert r.status_code == 201, r.text
    created = r.json()
    tok = created["token"]
    assert tok.startswith("ks_")
    assert created["name"] == "ci-runner"
    assert created["roles"] == ["service"]
    assert created["orgs"] == [ORG]
    assert created["created_by"] == "token:root"
    assert r.headers["cache-control"] == "no-store"
    secret_part = tok.split("_", 2)[2]

    listing = client.get("/api/tokens", headers=h)
    assert listing.status_code == 200
    assert all("token" not in t for t in listing.json())
    assert secret_part not in listing.text
    assert created["id"] in {t["id"] for t in listing.json()}

    put(client, tokens["writer"])
    url = f"/api/secrets/{ORG}/{OPENAI}/value"
    assert client.get(url, headers=bearer(tok)).status_code == 200
    rv = client.delete(f"/api/tokens/{created['id']}", headers=h)
    assert rv.status_code == 200
    assert rv.json()["revoked_at"] is not None
    assert secret_part not in rv.text
    assert_problem(client.get(url, headers=bearer(tok)), 401)
    assert_problem(client.get(f"/api/secrets/{ORG}/{OPENAI}", headers=bearer(tok)), 401)
    assert_problem(client.get("/api/whoami", headers=bearer(tok)), 401)
    assert_problem(client.delete("/api/tokens/000000000000", headers=h), 404)


def test_token_created_with_bad_input(client: TestClient, tokens: dict[str, str]) -> None:
    h = bearer(tokens["admin"])
    for body in ({"name": "x", "roles": ["root"], "orgs": [ORG]},
                 {"name": "x", "roles": [], "orgs": [ORG]},
                 {"name": "x", "roles": ["viewer"], "orgs": []},
                 {"name": "", "roles": ["viewer"], "orgs": [ORG]},
                 {"name": "x", "roles": ["viewer"], "orgs": [ORG], "extra": 1},
                 {"name": "bad name\n", "roles": ["viewer"], "orgs": [ORG]},
                 {"name": "tab\there", "roles": ["viewer"], "orgs": [ORG]},
                 {"name": " padded", "roles": ["viewer"], "orgs": [ORG]}):
        assert_problem(client.post("/api/tokens", json=body, headers=h), 422)


def test_a_token_name_is_used_once_so_the_audit_log_can_tell_tokens_apart(
        client: TestClient, tokens: dict[str, str], app: KeysafeApp) -> None:
    """An org admin must not mint a token named like the operator's (the audit log and
    `updated_by` name tokens by name), not even after that one is revoked."""
    h = bearer(tokens["admin"])
    before = {t.id for t in app.keysafe.tokens.list()}
    for name in ("root", "bootstrap-admin-like", "root"):
        r = client.post("/api/tokens", json={"name": name, "roles": ["writer"],
                                             "orgs": [ORG]}, headers=h)
        if name == "bootstrap-admin-like":
            assert r.status_code == 201, r.text
            client.delete(f"/api/tokens/{r.json()['id']}", headers=h)
            again = client.post("/api/tokens", json={"name": name, "roles": ["writer"],
                                                     "orgs": [ORG]}, headers=h)
            assert_problem(again, 409)
        else:
            body = assert_problem(r, 409)
            assert f"a token named {name!r} exists already" in body["detail"]
    assert len({t.id for t in app.keysafe.tokens.list()} - before) == 1


def test_token_names_of_other_orgs_stay_unknown(client: TestClient, tokens: dict[str, str],
                                                app: KeysafeApp) -> None:
    """An org's admin learns nothing of another org's token names: a name is refused
    only when a token of an org it would cover (or an all-orgs one) has it."""
    acme, globex = bearer(tokens["admin"]), bearer(tokens["globex"])
    body = {"name": "ci-deploy", "roles": ["writer"]}
    r = client.post("/api/tokens", json={**body, "orgs": [ORG]}, headers=acme)
    assert r.status_code == 201, r.text
    r = client.post("/api/tokens", json={**body, "orgs": ["globex"]}, headers=globex)
    assert r.status_code == 201, r.text  # globex's admin cannot tell acme has one
    again = client.post("/api/tokens", json={**body, "orgs": [ORG]}, headers=acme)
    assert "exists already for an org this one would cover" in assert_problem(
        again, 409)["detail"]
    everywhere = client.post("/api/tokens", json={**body, "orgs": ["*"]},
                             headers=bearer(tokens["root"]))
    assert_problem(everywhere, 409)  # an all-orgs token meets both
    named = [t for t in app.keysafe.tokens.list() if t.name == "ci-deploy"]
    assert sorted(tuple(t.orgs or ()) for t in named) == [(ORG,), ("globex",)]


def test_admin_cannot_mint_beyond_its_orgs(client: TestClient, tokens: dict[str, str],
                                           app: KeysafeApp) -> None:
    h = bearer(tokens["admin"])
    count = len(app.keysafe.tokens.list())
    for orgs in (["globex"], ["*"], [ORG, "globex"], [ORG, "*"]):
        r = client.post("/api/tokens", json={"name": "escalate", "roles": ["admin"],
                                             "orgs": orgs}, headers=h)
        assert r.status_code in (403, 404), (orgs, r.text)
        assert r.headers["content-type"] == PROBLEM
        assert "token" not in r.json()
    assert len(app.keysafe.tokens.list()) == count
    # An all-orgs admin may.
    r = client.post("/api/tokens", json={"name": "ok", "roles": ["viewer"], "orgs": ["*"]},
                    headers=bearer(tokens["root"]))
    assert r.status_code == 201
    assert r.json()["orgs"] is None


def test_limited_admin_sees_and_revokes_only_its_orgs_tokens(
        client: TestClient, tokens: dict[str, str], app: KeysafeApp) -> None:
    listed = {t["name"] for t in client.get("/api/tokens",
                                             headers=bearer(tokens["admin"])).json()}
    assert listed == {"admin", "writer", "viewer", "service"}
    globex_id = tokens["globex"].split("_")[1]
    root_id = tokens["root"].split("_")[1]
    for tid in (globex_id, root_id):
        assert_problem(client.delete(f"/api/tokens/{tid}", headers=bearer(tokens["admin"])),
                       404)
        assert app.keysafe.tokens.get(tid).revoked_at is None
    assert client.get("/api/whoami", headers=bearer(tokens["globex"])).status_code == 200


def test_whoami(client: TestClient, tokens: dict[str, str]) -> None:
    r = client.get("/api/whoami", headers=bearer(tokens["writer"]))
    assert r.status_code == 200
    body = r.json()
    assert body["name"] == "writer"
    assert body["kind"] == "token"
    assert body["roles"] == ["writer"]
    assert body["orgs"] == [ORG]
    assert "read" not in body["permissions"]
    assert tokens["writer"] not in r.text


# -- errors as problem+json ------------------------------------------------------------

def test_problem_json_for_each_error_status(client: TestClient,
                                            tokens: dict[str, str]) -> None:
    url = f"/api/secrets/{ORG}/{OPENAI}"
    assert_problem(client.get(url), 401)
    assert_problem(client.get(url + "/versions"), 401)
    assert_problem(put(client, tokens["viewer"]), 403)
    assert_problem(client.get(url + "/value", headers=bearer(tokens["writer"])), 403)
    assert_problem(client.get(url, headers=bearer(tokens["globex"])), 404)
    assert_problem(client.get(url + "/value", headers=bearer(tokens["service"])), 404)
    assert_problem(client.get("/no/such/route", headers=bearer(tokens["admin"])), 404)
    put(client, tokens["writer"])
    assert_problem(put(client, tokens["writer"], expected_version=0), 409)
    assert_problem(put(client, tokens["writer"], value="x" * (64 * 1024 + 1)), 413)
    assert_problem(client.put(url, json={"nope": 1}, headers=bearer(tokens["writer"])), 422)
    assert_problem(client.get(f"/api/secrets/{ORG}/bad%20name",
                              headers=bearer(tokens["viewer"])), 422)
    assert_problem(put(client, tokens["writer"], name="bad$name"), 422)
    assert_problem(client.post("/api/secrets/well-known", headers=bearer(tokens["admin"])),
                   405)


def test_value_size_limits(client: TestClient, tokens: dict[str, str],
                           app: KeysafeApp) -> None:
    name = "big_blob"
    ok = put(client, tokens["writer"], name=name, value="v" * (64 * 1024))
    assert ok.status_code == 200, ok.text
    too_big = "CANARY-" + "w" * (64 * 1024)
    r = put(client, tokens["writer"], name=name, value=too_big)
    body = assert_problem(r, 413)
    assert body["code"] == "value_too_large"
    assert too_big[:40] not in r.text
    assert app.keysafe.manager.get(name, ORG, fresh=True) == "v" * (64 * 1024)


def test_validation_errors_never_echo_the_value(client: TestClient,
                                                tokens: dict[str, str]) -> None:
    canary = "sk-CANARY-echo-7f3a9c1e5b2d4f6a8c0e"
    url = f"/api/secrets/{ORG}/{OPENAI}"
    h = bearer(tokens["writer"])
    bodies: list[Any] = [
        {"secret_value": canary, "expected_version": -1},
        {"secret_value": canary, "expected_version": "x"},
        {"secret_value": canary, "rotation_days": 99999},
        {"secret_value": canary, "unexpected": canary},
        {"secret_value": canary, "domain_id": "d" * 200},
        {"secret_value": canary, "tags": {"k": 1}},
        {"secret_value": [canary]},
        {"secret_value": {"v": canary}},
        {"secret_value": 12345, "description": canary * 50},
        [canary],
        canary,
    ]
    for body in bodies:
        r = client.put(url, json=body, headers=h)
        assert r.status_code == 422, (body, r.text)
        assert canary not in r.text, body
        assert canary not in str(r.headers)
    for raw in (f'{{"secret_value": "{canary}", ', f'{{"secret_value": "{canary}"}}}} junk',
                f'{{"secret_value": "{canary}\x00'):
        r = client.put(url, content=raw.encode(), headers={**h, "content-type":
                                                           "application/json"})
        assert r.status_code in (400, 422), r.text
        assert canary not in r.text
    # A value the catalog rejects (wrong format) is named, never quoted.
    r = put(client, tokens["writer"], value="not-an-openai-key-CANARYxyz")
    assert_problem(r, 422)
    assert "CANARYxyz" not in r.text


# -- health, metrics, docs -------------------------------------------------------------

def test_health_ready_docs(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200
    assert r.json()["status"] == "ready"
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "text/html" in docs.headers["content-type"]
    assert "swagger" in docs.text.lower()
    spec = client.get("/openapi.json")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    status_op = paths["/api/secrets/{org_id}/{secret_name}"]
    assert {"get", "put", "delete"} <= set(status_op)
    assert "domain_id" in {p["name"] for p in status_op["get"]["parameters"]}
    write_ref = status_op["put"]["requestBody"]["content"]["application/json"]["schema"]
    write_schema = spec.json()["components"]["schemas"][write_ref["$ref"].split("/")[-1]]
    assert {"secret_value", "domain_id", "description"} <= set(write_schema["properties"])
    for p in ("/api/secrets/well-known", "/api/secrets/{org_id}/{secret_name}/value",
              "/api/secrets/{org_id}/{secret_name}/versions",
              "/api/secrets/{org_id}/{secret_name}/rollback",
              "/api/secrets/{org_id}/{secret_name}/restore", "/api/orgs/{org_id}/secrets",
              "/api/audit", "/api/tokens", "/api/tokens/{token_id}", "/healthz", "/readyz"):
        assert p in paths, p


def test_metrics_hold_no_names_orgs_or_paths(client: TestClient, app: KeysafeApp) -> None:
    org, name, domain = "zq-metrics-org", "zq_metrics_secret", "zq-metrics-domain"
    svc = make_token(app, "zq-svc", ["service", "writer"], [org])
    other = make_token(app, "zq-other", ["admin"], ["zq-elsewhere"])
    h = bearer(svc)
    base = f"/api/secrets/{org}/{name}"
    client.put(base, json={"secret_value": "zq-metrics-value", "domain_id": domain},
               headers=h)
    for url in (base, base + "/value", base + "/versions", f"/api/orgs/{org}/secrets",
                f"{base}?domain_id={domain}", f"{base}/value?domain_id={domain}",
                f"/api/orgs/{org}/llm-keys/zq-provider", f"{base}/zq-unmatched",
                f"/api/zq-nowhere/{org}"):
        client.get(url, headers=h)
        client.get(url, headers=bearer(other))
        client.get(url)
    client.post(f"{base}/value", headers=h)  # wrong method
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert "keysafe_http_requests_total" in text
    assert "# TYPE" in text
    for needle in ("zq", org, name, domain, "keysafe/local", "metrics-value", svc):
        assert needle not in text, needle


# -- headers -----------------------------------------------------------------------------

SECURITY = {"x-content-type-options": "nosniff", "x-frame-options": "DENY",
            "referrer-policy": "no-referrer"}


def assert_security_headers(r: Any) -> None:
    for k, v in SECURITY.items():
        assert r.headers.get(k) == v, (r.request.url, k, dict(r.headers))
    assert r.headers.get("content-security-policy"), (r.request.url, dict(r.headers))
    assert "no-store" in r.headers.get("cache-control", ""), (r.request.url, dict(r.headers))


def test_security_headers_on_every_response(client: TestClient,
                                            tokens: dict[str, str]) -> None:
    put(client, tokens["writer"])
    url = f"/api/secrets/{ORG}/{OPENAI}"
    h = bearer(tokens["admin"])
    responses = [
        client.get(url, headers=h), client.get(url), client.get(url, headers=bearer("x")),
        client.get(url + "/value", headers=bearer(tokens["service"])),
        client.get(url + "/value", headers=h), client.get(url + "/versions", headers=h),
        client.put(url, json={}, headers=h), put(client, tokens["writer"], value=VALUE_2),
        client.get(f"/api/orgs/{ORG}/secrets", headers=h), client.get("/api/tokens", headers=h),
        client.get("/api/secrets/well-known", headers=h), client.get("/nope"),
        client.get("/healthz"), client.get("/readyz"), client.get("/metrics"),
        client.get("/docs"), client.get("/openapi.json"),
        client.get(f"/api/audit?org_id={ORG}", headers=h),
        client.get(f"/api/orgs/{ORG}/llm-keys/openai", headers=bearer(tokens["service"])),
        client.delete(url, headers=bearer(tokens["viewer"])),
    ]
    for r in responses:
        assert_security_headers(r)
    # The docs page loads Swagger UI; the API answers nothing a page could run.
    assert "default-src 'none'" in responses[0].headers["content-security-policy"]


def test_value_reads_are_no_store(client: TestClient, tokens: dict[str, str]) -> None:
    put(client, tokens["writer"])
    s = bearer(tokens["service"])
    for url in (f"/api/secrets/{ORG}/{OPENAI}/value", f"/api/orgs/{ORG}/llm-keys/openai"):
        r = client.get(url, headers=s)
        assert r.status_code == 200
        assert r.json()["value"] == VALUE_1
        assert r.headers["cache-control"] == "no-store"


def _asgi_put(app: KeysafeApp, token: str, chunks: Iterator[bytes],
              content_length: int | None) -> tuple[int, dict[str, str], int]:
    """Drive the ASGI app directly: (status, headers, how many body chunks it pulled)."""
    headers = [(b"authorization", f"Bearer {token}".encode()),
               (b"content-type", b"application/json")]
    if content_length is not None:
        headers.append((b"content-length", str(content_length).encode()))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "PUT", "scheme": "http", "path": f"/api/secrets/{ORG}/{OPENAI}",
             "raw_path": f"/api/secrets/{ORG}/{OPENAI}".encode(), "query_string": b"",
             "root_path": "", "headers": headers, "client": ("127.0.0.1", 5555),
             "server": ("127.0.0.1", 80)}
    pulled = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        try:
            chunk = next(chunks)
        except StopIteration:
            return {"type": "http.disconnect"}
        pulled += 1
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(msg: dict[str, Any]) -> None:
        sent.append(msg)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    hdrs = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], hdrs, pulled


def _endless(size: int = 8192) -> Iterator[bytes]:
    yield b'{"secret_value": "'
    for _ in range(10_000):
        yield b"x" * size


def test_oversized_declared_body_is_413_before_reading(home: Path) -> None:
    app = build_app(home, max_body_bytes=32 * 1024)
    token = make_token(app, "w", ["writer"], [ORG])
    status, headers, pulled = _asgi_put(app, token, _endless(), 50 * 1024 * 1024)
    assert status == 413
    assert pulled == 0
    assert headers["content-type"] == PROBLEM
    assert app.keysafe.manager.has(OPENAI, ORG) is False


def test_oversized_declared_body_413_has_security_headers(home: Path) -> None:
    app = build_app(home, max_body_bytes=32 * 1024)
    token = make_token(app, "w", ["writer"], [ORG])
    with TestClient(app) as c:
        r = c.put(f"/api/secrets/{ORG}/{OPENAI}", content=b"x" * (64 * 1024),
                  headers={**bearer(token), "content-type": "application/json"})
    assert r.status_code == 413
    assert_security_headers(r)
    assert r.headers.get("x-request-id")


def test_oversized_streamed_body_is_413(home: Path) -> None:
    app = build_app(home, max_body_bytes=32 * 1024)
    token = make_token(app, "w", ["writer"], [ORG])
    status, _, pulled = _asgi_put(app, token, _endless(), None)
    assert pulled <= 32 * 1024 // 8192 + 2  # stopped soon after the limit
    assert status == 413


def test_oversized_streamed_body_is_refused_without_reading_it_all(home: Path) -> None:
    app = build_app(home, max_body_bytes=32 * 1024)
    token = make_token(app, "w", ["writer"], [ORG])
    status, _, pulled = _asgi_put(app, token, _endless(), None)
    assert 400 <= status < 500
    assert pulled <= 32 * 1024 // 8192 + 2
    assert app.keysafe.manager.has(OPENAI, ORG) is False


# -- CORS --------------------------------------------------------------------------------

@pytest.fixture
def cors_client(home: Path) -> Iterator[tuple[TestClient, str]]:
    app = build_app(home, cors_origins="http://allowed.test")
    token = make_token(app, "w", ["writer", "service"], [ORG])
    with TestClient(app) as c:
        put(c, token)
        yield c, token


def _preflight(c: TestClient, origin: str, method: str = "PUT") -> Any:
    return c.options(f"/api/secrets/{ORG}/{OPENAI}",
                     headers={"Origin": origin, "Access-Control-Request-Method": method,
                              "Access-Control-Request-Headers": "authorization,content-type"})


def test_cors_preflight_only_for_configured_origins(
        cors_client: tuple[TestClient, str]) -> None:
    c, token = cors_client
    ok = _preflight(c, "http://allowed.test")
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == "http://allowed.test"
    assert "PUT" in ok.headers["access-control-allow-methods"]
    evil = _preflight(c, "http://evil.test")
    assert "access-control-allow-origin" not in evil.headers
    assert evil.status_code >= 400
    # Actual requests: the evil origin never gets the header.
    for url in (f"/api/secrets/{ORG}/{OPENAI}", f"/api/secrets/{ORG}/{OPENAI}/value",
                f"/api/secrets/{ORG}/{OPENAI}/versions"):
        r = c.get(url, headers={**bearer(token), "Origin": "http://evil.test"})
        assert r.status_code == 200
        assert "access-control-allow-origin" not in r.headers
    r = c.get(f"/api/secrets/{ORG}/{OPENAI}/versions",
              headers={**bearer(token), "Origin": "http://allowed.test"})
    assert r.headers["access-control-allow-origin"] == "http://allowed.test"


def test_cors_applies_to_status_reads(cors_client: tuple[TestClient, str]) -> None:
    c, token = cors_client
    r = c.get(f"/api/secrets/{ORG}/{OPENAI}",
              headers={**bearer(token), "Origin": "http://allowed.test"})
    assert r.status_code == 200
    assert r.headers.get("access-control-allow-origin") == "http://allowed.test"


def test_no_cors_by_default(client: TestClient) -> None:
    r = _preflight(client, "http://allowed.test")
    assert "access-control-allow-origin" not in r.headers


# -- JWT: HS256 --------------------------------------------------------------------------

HS_SECRET = "hs256-test-secret-0123456789abcdefghijklmnopqrstuvwxyz"


def hs_token(secret: str = HS_SECRET, **claims: Any) -> str:
    base: dict[str, Any] = {"sub": "alice@host", "exp": int(time.time()) + 300,
                            "org": ORG, "role": "writer"}
    base.update(claims)
    return jwt.encode({k: v for k, v in base.items() if v is not None}, secret,
                      algorithm="HS256")


@pytest.fixture
def jwt_client(home: Path) -> Iterator[TestClient]:
    app = build_app(home, jwt_hs256_secret=HS_SECRET, auth_fail_limit=1000)
    with TestClient(app) as c:
        yield c


def test_jwt_hs256_grants_the_claimed_org_and_role(jwt_client: TestClient) -> None:
    c = jwt_client
    w = bearer(hs_token())
    assert put(c, hs_token()).status_code == 200
    who = c.get("/api/whoami", headers=w).json()
    assert who["kind"] == "jwt"
    assert who["name"] == "alice@host"
    assert who["roles"] == ["writer"]
    assert who["orgs"] == [ORG]
    assert c.get(f"/api/secrets/{ORG}/{OPENAI}", headers=w).json()["configured"] is True
    assert_problem(c.get(f"/api/secrets/{ORG}/{OPENAI}/value", headers=w), 403)
    viewer = bearer(hs_token(role="viewer"))
    assert c.get(f"/api/secrets/{ORG}/{OPENAI}", headers=viewer).status_code == 200
    assert_problem(put(c, hs_token(role="viewer")), 403)
    svc = bearer(hs_token(role=["service"]))
    assert c.get(f"/api/secrets/{ORG}/{OPENAI}/value", headers=svc).json()["value"] == VALUE_1
    multi = bearer(hs_token(org=[ORG, "globex"], role=["viewer"]))
    assert c.get(f"/api/secrets/globex/{OPENAI}", headers=multi).status_code == 200
    # The audit names the JWT subject.
    admin = bearer(hs_token(role="admin"))
    recs = c.get("/api/audit", params={"org_id": ORG, "action": "write"},
                 headers=admin).json()["records"]
    assert recs[0]["actor"] == "jwt:alice@host"


def test_jwt_hs256_rejections(jwt_client: TestClient) -> None:
    c = jwt_client
    url = f"/api/secrets/{ORG}/{OPENAI}"
    bad = {
        "wrong-signature": hs_token(secret="another-secret-0123456789abcdefghijklmnopqrstuvwxyz"),
        "expired": hs_token(exp=int(time.time()) - 120),
        "no-exp": hs_token(exp=None),
        "no-sub": hs_token(sub=None),
        "no-org": hs_token(org=None),
        "empty-org": hs_token(org=[]),
        "no-role": hs_token(role=None),
        "unknown-role": hs_token(role="superuser"),
        "alg-none": jwt.encode({"sub": "x", "exp": int(time.time()) + 60, "org": ORG,
                                "role": "admin"}, None, algorithm="none"),
        "truncated": hs_token()[:-5],
    }
    for why, tok in bad.items():
        for u in (url, url + "/versions"):
            r = c.get(u, headers=bearer(tok))
            assert r.status_code == 401, (why, u, r.text)
    wrong_org = bearer(hs_token(org="globex", role="admin"))
    assert_problem(c.get(url, headers=wrong_org), 404)
    assert_problem(put(c, hs_token(org="globex", role="admin")), 404)
    assert_problem(c.get(f"/api/audit?org_id={ORG}", headers=wrong_org), 404)


def test_jwt_with_non_list_claims_is_401(jwt_client: TestClient) -> None:
    for tok in (hs_token(role=5), hs_token(org=7)):
        for url in (f"/api/secrets/{ORG}/{OPENAI}", f"/api/secrets/{ORG}/{OPENAI}/versions"):
            r = jwt_client.get(url, headers=bearer(tok))
            assert r.status_code == 401, r.text


def test_jwt_custom_claims_and_audience(home: Path) -> None:
    app = build_app(home, jwt_hs256_secret=HS_SECRET, jwt_org_claim="tenant",
                    jwt_role_claim="perms", jwt_audience="keysafe")
    with TestClient(app) as c:
        url = f"/api/secrets/{ORG}/{OPENAI}"
        good = hs_token(org=None, role=None, tenant=ORG, perms=["viewer"], aud="keysafe")
        assert c.get(url, headers=bearer(good)).status_code == 200
        for tok in (hs_token(org=None, role=None, tenant=ORG, perms=["viewer"]),
                    hs_token(org=None, role=None, tenant=ORG, perms=["viewer"], aud="other"),
                    hs_token(aud="keysafe")):  # claims under the default names
            assert c.get(url, headers=bearer(tok)).status_code == 401


def test_jwt_env_claim_binds_tokens_to_this_environment(home: Path) -> None:
    """With KEYSAFE_JWT_ENV_CLAIM, a JWT must name this server's environment."""
    app = build_app(home, jwt_hs256_secret=HS_SECRET, jwt_env_claim="env")
    with TestClient(app) as c:
        url = f"/api/secrets/{ORG}/{OPENAI}"
        for ok_env in ("local", "LOCAL"):  # compared as KEYSAFE_ENV is, lower-cased
            assert c.get(url, headers=bearer(hs_token(role="viewer", env=ok_env))
                         ).status_code == 200
        for tok in (hs_token(role="viewer", env="production"), hs_token(role="viewer")):
            assert c.get(url, headers=bearer(tok)).status_code == 401


# -- JWT: RS256 via JWKS -----------------------------------------------------------------

def _rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def jwks() -> Iterator[tuple[str, rsa.RSAPrivateKey, list[int]]]:
    """A JWKS endpoint on 127.0.0.1 serving one RSA public key (kid "k1")."""
    key = _rsa_key()
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": "k1", "use": "sig", "alg": "RS256"})
    payload = json.dumps({"keys": [jwk]}).encode()
    hits = [0]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits[0] += 1
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/.well-known/jwks.json", key, hits
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(timeout=5)


def rs_token(key: rsa.RSAPrivateKey, kid: str = "k1", **claims: Any) -> str:
    base: dict[str, Any] = {"sub": "svc-runner", "exp": int(time.time()) + 300, "org": ORG,
                            "role": "service"}
    base.update(claims)
    return jwt.encode(base, key, algorithm="RS256", headers={"kid": kid})


def test_jwt_rs256_via_jwks(home: Path,
                            jwks: tuple[str, rsa.RSAPrivateKey, list[int]]) -> None:
    url, key, hits = jwks
    app = build_app(home, jwt_jwks_url=url)
    writer = make_token(app, "w", ["writer"], [ORG])
    with TestClient(app) as c:
        put(c, writer)
        value_url = f"/api/secrets/{ORG}/{OPENAI}/value"
        r = c.get(value_url, headers=bearer(rs_token(key)))
        assert r.status_code == 200, r.text
        assert r.json()["value"] == VALUE_1
        assert hits[0] >= 1
        who = c.get("/api/whoami", headers=bearer(rs_token(key))).json()
        assert who["kind"] == "jwt"
        assert who["name"] == "svc-runner"
        assert_problem(c.get(value_url, headers=bearer(rs_token(key, role="viewer"))), 403)
        assert_problem(c.get(value_url, headers=bearer(rs_token(key, org="globex"))), 404)

        other = _rsa_key()
        pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
        claims = {"sub": "mallory", "exp": int(time.time()) + 300, "org": ORG,
                  "role": "service"}
        forged = {
            "other-key": rs_token(other),
            "unknown-kid": rs_token(other, kid="k2"),
            "expired": rs_token(key, exp=int(time.time()) - 120),
            # Algorithm confusion: HMAC keyed with the public key must not pass.
            "hs256-with-public-key": _hs256_raw(claims, pem),
        }
        for why, tok in forged.items():
            r = c.get(value_url, headers=bearer(tok))
            assert r.status_code == 401, (why, r.text)
            assert VALUE_1 not in r.text


def _hs256_raw(claims: dict[str, Any], key: bytes) -> str:
    """An HS256 JWT keyed with arbitrary bytes (PyJWT refuses PEM keys for HMAC)."""
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


# -- odd inputs ------------------------------------------------------------------------

def test_audit_query_with_naive_datetimes(app: KeysafeApp, tokens: dict[str, str]) -> None:
    with TestClient(app, raise_server_exceptions=False) as c:
        for params in ({"since": "2020-01-01T00:00:00"}, {"until": "2020-01-01"}):
            r = c.get("/api/audit", params={"org_id": ORG, **params},
                      headers=bearer(tokens["admin"]))
            assert r.status_code in (200, 422), (params, r.status_code)


def _asgi_get(app: KeysafeApp, token: str, raw_path: str) -> tuple[int, bytes]:
    """A GET as a real ASGI server delivers it: ``path`` is ``raw_path`` decoded once.
    (Starlette's TestClient decodes twice, so it cannot show this.)"""
    from urllib.parse import unquote

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": unquote(raw_path),
             "raw_path": raw_path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"authorization", f"Bearer {token}".encode())],
             "client": ("127.0.0.1", 5555), "server": ("127.0.0.1", 80)}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(msg: dict[str, Any]) -> None:
        sent.append(msg)

    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body


def test_fast_path_decodes_the_path_once(app: KeysafeApp, tokens: dict[str, str]) -> None:
    app.keysafe.manager.put(OPENAI, VALUE_1, ORG)
    svc = make_token(app, "svc-viewer", ["service", "viewer"], None)
    weird = "/api/secrets/acme-c%256Frp/openai%255Fapi%255Fkey"
    slow, _ = _asgi_get(app, svc, weird + "/versions")
    assert slow == 422
    for suffix in ("", "/value"):
        status, body = _asgi_get(app, svc, weird + suffix)
        assert VALUE_1.encode() not in body
        assert status == slow, (suffix, status, body[:200])


def test_expired_token_is_401(app: KeysafeApp, client: TestClient) -> None:
    token, info = app.keysafe.tokens.create(name="short", roles=["viewer"], orgs=[ORG],
                                            created_by="test", ttl=timedelta(seconds=1))
    assert info.expires_at is not None
    url = f"/api/secrets/{ORG}/{OPENAI}"
    assert client.get(url, headers=bearer(token)).status_code == 200
    time.sleep(1.2)
    assert_problem(client.get(url, headers=bearer(token)), 401)
    assert_problem(client.get(url + "/versions", headers=bearer(token)), 401)


def test_token_create_with_expiry(client: TestClient, tokens: dict[str, str]) -> None:
    r = client.post("/api/tokens", json={"name": "temp", "roles": ["viewer"], "orgs": [ORG],
                                         "expires_in_days": 2}, headers=bearer(tokens["admin"]))
    assert r.status_code == 201
    exp = datetime.fromisoformat(r.json()["expires_at"].replace("Z", "+00:00"))
    assert timedelta(days=1, hours=23) < exp - datetime.now(UTC) <= timedelta(days=2)


def test_revoke_racing_a_first_use_still_revokes(app: KeysafeApp,
                                                 client: TestClient) -> None:
    store = app.keysafe.tokens
    token = make_token(app, "racer", ["viewer"], [ORG])
    tid = token.split("_")[1]

    revoker: list[threading.Thread] = []

    class RevokeBeforeFill(dict):  # type: ignore[type-arg]
        """Starts a revoke on another thread at the exact moment between the row read and
        the cache fill (what a concurrent DELETE /api/tokens/{id} can do)."""

        def __setitem__(self, key: Any, value: Any) -> None:
            if key == tid and not revoker:
                t = threading.Thread(target=store.revoke, args=(tid,))
                revoker.append(t)
                t.start()
                t.join(0.2)  # it may have to wait for the fill to finish
            super().__setitem__(key, value)

    store._cache = RevokeBeforeFill()
    # This first use raced the revoke; whichever way it went, the revoke has returned now.
    client.get(f"/api/secrets/{ORG}/{OPENAI}", headers=bearer(token))
    revoker[0].join(5)
    assert store.get(tid).revoked_at is not None
    r = client.get(f"/api/secrets/{ORG}/{OPENAI}", headers=bearer(token))
    assert r.status_code == 401


# -- an unavailable store --------------------------------------------------------------

def test_unavailable_store_answers_503_with_retry_after(client: TestClient,
                                                         tokens: dict[str, str],
                                                         app: KeysafeApp,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """Hot paths and FastAPI routes alike: 503, problem+json, Retry-After; no change."""
    from keysafe.errors import BackendUnavailable

    assert put(client, tokens["writer"]).status_code == 200
    backend = app.keysafe.manager.backend
    app.keysafe.manager.cache.clear()

    def down(*a: Any, **k: Any) -> Any:
        raise BackendUnavailable("store is down (test)")

    for verb in ("get", "put", "describe", "list", "versions"):
        monkeypatch.setattr(backend, verb, down)
    for r in (put(client, tokens["writer"], value=VALUE_2),
              client.get(f"/api/secrets/{ORG}/{OPENAI}", headers=bearer(tokens["viewer"])),
              client.get(f"/api/secrets/{ORG}/{OPENAI}/value",
                         headers=bearer(tokens["service"])),
              client.get(f"/api/secrets/{ORG}/{OPENAI}/versions",
                         headers=bearer(tokens["viewer"]))):
        body = assert_problem(r, 503)
        assert body["code"] == "backend_unavailable"
        assert r.headers["retry-after"] == "2"
    monkeypatch.undo()
    r = client.get(f"/api/secrets/{ORG}/{OPENAI}/value", headers=bearer(tokens["service"]))
    assert r.json()["value"] == VALUE_1  # the refused write changed nothing


def test_the_server_purges_expired_soft_deletes_on_schedule(tmp_path: Path) -> None:
    """KEYSAFE_PURGE_INTERVAL: the server's scheduler purges what the recovery window no
    longer covers, audited as keysafe-scheduler."""
    app = build_app(tmp_path / "h", purge_interval="0.1", recovery_window_days="0")
    with TestClient(app) as c:
        writer = make_token(app, "w", ["writer"], [ORG])
        auditor = make_token(app, "a", ["admin"], None)
        assert put(c, writer).status_code == 200
        assert c.delete(f"/api/secrets/{ORG}/{OPENAI}",
                        headers=bearer(writer)).status_code == 200
        deadline = time.monotonic() + 20
        purged: list[Any] = []
        while time.monotonic() < deadline and not purged:
            r = c.get("/api/audit", params={"action": "purge"}, headers=bearer(auditor))
            purged = [e for e in r.json()["records"] if e["actor"] == "keysafe-scheduler"]
            time.sleep(0.05)
        assert purged
        assert purged[0]["outcome"] == "ok"
        r = c.get(f"/api/secrets/{ORG}", params={"include_deleted": "true"},
                  headers=bearer(writer))
        assert OPENAI not in r.text


def test_replicas_starting_together_print_one_bootstrap_token(tmp_path: Path) -> None:
    from keysafe.config import load_settings
    from keysafe.server.run import bootstrap_token

    settings = load_settings({"KEYSAFE_HOME": str(tmp_path)})
    got: list[str | None] = []
    start = threading.Barrier(4)

    def boot() -> None:
        start.wait(timeout=10)
        got.append(bootstrap_token(settings))

    threads = [threading.Thread(target=boot) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len([t for t in got if t]) == 1


@pytest.mark.parametrize("tag", ["rotator", "rotator.url", "rotator.secret_name",
                                 "rotation.step", "maintenance_window"])
def test_rotation_tags_cannot_be_set_over_http(client: TestClient, app: KeysafeApp,
                                               tokens: dict[str, str], tag: str) -> None:
    """A write-only identity must not point a rotator at a URL of its own (the retire
    step would send it the previous value) or pick a module to import: only
    `keysafe rotate configure` sets these tags."""
    assert put(client, tokens["admin"]).status_code == 200
    for token in ("writer", "admin"):
        r = put(client, tokens[token], value=VALUE_2,
                tags={"team": "ml", tag: "http://127.0.0.1:9/steal"})
        body = assert_problem(r, 422)
        assert f"tag '{tag}' is reserved for rotation settings" in json.dumps(body)
        assert VALUE_2 not in r.text
    mgr = app.keysafe.manager
    assert mgr.describe(OPENAI, ORG).current_version == 1
    assert mgr.get(OPENAI, ORG, fresh=True) == VALUE_1
    # Other tags still go through.
    assert put(client, tokens["writer"], value=VALUE_2, tags={"team": "ml"}).status_code == 200


def test_status_shows_the_rotator_but_not_its_options(client: TestClient, app: KeysafeApp,
                                                      tokens: dict[str, str]) -> None:
    app.keysafe.manager.put("partner_token", "p" * 40, ORG, tags={
        "team": "ml", "rotator": "webhook", "rotator.url": "https://user:pw@hooks.example/x",
        "rotator.secret_name": "hook_key"})
    r = client.get(f"/api/secrets/{ORG}/partner_token", headers=bearer(tokens["writer"]))
    assert r.status_code == 200
    assert r.json()["tags"] == {"team": "ml", "rotator": "webhook"}
    assert "hooks.example" not in r.text
    # Tags written over HTTP replace the others, never the rotation settings.
    w = put(client, tokens["writer"], name="partner_token", value="q" * 40,
            tags={"team": "data"})
    assert w.status_code == 200, w.text
    assert app.keysafe.manager.describe("partner_token", ORG).tags == {
        "team": "data", "rotator": "webhook",
        "rotator.url": "https://user:pw@hooks.example/x", "rotator.secret_name": "hook_key"}


def test_llm_key_reads_are_audited_under_the_path_disclosed(client: TestClient,
                                                           app: KeysafeApp,
                                                           tokens: dict[str, str]) -> None:
    """A search of the audit log for a secret finds its reads through the llm-keys
    route too, and the record says whether the domain's key or the shared one went out."""
    from keysafe.manager.audit import AuditFilter

    mgr = app.keysafe.manager
    mgr.put(OPENAI, VALUE_1, ORG)
    mgr.put(OPENAI, VALUE_2, ORG, domain=DOMAIN)
    h = bearer(tokens["service"])
    base = f"/api/orgs/{ORG}/llm-keys/openai"
    assert client.get(base, params={"domain_id": DOMAIN}, headers=h).json()["value"] == VALUE_2
    assert client.get(base, params={"domain_id": "billing"}, headers=h).json()["value"] == VALUE_1
    assert client.get(f"/api/orgs/{ORG}/llm-keys/mistral", headers=h).status_code == 404
    reads = [(e.path, e.outcome, e.detail) for e in mgr.audit_query(
        AuditFilter(action="read_value"))]
    assert reads[-3:] == [
        (mgr.path(OPENAI, ORG, domain=DOMAIN), "ok", {"provider": "openai"}),
        (mgr.path(OPENAI, ORG), "ok", {"provider": "openai"}),
        ("llm:mistral", "not_found", {"provider": "mistral"})]


def test_an_env_var_tag_must_be_a_variable_name(client: TestClient, app: KeysafeApp,
                                                tokens: dict[str, str]) -> None:
    """The tag names the variable run and export write: ``X=1; cmd`` must never reach a
    shell, dotenv or github-env file. Refused over HTTP; ignored where it is read
    (a store written some other way)."""
    bad = put(client, tokens["writer"], tags={"env_var": "X=1; touch /tmp/pwned; Y"})
    body = assert_problem(bad, 422)
    assert "must be an environment variable name" in json.dumps(body)
    assert put(client, tokens["writer"], tags={"env_var": "LLM_KEY"}).status_code == 200
    from keysafe.workloads.sources import StoreSource

    mgr = app.keysafe.manager
    mgr.put("other", "v", ORG, tags={"env_var": "X=1; touch /tmp/pwned; Y"})
    assert StoreSource(mgr).env_vars(ORG, None) == {OPENAI: "LLM_KEY"}


SLACK = {"bot_token": "xoxb-1111-2222-" + "a" * 24, "signing_secret": "f" * 32,
         "app_token": "xapp-1-A111-222-" + "b" * 24}


def test_fields_of_a_json_credential_change_blind(client: TestClient, app: KeysafeApp,
                                                   tokens: dict[str, str]) -> None:
    """spec 000's update_credentials over HTTP: some fields set, the rest kept unseen,
    the merged object checked, check-and-set, and no value in any answer."""
    w = bearer(tokens["writer"])
    assert put(client, tokens["writer"], "slack", json.dumps(SLACK)).status_code == 200
    url = f"/api/secrets/{ORG}/slack/fields"
    new_bot = "xoxb-3333-4444-" + "c" * 24
    r = client.patch(url, json={"fields": {"bot_token": new_bot}}, headers=w)
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 2
    for v in (new_bot, *SLACK.values()):
        assert v not in r.text
    stored = json.loads(app.keysafe.manager.get("slack", ORG, fresh=True))
    assert stored == {**SLACK, "bot_token": new_bot}
    # A merge that would leave the credential without a required field: 422, unchanged.
    r = client.patch(url, json={"fields": {"app_token": None}}, headers=w)
    body = assert_problem(r, 422)
    assert "app_token" in body["detail"]
    # Check-and-set: only onto the version the caller saw.
    stale = client.patch(url, json={"fields": {"bot_token": SLACK["bot_token"]},
                                    "expected_version": 1}, headers=w)
    assert assert_problem(stale, 409)["current_version"] == 2
    assert app.keysafe.manager.describe("slack", ORG).current_version == 2
    # Not a JSON object stored: refused, naming the problem and not the value.
    assert put(client, tokens["writer"]).status_code == 200
    r = client.patch(f"/api/secrets/{ORG}/{OPENAI}/fields",
                     json={"fields": {"x": "y"}}, headers=w)
    assert_problem(r, 422)
    assert VALUE_1 not in r.text
    for bad in ({"fields": {}}, {"fields": {"": "x"}}, {"fields": {"a": 1}}, {"other": 1}):
        assert_problem(client.patch(url, json=bad, headers=w), 422)
    assert_problem(client.patch(url, json={"fields": {"bot_token": new_bot}},
                                headers=bearer(tokens["viewer"])), 403)
    # The audit log has the writes, never a field's value.
    records = json.dumps([e.to_dict() for e in app.keysafe.manager.audit_query()])
    assert new_bot not in records
    assert SLACK["signing_secret"] not in records


def test_rotate_and_destroy_over_http(client: TestClient, app: KeysafeApp,
                                      tokens: dict[str, str]) -> None:
    """spec 004's rotate_secret and DESIGN's destroy as routes: a rotation keysafe can
    do itself makes a value nobody sees; one only a person can do is 409; destroy is
    for admins and crypto-shreds the versions named."""
    w, v, s = (bearer(tokens[k]) for k in ("writer", "viewer", "service"))
    key = "k" * 48
    assert put(client, tokens["writer"], "jwt_secret", key).status_code == 200
    url = f"/api/secrets/{ORG}/jwt_secret"
    assert client.get(url, headers=v).json()["rotator"] == "random"
    assert_problem(client.post(url + "/rotate", headers=v), 403)
    r = client.post(url + "/rotate", headers=w)
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["outcome"], out["version"], out["domain_id"]) == ("rotated", 2, "shared")
    new = client.get(url + "/value", headers=s).json()["value"]
    assert new != key
    assert new not in r.text
    # Only a person can issue an OpenAI key: 409, a reminder recorded, nothing changed.
    assert put(client, tokens["writer"]).status_code == 200
    openai = f"/api/secrets/{ORG}/{OPENAI}"
    assert client.get(openai, headers=v).json()["rotator"] == "manual"
    for _ in range(3):  # asked again and again: no reminder or event each time
        body = assert_problem(client.post(openai + "/rotate", headers=w), 409)
        assert body["code"] == "rotation_manual"
    assert not app.keysafe.manager.audit_query(AuditFilter(action="rotate",
                                                           outcome="reminder"))
    assert client.get(openai, headers=v).json()["version"] == 1
    assert_problem(client.post(f"/api/secrets/{ORG}/nope/rotate", headers=w), 404)

    # Destroy: admins only; the versions named can never be read again.
    admin = bearer(tokens["admin"])
    assert_problem(client.post(url + "/destroy", json={"versions": [1]}, headers=w), 403)
    for bad in ({"versions": []}, {"versions": [0]}, {"versions": [1], "x": 1}):
        assert_problem(client.post(url + "/destroy", json=bad, headers=admin), 422)
    # Not the current version: the secret would look configured and read as not found.
    body = assert_problem(client.post(url + "/destroy", json={"versions": [2]},
                                      headers=admin), 409)
    assert body["current_version"] == 2
    r = client.post(url + "/destroy", json={"versions": [1, 1]}, headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["destroyed"] == [1]
    hist = client.get(url + "/versions", headers=v).json()["versions"]
    assert {h["version"]: h["destroyed"] for h in hist} == {1: True, 2: False}
    # A soft-deleted secret's old versions can be destroyed too.
    assert put(client, tokens["writer"], "old_key", "o" * 20).status_code == 200
    assert put(client, tokens["writer"], "old_key", "p" * 20).status_code == 200
    old = f"/api/secrets/{ORG}/old_key"
    assert client.delete(old, headers=w).status_code == 200
    r = client.post(old + "/destroy", json={"versions": [1]}, headers=admin)
    assert r.status_code == 200, r.text
    assert_problem(client.post(url + "/rollback", json={"version": 1}, headers=w), 404)
    assert client.get(url + "/value", headers=s).json()["value"] == new
    records = json.dumps([e.to_dict() for e in app.keysafe.manager.audit_query()])
    assert key not in records
    assert new not in records


def test_an_org_is_offboarded_over_http(client: TestClient, app: KeysafeApp,
                                        tokens: dict[str, str]) -> None:
    """DELETE /api/orgs/{org}: every secret of the org in every domain, and the tokens
    that covered only it; admins of the whole org only."""
    assert put(client, tokens["writer"]).status_code == 200
    assert put(client, tokens["writer"], "partner_key", "p" * 20,
               domain_id=DOMAIN).status_code == 200
    assert put(client, tokens["globex"], org="globex").status_code == 200
    url = f"/api/orgs/{ORG}"
    assert_problem(client.delete(url, headers=bearer(tokens["writer"])), 403)
    assert_problem(client.delete(url, headers=bearer(tokens["globex"])), 404)
    scoped = make_token(app, "cards-admin", ["admin"], [f"{ORG}/{DOMAIN}"])
    assert_problem(client.delete(url, headers=bearer(scoped)), 403)
    denied = app.keysafe.manager.audit_query(AuditFilter(outcome="denied", org=ORG))
    assert denied[-1].actor == "token:cards-admin"  # audited like any denial
    r = client.delete(url, headers=bearer(tokens["admin"]))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["summary"] == {"deleted": 2}
    assert VALUE_1 not in r.text
    # The org's own tokens are revoked (the admin's included); the all-orgs one stays.
    assert len(body["tokens_revoked"]) >= 4
    assert client.get(f"{url}/secrets", headers=bearer(tokens["viewer"])).status_code == 401
    listed = client.get(f"{url}/secrets", params={"include_deleted": "true"},
                        headers=bearer(tokens["root"])).json()["secrets"]
    assert {(s["secret_name"], s["deleted"]) for s in listed} == {
        (OPENAI, True), ("partner_key", True)}
    assert client.get("/api/orgs/globex/secrets",
                      headers=bearer(tokens["globex"])).json()["secrets"]
    # Purged: nothing left to restore.
    r = client.delete(url, params={"purge": "true"}, headers=bearer(tokens["root"]))
    assert r.json()["summary"] == {"purged": 2}
    assert client.get(f"{url}/secrets", params={"include_deleted": "true"},
                      headers=bearer(tokens["root"])).json()["secrets"] == []


def test_an_exposed_secret_shows_it(client: TestClient, app: KeysafeApp,
                                    tokens: dict[str, str]) -> None:
    assert put(client, tokens["writer"]).status_code == 200
    url = f"/api/secrets/{ORG}/{OPENAI}"
    v = bearer(tokens["viewer"])
    assert client.get(url, headers=v).json()["exposed"] is False
    app.keysafe.manager.mark_exposed(OPENAI, ORG, where="app/settings.py:12")
    st = client.get(url, headers=v).json()
    assert (st["exposed"], st["rotation_overdue"]) == (True, True)
    assert st["tags"]["exposed"] == "app/settings.py:12"
    assert put(client, tokens["writer"], value=VALUE_2).status_code == 200
    st = client.get(url, headers=v).json()
    assert (st["exposed"], st["rotation_overdue"]) == (False, False)


def test_a_server_error_tells_the_client_its_request_id_and_the_log_why(
        client: TestClient, tokens: dict[str, str], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A 5xx answer hides the cause from the caller; the server's log line for that
    request id carries it (a message: a path and a cause, never a value)."""
    from keysafe.rotation.rotators import RandomRotator

    def broken(self: RandomRotator, ctx: Any, new: str) -> None:
        raise OSError("the target is gone")

    value = "jwt-value-" + "v" * 40
    assert put(client, tokens["writer"], "jwt_secret", value).status_code == 200
    monkeypatch.setattr(RandomRotator, "test", broken)
    with caplog.at_level("ERROR", logger="keysafe"):
        r = client.post(f"/api/secrets/{ORG}/jwt_secret/rotate",
                        headers=bearer(tokens["writer"]))
    body = assert_problem(r, 500)
    assert "request id" in body["detail"]
    assert "OSError" not in r.text
    line = next(m for m in caplog.messages if body["request_id"] in m)
    assert "RotationError" in line
    assert "failed at step test: OSError" in line
    assert value not in caplog.text
