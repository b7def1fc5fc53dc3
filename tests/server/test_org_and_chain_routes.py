"""Organisations as a whole over HTTP (``GET /api/orgs``, ``POST /api/orgs/{org}/restore``)
and the audit chain checked by the server (``POST /api/audit/verify``): the caller's
scopes decide what it sees and may do, denials are audited, and no value is answered."""

from __future__ import annotations

import sqlite3
from typing import Any

from fastapi.testclient import TestClient

from keysafe.manager.audit import AuditFilter
from keysafe.server.app import KeysafeApp

from .serverkit import OPENAI, VALUE_1, VALUE_2, bearer, build_app, make_token

ORG, DOMAIN = "acme-corp", "card-services"


def put(c: TestClient, token: str, name: str, org: str = ORG, **body: Any) -> None:
    r = c.put(f"/api/secrets/{org}/{name}", json={"secret_value": VALUE_1, **body},
              headers=bearer(token))
    assert r.status_code in (200, 201), r.text


def test_orgs_are_listed_as_far_as_the_caller_covers(client: TestClient,
                                                      app: KeysafeApp) -> None:
    root = make_token(app, "root", ["admin"], None)
    put(client, root, OPENAI)
    put(client, root, "partner_key", domain_id=DOMAIN, check_format=False)
    put(client, root, "old_key", check_format=False)
    assert client.delete(f"/api/secrets/{ORG}/old_key", headers=bearer(root)).is_success
    put(client, root, OPENAI, org="globex")
    r = client.get("/api/orgs", headers=bearer(root))
    assert r.status_code == 200, r.text
    assert r.json()["orgs"] == [
        {"org": ORG, "secrets": 2, "deleted": 1, "domains": [DOMAIN, "shared"]},
        {"org": "globex", "secrets": 1, "deleted": 0, "domains": ["shared"]}]
    assert VALUE_1 not in r.text
    # A token for one org sees that org; one for a domain, that domain's secrets only.
    viewer = make_token(app, "viewer", ["viewer"], [ORG])
    assert [o["org"] for o in client.get("/api/orgs", headers=bearer(viewer))
            .json()["orgs"]] == [ORG]
    cards = make_token(app, "cards", ["writer"], [f"{ORG}/{DOMAIN}"])
    assert client.get("/api/orgs", headers=bearer(cards)).json()["orgs"] == [
        {"org": ORG, "secrets": 1, "deleted": 0, "domains": [DOMAIN]}]
    elsewhere = make_token(app, "elsewhere", ["admin"], ["initech"])
    assert client.get("/api/orgs", headers=bearer(elsewhere)).json()["orgs"] == []
    # A service identity may read values, not list: refused, and the refusal recorded.
    service = make_token(app, "svc", ["service"], None)
    assert client.get("/api/orgs", headers=bearer(service)).status_code == 403
    assert client.get("/api/orgs").status_code == 401
    records = app.keysafe.manager.audit_query(AuditFilter(action="list"))
    assert [(e.actor, e.outcome) for e in records][-2:] == [("token:elsewhere", "ok"),
                                                           ("token:svc", "denied")]
    assert records[0].detail == {"orgs": 2}


def test_orgs_listed_by_name_scopes_and_without_domains(home: Any) -> None:
    """A name-scoped token counts the secrets its patterns cover; where the paths have no
    {domain}, a token for some domains of an org sees nothing of it (as on every route),
    and one scoped to some orgs makes the store list those orgs only."""
    app = build_app(home)
    root = make_token(app, "root", ["admin"], None)
    db_only = make_token(app, "db-only", ["viewer"], [f"{ORG}/shared/db_*"])
    with TestClient(app) as c:
        for name in ("db_url", "db_password", OPENAI):
            put(c, root, name, check_format=False)
        put(c, root, OPENAI, org="globex")
        assert c.get("/api/orgs", headers=bearer(db_only)).json()["orgs"] == [
            {"org": ORG, "secrets": 2, "deleted": 0, "domains": ["shared"]}]
    app.keysafe.close()
    flat = build_app(home / "flat", naming_template="{app}/{env}/{org}/{name}")
    whole = make_token(flat, "whole", ["viewer"], [ORG])
    part = make_token(flat, "part", ["viewer"], [f"{ORG}/shared"])
    with TestClient(flat) as c:
        put(c, make_token(flat, "root", ["admin"], None), OPENAI)
        assert c.get(f"/api/orgs/{ORG}/secrets", headers=bearer(part)).status_code == 403
        assert c.get("/api/orgs", headers=bearer(part)).json()["orgs"] == []
        assert [o["org"] for o in c.get("/api/orgs", headers=bearer(whole))
                .json()["orgs"]] == [ORG]
    flat.keysafe.close()


def test_an_offboarding_is_undone_over_http(client: TestClient, app: KeysafeApp) -> None:
    root = make_token(app, "root", ["admin"], None)
    admin = make_token(app, "acme-admin", ["admin"], [ORG])
    viewer = make_token(app, "viewer", ["viewer"], [ORG])
    writer = make_token(app, "writer", ["writer"], [ORG, "globex"])
    url = f"/api/orgs/{ORG}/restore"
    # Never removed: nothing to undo (and nothing restored that was deleted on purpose).
    assert client.post(url, headers=bearer(admin)).status_code == 404
    put(client, root, OPENAI)
    put(client, root, "partner_key", domain_id=DOMAIN, check_format=False)
    put(client, root, "gone_before", check_format=False)
    # Deleted on purpose before the offboarding: the undoing leaves it deleted.
    assert client.delete(f"/api/secrets/{ORG}/gone_before", headers=bearer(root)).is_success
    r = client.delete(f"/api/orgs/{ORG}", params={"keep_tokens": "true"},
                      headers=bearer(admin))
    assert r.status_code == 200, r.text
    assert r.json()["summary"] == {"deleted": 2}
    assert client.post(url, headers=bearer(viewer)).status_code == 403  # may not restore
    # A writer that outlives the offboarding (it covers another org too) may not undo
    # what an admin did; the refusal is recorded.
    assert client.post(url, headers=bearer(writer)).status_code == 403
    denied = app.keysafe.manager.audit_query(AuditFilter(outcome="denied", org=ORG))
    assert denied[-1].actor == "token:writer"
    scoped = make_token(app, "cards-admin", ["admin"], [f"{ORG}/{DOMAIN}"])
    assert client.post(url, headers=bearer(scoped)).status_code == 403  # not the whole org
    globex = make_token(app, "globex-admin", ["admin"], ["globex"])
    assert client.post(url, headers=bearer(globex)).status_code == 404  # not its org
    plan = client.post(url, params={"dry_run": "true"}, headers=bearer(admin))
    assert plan.status_code == 200, plan.text
    assert (plan.json()["dry_run"], plan.json()["summary"]) == (True, {"would_restore": 2})
    listed = client.get(f"/api/orgs/{ORG}/secrets", headers=bearer(admin)).json()["secrets"]
    assert listed == []  # a dry run changes nothing
    r = client.post(url, headers=bearer(admin))
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["organization_id"], body["dry_run"], body["summary"]) == (
        ORG, False, {"restored": 2})
    assert {s["path"].rsplit("/", 1)[1] for s in body["secrets"]} == {OPENAI, "partner_key"}
    assert VALUE_1 not in r.text
    listed = client.get(f"/api/orgs/{ORG}/secrets", headers=bearer(admin)).json()["secrets"]
    assert {s["secret_name"] for s in listed} == {OPENAI, "partner_key"}
    mgr = app.keysafe.manager
    assert mgr.get("partner_key", ORG, domain=DOMAIN) == VALUE_1
    assert not mgr.has("gone_before", ORG)
    # Deleted on purpose after the undoing: a second restore leaves it deleted.
    assert client.delete(f"/api/secrets/{ORG}/{OPENAI}", headers=bearer(admin)).is_success
    assert client.post(url, headers=bearer(admin)).json()["summary"] == {}
    assert not mgr.has(OPENAI, ORG)
    restores = mgr.audit_query(AuditFilter(action="org_restore", org=ORG))
    assert [(e.actor, e.detail) for e in restores] == [
        ("token:acme-admin", {"secrets": 2}), ("token:acme-admin", {"secrets": 0})]


def test_the_server_checks_its_audit_chain(client: TestClient, app: KeysafeApp) -> None:
    root = make_token(app, "root", ["admin"], None)
    admin = make_token(app, "acme-admin", ["admin"], [ORG])
    put(client, root, OPENAI)
    client.put(f"/api/secrets/{ORG}/{OPENAI}", json={"secret_value": VALUE_2},
               headers=bearer(root))
    r = client.post("/api/audit/verify", headers=bearer(root))
    assert r.status_code == 200, r.text
    first = r.json()
    assert (first["ok"], first["problems"]) == (True, [])
    assert first["checked"] >= 2
    # The chain covers every org: an admin of one may not (recorded, with the reason).
    assert client.post("/api/audit/verify", headers=bearer(admin)).status_code == 403
    denial = app.keysafe.manager.audit_query(AuditFilter(action="audit_verify"))[-1]
    assert denial.detail == {"reason": "PermissionDenied", "needs": "every org"}
    r = client.post("/api/audit/verify", json={"anchors": None}, headers=bearer(root))
    assert r.status_code == 422
    anchor = client.post("/api/audit/anchor", headers=bearer(root)).json()
    r = client.post("/api/audit/verify", json={"anchors": [anchor]}, headers=bearer(root))
    assert r.json()["ok"] is True
    # An anchor whose record no longer matches is a problem named by its record.
    wrong = {**anchor, "hash": "0" * 64}
    r = client.post("/api/audit/verify", json={"anchors": [wrong]}, headers=bearer(root))
    assert r.json()["ok"] is False
    assert [p["seq"] for p in r.json()["problems"]] == [anchor["seq"]]
    # Something that is not an anchor is refused, naming which.
    r = client.post("/api/audit/verify", json={"anchors": [anchor, {"seq": 1}]},
                    headers=bearer(root))
    assert r.status_code == 422
    assert "anchor 2" in r.json()["detail"]
    r = client.post("/api/audit/verify", json={"anchors": [], "extra": 1},
                    headers=bearer(root))
    assert r.status_code == 422
    # A record edited in the store's file: the server says which.
    mgr = app.keysafe.manager
    mgr.audit.flush()
    db = sqlite3.connect(app.keysafe.settings.home / "keysafe.db")
    with db:
        db.execute("UPDATE audit SET actor = 'token:someone-else' WHERE seq = 2")
    db.close()
    r = client.post("/api/audit/verify", headers=bearer(root))
    assert r.json()["ok"] is False
    assert 2 in [p["seq"] for p in r.json()["problems"]]
    assert VALUE_1 not in r.text
    assert VALUE_2 not in r.text
    checks = mgr.audit_query(AuditFilter(action="audit_verify"))
    assert [(e.actor, e.outcome) for e in checks] == [
        ("token:root", "ok"), ("token:acme-admin", "denied"), ("token:root", "ok"),
        ("token:root", "integrity_error"), ("token:root", "integrity_error")]
